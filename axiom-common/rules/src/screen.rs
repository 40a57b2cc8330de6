//! The screen model: what an agent's terminal shows, for terminal-scope rules.
//!
//! Real agents are full-screen TUIs. They paint text with cursor moves and skip the cells that
//! did not change (Claude Code writes `Let\e[7Gme\e[10Gplan`; Codex places each word with
//! `CSI row;col H` inside synchronized updates and paints a sentence twice), so the bytes they
//! write are not the words on screen: stripping escapes gives `Letmeplan`. Each terminal is
//! fed through a real terminal emulator (the `vt100` crate) and rules read the rows that changed,
//! where a cursor move leaves the spaces it skipped. A row's text that was already judged (a
//! repaint, a scroll, a sentence that grows while it streams) is not judged again: each hit is
//! known by the text from the start of its row to its end, and a hit seen once is not new.
use std::collections::{HashSet, VecDeque};
use std::num::NonZeroU16;

/// Hits remembered per terminal, so a repaint of old text is not reported again.
const SEEN_MAX: usize = 4096;

/// The emulated size when the real one is not known: taller and wider than any usual terminal,
/// so absolute cursor moves land where the agent meant them (a wider screen only wraps less).
pub const DEFAULT_ROWS: u16 = 60;
pub const DEFAULT_COLS: u16 = 240;

/// The largest screen emulated: a terminal the agent says is larger (`stty rows 65535 cols
/// 65535` asks for 4 billion cells, ~137 GB in the emulator) is emulated at this size. A 4K
/// monitor with a small font shows ~110 rows of ~480 columns; what an agent paints beyond the
/// bound is not read by terminal rules (`screen_clamped` in `axiomctl status`).
pub const MAX_ROWS: u16 = 200;
pub const MAX_COLS: u16 = 800;

/// The size emulated for a terminal of `rows` × `cols`, and whether it was cut to the bound.
pub fn bounded(rows: u16, cols: u16) -> (u16, u16, bool) {
    (
        rows.min(MAX_ROWS),
        cols.min(MAX_COLS),
        rows > MAX_ROWS || cols > MAX_COLS,
    )
}

/// One agent terminal's screen, and what of it has been judged.
pub struct Screen {
    parser: vt100::Parser,
    /// Each row's text after the last feed.
    rows: Vec<String>,
    /// Hits judged (by `Changed::hit_key`).
    seen: Bounded,
    /// The texts of the rows read lately (two screens' worth): a row showing one of them
    /// scrolled or was repainted, and was read where it was first written.
    read: Bounded,
}

/// A set of hashes that forgets the oldest past its size.
#[derive(Default)]
struct Bounded {
    set: HashSet<u64>,
    order: VecDeque<u64>,
    max: usize,
}

impl Bounded {
    fn new(max: usize) -> Bounded {
        Bounded {
            max,
            ..Bounded::default()
        }
    }

    /// Whether `key` is new; remembers it.
    fn insert(&mut self, key: u64) -> bool {
        if !self.set.insert(key) {
            return false;
        }
        self.order.push_back(key);
        while self.order.len() > self.max {
            if let Some(k) = self.order.pop_front() {
                self.set.remove(&k);
            }
        }
        true
    }
}

fn text_key(text: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(text, &mut h);
    std::hash::Hasher::finish(&h)
}

/// Text that changed on screen: rows joined into one string (a row break is read as a space,
/// indentation dropped, so a sentence the TUI wrapped over two rows reads as one), with where
/// each row starts in it.
#[derive(Debug, Default, PartialEq)]
pub struct Changed {
    pub text: String,
    /// Byte offset in `text` where each joined row starts.
    pub row_starts: Vec<usize>,
}

impl Changed {
    /// The key a hit is remembered by: the text from the start of its row up to its end, with
    /// runs of blanks folded (a repaint may indent differently).
    pub fn hit_key(&self, rule: &str, start: usize, end: usize) -> u64 {
        let row = self
            .row_starts
            .iter()
            .rev()
            .find(|s| **s <= start)
            .copied()
            .unwrap_or(0);
        let end = end.min(self.text.len());
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(rule, &mut h);
        for w in self.text.get(row..end).unwrap_or("").split_whitespace() {
            std::hash::Hash::hash(w, &mut h);
        }
        std::hash::Hasher::finish(&h)
    }
}

