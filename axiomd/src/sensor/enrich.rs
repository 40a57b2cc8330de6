//! What a record does not carry, added before it leaves: secrets masked in command lines and
//! writes (across the writes of one stream too), the target of a write's fd, the operation and
//! path of a refused file operation.
use axiom_proto::wire::{Body, DeniedOp, Event};

use super::Redactor;

impl super::Pipeline {
    /// Secrets on command lines (tokens in curl headers, keys in env assignments).
    pub(super) fn redact_argv(&self, argv: &mut [String]) {
        if let Some(r) = &self.redactor {
            for a in argv.iter_mut() {
                if let Some((masked, _)) = r(None, a) {
                    *a = masked;
                }
            }
        }
    }

    /// An output record: where it went, its secrets masked, binary and past-capture writes
    /// counted. True when bytes past `sensor.capture_bytes` were not inspected (the event says
    /// so, and status counts how often: `output_past_capture`).
    pub(super) fn enrich_output(&mut self, tgid: u32, body: &mut Body) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let Body::Output {
            fd,
            target,
            text,
            redacted,
            captured,
            count,
            ..
        } = body
        else {
            return false;
        };
        let past_capture = u64::from(*captured) < *count;
        if past_capture {
            self.bus.stats.past_capture.fetch_add(1, Relaxed);
        }
        if text.is_empty() && *captured > 0 {
            self.bus.stats.binary_writes.fetch_add(1, Relaxed);
            self.bus
                .stats
                .binary_bytes
                .fetch_add(u64::from(*captured), Relaxed);
        }
        *target = self.fd_target(tgid, *fd);
        if let Some(r) = &self.redactor {
            let scope = axiom_rules::write_scope(target.as_deref());
            let own = r(Some(scope), text);
            if let Some((masked, ids)) = self.mask_across(tgid, *fd, scope, text, own) {
                *text = masked;
                *redacted = ids;
            }
        }
        past_capture
    }

    /// A secret split across this write and the stream's last ones (`printf 'KEY=AKIA…';
    /// printf '…'; printf '…'`): masked in this write's text, and in each earlier write's too
    /// while its event still waits in `pending` (writes a few microseconds apart are read in one
    /// pass; an older one is counted, `secret_half_published`). The stream's carry is its last
    /// `CARRY_BYTES` as written, over as many writes as made them (a key typed a few bytes at a
    /// time). `raw` is the write as written, `own` its masking alone; returns its masking in all.
    pub(super) fn mask_across(
        &mut self,
        tgid: u32,
        fd: i32,
        scope: axiom_rules::Scope,
        raw: &str,
        mut own: Option<(String, Vec<String>)>,
    ) -> Option<(String, Vec<String>)> {
        let r = self.redactor.as_ref()?;
        let key = (tgid, fd);
        // A secret that ran to the end of the stream's last write (a private key's body, a
        // line at a time): this write goes on with it when the secret's start, as written,
        // and this write together mask from the start into this write.
        if let Some(head) = self.carries.get(&key).and_then(|c| c.open.as_deref())
            && !raw.is_empty()
        {
            let alone = own.as_ref().map_or(raw, |(m, _)| m.as_str());
            let went_on = r(Some(scope), &format!("{head}{raw}")).and_then(|(m, ids)| {
                let after = m.strip_prefix(axiom_rules::MASK)?;
                (after != alone).then(|| (format!("{}{after}", axiom_rules::MASK), ids))
            });
            if let Some((masked, ids)) = went_on {
                let mut all = own.map(|(_, ids)| ids).unwrap_or_default();
                for id in ids {
                    if !all.contains(&id) {
                        all.push(id);
                    }
                }
                let open = masked
                    .ends_with(axiom_rules::MASK)
                    .then(|| head.to_string());
                let c = self.carries.entry(key).or_default();
                c.tail.clear();
                c.writes.clear();
                c.open = open;
                return Some((masked, all));
            }
        }
        let mut crossed = None;
        if let Some(c) = self.carries.get(&key)
            && !c.tail.is_empty()
            && !raw.is_empty()
            && let Some(masked_tail) = crossing(r, scope, &c.tail, raw)
        {
            let joined = format!("{}{raw}", c.tail);
            if let Some((masked, ids)) = r(Some(scope), &joined)
                && !masked.starts_with(masked_tail.as_str())
            {
                // Where the masked whole and the masked tail part: the secret starts there.
                let at = differs_at(&masked, &masked_tail).unwrap_or(masked_tail.len());
                crossed = joined.get(at..).map(str::to_string);
                let mut all = own.map(|(_, ids)| ids).unwrap_or_default();
                for id in ids {
                    if !all.contains(&id) {
                        all.push(id);
                    }
                }
                own = Some((masked[at..].to_string(), all));
                // The earlier writes' bytes from the secret's start on: masked too (when the
                // tail held no other secret, `at` counts its bytes as written).
                let mut fixed = masked_tail == c.tail;
                if fixed {
                    let mut off = 0;
                    for &(g, i, len) in &c.writes {
                        let end = off + len;
                        let from = at.max(off);
                        off = end;
                        if from >= end {
                            continue;
                        }
                        let Some(part) = c.tail.get(from..end) else {
                            fixed = false;
                            continue;
                        };
                        fixed &= g == self.published
                            && match self.pending.get_mut(i) {
                                Some(Event {
                                    body: Body::Output { text: t, .. },
                                    ..
                                }) if t.ends_with(part) => {
                                    t.truncate(t.len() - part.len());
                                    if !t.ends_with(axiom_rules::MASK) {
                                        t.push_str(axiom_rules::MASK);
                                    }
                                    true
                                }
                                _ => false,
                            };
                    }
                }
                if !fixed {
                    self.bus.stats.count_loss("secret_half_published");
                }
            }
        }
        if self.carries.len() >= CARRIES && !self.carries.contains_key(&key) {
            self.carries.clear();
        }
        // This write's event is the next one pushed (`emit` follows).
        let here = (self.published, self.pending.len());
        // A secret that runs to this write's end may go on in the next: its start as written.
        let open = own
            .as_ref()
            .filter(|(m, _)| m.ends_with(axiom_rules::MASK))
            .and_then(|(m, _)| {
                crossed
                    .clone()
                    .or_else(|| differs_at(raw, m).map(|at| raw[at..].to_string()))
            })
            .map(|h| h[..h.floor_char_boundary(OPEN_HEAD)].to_string());
        let c = self.carries.entry(key).or_default();
        if crossed.is_some() {
            // The secret is masked: what follows starts afresh from this write.
            c.tail.clear();
            c.writes.clear();
        }
        c.open = open;
        c.push(raw, here);
        own
    }

    /// A file record: paths as the kernel saw them are relative to a directory fd or the cwd;
    /// the rules and the store get absolute ones (a symlink's target stays as written). Kept
    /// per process, for a refusal that follows it.
    pub(super) fn enrich_file(&mut self, tgid: u32, tid: u32, dirfds: (i32, i32), body: &mut Body) {
        let Body::File {
            op, path, path2, ..
        } = body
        else {
            return;
        };
        *path = self.absolute(tgid, tid, dirfds.0, path);
        if let Some(p2) = path2.as_mut()
            && *op != axiom_proto::wire::FileOp::Symlink
        {
            *p2 = self.absolute(tgid, tid, dirfds.1, p2);
        }
        let target = match path2 {
            Some(p2) => format!("{path} -> {p2}"),
            None => path.clone(),
        };
        self.last_file.insert(tgid, (tid, *op, target));
    }

    /// What a refused file operation was: the file record the same thread sent just before it.
    pub(super) fn refused_file(&mut self, tgid: u32, tid: u32) -> (DeniedOp, String) {
        match self.last_file.remove(&tgid) {
            Some((t, op, target)) if t == tid => (op.into(), target),
            _ => (DeniedOp::File, "?".into()),
        }
    }
}

