//! Code from the network, run: decided by what the kernel saw, not by how the command was
//! spelled. A process of the agent that connected out is a downloader; what it writes to a pipe
//! or a file is downloaded. A shell or interpreter then runs downloaded code when
//!
//! - its standard input is a pipe a downloader wrote to (`curl … | sh`, `wget -qO- … | bash`,
//!   in whatever wrapper), before or after it started;
//! - its `-c` argument holds what a downloader wrote to a pipe (`bash -c "$(curl …)"`);
//! - it executes a file a downloader wrote, or is given one as its script.
//!
//! A process that writes to its own child's stdin feeds its tool (an agent handing a hook its
//! JSON, a program its input): not a download pipeline, whose writer and reader are siblings.
//! And only what a shell started is a downloader: the agent itself talks to its model over the
//! network and writes the files its model asked for — its work, not a download.
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How long a download is remembered for what runs it.
const WINDOW: Duration = Duration::from_secs(120);
/// Pipe and file writes remembered per agent (their first bytes), newest last.
const WRITES: usize = 512;
/// Bytes of a write compared with a `-c` argument.
const HEAD: usize = 64;

/// A write to a pipe or a file: when, by which process, where, its first bytes.
struct Write {
    at: Instant,
    tgid: u32,
    target: String,
    head: String,
}

/// A shell or interpreter reading a pipe: its process, its parent, its command.
#[derive(Clone)]
struct Reader {
    at: Instant,
    pid: u32,
    ppid: u32,
    line: String,
}

/// One agent's downloads and the shells reading pipes. The kernel's records of one process
/// come in two rings (its connection with the lifecycle records, its writes with the output),
/// so each fact is checked whichever of them is read first.
#[derive(Default)]
pub(super) struct Net {
    /// Processes that connected out: when, and where to (kept after they exit: `curl` is gone
    /// before `bash -c "$(curl …)"` starts).
    downloaders: HashMap<u32, (Instant, String)>,
    writes: VecDeque<Write>,
    /// Shells and interpreters reading a pipe, by pipe.
    readers: HashMap<String, Reader>,
    /// Shells, and every process a shell started (the agent's commands, not the agent).
    shelled: std::collections::HashSet<u32>,
    /// Files each process wrote, counted (a change of file counts one), with the last one.
    files: HashMap<u32, (usize, String)>,
}

/// Files a process that connected out may write and still be a fetcher (`curl -o`, `wget`):
/// one that writes more is a package manager or a clone (`npm install`, `pip install`,
/// `git clone`), whose files are the project's dependencies, checked by their own tools, and
/// running them (`pytest`, `npx jest`) is the agent's work, not code fetched and run.
const FETCHER_FILES: usize = 4;

/// What the kernel saw happen: which process ran what, from which download.
#[derive(Debug, PartialEq)]
pub(super) struct RemoteRun {
    /// The process that ran the code.
    pub(super) pid: u32,
    pub(super) detail: String,
}

/// Shells, by the name of their binary.
fn is_shell(argv0: &str) -> bool {
    let w = argv0.rsplit('/').next().unwrap_or(argv0);
    matches!(
        w,
        "sh" | "bash" | "dash" | "zsh" | "ksh" | "mksh" | "fish" | "ash"
    )
}