impl Default for Screen {
    fn default() -> Self {
        Screen::new(DEFAULT_ROWS, DEFAULT_COLS)
    }
}

impl std::fmt::Debug for Screen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Screen")
            .field("rows", &self.rows.len())
            .field("seen", &self.seen.set.len())
            .finish()
    }
}

fn nz(n: u16, default: u16) -> NonZeroU16 {
    NonZeroU16::new(n)
        .or(NonZeroU16::new(default))
        .unwrap_or(NonZeroU16::MIN)
}

impl Screen {
    /// A screen of `rows` × `cols`, cut to `MAX_ROWS` × `MAX_COLS`.
    pub fn new(rows: u16, cols: u16) -> Screen {
        let (rows, cols, _) = bounded(rows, cols);
        Screen {
            parser: vt100::Parser::new(nz(rows, DEFAULT_ROWS), nz(cols, DEFAULT_COLS), 0),
            rows: Vec::new(),
            seen: Bounded::new(SEEN_MAX),
            read: Bounded::new(2 * usize::from(rows.max(1))),
        }
    }

    /// Feeds what the agent wrote to its terminal; returns the rows that changed, each run of
    /// changed rows with one row of context on both sides (a phrase may start on the row above).
    pub fn feed(&mut self, bytes: &[u8]) -> Changed {
        let bytes = onlcr(bytes);
        let (_, cols) = self.parser.screen().size();
        let advance = plain_advance(&bytes, cols.get());
        self.parser.process(&bytes);
        let changed = match advance.and_then(|a| self.reread_below_cursor(a)) {
            Some(c) => c,
            None => self.reread_all(),
        };
        let now = &self.rows;
        let mut out = Changed::default();
        let mut take = vec![false; now.len()];
        for (i, c) in changed.iter().enumerate() {
            if *c {
                let (lo, hi) = (
                    i.saturating_sub(1),
                    (i + 1).min(now.len().saturating_sub(1)),
                );
                take[lo..=hi].fill(true);
            }
        }
        let mut prev_taken = false;
        for (i, row) in now.iter().enumerate() {
            if !take[i] {
                prev_taken = false;
                continue;
            }
            let t = row.trim();
            if t.is_empty() {
                // A blank row ends a paragraph.
                if prev_taken && !out.text.ends_with('\n') {
                    out.text.push('\n');
                }
                prev_taken = false;
                continue;
            }
            if !out.text.is_empty() && !out.text.ends_with('\n') {
                out.text.push(if prev_taken { ' ' } else { '\n' });
            }
            out.row_starts.push(out.text.len());
            out.text.push_str(t);
            prev_taken = true;
        }
        while out.text.ends_with('\n') {
            out.text.pop();
        }
        out
    }

    /// Rereads every row; which changed (and are new text).
    fn reread_all(&mut self) -> Vec<bool> {
        let (_, cols) = self.parser.screen().size();
        let now: Vec<String> = self.parser.screen().rows(0, cols.get()).collect();
        let mut changed = vec![false; now.len()];
        for (i, r) in now.iter().enumerate() {
            changed[i] = self.rows.get(i) != Some(r) && self.read_now(r);
        }
        self.rows = now;
        changed
    }

