//! Terminal escape sequences removed before matching: an agent's TUI paints its text between
//! colour codes and cursor moves, and "let me plan" must match however it was painted.

/// Removes CSI (`ESC [ … final`), OSC (`ESC ] … BEL|ESC \`), and two-character `ESC x`
/// sequences. Works on bytes: every byte that ends a sequence is ASCII, so the text between
/// sequences is copied a run at a time (most writes carry no escape at all: one copy).
pub fn strip_ansi(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(off) = b[i..].iter().position(|&c| c == 0x1b) {
        out.push_str(&s[i..i + off]);
        i += off + 1;
        match b.get(i) {
            Some(b'[') => {
                // Parameters and intermediates, then one final byte in @..~.
                i += 1;
                while let Some(&c) = b.get(i) {
                    i += 1;
                    if (b'@'..=b'~').contains(&c) {
                        break;
                    }
                }
            }
            Some(b']') => {
                i += 1;
                while let Some(&c) = b.get(i) {
                    i += 1;
                    if c == 0x07 {
                        break;
                    }
                    if c == 0x1b && b.get(i) == Some(&b'\\') {
                        i += 1;
                        break;
                    }
                }
            }
            // `ESC x`: the character after the escape goes with it.
            Some(_) => i += s[i..].chars().next().map_or(1, char::len_utf8),
            None => {}
        }
    }
    out.push_str(&s[i..]);
    out
}
