//! Agent state is not agent work: what tools write for themselves (git's internals, the agents'
//! own transcripts and histories, package caches) is neither matched by file rules nor counted
//! as the agent having written something.
//!
//! A pattern is a chain of path components matched anywhere in an absolute path (`.git` matches
//! `/w/.git/hooks/pre-commit.sample` and `/w/.git`; `.cargo/registry` matches those two
//! components in a row), or, when it starts with `/`, a prefix of whole components.

/// The default list (a rule's `ignore_paths` replaces it; `[]` looks everywhere).
pub const AGENT_STATE: &[&str] = &[
    // Version control internals: hooks samples, objects, the index, refs, logs.
    ".git",
    ".hg",
    ".svn",
    // The agents' own state: settings, transcripts, prompt history, skills, todos.
    ".claude",
    ".claude.json",
    ".claude.json.backup",
    ".codex",
    ".gemini",
    ".aider.chat.history.md",
    ".aider.input.history",
    ".aider.tags.cache.v4",
    ".aider.conf.yml",
    ".opencode",
    ".local/share/opencode",
    ".local/state/opencode",
    ".config/opencode",
    // Package managers' and build tools' caches.
    ".cache",
    ".npm",
    "node_modules",
    ".cargo/registry",
    ".cargo/git",
    ".rustup",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".venv",
    "site-packages",
];

/// Extensions of source code (and of the files that configure how code is built and run).
const CODE_EXTENSIONS: &[&str] = &[
    "py", "pyi", "pyx", "rs", "go", "c", "h", "cc", "cpp", "cxx", "hpp", "hh", "m", "mm", "cs",
    "java", "kt", "kts", "scala", "groovy", "gradle", "clj", "cljs", "js", "mjs", "cjs", "jsx",
    "ts", "mts", "cts", "tsx", "vue", "svelte", "rb", "php", "pl", "pm", "lua", "swift", "dart",
    "ex", "exs", "erl", "hrl", "hs", "ml", "mli", "fs", "fsx", "elm", "jl", "r", "zig", "nim", "v",
    "sv", "vhd", "sol", "sh", "bash", "zsh", "fish", "ps1", "psm1", "bat", "cmd", "sql", "proto",
    "graphql", "tf", "hcl", "nix", "cmake", "mk", "css", "scss", "sass", "less", "html", "htm",
    "ipynb", "asm", "s", "f90", "cob", "ada", "adb", "pas", "d", "cr", "gleam", "mojo",
];

/// Files that are code by their whole name.
const CODE_NAMES: &[&str] = &[
    "Makefile",
    "makefile",
    "GNUmakefile",
    "Dockerfile",
    "Containerfile",
    "Rakefile",
    "Gemfile",
    "Justfile",
    "justfile",
    "BUILD",
    "WORKSPACE",
    "CMakeLists.txt",
    "Jenkinsfile",
    "Vagrantfile",
];

/// Whether `path` is source code: by its extension or name, or (no extension) a `#!` script.
/// Markdown, text, logs, data and configuration are not (`text`: its content or first bytes).
pub fn is_code(path: &str, text: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    // An atomic write's temporary file is judged by the name it will get (`app.py.tmp.4242.k3`,
    // `app.py.tmp`, `app.py~`).
    let name = match name.find(".tmp") {
        Some(i) if i > 0 && name[i + 4..].chars().next().is_none_or(|c| c == '.') => &name[..i],
        _ => name,
    };
    let name = name.trim_end_matches('~');
    if CODE_NAMES.contains(&name) || name.starts_with("Dockerfile.") {
        return true;
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => {
            CODE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str())
        }
        _ => text.starts_with("#!"),
    }
}

/// A compiled list of patterns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PathFilter {
    /// Each pattern's components; `anchored`: matched from the root only.
    patterns: Vec<(bool, Vec<String>)>,
}

impl PathFilter {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> PathFilter {
        PathFilter {
            patterns: patterns
                .iter()
                .map(|p| {
                    let p = p.as_ref();
                    (
                        p.starts_with('/'),
                        p.split('/')
                            .filter(|c| !c.is_empty())
                            .map(String::from)
                            .collect(),
                    )
                })
                .filter(|(_, c): &(bool, Vec<String>)| !c.is_empty())
                .collect(),
        }
    }

    /// The default: `AGENT_STATE`.
    pub fn agent_state() -> PathFilter {
        PathFilter::new(AGENT_STATE)
    }

    /// Whether `path` falls under one of the patterns.
    pub fn matches(&self, path: &str) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        self.patterns.iter().any(|(anchored, pat)| {
            if *anchored {
                comps.len() >= pat.len() && comps.iter().zip(pat).all(|(c, p)| c == p)
            } else {
                comps
                    .windows(pat.len())
                    .any(|w| w.iter().zip(pat).all(|(c, p)| c == p))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_is_told_from_docs_and_data() {
        for (p, t) in [
            ("/w/src/app.py", ""),
            ("/w/lib/x.RS", ""),
            ("/w/Makefile", ""),
            ("/w/Dockerfile.dev", ""),
            ("/w/bin/deploy", "#!/bin/sh\n"),
            ("/w/web/index.tsx", ""),
            ("/w/src/app.py.tmp.4242.k3j2", ""),
            ("/w/src/app.py~", ""),
        ] {
            assert!(is_code(p, t), "{p}");
        }
        for (p, t) in [
            ("/w/FOLLOWUPS.md", "- TODO: announce the API\n"),
            ("/w/notes.txt", ""),
            ("/w/progress.log", ""),
            ("/w/config.yaml", ""),
            ("/w/data.json", ""),
            ("/w/README", "TODO\n"),
            ("/w/.env", ""),
            ("/w/NOTES.md.tmp.1.a", ""),
        ] {
            assert!(!is_code(p, t), "{p}");
        }
    }

    #[test]
    fn agent_state_is_recognised_and_work_is_not() {
        let f = PathFilter::agent_state();
        for p in [
            "/w/.git/hooks/pre-commit.sample",
            "/w/.git",
            "/home/u/.claude/projects/-w/abc.jsonl",
            "/home/u/.claude.json",
            "/home/u/.codex/skills/.system/skill-creator/SKILL.md",
            "/home/u/.codex/history.jsonl",
            "/home/u/.cargo/registry/src/x/lib.rs",
            "/w/node_modules/left-pad/index.js",
        ] {
            assert!(f.matches(p), "{p}");
        }
        for p in [
            "/w/src/main.rs",
            "/w/.github/workflows/ci.yml",
            "/w/gitignore",
            "/home/u/cargo/registry.rs",
            "/w/.gitignore",
        ] {
            assert!(!f.matches(p), "{p}");
        }
        assert!(PathFilter::new(&["/w/vendor"]).matches("/w/vendor/a.c"));
        assert!(!PathFilter::new(&["/w/vendor"]).matches("/x/w/vendor/a.c"));
        assert!(!PathFilter::new::<&str>(&[]).matches("/w/.git/config"));
    }
}