    /// After plain text that moved the cursor down at most `advance` rows: rereads only the
    /// rows it can have written (from `advance` rows above the cursor down to the cursor's),
    /// with one row of context on both sides, and returns which rows changed; `None` when the
    /// rows cannot be read apart (a wrapped row among them: `contents_between` joins it with
    /// the next) or nothing was read before. The other rows are left as last read: plain text
    /// only scrolls them, and what scrolled was read where it was written. Rendering every
    /// row after every write was most of the rules thread's CPU under a test suite printing a
    /// line at a time (vt100 builds each row's text anew).
    fn reread_below_cursor(&mut self, advance: u16) -> Option<Vec<bool>> {
        let screen = self.parser.screen();
        let (rows, cols) = screen.size();
        let (rows, cols) = (rows.get(), cols.get());
        if self.rows.len() != usize::from(rows) || rows < 2 {
            return None;
        }
        let (cursor, _) = screen.cursor_position();
        let cursor = cursor.min(rows - 1);
        let first = cursor.saturating_sub(advance);
        let (lo, hi) = (first.saturating_sub(1), (cursor + 1).min(rows - 1));
        // `contents_between` reads one row alone only by rendering all the rows above it.
        if lo == hi || (lo..hi).any(|r| screen.row_wrapped(r)) {
            return None;
        }
        let block = screen.contents_between(lo, 0, hi, cols);
        let read: Vec<&str> = block.split('\n').collect();
        if read.len() != usize::from(hi - lo + 1) {
            return None;
        }
        let mut changed = vec![false; usize::from(rows)];
        for (r, text) in (lo..=hi).zip(read) {
            let i = usize::from(r);
            if self.rows[i] != text {
                // Only rows the text can have reached count as changed; the context rows are
                // read for the phrase that may start or end on them.
                changed[i] = (first..=cursor).contains(&r) && self.read_now(text);
                self.rows[i] = text.to_string();
            }
        }
        Some(changed)
    }

    /// Whether a row read now is new text: not blank, and not a row read lately (which
    /// scrolled or was repainted: its hits are known by their text, so nothing of it is new;
    /// judging every row that moved had a scrolling screen judged whole at each line).
    fn read_now(&mut self, row: &str) -> bool {
        !row.trim().is_empty() && self.read.insert(text_key(row))
    }

    /// Follows the terminal's size (a resized terminal is repainted by its TUI), cut to
    /// `MAX_ROWS` × `MAX_COLS`; true when the screen took a new size that had to be cut.
    pub fn resize(&mut self, rows: u16, cols: u16) -> bool {
        let (rows, cols, cut) = bounded(rows, cols);
        let (r, c) = self.parser.screen().size();
        if (r.get(), c.get()) != (rows, cols) && rows > 0 && cols > 0 {
            self.parser
                .set_size(nz(rows, DEFAULT_ROWS), nz(cols, DEFAULT_COLS));
            self.read.max = 2 * usize::from(rows);
            return cut;
        }
        false
    }

    /// Whether a hit (by `Changed::hit_key`) is new on this screen; remembers it.
    pub fn first_time(&mut self, key: u64) -> bool {
        self.seen.insert(key)
    }

    /// Whether the program on this terminal asked for bracketed paste (`CSI ?2004h`).
    pub fn bracketed_paste(&self) -> bool {
        self.parser.screen().bracketed_paste()
    }

    /// Whether the screen shows `text` (blanks folded: a TUI wraps and indents).
    pub fn shows(&self, text: &str) -> bool {
        self.occurrences(text) > 0
    }

    /// How many times the screen shows `text` (blanks folded): a message typed again is
    /// confirmed by one more, not by the copy an earlier one left.
    pub fn occurrences(&self, text: &str) -> usize {
        let fold = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let want = fold(text);
        if want.is_empty() {
            return 0;
        }
        fold(&self.contents()).matches(&want).count()
    }

    /// The whole screen as text (tests, debugging).
    pub fn contents(&self) -> String {
        self.parser.screen().contents()
    }
}

/// A line feed as the terminal receives it: the bytes a program writes pass the pty's line
/// discipline first, whose `ONLCR` (on by default, and kept by Node's raw mode, which Claude
/// Code and Gemini CLI use) turns each `\n` into `\r\n`. Without it a program printing lines
/// would paint a staircase, its words cut where the rows wrap. A program that turned `ONLCR`
/// off writes `\r\n` itself (a bare `\n` would staircase on the user's terminal too), and the
/// carriage return this adds before a `\n` it may still write at column 0 changes nothing.
fn onlcr(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let bare = |i: usize| bytes[i] == b'\n' && (i == 0 || bytes[i - 1] != b'\r');
    if !(0..bytes.len()).any(bare) {
        return std::borrow::Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 16 + 1);
    for (i, b) in bytes.iter().enumerate() {
        if bare(i) {
            out.push(b'\r');
        }
        out.push(*b);
    }
    std::borrow::Cow::Owned(out)
}

