//! An agent's terminal replayed for the page, kept between requests: each request reads only
//! the writes after the last one read and feeds them to the same screen model, so a running
//! session's replay costs axiomd what it wrote since, not its whole history.
use std::collections::HashSet;

use axiom_proto::wire::{Body, Event};
use axiom_rules::screen::{DEFAULT_COLS, DEFAULT_ROWS, Screen, bounded};

/// A pause in a terminal's output this long ends a screen of the replay: a frame at 60 Hz, so
/// each paint of a TUI (a burst of writes well under a millisecond apart) is one screen.
const FRAME_PAUSE_NS: u64 = 16_000_000;
/// Screens kept at most; beyond, every second one goes (and the generation changes, so a page
/// holding the old ones reads them again).
const FRAMES_MAX: usize = 1_200;

pub struct Replay {
    /// The agent's own terminal (its start names it; else the first it wrote to), and the
    /// screen it shows.
    term: Option<(String, Screen, u16, u16)>,
    /// When the session started, ns.
    pub start_ns: u64,
    /// Screens at each pause: (time of the last write before it, the screen).
    frames: Vec<(u64, String)>,
    /// The last write fed and whether the screen changed since the last kept frame.
    last_ns: Option<u64>,
    dirty: bool,
    /// Where reading resumes: events at this time already fed (by seq) are not fed again.
    pub cursor_ns: u64,
    fed_at_cursor: HashSet<u64>,
    pub generation: u32,
}

impl Replay {
    pub fn new(start_ns: u64) -> Replay {
        Replay {
            term: None,
            start_ns,
            frames: Vec::new(),
            last_ns: None,
            dirty: false,
            cursor_ns: start_ns,
            fed_at_cursor: HashSet::new(),
            generation: 0,
        }
    }

    /// Feeds events read from the cursor on (its start and its outputs, in order).
    pub fn feed(&mut self, events: &[Event]) {
        for e in events {
            if e.time_ns < self.cursor_ns
                || (e.time_ns == self.cursor_ns && !self.fed_at_cursor.insert(e.seq))
            {
                continue;
            }
            if e.time_ns > self.cursor_ns {
                self.cursor_ns = e.time_ns;
                self.fed_at_cursor.clear();
                self.fed_at_cursor.insert(e.seq);
            }
            match &e.body {
                Body::AgentStarted {
                    terminal: Some(t), ..
                } if self.term.is_none() => {
                    let (rows, cols, _) = bounded(t.rows, t.cols);
                    self.term = Some((t.device.clone(), Screen::new(rows, cols), rows, cols));
                }
                Body::Output {
                    text,
                    target: Some(t),
                    ..
                } if !text.is_empty() && axiom_rules::is_terminal(Some(t)) => {
                    let term = self.term.get_or_insert_with(|| {
                        (
                            t.clone(),
                            Screen::new(DEFAULT_ROWS, DEFAULT_COLS),
                            DEFAULT_ROWS,
                            DEFAULT_COLS,
                        )
                    });
                    if term.0 != *t {
                        continue;
                    }
                    if let Some(last) = self.last_ns
                        && self.dirty
                        && e.time_ns.saturating_sub(last) >= FRAME_PAUSE_NS
                    {
                        self.frames.push((last, term.1.contents()));
                        self.dirty = false;
                    }
                    term.1.feed(text.as_bytes());
                    self.last_ns = Some(e.time_ns);
                    self.dirty = true;
                }
                _ => {}
            }
        }
        if self.frames.len() > FRAMES_MAX {
            let mut i = 0;
            self.frames.retain(|_| {
                i += 1;
                i % 2 == 0
            });
            self.generation += 1;
        }
    }

    /// The terminal, its size, the screens kept from `from` on, and the screen now (after the
    /// last write, while no pause has closed it).
    pub fn view(&self, from: usize) -> serde_json::Value {
        let frame = |(t, s): &(u64, String)| serde_json::json!({ "time_ns": t, "screen": s });
        let now = match (&self.term, self.last_ns) {
            (Some(t), Some(last)) if self.dirty => Some(frame(&(last, t.1.contents()))),
            _ => None,
        };
        serde_json::json!({
            "device": self.term.as_ref().map(|t| t.0.clone()),
            "rows": self.term.as_ref().map(|t| t.2),
            "cols": self.term.as_ref().map(|t| t.3),
            "start_ns": self.start_ns,
            "generation": self.generation,
            "total": self.frames.len(),
            "frames": self.frames.iter().skip(from).map(frame).collect::<Vec<_>>(),
            "now": now,
        })
    }
}

#[cfg(test)]
mod tests {
    use axiom_proto::wire::{Body, Terminal};

    use crate::test_events::{ev, out};

    /// Fed in two reads (the second overlapping the first at its cursor), the replay keeps a
    /// screen at each pause, each write once, and only its own terminal's writes.
    #[test]
    fn a_terminal_is_replayed_read_by_read() {
        let ms = 1_000_000;
        let mut r = super::Replay::new(0);
        let start = ev(
            1,
            0,
            Body::AgentStarted {
                name: None,
                command: vec![],
                workspace: None,
                profile: None,
                terminal: Some(Terminal {
                    device: "/dev/pts/3".into(),
                    rows: 5,
                    cols: 20,
                }),
            },
        );
        let first = vec![
            start,
            out(2, 10 * ms, "/dev/pts/3", "hello"),
            out(3, 11 * ms, "/dev/pts/9", "not ours"),
            out(4, 12 * ms, "/dev/pts/3", " world"),
        ];
        r.feed(&first);
        let v = r.view(0);
        assert_eq!(v["total"], 0, "{v}");
        assert!(
            v["now"]["screen"].as_str().unwrap().contains("hello world"),
            "{v}"
        );
        // The second read starts at the cursor (the last write again) and goes on after a pause.
        r.feed(&[
            out(4, 12 * ms, "/dev/pts/3", " world"),
            out(5, 100 * ms, "/dev/pts/3", "\r\nnext"),
        ]);
        let v = r.view(0);
        assert_eq!(v["total"], 1, "{v}");
        let kept = v["frames"][0]["screen"].as_str().unwrap();
        assert!(
            kept.contains("hello world") && !kept.contains("world world"),
            "{kept}"
        );
        assert!(!kept.contains("not ours"), "{kept}");
        assert!(v["now"]["screen"].as_str().unwrap().contains("next"), "{v}");
        assert_eq!(r.view(1)["frames"].as_array().unwrap().len(), 0);
    }
}
