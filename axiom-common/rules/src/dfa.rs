//! The kernel half of matching: every kernel-scannable literal compiled into one Aho–Corasick
//! DFA over byte classes, laid out as `crate::Dfa` for a BPF array map. ASCII case is folded (the
//! kernel is a prefilter; userspace confirms case where a rule cares).
use axiom_common::{
    ACCEPT_DENY, ACCEPT_MATCH, DFA_CLASSES, DFA_MAX_STATES, DFA_ROW_BYTES, Dfa, NEXT_ACCEPT,
    NEXT_DENY, NEXT_ROW,
};

/// A literal for the kernel, and the rule it belongs to.
#[derive(Clone, Debug)]
pub struct Pattern {
    pub bytes: Vec<u8>,
    pub rule: usize,
    pub deny: bool,
}

/// The compiled automaton and what each accepting state means.
pub struct KernelDfa {
    pub table: Box<Dfa>,
    pub states: usize,
    pub classes: usize,
    pub patterns: Vec<Pattern>,
    /// Patterns that end at each state (own and inherited through failure links).
    pub outputs: Vec<Vec<u16>>,
}

impl std::fmt::Debug for KernelDfa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelDfa")
            .field("states", &self.states)
            .field("classes", &self.classes)
            .field("patterns", &self.patterns.len())
            .finish()
    }
}

fn fold(b: u8) -> u8 {
    b.to_ascii_lowercase()
}

impl KernelDfa {
    pub fn build(patterns: Vec<Pattern>) -> Result<KernelDfa, String> {
        // SAFETY: Dfa is integers only; all-zero is a valid (empty) automaton.
        let mut table: Box<Dfa> = unsafe { Box::<Dfa>::new_zeroed().assume_init() };
        let mut class = [0u8; 256];
        let mut classes = 1usize;
        for p in &patterns {
            for &b in &p.bytes {
                let b = fold(b);
                if class[b as usize] == 0 {
                    if classes == DFA_CLASSES {
                        return Err(format!(
                            "the kernel matcher takes at most {} distinct bytes across all literals",
                            DFA_CLASSES - 1
                        ));
                    }
                    class[b as usize] = classes as u8;
                    class[b.to_ascii_uppercase() as usize] = classes as u8;
                    classes += 1;
                }
            }
        }
        for (t, c) in table.classes.iter_mut().zip(class) {
            *t = c * 4;
        }
        // Trie.
        let mut goto: Vec<[u16; DFA_CLASSES]> = vec![[0; DFA_CLASSES]];
        let mut outputs: Vec<Vec<u16>> = vec![Vec::new()];
        for (i, p) in patterns.iter().enumerate() {
            let mut s = 0usize;
            for &b in &p.bytes {
                let c = class[fold(b) as usize] as usize;
                if goto[s][c] == 0 {
                    if goto.len() == DFA_MAX_STATES {
                        return Err(format!(
                            "the kernel matcher takes at most {DFA_MAX_STATES} states (about that many literal bytes)"
                        ));
                    }
                    goto.push([0; DFA_CLASSES]);
                    outputs.push(Vec::new());
                    goto[s][c] = (goto.len() - 1) as u16;
                }
                s = goto[s][c] as usize;
            }
            outputs[s].push(i as u16);
        }
        // Failure links breadth first; the full transition function from them.
        let n = goto.len();
        let mut fail = vec![0usize; n];
        let mut delta = goto.clone();
        let mut queue = std::collections::VecDeque::new();
        queue.extend(goto[0].iter().filter(|t| **t != 0).map(|t| *t as usize));
        while let Some(s) = queue.pop_front() {
            let inherited = outputs[fail[s]].clone();
            outputs[s].extend(inherited);
            for c in 0..DFA_CLASSES {
                let t = goto[s][c] as usize;
                if t != 0 {
                    fail[t] = delta[fail[s]][c] as usize;
                    queue.push_back(t);
                } else {
                    delta[s][c] = delta[fail[s]][c];
                }
            }
        }
        for (s, out) in outputs.iter().enumerate() {
            if !out.is_empty() {
                table.accept[s] = ACCEPT_MATCH;
                if out.iter().any(|p| patterns[*p as usize].deny) {
                    table.accept[s] |= ACCEPT_DENY;
                }
            }
        }
        for (s, row) in delta.iter().enumerate() {
            for (c, &t) in row.iter().enumerate() {
                let a = table.accept[t as usize];
                let mut v = t as u32 * DFA_ROW_BYTES as u32;
                if a & ACCEPT_MATCH != 0 {
                    v |= NEXT_ACCEPT;
                }
                if a & ACCEPT_DENY != 0 {
                    v |= NEXT_DENY;
                }
                table.next[s * DFA_CLASSES + c] = v;
            }
        }
        table.depth = patterns.iter().map(|p| p.bytes.len()).max().unwrap_or(0) as u16;
        Ok(KernelDfa {
            table,
            states: n,
            classes,
            patterns,
            outputs,
        })
    }

