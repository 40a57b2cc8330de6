//! axiomd: the daemon. Records flow kernel → sensor → agents → rules → actions, every stage
//! publishing on the bus, and the sinks (store, telemetry) and front ends (api, dbus) follow the
//! bus; `config` composes each stage's section and `daemon` wires the stages together. A module
//! imports only those on floors below it (`tests/layers.rs` holds the floors and fails on a
//! back-edge).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
// The library's consumers are its own binary and `axiomctl rules test --session` (a recorded
// session replayed through the rules engine, offline): what they need is the interface below;
// every other item is private to its module or `pub(crate)`.
#![warn(unreachable_pub)]

mod actions;
mod agents;
mod api;
mod authz;
pub mod bench;
mod bus;
mod config;
mod confine;
mod daemon;
mod dbus;
mod kernel;
mod notify;
mod rules;
mod screens;
mod sensor;
mod store;
mod supervise;
mod telemetry;

pub use config::{Config, DEFAULT_PATH};
pub use daemon::run;
pub use kernel::{Pins, load_empty};
pub use rules::replay::{Replayed, replay};
