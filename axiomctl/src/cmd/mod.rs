//! One module per command (as bpfman's CLI has): each owns its command line's arguments (a
//! clap `Args`) and returns the exit code. What several share (the global flags, the
//! connection, refusals, the event printer and follower) is `client.rs`.
pub mod agents;
pub mod events;
pub mod export;
pub mod hook;
pub mod query;
pub mod rules;
pub mod run;
pub mod status;
pub mod steer;
pub mod top;
pub mod ui;
pub mod watch;
