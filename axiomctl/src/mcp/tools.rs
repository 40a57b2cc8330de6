//! The tools a model calls: spawn, observe, status, intervene, principles, verify. Arguments
//! that cannot be right (an unknown agent, an empty command, an unknown kind) are JSON-RPC
//! invalid-params errors with the reason; what axiomd refuses (another user's agent, no
//! terminal to type into) is a tool result marked as an error, which the model reads.
use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    time::Duration,
};

use axiom_proto::wire::{AgentInfo, Body, Event};
use rmcp::{
    ErrorData as McpError,
    handler::server::wrapper::Parameters,
    model::CallToolResult,
    schemars::{self, JsonSchema},
    tool, tool_router,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Server, daemon, spawn::Spec, verify};

/// Agents one `spawn` may start.
const SPAWN_MAX: usize = 64;
const OBSERVE_DEFAULT: usize = 100;
const OBSERVE_MAX: usize = 1000;
const WAIT_MAX: Duration = Duration::from_secs(30);
/// The event kinds `observe` can filter on: all but the kernel's internal matches (they reach
/// clients as violations).
fn kinds() -> impl Iterator<Item = &'static str> {
    axiom_proto::wire::Kind::ALL
        .into_iter()
        .filter(|k| *k != axiom_proto::wire::Kind::KernelMatch)
        .map(|k| k.name())
}

#[derive(Deserialize, JsonSchema)]
pub struct SpawnParams {
    /// The agents to start; they start in parallel.
    pub agents: Vec<Spec>,
}

#[derive(Deserialize, JsonSchema)]
pub struct ObserveParams {
    /// One agent's events; all agents you may see when absent.
    pub agent: Option<u64>,
    /// Continue after an earlier page: its `next_cursor`. Absent: from the oldest event kept.
    pub cursor: Option<u64>,
    /// Events per page (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Only these kinds: fork, exec, exit, output, file, connect, agent_started,
    /// agent_exited, intervention, violation, denied.
    pub kinds: Option<Vec<String>>,
    /// When nothing new is there yet, wait up to this long (ms, at most 30000) for it.
    pub wait_ms: Option<u64>,
    /// Also return the agents and their processes as a tree.
    pub tree: Option<bool>,
}

#[derive(Deserialize, JsonSchema)]
pub struct StatusParams {
    /// One agent; all agents you may see when absent.
    pub agent: Option<u64>,
}

#[derive(Deserialize, JsonSchema, Clone, Copy, PartialEq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Tell the agent `message`: typed into its terminal the way its kind reads input
    /// (interrupting it) and confirmed on its screen (`delivered`).
    Inject,
    /// Freeze every process of the agent (cgroup.freeze).
    Freeze,
    /// Thaw a frozen agent.
    Thaw,
    /// Ask it to end: SIGTERM to each of its processes.
    Stop,
    /// Kill its whole process tree (cgroup.kill).
    Kill,
}

impl Action {
    /// The intervention it asks for, as axiomd reports it.
    fn wire(self) -> axiom_proto::wire::Action {
        use axiom_proto::wire::Action as W;
        match self {
            Action::Inject => W::Inject,
            Action::Freeze => W::Freeze,
            Action::Thaw => W::Thaw,
            Action::Stop => W::Stop,
            Action::Kill => W::Kill,
        }
    }
}

#[derive(Deserialize, JsonSchema)]
pub struct InterveneParams {
    pub agent: u64,
    pub action: Action,
    /// What to tell the agent (inject only).
    pub message: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
pub struct PrinciplesParams {
    /// Text or code to check against the principles, offline. Absent: list the active ones.
    pub text: Option<String>,
    /// What the text is: terminal (what an agent says on its screen; the default), output (raw
    /// bytes it writes to terminals, pipes, sockets), network (what it sends over sockets),
    /// file_write (code it writes), exec (a command line), file (a path), connect (address:port).
    pub scope: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
pub struct VerifyParams {
    pub agent: u64,
    /// What the agent claims to have done. Absent: the claims found in its own output.
    pub claims: Option<String>,
}

fn invalid(msg: impl Into<String>) -> McpError {
    McpError::invalid_params(msg.into(), None)
}

fn refused(what: &str, e: &zbus::Error) -> CallToolResult {
    CallToolResult::structured_error(json!({ "error": format!("{what}: {}", daemon::reason(e)) }))
}

fn unreachable_daemon(e: &zbus::Error) -> McpError {
    McpError::internal_error(format!("axiomd over D-Bus: {}", daemon::reason(e)), None)
}

/// An event as the model reads it: without the daemon's bookkeeping.
fn shown(e: &Event) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("cgroup_id");
        o.remove("uid");
        if o.get("truncated") == Some(&Value::Bool(false)) {
            o.remove("truncated");
        }
    }
    v
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A process of an agent, from /proc (its parent, its command line).
fn proc_info(pid: u32) -> Option<(u32, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let ppid = after.split(' ').nth(1)?.parse().ok()?;
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            let open = stat.find('(').unwrap_or(0) + 1;
            let close = stat.rfind(')').unwrap_or(open);
            format!("[{}]", stat.get(open..close).unwrap_or(""))
        });
    Some((ppid, cmd))
}

