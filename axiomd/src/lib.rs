//! axiomd: the daemon. Data flows kernel → sensor → agents → bus → api (and, in later stages,
//! rules → actions → sinks); each stage is a module of its own.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod actions;
pub mod agents;
pub mod api;
pub mod authz;
pub mod bus;
pub mod config;
pub mod confine;
pub mod daemon;
pub mod dbus;
pub mod kernel;
pub mod notify;
pub mod rules;
pub mod sensor;
pub mod store;
pub mod telemetry;
