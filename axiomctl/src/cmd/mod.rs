//! One module per command (as bpfman's CLI has): each takes what its command line said and
//! returns the exit code. What several share (the connection, refusals, the event printer and
//! follower) stays in `main.rs`.
pub mod agents;
pub mod events;
pub mod hook;
pub mod query;
pub mod rules;
pub mod run;
pub mod status;
pub mod steer;
pub mod watch;