/// An agent and its processes, nested by parent.
fn tree(a: &AgentInfo) -> Value {
    let procs: HashMap<u32, (u32, String)> = a
        .pids
        .iter()
        .filter_map(|p| proc_info(*p).map(|i| (*p, i)))
        .collect();
    fn node(pid: u32, procs: &HashMap<u32, (u32, String)>) -> Value {
        let mut kids: Vec<u32> = procs
            .iter()
            .filter(|(_, (pp, _))| *pp == pid)
            .map(|(p, _)| *p)
            .collect();
        kids.sort_unstable();
        json!({
            "pid": pid,
            "command": procs.get(&pid).map(|p| p.1.as_str()).unwrap_or(""),
            "children": kids.into_iter().map(|k| node(k, procs)).collect::<Vec<_>>(),
        })
    }
    let mut roots: Vec<u32> = procs
        .iter()
        .filter(|(_, (pp, _))| !procs.contains_key(pp))
        .map(|(p, _)| *p)
        .collect();
    roots.sort_unstable();
    json!({
        "agent": a.id,
        "name": a.name,
        "state": a.state,
        "processes": roots.into_iter().map(|r| node(r, &procs)).collect::<Vec<_>>(),
    })
}

#[tool_router(vis = "pub(super)")]
impl Server {
    #[tool(
        description = "Start one or several agents in parallel, each in a cgroup of its own, watched by axiomd from the kernel and confined by its profile (Landlock, limits) before its first instruction. Agents run as your user. Returns each agent's id (use it with observe, status, intervene, verify) and its root pid; an agent that could not start has an error instead. Its terminal output is the resource axiom://agents/{id}/transcript."
    )]
    async fn spawn(
        &self,
        Parameters(p): Parameters<SpawnParams>,
    ) -> Result<CallToolResult, McpError> {
        if p.agents.is_empty() {
            return Err(invalid(
                "agents is empty: give at least one {\"command\": [program, args...]}",
            ));
        }
        if p.agents.len() > SPAWN_MAX {
            return Err(invalid(format!(
                "{} agents asked for; at most {SPAWN_MAX} per call",
                p.agents.len()
            )));
        }
        let specs = p.agents;
        // Nothing starts when one of them cannot.
        for (i, s) in specs.iter().enumerate() {
            super::spawn::Launcher::resolve(s).map_err(|e| invalid(format!("agents[{i}]: {e}")))?;
        }
        let mut set = tokio::task::JoinSet::new();
        for (i, s) in specs.into_iter().enumerate() {
            let st = self.st.clone();
            set.spawn(async move { (i, st.launcher.spawn(s).await) });
        }
        let mut out: BTreeMap<usize, Value> = BTreeMap::new();
        while let Some(r) = set.join_next().await {
            let (i, r) = r.map_err(|e| McpError::internal_error(e.to_string(), None))?;
            out.insert(
                i,
                match r {
                    Ok(s) => serde_json::to_value(s).unwrap_or(Value::Null),
                    Err(e) => json!({ "error": e }),
                },
            );
        }
        let all_failed = out.values().all(|v| v.get("error").is_some());
        let body = json!({ "agents": out.into_values().collect::<Vec<_>>() });
        Ok(if all_failed {
            CallToolResult::structured_error(body)
        } else {
            CallToolResult::structured(body)
        })
    }

    #[tool(
        description = "What agents did, as the kernel saw it: the commands they ran (exec, exit codes), what they wrote (output with its text, files), files they created/renamed/deleted, connections, violations of the principles, interventions and denials, oldest first. Page with `cursor` (pass back `next_cursor`); `wait_ms` waits for new events; `tree` adds each agent's process tree."
    )]
    async fn observe(
        &self,
        Parameters(p): Parameters<ObserveParams>,
    ) -> Result<CallToolResult, McpError> {
        let kinds = p.kinds.unwrap_or_default();
        if let Some(k) = kinds
            .iter()
            .find(|k| !self::kinds().any(|x| x == k.as_str()))
        {
            return Err(invalid(format!(
                "unknown kind {k:?}; kinds are {}",
                self::kinds().collect::<Vec<_>>().join(", ")
            )));
        }
        let limit = p
            .limit
            .map_or(OBSERVE_DEFAULT, |l| l as usize)
            .clamp(1, OBSERVE_MAX);
        let agents = self.visible_agents(p.agent).await?;
        let cursor = p.cursor.unwrap_or(0);
        let wait = Duration::from_millis(p.wait_ms.unwrap_or(0)).min(WAIT_MAX);
        let deadline = tokio::time::Instant::now() + wait;
        let mut seen = self.st.journal.watch();
        let page = loop {
            seen.borrow_and_update();
            let page = self.st.journal.page(p.agent, &kinds, cursor, limit);
            if !page.events.is_empty() || tokio::time::Instant::now() >= deadline {
                break page;
            }
            if tokio::time::timeout_at(deadline, seen.changed())
                .await
                .is_err()
            {
                break self.st.journal.page(p.agent, &kinds, cursor, limit);
            }
        };
        let mut body = json!({
            "events": page.events.iter().map(|e| shown(e)).collect::<Vec<_>>(),
            "next_cursor": page.next,
        });
        if page.skipped > 0 {
            body["skipped"] = json!(page.skipped);
            body["note"] = json!(
                "events before the oldest kept are gone from memory; `axiomctl query` reads them from the store"
            );
        }
        if !self.st.journal.connected() {
            body["warning"] = json!("not receiving events from axiomd right now (reconnecting)");
        }
        if p.tree == Some(true) {
            body["tree"] = Value::Array(agents.iter().map(tree).collect());
        }
        Ok(CallToolResult::structured(body))
    }

    #[tool(
        description = "Each agent's state (running, frozen, exited), runtime, exit code, the files it created, modified and deleted, how many commands it ran (the last ones with exit codes), its violations of the principles and the interventions on it."
    )]
    async fn status(
        &self,
        Parameters(p): Parameters<StatusParams>,
    ) -> Result<CallToolResult, McpError> {
        let agents = self.visible_agents(p.agent).await?;
        let now = now_ns();
        let list: Vec<Value> = agents
            .iter()
            .map(|a| {
                let baseline = self.st.launcher.baseline(a.id);
                self.st.journal.with_facts(a.id, |f| {
                    let files = verify::files(f, baseline.as_deref());
                    let of = |c: &str| -> Vec<&str> {
                        files
                            .iter()
                            .filter(|x| x.change == c)
                            .map(|x| x.path.as_str())
                            .collect()
                    };
                    let end = f.ended_ns.filter(|_| a.state == "exited").unwrap_or(now);
                    let failed = f.commands.iter().filter(|c| c.failed()).count();
                    let (code, signal) = f.exit_of(a);
                    json!({
                        "agent": a.id,
                        "name": a.name,
                        "state": a.state,
                        "owner_uid": a.owner_uid,
                        "pid": a.leader,
                        "command": a.command,
                        "workspace": a.workspace,
                        "profile": a.profile,
                        "runtime_s": (end.saturating_sub(a.started_ns)) as f64 / 1e9,
                        "exit_code": code,
                        "exit_signal": signal,
                        "processes": a.pids.len(),
                        "files_created": of("created"),
                        "files_modified": of("modified"),
                        "files_written": of("written"),
                        "files_deleted": of("deleted"),
                        "commands_run": f.commands.len() as u64 + f.commands_dropped,
                        "commands_failed": failed,
                        "last_commands": f.commands.iter().rev().take(10).rev().collect::<Vec<_>>(),
                        "output_bytes": f.output_bytes,
                        "violations": f.violations,
                        "interventions": f.interventions,
                        "denied": f.denied,
                    })
                })
            })
            .collect();
        Ok(CallToolResult::structured(json!({ "agents": list })))
    }

    #[tool(
        description = "Steer an agent: inject (type a message into its terminal, as its user would), freeze, thaw, stop (SIGTERM) or kill (its whole process tree). You may steer only your own agents."
    )]
    async fn intervene(
        &self,
        Parameters(p): Parameters<InterveneParams>,
    ) -> Result<CallToolResult, McpError> {
        let message = match (p.action, &p.message) {
            (Action::Inject, None) => {
                return Err(invalid("inject needs a message"));
            }
            (Action::Inject, Some(m)) if m.is_empty() => {
                return Err(invalid("inject needs a message"));
            }
            (Action::Inject, Some(m)) => Some(m.clone()),
            (_, Some(_)) => {
                return Err(invalid(format!(
                    "a message goes with inject only, not {:?}",
                    p.action
                )));
            }
            (_, None) => None,
        };
        self.visible_agents(Some(p.agent)).await?;
        let d = &self.st.daemon;
        let r = match p.action {
            Action::Inject => d
                .inject(p.agent, message.as_deref().unwrap_or(""))
                .await
                .map(Some),
            Action::Freeze => d.freeze(p.agent).await.map(|()| None),
            Action::Thaw => d.thaw(p.agent).await.map(|()| None),
            Action::Stop => d.stop(p.agent).await.map(|()| None),
            Action::Kill => d.kill(p.agent).await.map(|()| None),
        };
        let action = p.action.wire().name();
        Ok(match r {
            Ok(None) => CallToolResult::structured(json!({ "agent": p.agent, "done": action })),
            Ok(Some(delivered)) => CallToolResult::structured(
                json!({ "agent": p.agent, "done": action, "delivered": delivered }),
            ),
            Err(e) => refused(action, &e),
        })
    }

    #[tool(
        description = "The principles axiomd holds agents to (its active rules: id, description, kind, scope, severity, action), or, given `text`, check that text or code against them offline: which rules it breaks, with the excerpt and what the rule would do."
    )]
    async fn principles(
        &self,
        Parameters(p): Parameters<PrinciplesParams>,
    ) -> Result<CallToolResult, McpError> {
        let Some(text) = p.text else {
            let rules = self
                .st
                .daemon
                .rules()
                .await
                .map_err(|e| unreachable_daemon(&e))?;
            let rules: Value = serde_json::from_str(&rules)
                .map_err(|e| McpError::internal_error(e.to_string(), None))?;
            return Ok(CallToolResult::structured(json!({ "principles": rules })));
        };
        let scope_name = p.scope.unwrap_or_else(|| "terminal".into());
        let scope = axiom_rules::Scope::parse(&scope_name).map_err(invalid)?;
        let files = self.rule_files().await?;
        let set = tokio::task::spawn_blocking(move || axiom_rules::RuleSet::load(&files))
            .await
            .map_err(|e| McpError::internal_error(e.to_string(), None))?
            .map_err(|e| McpError::internal_error(format!("rule files: {e}"), None))?;
        let (text, hits) = axiom_rules::scan_sample(&set, scope, &text);
        let hits: Vec<Value> = hits
            .iter()
            .map(|h| {
                let r = &set.rules[h.rule];
                let kind = match r.kind {
                    axiom_rules::Kind::Claim(_) => "claim",
                    axiom_rules::Kind::Plugin => "plugin",
                    _ => "match",
                };
                json!({
                    "rule": r.id,
                    "description": r.description,
                    "kind": kind,
                    "severity": r.severity,
                    "action": r.action.name(),
                    "message": (!r.message.is_empty()).then_some(&r.message),
                    "excerpt": axiom_rules::excerpt(&text, h, r.redact),
                    "note": match kind {
                        "claim" => Some("a claim: a violation only if the kernel's record contradicts it (see verify)"),
                        "plugin" => Some("a plugin rule's literal prefilter matched; its plugin decides while an agent runs"),
                        _ => None,
                    },
                })
            })
            .collect();
        Ok(CallToolResult::structured(json!({
            "scope": scope_name,
            "clean": hits.is_empty(),
            "matches": hits,
            "rules_checked": set.rules.len(),
        })))
    }

    #[tool(
        description = "What the kernel saw an agent do — the files it created, modified and deleted, every command it ran with its exit code, the test runs — set against what it claimed: each claim (given in `claims`, or else found in the agent's own output) comes back supported, contradicted or unverified, with the evidence."
    )]
    async fn verify(
        &self,
        Parameters(p): Parameters<VerifyParams>,
    ) -> Result<CallToolResult, McpError> {
        let agents = self.visible_agents(Some(p.agent)).await?;
        let a = agents.first().ok_or_else(|| invalid("no such agent"))?;
        let baseline = self.st.launcher.baseline(p.agent);
        let transcript = match &p.claims {
            Some(_) => None,
            None => self.st.journal.transcript(p.agent),
        };
        let body = self.st.journal.with_facts(p.agent, |f| {
            let files = verify::files(f, baseline.as_deref());
            let (code, signal) = f.exit_of(a);
            let claims: Vec<String> = match &p.claims {
                Some(c) => {
                    let found = verify::claims_in(c);
                    if found.is_empty() {
                        vec![c.trim().to_string()]
                    } else {
                        found
                    }
                }
                None => verify::claims_in(transcript.as_deref().unwrap_or("")),
            };
            let checks: Vec<verify::ClaimCheck> =
                claims.iter().map(|c| verify::check(c, f, &files)).collect();
            let tests: Vec<_> = f
                .commands
                .iter()
                .filter(|c| axiom_rules::is_test_command(&c.argv.join(" ")))
                .collect();
            let count = |v: &str| checks.iter().filter(|c| c.verdict == v).count();
            json!({
                "agent": a.id,
                "state": a.state,
                "exit_code": code,
                "exit_signal": signal,
                "files": files,
                "commands": f.commands,
                "tests": tests,
                "claims": checks,
                "summary": {
                    "files_changed": files.iter().filter(|x| x.change != "opened").count(),
                    "commands": f.commands.len() as u64 + f.commands_dropped,
                    "commands_failed": f.commands.iter().filter(|c| c.failed()).count(),
                    "claims_supported": count("supported"),
                    "claims_contradicted": count("contradicted"),
                    "claims_unverified": count("unverified"),
                },
            })
        });
        Ok(CallToolResult::structured(body))
    }
}

