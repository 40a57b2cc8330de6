//! The agents' hooks (Claude Code's; Codex's in the same JSON format; Gemini CLI's, whose
//! `BeforeTool`, `AfterAgent`, `AfterTool` and `BeforeAgent` are the same four with their own
//! names and tool names): a channel to the model that is stronger than the terminal where it
//! exists. `axiomctl run` installs them for the run only (Claude Code: `--settings`; Codex:
//! `-c hooks.…` with `--dangerously-bypass-hook-trust`; Gemini CLI: system settings of the run's
//! own, `GEMINI_CLI_SYSTEM_SETTINGS_PATH`; never the user's own settings files); each calls
//! `axiomctl hook`, which asks axiomd here, as the agent's own process (the agent is the
//! caller's, by its pid).
//!
//! - `PreToolUse` on Bash: a command an exec rule with action deny, kill or freeze would hit is
//!   refused before it runs, and the model is told why.
//! - `PreToolUse` on Write, Edit, MultiEdit and NotebookEdit: content a file-write rule that
//!   acts on the agent (a TODO left; any rule whose action is not `alert`) would find is
//!   refused before the file holds it, with the rule's message (what an edit only carries over
//!   is not the agent's). Codex's `apply_patch` is read the same way, one write per file its
//!   patch adds to.
//!   The kernel stays the backstop for what no hook sees (a write from inside a Bash command).
//! - `Stop`: the agent may not stop while a claim in its last message (done, tests pass) is
//!   contradicted by what the kernel saw; the model gets the evidence. After three refusals in
//!   a row it may (an agent that cannot do better is not held in a loop).
//! - Messages waiting for the agent to be idle are handed over at the next call (`Stop`: as the
//!   reason to go on; `PostToolUse`, `UserPromptSubmit`: as context).
use std::path::Path;
use std::time::Instant;

use axiom_proto::wire::{Body, Channel, HookMark};
use axiom_rules::{Action, RuleSet, Scope};
use serde_json::{Value, json};

use super::{Actions, Intervention};
use crate::{
    agents::{Agent, notice},
    rules::violation,
};

/// How long a Stop call waits for the message of a claim the screen has just found.
const PARK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Refused stops in a row after which the agent may stop.
const MAX_STOP_REFUSALS: u32 = 3;

/// The prefix of everything axiomd tells the model through a hook.
const FROM: &str = "Axiom (the supervisor of this session)";

impl Actions {
    /// Answers one hook call of `agent`: what `axiomctl hook` prints for Claude Code (`None`:
    /// nothing to say, carry on).
    pub(crate) fn hook(&self, set: &RuleSet, agent: &Agent, input: &Value) -> Option<Value> {
        let event = input.get("hook_event_name")?.as_str()?;
        self.hook_called(agent.id);
        let text = |k: &str| input.get(k).and_then(Value::as_str).unwrap_or("");
        match event {
            // Claude Code's and Codex's answer refusing a tool call.
            "PreToolUse" => self.pre_tool_use(set, agent, input).map(|reason| {
                json!({"hookSpecificOutput": {
                    "hookEventName": "PreToolUse",
                    "permissionDecision": "deny",
                    "permissionDecisionReason": reason,
                }})
            }),
            // Gemini CLI's: the reason is sent to the model as the tool's result.
            "BeforeTool" => self
                .pre_tool_use(set, agent, input)
                .map(|reason| json!({"decision": "deny", "reason": reason})),
            // A refused stop goes on with the reason as the next prompt (Gemini's `AfterAgent`
            // takes the same answer).
            // A subagent's stop is judged as the agent's: its claims against what the kernel saw
            // the agent do.
            "Stop" | "SubagentStop" => self.stop(set, agent, input, text("last_assistant_message")),
            "AfterAgent" => self.stop(set, agent, input, text("prompt_response")),
            "PostToolUse" | "UserPromptSubmit" | "SessionStart" | "AfterTool" | "BeforeAgent" => {
                self.marked(agent, event, input);
                let parked = self.take_parked(agent.id);
                (!parked.is_empty()).then(|| {
                    json!({"hookSpecificOutput": {
                        "hookEventName": event,
                        "additionalContext": format!("{FROM}: {}", parked.join("\n\n")),
                    }})
                })
            }
            _ => None,
        }
    }

