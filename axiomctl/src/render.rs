//! Human-readable event lines: one per event, coloured on a terminal, control characters escaped
//! so an agent's output can never drive the viewer's terminal.
use axiom_proto::wire::{Body, Event};

pub struct Style {
    pub color: bool,
}

const MAX_TEXT: usize = 240;

fn paint(on: bool, code: &str, s: &str) -> String {
    if on {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

/// Escapes control characters and bounds the length.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_TEXT) + 8);
    for (n, c) in s.chars().enumerate() {
        if n >= MAX_TEXT {
            out.push('…');
            break;
        }
        push_escaped(&mut out, c);
    }
    out
}

/// Escapes control and format characters, whole (no length bound): for CSV cells.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
        c if invisible(c) => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
        c => out.push(c),
    }
}

/// Unicode format characters that reorder or hide text (bidi embeddings, overrides and
/// isolates, zero-width characters, tags): shown escaped, so a path or an argument reads as
/// what it is ("Trojan Source", CVE-2021-42574).
fn invisible(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x061C | 0x180E
        | 0x200B..=0x200F
        | 0x202A..=0x202E
        | 0x2060..=0x2064
        | 0x2066..=0x206F
        | 0xFEFF
        | 0xFFF9..=0xFFFB
        | 0xE0001 | 0xE0020..=0xE007F)
}

/// A command line for display: arguments escaped, joined by spaces.
pub fn argv(args: &[String]) -> String {
    args.iter().map(|a| escape(a)).collect::<Vec<_>>().join(" ")
}

pub fn clock(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as libc::time_t;
    let ms = (ns / 1_000_000) % 1000;
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r writes into tm, which we own.
    unsafe { libc::localtime_r(&secs, &mut tm) };
    format!(
        "{:02}:{:02}:{:02}.{ms:03}",
        tm.tm_hour, tm.tm_min, tm.tm_sec
    )
}

impl Style {
    pub fn line(&self, e: &Event) -> String {
        let c = self.color;
        let who = paint(
            c,
            "2",
            &format!("{} {}({})", clock(e.time_ns), escape(&e.comm), e.tgid),
        );
        let what = match &e.body {
            Body::Fork { child_pid } => paint(c, "2", &format!("fork → {child_pid}")),
            Body::Exec { .. } => self.exec(e),
            Body::Exit { code, signal } => match (code, signal) {
                (Some(0), _) => paint(c, "32", "exit 0"),
                (Some(n), _) => paint(c, "1;31", &format!("exit {n}")),
                (_, Some(s)) => paint(c, "1;31", &format!("killed by signal {s}")),
                _ => paint(c, "2", "exit"),
            },
            Body::Output { .. } => self.output(e),
            Body::File {
                op, path, path2, ..
            } => {
                let second = path2
                    .as_deref()
                    .map(|p| format!(" → {}", escape(p)))
                    .unwrap_or_default();
                format!(
                    "{} {}{second}",
                    paint(c, "35", &format!("file {op}")),
                    escape(path)
                )
            }
            Body::Connect {
                family,
                address,
                port,
            } => {
                let addr = if *port != 0 {
                    format!("{}:{port}", escape(address))
                } else {
                    escape(address)
                };
                format!("{} {family} {addr}", paint(c, "34", "connect"))
            }
            Body::KernelMatch { fd, hits, deny, .. } => paint(
                c,
                "2",
                &format!(
                    "kernel match: {hits} on fd{fd}{}",
                    if *deny { " (denied)" } else { "" }
                ),
            ),
            Body::AgentStarted { .. } => self.agent_started(e),
            Body::AgentExited { code, signal } => {
                let how = match (code, signal) {
                    (Some(n), _) => format!("exit {n}"),
                    (_, Some(s)) => format!("killed by signal {s}"),
                    _ => "ended".into(),
                };
                let colour = if *code == Some(0) { "1;32" } else { "1;31" };
                paint(c, colour, &format!("agent {} ended: {how}", e.agent))
            }
            Body::Intervention { .. } => self.intervention(e),
            Body::Violation { .. } => self.violation(e),
            Body::Denied {
                op,
                target,
                by,
                count,
            } => {
                let times = if *count > 1 {
                    format!(" ×{count}")
                } else {
                    String::new()
                };
                paint(
                    c,
                    "1;33",
                    &format!("denied {op} {}{times} (by {by})", escape(target)),
                )
            }
            Body::HooksInactive { reason } => {
                paint(c, "1;33", &format!("hooks inactive: {}", escape(reason)))
            }
            Body::Hook {
                event,
                tool,
                text,
                path,
                refused,
                ..
            } => {
                let what = match (tool, path) {
                    (Some(t), Some(p)) => format!("{} {}", escape(t), escape(p)),
                    (Some(t), None) => format!("{} {}", escape(t), escape(text)),
                    _ => escape(text),
                };
                let verdict = refused
                    .as_deref()
                    .map(|r| paint(c, "1;31", &format!(" refused ({r})")))
                    .unwrap_or_default();
                format!("hook {}: {what}{verdict}", escape(event))
            }
        };
        let trunc = if e.truncated {
            paint(c, "2", " [truncated]")
        } else {
            String::new()
        };
        format!("{who} {what}{trunc}")
    }

