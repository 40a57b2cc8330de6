//! axiomctl as scripts see it: exit codes, completions, man page.
use std::process::Command;

use axiom_tests::*;

fn axiomctl() -> Command {
    Command::new(axiomctl_bin())
}

#[test]
fn completions_are_valid_bash_and_the_man_page_is_roff() {
    let out = axiomctl().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    for sub in [
        "run", "watch", "agents", "freeze", "thaw", "kill", "events", "status",
    ] {
        assert!(script.contains(sub), "completion lacks {sub}");
    }
    let path = std::env::temp_dir().join(unique("axiomctl_completion"));
    std::fs::write(&path, &script).unwrap();
    let st = Command::new("bash").arg("-n").arg(&path).status().unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(st.success(), "bash rejects the completion script");
    let man = axiomctl().arg("manpage").output().unwrap();
    assert!(String::from_utf8_lossy(&man.stdout).contains(".TH axiomctl"));
}

#[test]
fn exit_codes_tell_scripts_what_happened() {
    // axiomd unreachable: 69.
    let st = axiomctl()
        .args(["--socket", "/nonexistent/axiomd.sock", "status"])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(69));
    let d = Daemon::start("cli_codes", &[]);
    let sock = d.socket.display().to_string();
    // Each refusal: a one-line reason and its own exit code.
    let mut sleeper = Command::new("/bin/sleep").arg("30").spawn().unwrap();
    let already = sleeper.id().to_string();
    assert!(d.track_pid(sleeper.id()).ok);
    for (args, code) in [
        (vec!["watch", "4194303"], 3),
        (vec!["watch", "2"], 5), // kthreadd
        (vec!["watch", "1"], 6),
        (vec!["watch", already.as_str()], 7),
        (vec!["freeze", "999999"], 8),
        (vec!["events", "--agent", "999999"], 8),
    ] {
        let out = axiomctl()
            .args(["--socket", &sock])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    // A command that does not exist: 127, like a shell.
    let st = axiomctl()
        .args(["--socket", &sock, "run", "--", "/nonexistent/agent"])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(127));
    // The agent's own code passes through.
    let st = axiomctl()
        .args(["--socket", &sock, "run", "--", "/bin/sh", "-c", "exit 42"])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(42));
}