/// Where an interpreter started with an argv takes its code from.
#[derive(Debug, PartialEq)]
enum Code<'a> {
    /// An argument (`sh -c CODE`, `python3 -c CODE`, `perl -e CODE`, `node --eval CODE`).
    Arg(&'a str),
    /// A script file.
    Script(&'a str),
    /// Its standard input (`sh`, `bash -s -- --yes`, `python3 -`, `sh --`).
    Stdin,
    /// Elsewhere (`python3 -m json.tool`): not its stdin, nor an argument.
    Elsewhere,
}

/// How a shell or interpreter started with `argv` takes its code; `None` for another program.
/// Its options are read by its family: `-c` for shells and Python, `-e` for Perl, Ruby, Lua and
/// Node, `-r` for PHP; a shell's `-s` reads stdin whatever follows; options that take a value
/// (`-o pipefail`, `-W ignore`) skip it.
fn code_of(argv: &[String]) -> Option<Code<'_>> {
    let w = argv.first()?.rsplit('/').next()?;
    let w = w.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    let shell = is_shell(w);
    let (code, valued, module) = match w {
        _ if shell => ("c", "oO", ""),
        "python" | "pypy" => ("c", "WXQ", "m"),
        "perl" | "ruby" | "lua" => ("eE", "", ""),
        "node" => ("ep", "r", ""),
        "php" => ("r", "", ""),
        "tclsh" => ("", "", ""),
        _ => return None,
    };
    let mut args = argv.iter().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-" => return Some(Code::Stdin),
            "--" => return Some(args.next().map_or(Code::Stdin, |s| Code::Script(s))),
            "--eval" | "--print" if w == "node" => {
                return Some(args.next().map_or(Code::Elsewhere, |s| Code::Arg(s)));
            }
            _ if a.starts_with("--") => {}
            _ if a.len() > 1 && (a.starts_with('-') || (shell && a.starts_with('+'))) => {
                let flags = &a[1..];
                if shell && a.starts_with('-') && flags.contains('s') {
                    return Some(Code::Stdin);
                }
                if flags.chars().any(|c| code.contains(c)) {
                    return Some(args.next().map_or(Code::Elsewhere, |s| Code::Arg(s)));
                }
                if flags.chars().any(|c| module.contains(c)) {
                    return Some(Code::Elsewhere);
                }
                if flags.chars().last().is_some_and(|c| valued.contains(c)) {
                    args.next();
                }
            }
            _ => return Some(Code::Script(a)),
        }
    }
    Some(Code::Stdin)
}

impl Net {
    fn from(&self, tgid: u32) -> String {
        self.downloaders.get(&tgid).map_or_else(
            || format!("pid {tgid}"),
            |(_, to)| format!("pid {tgid}, from {to}"),
        )
    }

    fn forget_old(&mut self, now: Instant) {
        let fresh = |t: &Instant| now.duration_since(*t) < WINDOW;
        self.downloaders.retain(|_, (t, _)| fresh(t));
        let d = &self.downloaders;
        self.files
            .retain(|p, _| d.contains_key(p) || self.shelled.contains(p));
        self.readers.retain(|_, r| fresh(&r.at));
        while self.writes.front().is_some_and(|w| !fresh(&w.at)) {
            self.writes.pop_front();
        }
    }

    /// The latest write a downloader made to `target`, other than by `not` (the reader's
    /// parent, feeding its own child).
    fn downloaded(&self, target: &str, not: u32) -> Option<&Write> {
        self.writes.iter().rev().find(|w| {
            w.target == target
                && w.tgid != not
                && self.downloaders.contains_key(&w.tgid)
                && self
                    .files
                    .get(&w.tgid)
                    .is_none_or(|(n, _)| *n <= FETCHER_FILES)
        })
    }

    fn pipe_run(&self, r: &Reader, pipe: &str, by: u32) -> RemoteRun {
        RemoteRun {
            pid: r.pid,
            detail: format!(
                "`{}` read its standard input from {pipe}, which a process that connected out wrote ({})",
                r.line,
                self.from(by)
            ),
        }
    }

    /// Process `tgid` connected to `to` (over IP): what it wrote to a pipe a shell reads was
    /// downloaded, if a shell started it.
    pub(super) fn connected(&mut self, tgid: u32, to: String, now: Instant) -> Option<RemoteRun> {
        self.forget_old(now);
        if !self.shelled.contains(&tgid) {
            return None;
        }
        self.downloaders.insert(tgid, (now, to));
        let (pipe, r) = self
            .writes
            .iter()
            .filter(|w| w.tgid == tgid)
            .find_map(|w| {
                let r = self.readers.get(&w.target)?;
                (r.ppid != tgid).then(|| (w.target.clone(), r.clone()))
            })?;
        self.readers.remove(&pipe);
        Some(self.pipe_run(&r, &pipe, tgid))
    }

