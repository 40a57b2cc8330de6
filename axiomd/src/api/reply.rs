//! What the API answers with: replies, and the events it publishes for what it did.
use axiom_proto::wire::{AgentInfo, AgentSource, AgentState, Body, Event, Reply};

use crate::agents::{Agent, AgentError, AgentView, Source};

pub(crate) fn error(e: impl std::fmt::Display) -> Reply {
    Reply {
        ok: false,
        error: Some(e.to_string()),
        ..Default::default()
    }
}

pub(crate) fn refusal(e: AgentError) -> Reply {
    Reply {
        code: Some(e.code()),
        ..error(e)
    }
}

/// The `intervention` event of an action a user asked for (no rule, nothing measured).
pub(super) fn asked_for(a: &Agent, action: axiom_proto::wire::Action, uid: u32) -> Event {
    crate::actions::Intervention::by_user(action, uid, String::new()).event(a)
}

pub(super) fn ok_agent(agent: u64) -> Reply {
    Reply {
        ok: true,
        agent: Some(agent),
        ..Default::default()
    }
}

pub(crate) fn agent_info(v: AgentView, pty: bool) -> AgentInfo {
    let a = v.agent;
    let kind = match a.source {
        Source::Cgroup { .. } => AgentSource::Cgroup,
        Source::Process { .. } => AgentSource::Process,
        Source::Restored => AgentSource::Restored,
    };
    let state = if v.processes.is_empty() {
        AgentState::Exited
    } else if v.frozen {
        AgentState::Frozen
    } else {
        AgentState::Running
    };
    let exit = a.exit.unwrap_or_default();
    AgentInfo {
        id: a.id,
        name: a.name,
        owner_uid: a.owner_uid,
        kind,
        cgroup: v.cgroup.map(|p| p.display().to_string()),
        state,
        pids: v.processes,
        leader: a.leader,
        command: a.command,
        workspace: a.workspace,
        profile: a.profile,
        started_ns: a.started_ns,
        exit_code: exit.code,
        exit_signal: exit.signal,
        pty,
        agent_kind: a.kind,
        conversation: a.conversation,
        model: a.model,
    }
}

use crate::agents::notice;

pub(super) fn started(a: &Agent) -> Event {
    notice(
        a,
        Body::AgentStarted {
            name: a.name.clone(),
            command: a.command.clone(),
            workspace: a.workspace.clone(),
            profile: a.profile.clone(),
            terminal: a.terminal.clone(),
        },
    )
}