    /// Publishes a tool call's end and a session's start as `hook` events (nothing is judged
    /// of them): where a trace's `execute_tool` span ends, and the model the session uses.
    fn marked(&self, agent: &Agent, event: &str, input: &Value) {
        if !matches!(
            HookMark::of(event),
            HookMark::ToolDone | HookMark::SessionStart
        ) {
            return;
        }
        let field = |k: &str| input.get(k).and_then(Value::as_str).map(String::from);
        self.bus.publish(notice(
            agent,
            Body::Hook {
                event: event.to_string(),
                tool: field("tool_name"),
                call: field("tool_use_id"),
                text: String::new(),
                replaced: String::new(),
                path: None,
                refused: None,
                redacted: Vec::new(),
                conversation: field("session_id"),
                model: field("model"),
            },
        ));
    }

    /// Why the tool call in `input` is refused, if it is. Each call is published as a `hook`
    /// event (with the rule that refused it): what the agent meant to do, beside what the
    /// kernel then saw it do.
    fn pre_tool_use(&self, set: &RuleSet, agent: &Agent, input: &Value) -> Option<String> {
        let event = input
            .get("hook_event_name")
            .and_then(Value::as_str)
            .unwrap_or("PreToolUse");
        let id = input
            .get("tool_use_id")
            .and_then(Value::as_str)
            .map(String::from);
        // A tool call may write several files (a Codex patch): the first one refused refuses it.
        let mut reason = None;
        for mut call in ToolCall::of(input) {
            // A whole-file write replaces what the file holds: a TODO it keeps is not new.
            if call.whole
                && let Some(old) = call.path.as_deref().and_then(|p| on_disk(agent, p))
            {
                call.replaced = old;
            }
            let hit = set.refusal(call.scope, &call.text, call.path.as_deref(), &call.replaced);
            let (text, redacted) = masked_with(set, call.text.clone());
            self.bus.publish(notice(
                agent,
                Body::Hook {
                    event: event.to_string(),
                    tool: Some(call.tool.clone()),
                    call: id.clone(),
                    text: capped(text),
                    replaced: capped(masked(set, call.replaced.clone())),
                    path: call.path.clone(),
                    refused: hit.as_ref().map(|h| set.rules[h.rule].id.clone()),
                    redacted,
                    conversation: conversation_of(input),
                    model: None,
                },
            ));
            if let Some(p) = &call.path {
                self.claims
                    .announced(agent.id, p, &call.text, &call.replaced);
            }
            if let Some(h) = hit {
                reason = Some(self.refuse(set, agent, &call, h));
                break;
            }
        }
        reason
    }

    /// Refuses `call` by the rule of `h`: its violation and intervention published, the reason
    /// the model reads returned.
    fn refuse(&self, set: &RuleSet, agent: &Agent, call: &ToolCall, h: axiom_rules::Hit) -> String {
        let r = &set.rules[h.rule];
        let why = match (r.message.is_empty(), r.redact) {
            (false, _) => r.message.clone(),
            // A secret: what to do instead.
            (true, true) => format!(
                "{}. A secret is not written into files; read it at run time from the \
                 environment or a secret store.",
                r.description
            ),
            (true, false) => r.description.clone(),
        };
        let what = match call.scope {
            Scope::Exec => "this command",
            _ => "this write",
        };
        let reason = format!("{FROM} refused {what} before it ran (rule {}): {why}", r.id);
        // The call comes from the agent's hook, not through the sensor: its secrets are masked
        // here before the excerpt leaves axiomd.
        let shown = masked(set, axiom_rules::excerpt(&call.text, &h, r.redact));
        self.bus.publish(violation(
            agent,
            r,
            shown.clone(),
            Some(call.scope),
            call.path.clone(),
            None,
        ));
        let target = call
            .path
            .as_deref()
            .map(|p| format!(" to {p}"))
            .unwrap_or_default();
        self.bus.publish(notice(
            agent,
            by_hook(
                axiom_proto::wire::Action::Deny,
                &r.id,
                format!(
                    "refused before it ran ({} hook, {}{target}): {shown}",
                    hook_of(agent),
                    call.tool
                ),
            ),
        ));
        reason
    }

