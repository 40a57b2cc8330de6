//! Open clients (socket connections, event streams), bounded per user and in all.
use std::sync::{Arc, Mutex};

use axiom_proto::wire::{ErrorCode, Reply};

use super::error;
use crate::authz::Caller;

/// Open clients (socket connections, event streams), counted per uid: bounded so that one
/// user cannot use up axiomd's descriptors and tasks for everyone.
pub(crate) struct Clients {
    open: Mutex<std::collections::HashMap<u32, usize>>,
    max: usize,
    per_user: usize,
}

/// A client refused for the bounds (`too_many_clients`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct TooManyClients(String);

impl TooManyClients {
    pub(crate) fn reply(&self) -> Reply {
        Reply {
            code: Some(ErrorCode::TooManyClients),
            ..error(self)
        }
    }
}

/// One open client; its place is given back when it drops.
pub(crate) struct ClientSlot {
    clients: Arc<Clients>,
    uid: u32,
}

impl Clients {
    /// The bounds, for `status`.
    pub(crate) fn bounds(&self) -> [(String, u64); 2] {
        [
            ("clients".to_string(), self.max as u64),
            ("clients_per_user".to_string(), self.per_user as u64),
        ]
    }

    pub(crate) fn new(max: usize, per_user: usize) -> Arc<Clients> {
        Arc::new(Clients {
            open: Mutex::new(Default::default()),
            max: max.max(1),
            per_user: per_user.max(1),
        })
    }

    /// A place for `caller`'s new client, or why not.
    pub(crate) fn admit(self: &Arc<Self>, caller: Caller) -> Result<ClientSlot, TooManyClients> {
        let refuse = TooManyClients;
        let mut open = self
            .open
            .lock()
            .map_err(|_| refuse("client table poisoned".into()))?;
        let total: usize = open.values().sum();
        if total >= self.max {
            return Err(refuse(format!(
                "axiomd serves {total} clients already (api.max_clients)"
            )));
        }
        let mine = open.entry(caller.uid).or_default();
        if !caller.admin && *mine >= self.per_user {
            return Err(refuse(format!(
                "uid {} has {mine} clients open already (api.max_clients_per_user)",
                caller.uid
            )));
        }
        *mine += 1;
        Ok(ClientSlot {
            clients: self.clone(),
            uid: caller.uid,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.clients.open.lock()
            && let Some(n) = open.get_mut(&self.uid)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.uid);
            }
        }
    }
}