    /// Process `tgid` wrote `text` to `target` (a pipe or a file): if it connected out, a shell
    /// reading that pipe runs downloaded code.
    pub(super) fn wrote(
        &mut self,
        tgid: u32,
        target: &str,
        text: &str,
        now: Instant,
    ) -> Option<RemoteRun> {
        // A pipe is followed only by a name that tells it apart from the agent's other pipes
        // (a curl's error on the agent's pipe is not the shell's stdin); any pipe's bytes can
        // still be a `-c` argument, which the bytes themselves identify.
        // A terminal's bytes (and /dev/null's) are never run nor read back: every write an
        // agent shows is one, and none is a file a downloader made.
        if !(target.starts_with("pipe:") || target.starts_with('/'))
            || axiom_rules::is_terminal(Some(target))
            || target == "/dev/null"
        {
            return None;
        }
        self.forget_old(now);
        if self.writes.len() >= WRITES {
            self.writes.pop_front();
        }
        if target.starts_with('/') {
            let (n, last) = self.files.entry(tgid).or_default();
            if last != target {
                *n += 1;
                *last = target.to_string();
            }
        }
        self.writes.push_back(Write {
            at: now,
            tgid,
            target: target.to_string(),
            head: text.trim_start().chars().take(HEAD).collect(),
        });
        if !self.downloaders.contains_key(&tgid) || !axiom_rules::is_known_pipe(target) {
            return None;
        }
        let r = self.readers.get(target).filter(|r| r.ppid != tgid)?.clone();
        self.readers.remove(target);
        Some(self.pipe_run(&r, target, tgid))
    }

    /// Process `tgid` (child of `ppid`) executed `filename` with `argv` in `cwd`, its stdin
    /// `stdin`.
    pub(super) fn exec(
        &mut self,
        (tgid, ppid): (u32, u32),
        filename: &str,
        argv: &[String],
        (cwd, stdin): (Option<&str>, Option<&str>),
        now: Instant,
    ) -> Option<RemoteRun> {
        self.forget_old(now);
        if self.shelled.contains(&ppid) || argv.first().is_some_and(|a| is_shell(a)) {
            self.shelled.insert(tgid);
        }
        let full = |p: &str| match cwd {
            Some(d) if !p.starts_with('/') => {
                format!("{}/{}", d.trim_end_matches('/'), p.trim_start_matches("./"))
            }
            _ => p.to_string(),
        };
        let line: String = argv.join(" ").chars().take(120).collect();
        let code = code_of(argv);
        // A file a downloader wrote, executed, or given to an interpreter as its script.
        let script = match code {
            Some(Code::Script(s)) => Some(s),
            _ => None,
        };
        for f in [Some(filename), script].into_iter().flatten().map(full) {
            if let Some(w) = self.downloaded(&f, 0) {
                return Some(RemoteRun {
                    pid: tgid,
                    detail: format!(
                        "`{line}` ran {f}, which a process that connected out wrote ({})",
                        self.from(w.tgid)
                    ),
                });
            }
        }
        match code? {
            // Its code argument is what a downloader wrote to a pipe.
            Code::Arg(arg) => {
                let arg = arg.trim_start();
                let w = self.writes.iter().rev().find(|w| {
                    w.target.starts_with("pipe:")
                        && w.head.len() >= 8
                        && arg.starts_with(w.head.as_str())
                        && self.downloaders.contains_key(&w.tgid)
                })?;
                return Some(RemoteRun {
                    pid: tgid,
                    detail: format!(
                        "`{line}`: the code it was given is what a process that connected out wrote ({})",
                        self.from(w.tgid)
                    ),
                });
            }
            Code::Stdin => {}
            Code::Script(_) | Code::Elsewhere => return None,
        }
        // Its stdin is a pipe a downloader wrote to, or may write to yet.
        let pipe = stdin.filter(|s| axiom_rules::is_known_pipe(s))?;
        let r = Reader {
            at: now,
            pid: tgid,
            ppid,
            line,
        };
        if let Some(by) = self.downloaded(pipe, ppid).map(|w| w.tgid) {
            return Some(self.pipe_run(&r, pipe, by));
        }
        self.readers.insert(pipe.to_string(), r);
        None
    }

    /// Process `parent` forked `child`: a shell's child is the shell's too.
    pub(super) fn forked(&mut self, parent: u32, child: u32) {
        if self.shelled.contains(&parent) {
            self.shelled.insert(child);
        }
    }