impl Server {
    /// The agents the caller may see (one, when `agent` is given: invalid params if it is not
    /// one of them).
    async fn visible_agents(&self, agent: Option<u64>) -> Result<Vec<AgentInfo>, McpError> {
        let all = daemon::agents(&self.st.daemon)
            .await
            .map_err(|e| unreachable_daemon(&e))?;
        match agent {
            None => Ok(all),
            Some(id) => {
                let one: Vec<AgentInfo> = all.into_iter().filter(|a| a.id == id).collect();
                if one.is_empty() {
                    Err(invalid(format!(
                        "no agent {id} among the agents you may see (status lists them)"
                    )))
                } else {
                    Ok(one)
                }
            }
        }
    }

    /// The rule files to check text against: those given to `axiomctl mcp --rules`, or else the
    /// files axiomd's active rules came from.
    async fn rule_files(&self) -> Result<Vec<PathBuf>, McpError> {
        if !self.st.rule_files.is_empty() {
            return Ok(self.st.rule_files.clone());
        }
        let rules = self
            .st
            .daemon
            .rules()
            .await
            .map_err(|e| unreachable_daemon(&e))?;
        let rules: Vec<axiom_proto::wire::RuleInfo> = serde_json::from_str(&rules)
            .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        let mut files: Vec<PathBuf> = rules
            .iter()
            .filter_map(|r| r.origin.rsplit_once(':').map(|(f, _)| PathBuf::from(f)))
            .collect();
        files.sort();
        files.dedup();
        if files.is_empty() {
            return Err(McpError::internal_error(
                "axiomd runs no rules, and no --rules were given",
                None,
            ));
        }
        Ok(files)
    }
}

