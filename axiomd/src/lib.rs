//! axiomd: the daemon. Records flow kernel → sensor → agents → rules → actions, every stage
//! publishing on the bus, and the sinks (store, telemetry) and front ends (api, dbus) follow the
//! bus; `config` composes each stage's section and `daemon` wires the stages together. A module
//! imports only those on floors below it (`tests/layers.rs` holds the floors and fails on a
//! back-edge).
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
