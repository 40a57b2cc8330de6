//! Which processes run tests: a "the tests pass" claim is judged by the test runs the kernel saw
//! (each one an exec of a test runner, with the exit status of its process), not by how the
//! command was spelled.
//!
//! A runner is recognised from the process's own argv (what the kernel records at exec: a
//! script's interpreter first, then the script), through the wrappers people put in front
//! (`env X=1`, `timeout 60`, `uv run`, `npx`, `bundle exec`, `python3 -m`), for the common
//! ecosystems, and through what a project's own configuration names: an `npm run` script or a
//! `make` target whose recipe runs one.
use std::collections::HashMap;

/// What a project's configuration says runs its tests: `package.json` scripts and `Makefile`
/// targets (name → command), read from the directory the command ran in.
#[derive(Clone, Debug, Default)]
pub struct Project {
    pub scripts: HashMap<String, String>,
    pub make_targets: HashMap<String, String>,
}

impl Project {
    /// `package.json`'s `scripts` (its text), when it parses.
    pub fn with_package_json(mut self, text: &str) -> Project {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(text)
            && let Some(s) = v.get("scripts").and_then(|s| s.as_object())
        {
            for (k, v) in s {
                if let Some(v) = v.as_str() {
                    self.scripts.insert(k.clone(), v.to_string());
                }
            }
        }
        self
    }

    /// A `Makefile`'s rules (its text): each target with its recipe lines joined.
    pub fn with_makefile(mut self, text: &str) -> Project {
        let mut current: Vec<String> = Vec::new();
        for line in text.lines() {
            if let Some(recipe) = line.strip_prefix('\t') {
                let recipe = recipe.trim_start_matches(['@', '-', '+']);
                for t in &current {
                    let e = self.make_targets.entry(t.clone()).or_default();
                    if !e.is_empty() {
                        e.push_str(" && ");
                    }
                    e.push_str(recipe);
                }
                continue;
            }
            current.clear();
            if line.starts_with('#') || line.contains(":=") || line.contains("?=") {
                continue;
            }
            if let Some((targets, _)) = line.split_once(':')
                && !targets.contains('=')
            {
                current = targets
                    .split_whitespace()
                    .filter(|t| !t.starts_with('.'))
                    .map(String::from)
                    .collect();
            }
        }
        self
    }
}

/// Runners known by their own name (a binary, a script's name, or a module after `-m`).
const RUNNERS: &[&str] = &[
    "pytest",
    "py.test",
    "unittest",
    "nose2",
    "nosetests",
    "tox",
    "nox",
    "jest",
    "vitest",
    "mocha",
    "ava",
    "jasmine",
    "karma",
    "playwright-test",
    "rspec",
    "phpunit",
    "pest",
    "ctest",
    "bats",
    "prove",
    "trial",
    "green",
    "ward",
];

/// Tools whose subcommand `test` (or these) runs tests.
const SUBCOMMAND: &[(&str, &[&str])] = &[
    ("go", &["test"]),
    ("cargo", &["test", "nextest"]),
    ("dotnet", &["test"]),
    ("deno", &["test"]),
    ("swift", &["test"]),
    ("mix", &["test"]),
    ("zig", &["test"]),
    ("dart", &["test"]),
    ("flutter", &["test"]),
    ("stack", &["test"]),
    ("cabal", &["test"]),
    ("meson", &["test"]),
    ("ninja", &["test"]),
    ("bazel", &["test"]),
    ("rake", &["test", "spec"]),
    ("gradle", &["test", "check", "build"]),
    ("gradlew", &["test", "check", "build"]),
    ("mvn", &["test", "verify", "install", "package"]),
    ("mvnw", &["test", "verify", "install", "package"]),
    ("sbt", &["test"]),
    ("lein", &["test"]),
    ("hatch", &["test"]),
    ("pdm", &["test"]),
];

/// Wrappers in front of the command: (name, how many of their own arguments follow).
const WRAPPERS: &[(&str, usize)] = &[
    ("env", 0),
    ("timeout", 1),
    ("nice", 0),
    ("nohup", 0),
    ("time", 0),
    ("stdbuf", 0),
    ("xvfb-run", 0),
    ("npx", 0),
    ("bunx", 0),
    ("pnpx", 0),
    ("sudo", 0),
    ("exec", 0),
    ("command", 0),
];

/// Package managers whose `run`/`exec` runs the next word (`uv run pytest`, `bundle exec
/// rspec`, `poetry run pytest`).
const RUNS_NEXT: &[&str] = &["uv", "poetry", "pipenv", "hatch", "pdm", "bundle", "rye"];

/// Interpreters whose script (or `-m` module) is the command.
fn is_interpreter(w: &str) -> bool {
    let w = w.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    matches!(
        w,
        "python" | "pypy" | "node" | "nodejs" | "ruby" | "perl" | "php" | "bash" | "sh"
    )
}

fn base(w: &str) -> &str {
    w.rsplit('/').next().unwrap_or(w)
}

