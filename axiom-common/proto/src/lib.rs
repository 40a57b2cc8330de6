//! What only userspace shares, between axiomd, axiomctl, the D-Bus and MCP front ends and the
//! tests: the socket protocol (`wire`), a launch's confinement as axiomd resolves it
//! (`confine`), the agent profiles and CLI names (`agent_profile`, `agent_cli`), and the host
//! facts and start-up checks read one way (`host`, `preflight`). The kernel's record layouts are
//! in `axiom-common`, which the eBPF programs build `no_std`.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod agent_cli;
pub mod agent_profile;
pub mod confine;
pub mod file_error;
pub mod host;
pub mod preflight;
pub mod wire;
