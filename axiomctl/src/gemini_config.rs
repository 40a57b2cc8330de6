//! Gemini CLI's hooks for one run, without editing the user's files.
//!
//! Gemini CLI takes hooks only from settings files: the user's (`~/.gemini/settings.json`), the
//! project's (run only once trusted) and the system's. It has no option that adds settings for
//! one run, and it skips a system settings file (`GEMINI_CLI_SYSTEM_SETTINGS_PATH`) unless root
//! owns it and every directory above it, which a user's launcher cannot make and which inside
//! the agent's user namespace (where root is unmapped) is never so. So the run shows the agent
//! its user settings with Axiom's hooks added: the launcher writes that copy, as the agent's
//! user, in the run's directory (`agent_kind::run_dir`), and binds it read-only over
//! `~/.gemini/settings.json` in the agent's own mount namespace (a profile that confines the
//! filesystem has one). The file on disk is not changed; the agent can read its hooks, not change
//! them (the copy is in the home, which the profile leaves read-only); the copy is removed
//! after the run. Under `full` there is no namespace: Gemini CLI runs without Axiom's hooks.
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The tools whose calls Axiom answers before they run: the shell, and the two write tools
/// (their content is in the call).
const BEFORE_TOOL: &str = "^(run_shell_command|write_file|replace)$";

/// Gemini CLI's user settings as one run sees them.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// The user's settings with Axiom's hooks.
    settings: Value,
    /// `~/.gemini/settings.json`: what the copy is shown in place of.
    pub target: PathBuf,
}

/// The hook definitions of one run, each calling `hook`: `BeforeTool` (refuse a command or a
/// write), `AfterAgent` (refuse a stop on a false claim; Gemini's Stop), `AfterTool` and
/// `BeforeAgent` (hand over waiting messages as context).
fn hooks(hook: &str) -> Value {
    let call = |matcher: &str| {
        json!([{"matcher": matcher, "hooks": [
            {"name": "axiom", "type": "command", "command": hook, "timeout": 30_000}
        ]}])
    };
    json!({
        "BeforeTool": call(BEFORE_TOOL),
        "AfterTool": call("*"),
        "BeforeAgent": call("*"),
        "AfterAgent": call("*"),
    })
}

/// `user` (the user's settings) with Axiom's hooks after the user's own, and hooks switched on
/// (hooks the user disabled by name stay disabled).
fn merged(mut user: Value, hook: &str) -> Value {
    if !user.is_object() {
        user = json!({});
    }
    let theirs = user
        .get_mut("hooks")
        .filter(|h| h.is_object())
        .map(Value::take)
        .unwrap_or_else(|| json!({}));
    let mut all = theirs;
    if let (Some(all), Value::Object(ours)) = (all.as_object_mut(), hooks(hook)) {
        for (event, defs) in ours {
            let list = all.entry(event).or_insert_with(|| json!([]));
            match (list.as_array_mut(), defs) {
                (Some(list), Value::Array(defs)) => list.extend(defs),
                (None, defs) => *list = defs,
                _ => {}
            }
        }
    }
    user["hooks"] = all;
    if !user["hooksConfig"].is_object() {
        user["hooksConfig"] = json!({});
    }
    user["hooksConfig"]["enabled"] = true.into();
    user
}

impl RunSettings {
    /// The run's settings for hooks calling `hook`, from the user settings in `home` (or none).
    /// A file that cannot be read as JSON is an error: the run would otherwise lose the user's
    /// own settings.
    pub fn new(home: &Path, hook: &str) -> Result<RunSettings, String> {
        let target = home.join(".gemini/settings.json");
        let user = match std::fs::read_to_string(&target) {
            Ok(t) => serde_json::from_str(&strip_comments(&t)).map_err(|e| {
                format!(
                    "Gemini CLI's settings {} cannot be read as JSON ({e})",
                    target.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({}),
            Err(e) => return Err(format!("{}: {e}", target.display())),
        };
        Ok(RunSettings {
            settings: merged(user, hook),
            target,
        })
    }

    /// Writes the copy into the run's directory `dir` (`agent_kind::run_dir`; as the agent's
    /// user, before it is confined). Returns it and what it is shown in place of.
    pub fn install(&self, dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
        let file = dir.join("gemini-settings.json");
        std::fs::write(&file, serde_json::to_vec_pretty(&self.settings)?)?;
        Ok((file, self.target.clone()))
    }

    /// Makes `~/.gemini/settings.json` when absent (as the agent's user), so that there is a
    /// file to show the copy in place of: `{}`, Gemini CLI's own empty settings. Whether it did.
    pub fn make_target(&self) -> bool {
        if std::fs::symlink_metadata(&self.target).is_ok() {
            return false;
        }
        if let Some(d) = self.target.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        std::fs::write(&self.target, EMPTY).is_ok()
    }

    /// After the run: the file `make_target` made goes when nobody changed it.
    pub fn remove_target(&self) {
        if std::fs::read(&self.target).is_ok_and(|b| b == EMPTY.as_bytes()) {
            let _ = std::fs::remove_file(&self.target);
        }
    }
}

/// The settings file `make_target` makes.
const EMPTY: &str = "{}\n";

/// JSON with comments (Gemini CLI strips `//` and `/* */` comments from its settings) as JSON:
/// comments outside strings become spaces.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                '\\' => out.extend(chars.next()),
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut last = ' ';
                for n in chars.by_ref() {
                    if last == '*' && n == '/' {
                        break;
                    }
                    last = n;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_settings_and_hooks_stay_and_ours_come_after() {
        let host = json!({
            "tools": {"exclude": ["web_fetch"]},
            "hooks": {"BeforeTool": [{"matcher": "write_file", "hooks": [{"type": "command", "command": "audit"}]}]},
            "hooksConfig": {"enabled": false, "disabled": ["audit2"]}
        });
        let m = merged(host, "axiomctl hook");
        assert_eq!(m["tools"]["exclude"][0], "web_fetch");
        let before = m["hooks"]["BeforeTool"].as_array().expect("array");
        assert_eq!(before.len(), 2);
        assert_eq!(before[0]["hooks"][0]["command"], "audit");
        assert_eq!(before[1]["matcher"], BEFORE_TOOL);
        assert_eq!(before[1]["hooks"][0]["command"], "axiomctl hook");
        assert_eq!(m["hooksConfig"]["enabled"], true);
        assert_eq!(m["hooksConfig"]["disabled"][0], "audit2");
        for e in ["AfterAgent", "AfterTool", "BeforeAgent"] {
            assert_eq!(
                m["hooks"][e][0]["hooks"][0]["command"], "axiomctl hook",
                "{e}"
            );
        }
        // None at all: ours alone.
        let m = merged(json!({}), "h");
        assert_eq!(m["hooks"]["AfterAgent"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn comments_are_not_json_but_strings_keep_theirs() {
        let t = "{\n  // a comment\n  \"a\": \"http://x/*y*/\", /* block\n */ \"b\": 1\n}";
        let v: Value = serde_json::from_str(&strip_comments(t)).expect("json");
        assert_eq!(v["a"], "http://x/*y*/");
        assert_eq!(v["b"], 1);
    }
}