/// When a secret starts in `tail` (the stream's last write's end) and goes on into `raw`:
/// `tail` as masked on its own. Judged on `tail` and `raw`'s first `CARRY_BYTES` only (a
/// secret is shorter), so a long write is not redacted a second time whole unless one does.
fn crossing(r: &Redactor, scope: axiom_rules::Scope, tail: &str, raw: &str) -> Option<String> {
    let head = &raw[..raw.floor_char_boundary(CARRY_BYTES)];
    let (masked, _) = r(Some(scope), &format!("{tail}{head}"))?;
    let masked_tail = r(Some(scope), tail).map_or_else(|| tail.to_string(), |m| m.0);
    (!masked.starts_with(masked_tail.as_str())).then_some(masked_tail)
}

/// The byte offset in `a` of the first character where `a` and `b` differ (`None` while one
/// is a prefix of the other): where a text and its masking part, a secret starts.
fn differs_at(a: &str, b: &str) -> Option<usize> {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map(|((i, _), _)| i)
}

/// Bytes of a secret's start kept while it may go on (a private key's BEGIN line and more).
const OPEN_HEAD: usize = 128;

/// A stream's last bytes as written, for a secret split across writes (see
/// `Pipeline::mask_across`).
#[derive(Default)]
pub(super) struct Carry {
    /// The start (as written, at most `OPEN_HEAD` bytes) of a secret that ran to the end of the
    /// last write, and may go on in the next.
    open: Option<String>,
    /// At most `CARRY_BYTES`, the end of the last writes.
    tail: String,
    /// The writes `tail` is made of, oldest first: where each one's event waits (publish
    /// generation, index in `pending`) and how many of `tail`'s bytes are its end.
    writes: std::collections::VecDeque<(u64, usize, usize)>,
}

impl Carry {
    /// Adds a write's bytes (whose event waits at `at`), keeping the last `CARRY_BYTES`.
    fn push(&mut self, raw: &str, (g, i): (u64, usize)) {
        let start = raw.ceil_char_boundary(raw.len().saturating_sub(CARRY_BYTES));
        let part = &raw[start..];
        if part.is_empty() {
            return;
        }
        self.tail.push_str(part);
        self.writes.push_back((g, i, part.len()));
        let over = self.tail.len().saturating_sub(CARRY_BYTES);
        if over > 0 {
            let cut = self.tail.ceil_char_boundary(over);
            self.tail.drain(..cut);
            let mut left = cut;
            while let Some(w) = self.writes.front_mut() {
                if w.2 > left {
                    w.2 -= left;
                    break;
                }
                left -= w.2;
                self.writes.pop_front();
            }
        }
    }
}

/// Bytes of a write kept for the next one: longer than any secret a rule knows.
pub(super) const CARRY_BYTES: usize = 256;
/// Streams followed at most (all forgotten at once beyond: a rare miss, never growth).
pub(super) const CARRIES: usize = 1 << 14;
