//! opencode's hooks for one run: a plugin of the run's own.
//!
//! opencode has no hook commands; it has plugins (JavaScript run in its own process), and it
//! takes configuration for one run from `OPENCODE_CONFIG_CONTENT`, merged over the user's. The
//! run's plugin calls `axiomctl hook` (the same command as the other agents' hooks, from inside
//! the agent, so axiomd knows whose it is) with Claude Code's JSON:
//!
//! - `tool.execute.before` → `PreToolUse`: a refusal is thrown, and opencode gives the model the
//!   error as the tool's result (its `bash`, `write`, `edit`, `apply_patch`);
//! - `tool.execute.after` → `PostToolUse`: messages waiting for the agent are added to the tool's
//!   output, which the model reads next;
//! - `chat.message` → `UserPromptSubmit`: a prompt was sent (its hooks run: `hooks_inactive`
//!   is not reported for an agent that has only talked so far);
//! - the `session.idle` event → `Stop`, with the session's last assistant message: a refused
//!   stop (a false claim, with the kernel's evidence) and messages waiting for the agent are
//!   sent to the session as its next prompt through opencode's own server (the plugin's SDK
//!   client, in process): the strongest channel opencode has, no typing.
//!
//! The plugin is written, as the agent's user, in the run's directory (`agent_kind::run_dir`:
//! read-only to a confined agent; removed after the run). Nothing of the user's is changed. opencode's
//! `--pure` (no external plugins) leaves it out: `hooks_inactive` then says so.
use std::path::{Path, PathBuf};

/// The environment variable opencode reads configuration for one run from.
pub const ENV: &str = "OPENCODE_CONFIG_CONTENT";

/// The plugin's source, calling `hook` (a shell command).
fn source(hook: &str) -> String {
    let hook = serde_json::Value::from(hook).to_string();
    format!(
        r#"// Axiom's hooks for this run of opencode (written by axiomctl run, removed after it).
const HOOK = {hook};
// Through a pipe (Bun.spawnSync would hand stdin over in a memfd: a file write of the tool's
// content that the sensor would judge as the agent's).
async function ask(event) {{
  try {{
    const p = Bun.spawn({{
      cmd: ["/bin/sh", "-c", HOOK],
      stdin: "pipe",
      stdout: "pipe",
      stderr: "ignore",
    }});
    p.stdin.write(JSON.stringify(event));
    await p.stdin.end();
    const out = (await new Response(p.stdout).text()).trim();
    await p.exited;
    return out ? JSON.parse(out) : null;
  }} catch (e) {{
    return null;
  }}
}}
// opencode's SDK client, in either of its two shapes (`{{path, body}}`, or flat).
async function call(f, id, body) {{
  for (const args of [{{ path: {{ id }}, body }}, {{ sessionID: id, ...(body ?? {{}}) }}]) {{
    try {{
      const r = await f(args);
      if (r && !r.error) return r.data ?? r;
    }} catch (e) {{}}
  }}
  return null;
}}
// The text of the session's last assistant message.
async function lastSaid(client, id) {{
  const msgs = (await call((a) => client.session.messages(a), id)) ?? [];
  for (let i = msgs.length - 1; i >= 0; i--) {{
    const m = msgs[i];
    if ((m.info ?? m).role === "assistant")
      return (m.parts ?? []).filter((p) => p.type === "text").map((p) => p.text).join("\n");
  }}
  return "";
}}
export const Axiom = async ({{ directory, client }}) => ({{
  // The turn is over: Axiom judges the agent's last words as a stop (Claude Code's Stop), and
  // a refusal, or messages waiting for it, go to the session as the next prompt through
  // opencode's own server — not typed.
  event: async ({{ event }}) => {{
    if (event?.type !== "session.idle") return;
    const id = event.properties?.sessionID;
    if (!id) return;
    const a = await ask({{ hook_event_name: "Stop", session_id: id, cwd: directory,
      last_assistant_message: await lastSaid(client, id) }});
    if (a?.decision === "block" && a.reason)
      await call((x) => client.session.promptAsync(x), id, {{ parts: [{{ type: "text", text: a.reason }}] }});
  }},
  "chat.message": async (input, output) => {{
    await ask({{ hook_event_name: "UserPromptSubmit", session_id: input?.sessionID, cwd: directory }});
  }},
  "tool.execute.before": async (input, output) => {{
    const a = await ask({{ hook_event_name: "PreToolUse", session_id: input.sessionID, cwd: directory,
      tool_name: input.tool, tool_use_id: input.callID, tool_input: output.args }});
    const reason = a?.hookSpecificOutput?.permissionDecisionReason;
    if (a?.hookSpecificOutput?.permissionDecision === "deny") throw new Error(reason);
  }},
  "tool.execute.after": async (input, output) => {{
    const a = await ask({{ hook_event_name: "PostToolUse", session_id: input.sessionID, cwd: directory,
      tool_name: input.tool, tool_use_id: input.callID }});
    const more = a?.hookSpecificOutput?.additionalContext;
    if (more && output) output.output = (output.output ?? "") + "\n\n" + more;
  }},
}});
"#
    )
}

/// Writes the plugin into the run's directory `dir` (`agent_kind::run_dir`; as the agent's
/// user, before it is confined) and points the agent's configuration at it, over whatever
/// `OPENCODE_CONFIG_CONTENT` already held.
pub fn install(dir: &Path, hook: &str) -> std::io::Result<PathBuf> {
    let file = dir.join("axiom-opencode-plugin.js");
    std::fs::write(&file, source(hook))?;
    let config = with_plugin(std::env::var(ENV).ok().as_deref(), &file);
    // SAFETY: called in the agent's child, single-threaded (just forked); the agent inherits it.
    unsafe { std::env::set_var(ENV, config.to_string()) };
    Ok(file)
}

/// `given` (the configuration content already set, if any) with the plugin at `file` added.
fn with_plugin(given: Option<&str>, file: &Path) -> serde_json::Value {
    let mut v: serde_json::Value = given
        .and_then(|g| serde_json::from_str(g).ok())
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}));
    let url = format!("file://{}", file.display());
    match v["plugin"].as_array_mut() {
        Some(list) => list.push(url.into()),
        None => v["plugin"] = serde_json::json!([url]),
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_is_added_to_what_the_user_set() {
        let f = Path::new("/h/.local/state/axiom/runs/7/axiom-opencode-plugin.js");
        let v = with_plugin(Some(r#"{"plugin":["mine"],"model":"x"}"#), f);
        assert_eq!(v["model"], "x");
        assert_eq!(v["plugin"][0], "mine");
        assert_eq!(
            v["plugin"][1],
            "file:///h/.local/state/axiom/runs/7/axiom-opencode-plugin.js"
        );
        assert_eq!(
            with_plugin(None, f)["plugin"].as_array().map(Vec::len),
            Some(1)
        );
        let s = source("exec 'a' hook");
        assert!(s.contains(r#"const HOOK = "exec 'a' hook";"#), "{s}");
    }
}