/// The test runner `argv` runs, named as people say it (`pytest`, `python -m unittest`,
/// `cargo test`, `npm test`, `make check`), or `None`. `project`: the configuration of the
/// directory it runs in, for `npm run <script>` and `make <target>`.
pub fn test_runner<S: AsRef<str>>(argv: &[S], project: Option<&Project>) -> Option<String> {
    runner_at(argv, project, 0)
}

fn runner_at<S: AsRef<str>>(argv: &[S], project: Option<&Project>, depth: u8) -> Option<String> {
    let words: Vec<&str> = argv.iter().map(AsRef::as_ref).collect();
    let mut i = 0;
    // Wrappers, variable assignments and interpreters in front of the command.
    while i < words.len() {
        let w = base(words[i]);
        if words[i].contains('=') && !words[i].starts_with('-') {
            i += 1;
        } else if let Some((_, n)) = WRAPPERS.iter().find(|(name, _)| *name == w) {
            i += 1;
            while i < words.len() && words[i].starts_with('-') {
                i += 1;
            }
            i += n;
        } else if RUNS_NEXT.contains(&w)
            && matches!(words.get(i + 1).copied(), Some("run" | "exec"))
        {
            i += 2;
            while i < words.len() && words[i].starts_with('-') {
                i += 1;
            }
        } else if is_interpreter(w)
            // `$(PYTHON) -m pytest` in a recipe: a variable standing for the interpreter.
            || (w.starts_with('$') && words.get(i + 1) == Some(&"-m"))
        {
            i += 1;
            // Its options; `-m module` names the command; `-c code` is not a runner's argv.
            while i < words.len() && words[i].starts_with('-') {
                match words[i] {
                    "-m" => {
                        let m = words.get(i + 1)?;
                        return named(m, &words[i + 2..], project, depth).map(|r| {
                            if RUNNERS.contains(&base(m)) && *m != "pytest" {
                                format!("{w} -m {m}")
                            } else {
                                r
                            }
                        });
                    }
                    "-c" | "-e" => return None,
                    // Node's own test runner.
                    "--test" if w.starts_with("node") => return Some("node --test".into()),
                    "-X" | "-W" | "-r" | "--require" => i += 2,
                    _ => i += 1,
                }
            }
        } else {
            break;
        }
    }
    let w = words.get(i)?;
    named(w, &words[i + 1..], project, depth)
}

/// The runner `w` (a command word) with `rest` after it.
fn named(w: &str, rest: &[&str], project: Option<&Project>, depth: u8) -> Option<String> {
    let name = base(w);
    let name = name.strip_suffix(".js").unwrap_or(name);
    if RUNNERS.contains(&name) {
        return Some(name.to_string());
    }
    let sub = rest.iter().copied().find(|a| !a.starts_with('-'));
    if let Some((tool, subs)) = SUBCOMMAND.iter().find(|(t, _)| *t == name)
        && let Some(s) = sub
        && (subs.contains(&s) || s.starts_with("test"))
    {
        return Some(format!("{tool} {s}"));
    }
    match name {
        "npm" | "yarn" | "pnpm" | "bun" => {
            let s = sub?;
            let via_run = s == "run" || s == "run-script";
            let script = if via_run {
                rest.iter()
                    .copied()
                    .skip_while(|a| *a != s)
                    .skip(1)
                    .find(|a| !a.starts_with('-'))?
            } else {
                s
            };
            if matches!(script, "test" | "t" | "tst") || script.starts_with("test") {
                return Some(if via_run {
                    format!("{name} run {script}")
                } else {
                    format!("{name} {script}")
                });
            }
            // A script of the project's own whose command runs tests.
            let cmd = project?.scripts.get(script)?;
            (depth < 3 && line_runs_tests(cmd, project, depth + 1))
                .then(|| format!("{name} run {script}"))
        }
        "make" | "gmake" => {
            let targets: Vec<&str> = rest
                .iter()
                .copied()
                .filter(|a| !a.starts_with('-') && !a.contains('='))
                .collect();
            let named = targets.iter().find(|t| {
                matches!(**t, "test" | "tests" | "check" | "spec" | "unittest")
                    || t.starts_with("test")
                    || t.starts_with("check")
            });
            if let Some(t) = named {
                return Some(format!("make {t}"));
            }
            let p = project?;
            targets
                .iter()
                .find(|t| {
                    p.make_targets
                        .get(**t)
                        .is_some_and(|r| depth < 3 && line_runs_tests(r, project, depth + 1))
                })
                .map(|t| format!("make {t}"))
        }
        _ => None,
    }
}

/// Whether a shell command line (a script's or a recipe's) runs a test runner in any of its
/// `&&`/`;`/`|` parts.
fn line_runs_tests(line: &str, project: Option<&Project>, depth: u8) -> bool {
    line.split(['&', ';', '|'])
        .map(|part| part.split_whitespace().collect::<Vec<_>>())
        .any(|w| !w.is_empty() && runner_at(&w, project, depth).is_some())
}