    /// Process `tgid` ended: it reads no pipe any more (a downloader stays one for the window).
    pub(super) fn exited(&mut self, tgid: u32) {
        self.readers.retain(|_, r| r.pid != tgid);
        if !self.downloaders.contains_key(&tgid) {
            self.shelled.remove(&tgid);
            self.files.remove(&tgid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    /// `tgid` runs `curl`, started by a shell (pid 2).
    fn curl(n: &mut Net, tgid: u32, t: Instant) {
        n.exec((2, 1), "/bin/sh", &v(&["sh"]), (None, None), t);
        n.exec((tgid, 2), "/usr/bin/curl", &v(&["curl"]), (None, None), t);
    }

    #[test]
    fn a_shell_reading_a_downloaders_pipe_runs_downloaded_code_whichever_starts_first() {
        let t = Instant::now();
        // curl first, then sh.
        let mut n = Net::default();
        curl(&mut n, 10, t);
        n.connected(10, "93.184.216.34:443".into(), t);
        assert_eq!(n.wrote(10, "pipe:[77]", "#!/bin/sh\necho hi\n", t), None);
        let r = n
            .exec(
                (11, 1),
                "/bin/sh",
                &v(&["sh"]),
                (None, Some("pipe:[77]")),
                t,
            )
            .expect("run");
        assert_eq!(r.pid, 11);
        assert!(r.detail.contains("93.184.216.34:443"), "{}", r.detail);
        // bash first (the pipeline starts both), then wget's first bytes.
        let mut n = Net::default();
        assert_eq!(
            n.exec(
                (21, 1),
                "/usr/bin/bash",
                &v(&["bash"]),
                (None, Some("pipe:[88]")),
                t
            ),
            None
        );
        curl(&mut n, 20, t);
        n.connected(20, "10.0.0.1:80".into(), t);
        let r = n
            .wrote(20, "pipe:[88]", "echo installing\n", t)
            .expect("run");
        assert_eq!(r.pid, 21);
        // The write read before the connection (two rings): found when the connection comes.
        let mut n = Net::default();
        assert_eq!(
            n.exec(
                (51, 1),
                "/bin/bash",
                &v(&["bash"]),
                (None, Some("pipe:[9]")),
                t
            ),
            None
        );
        curl(&mut n, 50, t);
        assert_eq!(n.wrote(50, "pipe:[9]", "echo installing\n", t), None);
        assert_eq!(
            n.connected(50, "10.0.0.2:443".into(), t).map(|r| r.pid),
            Some(51)
        );
        // A pipe from a process that never connected is not a download; nor is a shell whose
        // stdin is a terminal.
        let mut n = Net::default();
        assert_eq!(
            n.exec(
                (31, 1),
                "/bin/sh",
                &v(&["sh"]),
                (None, Some("pipe:[99]")),
                t
            ),
            None
        );
        assert_eq!(n.wrote(30, "pipe:[99]", "echo hi\n", t), None);
        curl(&mut n, 32, t);
        n.connected(32, "1.1.1.1:443".into(), t);
        n.wrote(32, "pipe:[5]", "echo hi there\n", t);
        assert_eq!(
            n.exec(
                (33, 1),
                "/bin/sh",
                &v(&["sh"]),
                (None, Some("/dev/pts/1")),
                t
            ),
            None
        );
        // An interpreter that does not run its stdin (`curl … | python3 -m json.tool`).
        let mut n = Net::default();
        curl(&mut n, 80, t);
        n.connected(80, "1.1.1.1:443".into(), t);
        n.wrote(80, "pipe:[agent:3]", "{\"a\": 1}\n", t);
        assert_eq!(
            n.exec(
                (81, 1),
                "/usr/bin/python3",
                &v(&["python3", "-m", "json.tool"]),
                (None, Some("pipe:[agent:3]")),
                t
            ),
            None
        );
        // Pipes of a record made before pipes were numbered are all one name: not followed.
        let mut n = Net::default();
        curl(&mut n, 60, t);
        n.connected(60, "1.1.1.1:443".into(), t);
        n.wrote(60, "pipe:[agent]", "curl: (7) Failed to connect\n", t);
        assert_eq!(
            n.exec(
                (61, 1),
                "/bin/sh",
                &v(&["sh"]),
                (None, Some("pipe:[agent]")),
                t
            ),
            None
        );
        // An agent (it talks to its model) handing its hook command its JSON on stdin.
        let mut n = Net::default();
        n.connected(40, "160.79.104.10:443".into(), t);
        let hook = v(&["/bin/sh", "-c", "exec axiomctl hook"]);
        assert_eq!(
            n.exec((41, 40), "/bin/sh", &hook, (None, Some("pipe:[6]")), t),
            None
        );
        assert_eq!(
            n.wrote(40, "pipe:[6]", "{\"hook_event_name\":\"Stop\"}", t),
            None
        );
        n.wrote(40, "pipe:[7]", "{\"hook_event_name\":\"Stop\"}", t);
        assert_eq!(
            n.exec((42, 40), "/bin/sh", &hook, (None, Some("pipe:[7]")), t),
            None
        );
    }

    #[test]
    fn where_an_interpreter_takes_its_code_from() {
        let c = |a: &[&str]| format!("{:?}", code_of(&v(a)));
        assert_eq!(c(&["sh"]), "Some(Stdin)");
        assert_eq!(c(&["/usr/bin/bash", "-s", "--", "--yes"]), "Some(Stdin)");
        assert_eq!(c(&["bash", "-e", "-o", "pipefail"]), "Some(Stdin)");
        assert_eq!(c(&["python3", "-"]), "Some(Stdin)");
        assert_eq!(c(&["python3.12", "-u"]), "Some(Stdin)");
        assert_eq!(c(&["sh", "--"]), "Some(Stdin)");
        assert_eq!(c(&["python3", "-m", "json.tool"]), "Some(Elsewhere)");
        assert_eq!(c(&["bash", "-lc", "echo hi"]), "Some(Arg(\"echo hi\"))");
        assert_eq!(c(&["perl", "-e", "print 1"]), "Some(Arg(\"print 1\"))");
        assert_eq!(c(&["node", "--eval", "1"]), "Some(Arg(\"1\"))");
        assert_eq!(
            c(&["sh", "install.sh", "-y"]),
            "Some(Script(\"install.sh\"))"
        );
        assert_eq!(
            c(&["python3", "-W", "ignore", "x.py"]),
            "Some(Script(\"x.py\"))"
        );
        assert_eq!(c(&["curl", "-fsSL"]), "None");
    }

    #[test]
    fn a_downloaded_text_as_a_c_argument_or_a_downloaded_file_run() {
        let t = Instant::now();
        let mut n = Net::default();
        curl(&mut n, 10, t);
        n.connected(10, "1.2.3.4:443".into(), t);
        let script = "#!/bin/bash\nset -e\necho installing the tool\n";
        n.wrote(10, "pipe:[5]", script, t);
        let r = n
            .exec(
                (11, 1),
                "/bin/bash",
                &v(&["/bin/bash", "-c", script]),
                (None, None),
                t,
            )
            .expect("$(curl …)");
        assert!(r.detail.contains("the code it was given"), "{}", r.detail);
        assert_eq!(
            n.exec(
                (12, 1),
                "/bin/bash",
                &v(&["bash", "-c", "echo something else"]),
                (None, None),
                t
            ),
            None
        );
        n.wrote(10, "/home/u/install.sh", script, t);
        let r = n
            .exec(
                (13, 1),
                "/bin/sh",
                &v(&["sh", "install.sh"]),
                (Some("/home/u"), None),
                t,
            )
            .expect("sh install.sh");
        assert!(r.detail.contains("/home/u/install.sh"), "{}", r.detail);
        let r = n
            .exec(
                (14, 1),
                "/home/u/install.sh",
                &v(&["/home/u/install.sh"]),
                (None, None),
                t,
            )
            .expect("./install.sh");
        assert_eq!(r.pid, 14);
        // The agent itself (no shell started it) talks to its model and writes the script
        // its model asked for: its work, not a download.
        let mut a = Net::default();
        a.connected(60, "160.79.104.10:443".into(), t);
        a.wrote(
            60,
            "/w/parser.py",
            "def parse(s):\n    return s.split()\n",
            t,
        );
        assert_eq!(
            a.exec(
                (61, 60),
                "/usr/bin/python3",
                &v(&["python3", "/w/parser.py"]),
                (None, None),
                t
            ),
            None
        );
        // A package manager (it writes many files) installing what is then run: the
        // project's dependencies, not a fetched script.
        curl(&mut n, 70, t);
        n.connected(70, "104.16.0.1:443".into(), t);
        for f in ["a.py", "b.py", "c.py", "d.py", "e.py", "pytest"] {
            n.wrote(70, &format!("/home/u/.local/bin/{f}"), "import sys\n", t);
        }
        assert_eq!(
            n.exec(
                (71, 1),
                "/home/u/.local/bin/pytest",
                &v(&["pytest"]),
                (None, None),
                t
            ),
            None
        );
        // Forgotten after the window.
        let later = t + WINDOW + Duration::from_secs(1);
        assert_eq!(
            n.exec(
                (15, 1),
                "/bin/sh",
                &v(&["sh", "/home/u/install.sh"]),
                (None, None),
                later
            ),
            None
        );
    }
}