/// How many rows `bytes` can move the cursor down, when they are plain text: printable
/// characters, line feeds, carriage returns, tabs and backspaces (each line feed one row, and
/// a wrap at most every `cols` bytes, as no character is wider in columns than in bytes), and
/// the sequences that only colour text, erase the cursor's row or show and hide the cursor
/// (`CSI … m`, `CSI … K`, `CSI ?25h/l`: compilers, test runners and progress lines use them).
/// `None` for anything else (another escape sequence, a C1 control or another C0 one may move
/// the cursor anywhere or change what the rows hold).
fn plain_advance(bytes: &[u8], cols: u16) -> Option<u16> {
    let mut feeds = 0usize;
    let mut prev = 0u8;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\n' => feeds += 1,
            b'\r' | b'\t' | 0x08 => {}
            0x1b => i += row_local_csi(&bytes[i..])?,
            0x00..=0x1f | 0x7f => return None,
            // C1 controls, as UTF-8 (U+0080..U+009F).
            0x80..=0x9f if prev == 0xc2 => return None,
            _ => {}
        }
        prev = b;
        i += 1;
    }
    let wraps = bytes.len() / usize::from(cols.max(1)) + 1;
    u16::try_from(feeds + wraps).ok()
}

/// The length past its `ESC` of a control sequence at the start of `seq` that changes at most
/// the cursor's row and never moves the cursor: SGR (`m`), erase in line (`K`), cursor
/// visibility (`?25h`, `?25l`).
fn row_local_csi(seq: &[u8]) -> Option<usize> {
    if seq.get(1) != Some(&b'[') {
        return None;
    }
    let params = seq[2..]
        .iter()
        .take_while(|b| (0x30..=0x3f).contains(*b))
        .count();
    let final_at = 2 + params;
    let (params, last) = (&seq[2..final_at], *seq.get(final_at)?);
    let plain = params
        .iter()
        .all(|b| b.is_ascii_digit() || *b == b';' || *b == b':');
    match last {
        b'm' | b'K' if plain => Some(final_at),
        b'h' | b'l' if params == b"?25" => Some(final_at),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `stty rows 65535 cols 65535` is emulated at the bound, and still reads what is painted.
    #[test]
    fn a_huge_terminal_is_emulated_at_the_bound() {
        let mut s = Screen::new(u16::MAX, u16::MAX);
        assert_eq!(s.parser.screen().size().0.get(), MAX_ROWS);
        assert!(
            !s.resize(u16::MAX - 1, u16::MAX - 1),
            "the same bound again"
        );
        let (r, c) = s.parser.screen().size();
        assert_eq!((r.get(), c.get()), (MAX_ROWS, MAX_COLS));
        assert_eq!(s.feed(b"Let me plan this.").text, "Let me plan this.");
        assert!(bounded(u16::MAX, 10).2 && !bounded(MAX_ROWS, MAX_COLS).2);
    }

    #[test]
    fn cursor_moves_read_as_the_spaces_they_leave() {
        let mut s = Screen::new(24, 80);
        let c = s.feed(b"Let\x1b[5Gme\x1b[8Gplan\x1b(B this.");
        assert_eq!(c.text, "Let me plan this.");
        // Codex: each word placed with CSI row;col H inside a synchronized update.
        let mut s = Screen::new(24, 80);
        let c = s.feed(b"\x1b[?2026h\x1b[3;1HHere's\x1b[3;8Hmy\x1b[3;11Hplan:\x1b[?2026l");
        assert_eq!(c.text, "Here's my plan:");
    }

    #[test]
    fn only_changed_rows_with_their_neighbours() {
        let mut s = Screen::new(10, 40);
        s.feed(b"\x1b[1;1Hfirst row\x1b[2;1Hsecond row\x1b[5;1Hfar away");
        let c = s.feed(b"\x1b[2;1Hsecond row, longer");
        assert_eq!(c.text, "first row second row, longer");
        // Unchanged repaint: nothing.
        let c = s.feed(b"\x1b[5;1Hfar away");
        assert_eq!(c.text, "");
    }

    #[test]
    fn wrapped_sentence_reads_as_one_and_a_repaint_is_not_new() {
        let mut s = Screen::new(10, 40);
        let c = s.feed(b"\x1b[2;1H\xe2\x97\x8f I've implemented the\x1b[3;3Happ and the tests.");
        assert_eq!(c.text, "● I've implemented the app and the tests.");
        let start = c.text.find("I've").unwrap_or(0);
        let k1 = c.hit_key("false-completion", start, start + 16);
        assert!(s.first_time(k1));
        // Codex paints the same sentence again, lower down, indented differently.
        let c = s.feed(
            b"\x1b[2J\x1b[7;1H\xe2\x97\x8f  I've  implemented the\x1b[8;3Happ and the tests.",
        );
        let start = c.text.find("I've").unwrap_or(0);
        let end = c.text.find("implemented").unwrap_or(0) + "implemented".len();
        let k2 = c.hit_key("false-completion", start, end);
        assert_eq!(k1, k2);
        assert!(!s.first_time(k2));
    }

    /// Plain text printed a line at a time (scrolling, a carriage return over a progress
    /// figure, a line too long for a row) reads as it does when every row is read again: each
    /// new line is in the changed text, and the rows kept are the screen's.
    #[test]
    fn plain_lines_read_from_the_rows_below_the_cursor() {
        let mut s = Screen::new(6, 20);
        let mut writes: Vec<String> = (0..9).map(|i| format!("line {i} done\r\n")).collect();
        writes.insert(3, "progress 50%\rprogress 60%\r\n".into());
        writes.insert(6, format!("{}\r\n", "wrapped words ".repeat(3)));
        for w in &writes {
            let got = s.feed(w.as_bytes());
            // What the write left on its last row: a carriage return wrote over the rest.
            let last = w.trim_end().rsplit('\r').next().unwrap_or_default();
            let word = last.split_whitespace().last().unwrap_or_default();
            assert!(got.text.contains(word), "{w:?}: {:?}", got.text);
            let want: Vec<String> = s.parser.screen().rows(0, 20).collect();
            let (cursor, _) = s.parser.screen().cursor_position();
            let reached = usize::from(cursor.saturating_sub(2))..=usize::from(cursor);
            assert_eq!(s.rows[reached.clone()], want[reached], "after {w:?}");
        }
        // A scrolled screen is not read again: the new line and one row of context, not the
        // rows above (nor the rows it can have reached that hold lines read already).
        let got = s.feed(b"the end\r\n");
        assert_eq!(got.text, "line 8 done the end");
        assert!(plain_advance(b"a\x1b[2J", 20).is_none());
        assert!(plain_advance("a\u{9b}2J".as_bytes(), 20).is_none());
        assert_eq!(plain_advance(b"one\ntwo\n", 20), Some(3));
        // Colour, erase in line and cursor visibility keep text plain; other sequences do not.
        let coloured = b"\x1b[1;32mok\x1b[0m\n\r\x1b[K\x1b[?25l50%\x1b[38:5:208m\x1b[?25h";
        assert_eq!(plain_advance(coloured, 20), Some(4));
        for other in [
            &b"\x1b[3;1H"[..],
            b"\x1b[?1049h",
            b"\x1b[2J",
            b"\x1b[",
            b"\x1b7",
            b"\x1b[?2m",
        ] {
            assert!(plain_advance(other, 20).is_none(), "{other:?}");
        }
    }

    /// When every row is read again (a cursor move), rows that only scrolled are not new: a
    /// screen scrolled by one line yields that line and its context, not the whole screen.
    #[test]
    fn scrolled_rows_are_not_read_as_new() {
        let mut s = Screen::new(5, 30);
        for i in 0..5 {
            s.feed(format!("old line {i}\r\n").as_bytes());
        }
        let c = s.feed(b"\x1b[5;1Hnew line\r\n");
        assert_eq!(c.text, "old line 4 new line");
    }

    /// Lines a program prints with `\n` start at the left edge, as the pty's `ONLCR` puts them.
    #[test]
    fn a_line_feed_returns_to_the_left_edge() {
        let mut s = Screen::new(5, 20);
        s.feed(b"first line\nsecond line\n");
        s.feed(b"\nthird\r\n");
        let rows: Vec<String> = s.parser.screen().rows(0, 20).collect();
        assert_eq!(rows, ["first line", "second line", "", "third", ""]);
        assert_eq!(&*onlcr(b"a\r\nb"), b"a\r\nb");
    }
}
