//! `[api]`: the control socket, the replay, the admin group and the bounds on clients.
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ApiConfig {
    /// Control socket (JSON lines; used by axiomctl).
    pub(crate) socket: PathBuf,
    /// Recent events kept in memory for clients that ask for a replay.
    pub(crate) replay_events: usize,
    /// Members of this group may watch and steer every agent, like root.
    pub(crate) admin_group: String,
    /// Open clients (socket connections and D-Bus event streams) at once, all users together.
    pub(crate) max_clients: usize,
    /// Open clients per user (root and the admin group count only toward `max_clients`).
    pub(crate) max_clients_per_user: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            socket: axiom_proto::wire::DEFAULT_SOCKET.into(),
            replay_events: 65_536,
            admin_group: "axiom".into(),
            max_clients: 512,
            max_clients_per_user: 32,
        }
    }
}