/// The body of a notice, as a notification's data.
#[allow(deprecated)] // LoggingLevel: logging is what clients before 2026-07-28 read
pub fn notice_data(e: &Event) -> Option<(rmcp::model::LoggingLevel, Value)> {
    use rmcp::model::LoggingLevel as L;
    Some(match &e.body {
        Body::AgentExited { code, signal } => (
            L::Info,
            json!({"event": "agent_exited", "agent": e.agent, "code": code, "signal": signal}),
        ),
        Body::Violation {
            rule,
            severity,
            action,
            detail,
            path,
            ..
        } => (
            L::Warning,
            json!({"event": "violation", "agent": e.agent, "rule": rule, "severity": severity, "action": action, "detail": detail, "path": path}),
        ),
        Body::Intervention {
            action,
            detail,
            rule,
            ..
        } => (
            L::Notice,
            json!({"event": "intervention", "agent": e.agent, "action": action, "detail": detail, "rule": rule}),
        ),
        Body::AgentStarted { name, command, .. } => (
            L::Info,
            json!({"event": "agent_started", "agent": e.agent, "name": name, "command": command, "pid": e.tgid}),
        ),
        Body::Denied { op, target, by, .. } => (
            L::Warning,
            json!({"event": "denied", "agent": e.agent, "op": op, "target": target, "by": by}),
        ),
        _ => return None,
    })
}