    /// Runs the automaton as the kernel does (for tests and `rules test`): the accepting states
    /// reached, with the offset after each.
    pub fn run(&self, state: u16, text: &[u8]) -> (u16, Vec<(usize, u16)>) {
        let mut st = state as usize;
        let mut hits = Vec::new();
        for (i, &b) in text.iter().enumerate() {
            let c = self.table.classes[b as usize] as usize / 4;
            let v = self.table.next[st * DFA_CLASSES + c];
            st = (v & NEXT_ROW) as usize / DFA_ROW_BYTES;
            if v & NEXT_ACCEPT != 0 {
                hits.push((i + 1, st as u16));
            }
        }
        (st as u16, hits)
    }

    /// Rules whose literal ends at `state`.
    pub fn rules_at(&self, state: u16) -> impl Iterator<Item = usize> + '_ {
        self.outputs
            .get(state as usize)
            .into_iter()
            .flatten()
            .map(|p| self.patterns[*p as usize].rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(words: &[&str]) -> Vec<Pattern> {
        words
            .iter()
            .enumerate()
            .map(|(i, w)| Pattern {
                bytes: w.as_bytes().to_vec(),
                rule: i,
                deny: *w == "rm -rf /",
            })
            .collect()
    }

    #[test]
    fn agrees_with_aho_corasick() {
        let words = [
            "he",
            "she",
            "his",
            "hers",
            "let me plan",
            "todo",
            "rm -rf /",
        ];
        let d = KernelDfa::build(pats(&words)).expect("build");
        let ac = aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(words)
            .expect("ac");
        for text in [
            "ushers",
            "Let Me PLAN it",
            "a TODO here",
            "nothing",
            "shehis",
            "rm -rf / now",
        ] {
            let mut want: Vec<(usize, usize)> = ac
                .find_overlapping_iter(text)
                .map(|m| (m.end(), m.pattern().as_usize()))
                .collect();
            want.sort();
            let (_, hits) = d.run(0, text.as_bytes());
            let mut got: Vec<(usize, usize)> = hits
                .iter()
                .flat_map(|(end, st)| d.outputs[*st as usize].iter().map(|p| (*end, *p as usize)))
                .collect();
            got.sort();
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn state_carries_across_writes_and_deny_is_marked() {
        let d = KernelDfa::build(pats(&["let me plan", "rm -rf /"])).expect("build");
        let (st, hits) = d.run(0, b"ok, let me p");
        assert!(hits.is_empty());
        let (_, hits) = d.run(st, b"lan.");
        assert_eq!(hits.len(), 1);
        assert_eq!(d.rules_at(hits[0].1).collect::<Vec<_>>(), [0]);
        let (_, hits) = d.run(0, b"sudo rm -RF / x");
        assert_eq!(
            d.table.accept[hits[0].1 as usize],
            ACCEPT_MATCH | ACCEPT_DENY
        );
    }

    #[test]
    fn limits_are_errors() {
        let many: Vec<String> = (0..5000).map(|i| format!("{i:06}xyzw")).collect();
        let p: Vec<Pattern> = many
            .iter()
            .map(|w| Pattern {
                bytes: w.as_bytes().to_vec(),
                rule: 0,
                deny: false,
            })
            .collect();
        assert!(KernelDfa::build(p).unwrap_err().contains("states"));
    }
}