/// A runner's summary in its output ("2 passed in 0.03s", "Ran 2 tests", "OK", "FAILED
/// (failures=1)", "test result: ok. 3 passed", "Tests: 1 failed, 3 passed"): the last such
/// line of `text`, trimmed.
pub fn summary_line(text: &str) -> Option<String> {
    static SUMMARY: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"(?i)(\b\d+ (passed|failed|failing|passing|errors?|tests?)\b|^ran \d+ tests?|^ok\b|^failed\b|test result:|^tests?:\s|\bok\s+\S+\s+\d|^fail\b|^pass\b)",
        )
        .ok()
    });
    let re = SUMMARY.as_ref()?;
    text.lines()
        .rev()
        .map(|l| {
            crate::strip_ansi(l)
                .trim()
                .trim_matches('=')
                .trim()
                .to_string()
        })
        .find(|l| !l.is_empty() && l.len() <= 200 && re.is_match(l))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(line: &str) -> Option<String> {
        test_runner(&line.split_whitespace().collect::<Vec<_>>(), None)
    }

    #[test]
    fn runners_of_every_common_ecosystem_are_recognised_through_their_wrappers() {
        for (line, want) in [
            ("pytest -q", "pytest"),
            ("/usr/bin/python3 /usr/bin/pytest -q tests", "pytest"),
            ("python3 -m pytest", "pytest"),
            (
                "python3 -m unittest discover -s tests -v",
                "python3 -m unittest",
            ),
            (
                "/usr/bin/python3.12 -u -m unittest",
                "python3.12 -m unittest",
            ),
            ("uv run pytest", "pytest"),
            ("poetry run pytest -x", "pytest"),
            ("env CI=1 timeout 60 pytest", "pytest"),
            ("tox -e py312", "tox"),
            ("go test ./...", "go test"),
            ("cargo test --release", "cargo test"),
            ("cargo nextest run", "cargo nextest"),
            ("npm test", "npm test"),
            ("npm run test:unit", "npm run test:unit"),
            ("yarn test", "yarn test"),
            ("pnpm run test", "pnpm run test"),
            ("bun test", "bun test"),
            ("npx vitest run", "vitest"),
            ("node /w/node_modules/.bin/jest --ci", "jest"),
            ("node node_modules/mocha/bin/mocha.js", "mocha"),
            ("bundle exec rspec", "rspec"),
            ("rake test", "rake test"),
            ("vendor/bin/phpunit", "phpunit"),
            ("ctest --output-on-failure", "ctest"),
            ("make test", "make test"),
            ("make -j4 check", "make check"),
            ("./gradlew test", "gradlew test"),
            ("mvn -q verify", "mvn verify"),
            ("dotnet test", "dotnet test"),
            ("deno test -A", "deno test"),
            ("swift test", "swift test"),
            ("mix test", "mix test"),
            ("bats tests", "bats"),
            ("node --test", "node --test"),
        ] {
            assert_eq!(r(line).as_deref(), Some(want), "{line}");
        }
        for line in [
            "python3 app.py",
            "python3 -c import pytest",
            "npm install",
            "go build ./...",
            "cargo build",
            "make",
            "make install",
            "cat tests/test_x.py",
            "grep -r pytest .",
            "git commit -m test",
            "ls test",
        ] {
            assert_eq!(r(line), None, "{line}");
        }
    }

    #[test]
    fn a_projects_own_scripts_and_targets_count() {
        let p = Project::default()
            .with_package_json(r#"{"scripts": {"verify": "eslint . && vitest run", "build": "tsc"}}"#)
            .with_makefile(
                "PY ?= python3\n.PHONY: ci\nci: lint\n\t@$(PY) -m pytest -q\nlint:\n\truff check .\n",
            );
        let t = |line: &str| test_runner(&line.split_whitespace().collect::<Vec<_>>(), Some(&p));
        assert_eq!(t("npm run verify").as_deref(), Some("npm run verify"));
        assert_eq!(t("npm run build"), None);
        // `$(PY) -m pytest`: the module after -m, whatever the interpreter's variable.
        assert_eq!(t("make ci").as_deref(), Some("make ci"));
        assert_eq!(t("make lint"), None);
    }

    #[test]
    fn summaries_are_the_runners_last_word() {
        assert_eq!(
            summary_line("collected 2 items\n..\n==== 2 passed in 0.03s ====\n").as_deref(),
            Some("2 passed in 0.03s")
        );
        assert_eq!(
            summary_line("test_a ... ok\n\n----\nRan 2 tests in 0.001s\n\nOK\n").as_deref(),
            Some("OK")
        );
        assert_eq!(
            summary_line("FAILED (failures=1)\n").as_deref(),
            Some("FAILED (failures=1)")
        );
        assert_eq!(summary_line("compiling\nhello\n"), None);
    }
}