    /// An exec: its arguments, the program and the directory it ran in.
    fn exec(&self, e: &Event) -> String {
        let c = self.color;
        let Body::Exec {
            filename,
            argv,
            cwd,
            ..
        } = &e.body
        else {
            return String::new();
        };
        let args = self::argv(argv);
        let cwd = cwd
            .as_deref()
            .map(|d| format!("  (in {d})"))
            .unwrap_or_default();
        format!(
            "{} {}{}",
            paint(c, "1;36", "exec"),
            paint(c, "1", &args),
            paint(c, "2", &format!("  [{filename}]{cwd}"))
        )
    }

    /// A write: the text (escaped), how much was not captured, where it went.
    fn output(&self, e: &Event) -> String {
        let c = self.color;
        let Body::Output {
            fd,
            text,
            count,
            captured,
            target,
            ..
        } = &e.body
        else {
            return String::new();
        };
        let more = if *count > *captured as u64 {
            format!(" (+{} bytes)", count - *captured as u64)
        } else {
            String::new()
        };
        let to = target
            .as_deref()
            .map(|t| format!("  → {t}"))
            .unwrap_or_default();
        format!(
            "{} {}{}",
            paint(c, "33", &format!("out fd{fd}")),
            escape(text),
            paint(c, "2", &format!("{more}{to}"))
        )
    }

    /// An agent's start: its name, command, workspace and profile.
    fn agent_started(&self, e: &Event) -> String {
        let c = self.color;
        let Body::AgentStarted {
            name,
            command,
            workspace,
            profile,
            ..
        } = &e.body
        else {
            return String::new();
        };
        let args = self::argv(command);
        let mut extra = String::new();
        if let Some(w) = workspace {
            extra.push_str(&format!("  (in {})", escape(w)));
        }
        if let Some(p) = profile {
            extra.push_str(&format!("  [profile {}]", escape(p)));
        }
        format!(
            "{} {} {}{}",
            paint(c, "1;32", &format!("agent {} started", e.agent)),
            escape(name.as_deref().unwrap_or("")),
            paint(c, "1", &args),
            paint(c, "2", &extra)
        )
    }

    /// An intervention: what, by whom, and how fast.
    fn intervention(&self, e: &Event) -> String {
        let c = self.color;
        let Body::Intervention {
            action,
            by_uid,
            detail,
            detect_us,
            act_us,
            ..
        } = &e.body
        else {
            return String::new();
        };
        let by = by_uid
            .map(|u| format!(" by uid {u}"))
            .unwrap_or_else(|| " by rule".into());
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(": {}", escape(detail))
        };
        let timing = match (detect_us, act_us) {
            (Some(d), Some(a)) => {
                format!("  (detected {d:.0} µs after the syscall, acted in {a:.0} µs)")
            }
            _ => String::new(),
        };
        format!(
            "{}{}",
            paint(c, "1;35", &format!("intervention {action}{by}{detail}")),
            paint(c, "2", &timing)
        )
    }

    /// A violation: the rule, its severity and action, where, and how fast.
    fn violation(&self, e: &Event) -> String {
        let c = self.color;
        let Body::Violation {
            rule,
            severity,
            action,
            detail,
            latency_us,
            path,
            ..
        } = &e.body
        else {
            return String::new();
        };
        let lat = latency_us
            .map(|l| format!("  ({l:.0} µs after the syscall)"))
            .unwrap_or_default();
        let file = path
            .as_deref()
            .map(|p| format!(" in {}:", escape(p)))
            .unwrap_or_default();
        format!(
            "{}{} {}{}",
            paint(
                c,
                "1;41",
                &format!("violation {} [{severity}, {action}]", escape(rule))
            ),
            file,
            escape(detail),
            paint(c, "2", &lat)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing an agent chose reaches the viewer's terminal as a control or format character.
    #[test]
    fn controls_and_bidi_are_shown_escaped() {
        assert_eq!(escape("a\x1b]52;c;eA==\x07b"), "a\\x1b]52;c;eA==\\x07b");
        assert_eq!(escape("x\u{202e}cod.exe"), "x\\u{202e}cod.exe");
        assert_eq!(clean("\u{2066}\u{200b}ok"), "\\u{2066}\\u{200b}ok");
        let mut e = crate::test_events::ev(
            1,
            0,
            Body::File {
                op: axiom_proto::wire::FileOp::Creat,
                path: "/w/\x1b[2Jx\u{202e}".into(),
                path2: Some("\x1b]0;title\x07".into()),
                flags: 0,
                mode: 0,
            },
        );
        e.comm = "s\x1bh".into();
        let l = Style { color: false }.line(&e);
        assert!(!l.contains('\x1b') && !l.contains('\u{202e}'), "{l:?}");
    }
}