    /// The answer to the agent's wish to stop (or one of its subagents', by `event`) after
    /// `last`, its final message.
    fn stop(&self, set: &RuleSet, agent: &Agent, input: &Value, last: &str) -> Option<Value> {
        let event = input
            .get("hook_event_name")
            .and_then(Value::as_str)
            .unwrap_or("Stop");
        let refused = self
            .stop_refusals
            .lock()
            .map_or(0, |m| m.get(&agent.id).copied().unwrap_or(0));
        if refused >= MAX_STOP_REFUSALS {
            self.stopped(agent.id);
            return None;
        }
        let mut reasons = self.take_parked(agent.id);
        // The claim comes from the agent's hook: masked before it is judged and reported.
        let (last, redacted) = masked_with(set, last.to_string());
        let last = last.as_str();
        self.bus.publish(notice(
            agent,
            Body::Hook {
                event: event.to_string(),
                tool: None,
                call: None,
                text: capped(last.to_string()),
                replaced: String::new(),
                path: None,
                refused: None,
                redacted,
                conversation: conversation_of(input),
                model: None,
            },
        ));
        let claims = self
            .claims
            .contradicted(set, agent.id, last, Instant::now());
        for c in claims {
            let (f, evidence, fresh) = (c.finding, c.evidence, c.fresh);
            let Some(r) = set.rules.get(f.rule) else {
                continue;
            };
            let with_evidence = format!("{} (Evidence: {evidence}.)", r.message);
            // The screen saw the claim first: its message is parked here, or about to be (the
            // finding is on its way through the actions thread): it gets the evidence.
            if !fresh && !reasons.contains(&r.message) {
                reasons.extend(self.await_parked(agent.id, &r.message));
            }
            if let Some(m) = reasons.iter_mut().find(|m| **m == r.message) {
                *m = with_evidence;
                continue;
            }
            if !fresh {
                continue;
            }
            self.bus
                .publish(violation(agent, r, f.detail.clone(), f.scope, None, None));
            if r.action != Action::Inject {
                continue;
            }
            self.bus.publish(notice(
                agent,
                by_hook(
                    axiom_proto::wire::Action::Inject,
                    &r.id,
                    format!(
                        "stop refused ({} hook, {event}): {with_evidence}",
                        hook_of(agent)
                    ),
                ),
            ));
            reasons.push(with_evidence);
        }
        if reasons.is_empty() {
            self.stopped(agent.id);
            return None;
        }
        if let Ok(mut m) = self.stop_refusals.lock() {
            *m.entry(agent.id).or_default() += 1;
        }
        Some(json!({
            "decision": "block",
            "reason": format!("{FROM}: {}", reasons.join("\n\n")),
        }))
    }

    /// Takes the agent's parked messages once `message` is among them, waiting up to
    /// `PARK_WAIT` for it (a finding made just before the Stop call is parked by the thread
    /// that delivers it a moment later); what it took either way.
    fn await_parked(&self, agent: u64, message: &str) -> Vec<String> {
        let deadline = Instant::now() + PARK_WAIT;
        let mut took = Vec::new();
        let Ok(mut p) = self.pending.lock() else {
            return took;
        };
        loop {
            took.extend(Self::take_from(&mut p, agent));
            let now = Instant::now();
            if took.iter().any(|m| m == message) || now >= deadline {
                break;
            }
            p = match self.parked.wait_timeout(p, deadline - now) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        drop(p);
        if !took.is_empty() {
            self.screens.nudge();
        }
        took
    }

    /// The agent stopped (or may): its refusals start again from none.
    fn stopped(&self, agent: u64) {
        if let Ok(mut m) = self.stop_refusals.lock() {
            m.remove(&agent);
        }
    }
}

/// A tool call a PreToolUse hook may refuse: a Bash command (matched as an exec), or a write
/// tool's content (matched as a file write, with the file it goes to) before the file holds it.
struct ToolCall {
    tool: String,
    scope: Scope,
    /// The command, or what the write puts in the file.
    text: String,
    path: Option<String>,
    /// What an edit replaces: text already there is not the agent's to answer for.
    replaced: String,
    /// It writes the whole file (what it replaces is the file as it is).
    whole: bool,
}

/// The most of a file read for what a whole-file write replaces.
const ON_DISK_MAX: u64 = 1 << 20;

/// What a file holds before a whole-file write replaces it: read through the agent's own root
/// (`/proc/<leader>/root`: its mount namespace's view of the path), only a regular file the
/// agent's owner owns (axiomd reads as root: never a file the agent could not read itself), of
/// at most `ON_DISK_MAX` bytes, not through a symlink at its end.
fn on_disk(agent: &Agent, path: &str) -> Option<String> {
    use std::io::Read as _;
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    if agent.leader == 0 || !path.starts_with('/') {
        return None;
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/{}/root{path}", agent.leader))
        .ok()?;
    let m = f.metadata().ok()?;
    if !m.is_file() || m.uid() != agent.owner_uid || m.len() > ON_DISK_MAX {
        return None;
    }
    let mut s = String::new();
    f.take(ON_DISK_MAX).read_to_string(&mut s).ok()?;
    Some(s)
}

impl ToolCall {
    /// The calls in a hook's input: Claude Code's `Bash {command}`, `Write {file_path,
    /// content}`, `Edit {file_path, old_string, new_string}`, `MultiEdit {file_path, edits:
    /// [{old_string, new_string}]}`, `NotebookEdit {notebook_path, new_source}`; Codex's `Bash
    /// {command}` and `apply_patch {command}` (the patch: one write per file it adds or
    /// updates); Gemini CLI's `run_shell_command {command}`, `write_file {file_path, content}`
    /// and `replace {file_path, old_string, new_string}`; opencode's `bash`, `write`, `edit`
    /// and `apply_patch {patchText}` (its fields in camelCase).
    fn of(input: &Value) -> Vec<ToolCall> {
        let Some(tool) = input.get("tool_name").and_then(Value::as_str) else {
            return Vec::new();
        };
        if tool == "apply_patch" {
            // Codex's patch is its `command`; opencode's, `patchText`.
            // Its paths are relative to the agent's directory, the hook's `cwd`.
            let t = input.get("tool_input");
            let cwd = input.get("cwd").and_then(Value::as_str).map(Path::new);
            let mut calls = t
                .and_then(|t| t.get("command").or_else(|| t.get("patchText")))
                .and_then(Value::as_str)
                .map(patch_writes)
                .unwrap_or_default();
            for c in &mut calls {
                if let (Some(p), Some(cwd)) = (c.path.as_mut(), cwd)
                    && Path::new(p.as_str()).is_relative()
                {
                    *p = cwd.join(&*p).display().to_string();
                }
            }
            return calls;
        }
        ToolCall::one(tool, input).into_iter().collect()
    }

    fn one(tool: &str, input: &Value) -> Option<ToolCall> {
        let tool = tool.to_string();
        let t = input.get("tool_input")?;
        // opencode names the same fields in camelCase.
        let s = |k: &str| {
            t.get(k)
                .or_else(|| t.get(camel(k)))
                .and_then(Value::as_str)
                .map(String::from)
        };
        let (scope, text, path, replaced) = match tool.as_str() {
            "Bash" | "run_shell_command" | "bash" => {
                (Scope::Exec, s("command")?, None, String::new())
            }
            "Write" | "write_file" | "write" => (
                Scope::FileWrite,
                s("content")?,
                s("file_path"),
                String::new(),
            ),
            "Edit" | "replace" | "edit" => (
                Scope::FileWrite,
                s("new_string")?,
                s("file_path"),
                s("old_string").unwrap_or_default(),
            ),
            "MultiEdit" => {
                let edits = t.get("edits")?.as_array()?;
                let field = |k: &str| {
                    edits
                        .iter()
                        .filter_map(|e| e.get(k).and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                (
                    Scope::FileWrite,
                    field("new_string"),
                    s("file_path"),
                    field("old_string"),
                )
            }
            "NotebookEdit" => (
                Scope::FileWrite,
                s("new_source")?,
                s("notebook_path"),
                String::new(),
            ),
            _ => return None,
        };
        let whole = matches!(tool.as_str(), "Write" | "write_file" | "write");
        Some(ToolCall {
            tool,
            scope,
            text,
            path,
            replaced,
            whole,
        })
    }

    #[cfg(test)]
    fn is_new(&self, matched: &str) -> bool {
        axiom_rules::added(&self.text, &self.replaced, matched)
    }
}

/// `file_path` as opencode spells it, `filePath`.
fn camel(k: &str) -> String {
    let mut out = String::with_capacity(k.len());
    let mut up = false;
    for c in k.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The writes of a Codex patch (`*** Begin Patch`, `*** Add File: p` / `*** Update File: p`
/// sections whose `+` lines are added and `-` lines removed, `*** Delete File: p`): one per file
/// it adds to, with what it adds as the text and what it removes as what it replaces.
fn patch_writes(patch: &str) -> Vec<ToolCall> {
    let mut out: Vec<ToolCall> = Vec::new();
    for line in patch.lines() {
        let file = line
            .strip_prefix("*** Add File: ")
            .or_else(|| line.strip_prefix("*** Update File: "));
        if let Some(path) = file {
            out.push(ToolCall {
                tool: "apply_patch".into(),
                scope: Scope::FileWrite,
                text: String::new(),
                path: Some(path.trim().to_string()),
                replaced: String::new(),
                whole: false,
            });
            continue;
        }
        if line.starts_with("*** ") {
            continue;
        }
        let Some(cur) = out.last_mut() else { continue };
        if let Some(added) = line.strip_prefix('+') {
            cur.text.push_str(added);
            cur.text.push('\n');
        } else if let Some(removed) = line.strip_prefix('-') {
            cur.replaced.push_str(removed);
            cur.replaced.push('\n');
        }
    }
    out.retain(|c| !c.text.is_empty());
    out
}

/// `text` with every secret a rule knows masked (what the sensor does to captured bytes).
fn masked(set: &RuleSet, text: String) -> String {
    masked_with(set, text).0
}

/// `text` masked, and the rules whose matches were.
fn masked_with(set: &RuleSet, text: String) -> (String, Vec<String>) {
    set.redact(None, &text).unwrap_or((text, Vec::new()))
}

/// At most `HOOK_TEXT_MAX` bytes of `text`, cut at a character.
/// The agent's id for its conversation, as every hook input names it.
fn conversation_of(input: &Value) -> Option<String> {
    input
        .get("session_id")
        .and_then(Value::as_str)
        .map(String::from)
}

fn capped(mut text: String) -> String {
    text.truncate(text.floor_char_boundary(axiom_proto::wire::HOOK_TEXT_MAX));
    text
}

/// Whose hook the agent called, for the intervention's detail.
fn hook_of(agent: &Agent) -> &'static str {
    match agent.kind.as_deref() {
        Some("codex") => "Codex",
        Some("claude") => "Claude Code",
        Some("gemini") => "Gemini CLI",
        Some("opencode") => "opencode",
        _ => "the agent's",
    }
}

/// An intervention made through the agent's own hook: delivered as the hook's answer.
fn by_hook(action: axiom_proto::wire::Action, rule: &str, what: String) -> Body {
    Intervention::by_rule(action, rule, &what)
        .channel(Channel::Hook)
        .delivered(Some(true))
        .body()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_tools_carry_their_content_and_an_edit_answers_only_for_what_it_adds() {
        let call = |tool: &str, input: Value| {
            let mut c = ToolCall::of(&json!({"tool_name": tool, "tool_input": input}));
            assert_eq!(c.len(), 1, "{tool}");
            c.remove(0)
        };
        let w = call(
            "Write",
            json!({"file_path": "/w/a.py", "content": "# TODO: x\n"}),
        );
        assert_eq!(
            (w.scope, w.path.as_deref()),
            (Scope::FileWrite, Some("/w/a.py"))
        );
        assert!(w.is_new("TODO"));
        let e = call(
            "Edit",
            json!({"file_path": "/w/b.py", "old_string": "# TODO: x\ny = 1", "new_string": "# TODO: x\ny = 2"}),
        );
        assert!(!e.is_new("TODO"), "a TODO carried over as context");
        let m = call(
            "MultiEdit",
            json!({"file_path": "/w/c.py", "edits": [{"old_string": "a", "new_string": "b # TODO"}]}),
        );
        assert!(m.is_new("TODO") && m.text.contains("b # TODO"));
        let n = call(
            "NotebookEdit",
            json!({"notebook_path": "/w/n.ipynb", "new_source": "x"}),
        );
        assert_eq!(n.path.as_deref(), Some("/w/n.ipynb"));
        assert_eq!(call("Bash", json!({"command": "ls"})).scope, Scope::Exec);
        assert!(ToolCall::of(&json!({"tool_name": "Read", "tool_input": {}})).is_empty());
        // Gemini CLI's names for the same tools.
        assert_eq!(
            call("run_shell_command", json!({"command": "ls"})).scope,
            Scope::Exec
        );
        let g = call(
            "write_file",
            json!({"file_path": "/w/g.py", "content": "# TODO\n"}),
        );
        assert_eq!(g.path.as_deref(), Some("/w/g.py"));
        let o = call(
            "write",
            json!({"filePath": "/w/o.py", "content": "# TODO\n"}),
        );
        assert_eq!(o.path.as_deref(), Some("/w/o.py"));
        assert_eq!(call("bash", json!({"command": "ls"})).scope, Scope::Exec);
        let r = call(
            "replace",
            json!({"file_path": "/w/g.py", "old_string": "# TODO", "new_string": "# TODO\nx"}),
        );
        assert!(!r.is_new("TODO"));
    }

    #[test]
    fn a_codex_patch_is_one_write_per_file_it_adds_to() {
        let patch = "*** Begin Patch\n*** Update File: /w/a.py\n@@ def f():\n-    # TODO: x\n+    # TODO: x\n+    return 1\n*** Add File: /w/new.py\n+# TODO: later\n*** Delete File: /w/old.py\n*** End Patch";
        let calls =
            ToolCall::of(&json!({"tool_name": "apply_patch", "tool_input": {"command": patch}}));
        let paths: Vec<_> = calls.iter().map(|c| c.path.as_deref()).collect();
        assert_eq!(paths, [Some("/w/a.py"), Some("/w/new.py")]);
        assert!(calls.iter().all(|c| c.scope == Scope::FileWrite));
        // The update keeps a TODO that was there: not its own. The new file's is.
        assert!(!calls[0].is_new("TODO"));
        assert!(calls[1].is_new("TODO"));
        // Codex names paths relative to its directory, the hook's `cwd`.
        let rel = "*** Begin Patch\n*** Add File: src/a.py\n+x\n*** End Patch\n";
        let calls = ToolCall::of(
            &json!({"tool_name": "apply_patch", "cwd": "/w", "tool_input": {"command": rel}}),
        );
        assert_eq!(calls[0].path.as_deref(), Some("/w/src/a.py"));
    }
}
