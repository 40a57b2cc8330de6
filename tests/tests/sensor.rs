//! The kernel sensor, end to end: real axiomd, real programs in this kernel, real processes.
use std::{
    io::Write as _,
    net::TcpListener,
    process::Stdio,
    time::{Duration, Instant},
};

use axiom_tests::*;

const T: Duration = Duration::from_secs(10);

#[test]
fn tracked_cgroup_yields_lifecycle_output_file_and_connect_events() {
    let d = Daemon::start("sensor_all", &[]);
    let cg = Cgroup::new("all");
    let agent = d.track_cgroup(&cg);
    let mut sub = d.subscribe(false);
    let dir = tempdir("all");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "cd {dir} && echo marker-out-1 && printf data > f1 && mv f1 f2 && mkdir sub && rm f2 && \
         /bin/bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' ; exit 7"
    );
    let (pid, st) = run_in(&cg, &script);
    assert_eq!(st.code(), Some(7));

    let exec = sub.wait_for("exec of sh", T, |e| {
        e.tgid == pid && matches!(&e.body, Body::Exec { argv, .. } if argv.iter().any(|a| a.contains("marker-out-1")))
    });
    assert_eq!(exec.agent, agent);
    assert_eq!(exec.cgroup_id, cg.id());
    let out = sub.wait_for("output", T, |e| {
        e.tgid == pid && output_text(e) == Some("marker-out-1\n")
    });
    assert!(
        matches!(
            out.body,
            Body::Output {
                fd: 1,
                count: 13,
                captured: 13,
                ..
            }
        ),
        "{out:?}"
    );
    // Output records carry a slim kernel header; axiomd fills in who wrote them.
    assert_eq!(
        (out.comm.as_str(), out.uid, out.cgroup_id),
        ("sh", 0, cg.id())
    );
    assert_eq!(out.agent, agent);
    // Paths are absolute (the process's cwd or directory fd resolved), and a shell's
    // redirection is attributed to its file at the time of the write.
    let (f1, f2, subdir) = (
        format!("{dir}/f1"),
        format!("{dir}/f2"),
        format!("{dir}/sub"),
    );
    let open = sub.wait_for(
        "open for write",
        T,
        |e| matches!(&e.body, Body::File { op, path, .. } if op == "open" && *path == f1),
    );
    assert_eq!(open.tgid, pid);
    sub.wait_for("file payload", T, |e| {
        e.tgid == pid
            && output_text(e) == Some("data")
            && matches!(&e.body, Body::Output { target: Some(t), .. } if *t == f1)
    });
    // mv, mkdir and rm are child processes: their pids come from fork events of the shell.
    let rename = sub.wait_for("rename", T, |e| {
        matches!(&e.body, Body::File { op, path, path2, .. } if op == "rename" && *path == f1 && path2.as_deref() == Some(f2.as_str()))
    });
    let fork = sub.wait_for("fork of mv", T, |e| {
        e.tgid == pid && matches!(e.body, Body::Fork { child_pid } if child_pid == rename.tgid)
    });
    assert_eq!(fork.agent, agent);
    assert_eq!(rename.ppid, pid);
    sub.wait_for(
        "mkdir",
        T,
        |e| matches!(&e.body, Body::File { op, path, .. } if op == "mkdir" && *path == subdir),
    );
    sub.wait_for(
        "unlink",
        T,
        |e| matches!(&e.body, Body::File { op, path, .. } if op == "unlink" && *path == f2),
    );
    let conn = sub.wait_for(
        "connect",
        T,
        |e| matches!(&e.body, Body::Connect { port: p, .. } if *p == port),
    );
    assert!(
        matches!(&conn.body, Body::Connect { family, address, .. } if family == "inet" && address == "127.0.0.1")
    );
    assert_eq!(conn.comm, "bash");
    let exit = sub.wait_for("exit of sh", T, |e| {
        e.tgid == pid && matches!(e.body, Body::Exit { .. })
    });
    assert_eq!(
        exit.body,
        Body::Exit {
            code: Some(7),
            signal: None
        }
    );
    drop(listener);
}

/// Relative paths resolve against the directory the process was in when it used them (the
/// kernel's chdir records, in order with its writes), even when the process is gone before
/// axiomd reads its records and /proc has nothing left: axiomd is stopped while the shell runs.
/// Before, such a path stayed relative, so a phrase split across two writes to one file was two
/// files, and a rule on a workspace path missed it.
#[test]
fn paths_of_a_process_gone_before_its_records_are_read_follow_its_chdirs() {
    use nix::sys::signal::{Signal, kill};
    let d = Daemon::start("sensor_cwd", &[]);
    let cg = Cgroup::new("cwd");
    d.track_cgroup(&cg);
    let mut sub = d.subscribe(false);
    let dir = tempdir("cwd");
    std::fs::create_dir_all(format!("{dir}/a/b")).unwrap();
    let script = format!(
        "cd {dir} && printf one > f1 && cd a && printf two > f2 && cd b && mkdir c && \
         cd ../.. && printf three >> f1"
    );
    let axiomd = nix::unistd::Pid::from_raw(d.child.as_ref().expect("axiomd runs").id() as i32);
    kill(axiomd, Signal::SIGSTOP).unwrap();
    let (pid, st) = run_in(&cg, &script);
    kill(axiomd, Signal::SIGCONT).unwrap();
    assert!(st.success());
    let wrote = |sub: &mut Subscription, text: &str, file: String| {
        sub.wait_for(text, T, |e| {
            e.tgid == pid
                && output_text(e) == Some(text)
                && matches!(&e.body, Body::Output { target: Some(t), .. } if *t == file)
        });
    };
    wrote(&mut sub, "one", format!("{dir}/f1"));
    wrote(&mut sub, "two", format!("{dir}/a/f2"));
    let c = format!("{dir}/a/b/c");
    sub.wait_for(
        "mkdir in a/b",
        T,
        |e| matches!(&e.body, Body::File { op, path, .. } if op == "mkdir" && *path == c),
    );
    wrote(&mut sub, "three", format!("{dir}/f1"));
}

/// A path that names its file through an fd (`/proc/self/fd/N/name`, as Claude Code writes
/// its files, or relative to a directory fd) is resolved from /proc, so its record wakes axiomd
/// while the fd is open, where other file records wait for the drain timer (here a second): the
/// directory is closed 300 ms after the renames, and the process exits at once.
#[test]
fn paths_through_a_directory_fd_are_read_while_it_is_open() {
    let d = Daemon::start("sensor_dirfd", &["--set", "sensor.output_flush_ms=1000"]);
    let cg = Cgroup::new("dirfd");
    d.track_cgroup(&cg);
    let mut sub = d.subscribe(false);
    let dir = tempdir("dirfd");
    let script = format!(
        "python3 -c 'import os, time\n\
         d = os.open(\"{dir}\", os.O_RDONLY | os.O_DIRECTORY)\n\
         p = \"/proc/self/fd/%d/\" % d\n\
         fd = os.open(p + \"a.tmp\", os.O_WRONLY | os.O_CREAT, 0o644)\n\
         os.write(fd, b\"through-proc\")\n\
         os.close(fd)\n\
         os.rename(p + \"a.tmp\", p + \"a\")\n\
         fd = os.open(\"b.tmp\", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=d)\n\
         os.write(fd, b\"through-dirfd\")\n\
         os.close(fd)\n\
         os.rename(\"b.tmp\", \"b\", src_dir_fd=d, dst_dir_fd=d)\n\
         time.sleep(0.3)\n\
         os.close(d)\n'"
    );
    let (_, st) = run_in(&cg, &script);
    assert!(st.success());
    for (text, name) in [("through-proc", "a"), ("through-dirfd", "b")] {
        let tmp = format!("{dir}/{name}.tmp");
        sub.wait_for(text, T, |e| {
            output_text(e) == Some(text)
                && matches!(&e.body, Body::Output { target: Some(t), .. } if *t == tmp)
        });
        let to = format!("{dir}/{name}");
        sub.wait_for(&format!("rename to {to}"), T, |e| {
            matches!(&e.body, Body::File { op, path, path2: Some(p2), .. }
                if op == "rename" && *path == tmp && *p2 == to)
        });
    }
}

#[test]
fn untracked_process_produces_no_events() {
    let d = Daemon::start("sensor_untracked", &[]);
    let tracked = Cgroup::new("tracked");
    let other = Cgroup::new("other");
    d.track_cgroup(&tracked);
    let mut sub = d.subscribe(false);
    let (untracked_pid, _) = run_in(&other, "echo untracked-marker; printf x > /dev/null; true");
    // A tracked sentinel after the untracked run: once it is seen, the untracked run's records
    // would have been read too.
    let (sentinel, _) = run_in(&tracked, "echo sentinel-marker");
    sub.wait_for("sentinel", T, |e| {
        e.tgid == sentinel && output_text(e) == Some("sentinel-marker\n")
    });
    sub.drain_for(Duration::from_millis(300));
    let leaked: Vec<_> = sub
        .seen
        .iter()
        .filter(|e| {
            e.tgid == untracked_pid
                || output_text(e).is_some_and(|t| t.contains("untracked-marker"))
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "untracked process leaked events: {leaked:#?}"
    );
    assert!(sub.seen.iter().all(|e| e.cgroup_id == tracked.id()));
}

#[test]
fn double_forked_setsid_grandchild_of_adopted_process_is_tracked() {
    let d = Daemon::start("sensor_daemonize", &[]);
    let mut sub = d.subscribe(false);
    // Not in any tracked cgroup: tracking follows the process tree alone.
    let mut parent = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg("read go; setsid /bin/sh -c '( sleep 0.3; echo grandchild-$$-alive; exit 4 ) &' ; exit 0")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = parent.id();
    let r = d.track_pid(pid);
    assert!(r.ok, "{:?}", r.error);
    parent.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert_eq!(parent.wait().unwrap().code(), Some(0));
    let setsid = sub.wait_for(
        "setsid exec",
        T,
        |e| matches!(&e.body, Body::Exec { filename, .. } if filename.ends_with("setsid")),
    );
    assert_eq!(setsid.ppid, pid);
    let out = sub.wait_for("grandchild output", T, |e| {
        output_text(e).is_some_and(|t| t.starts_with("grandchild-") && t.ends_with("-alive\n"))
    });
    assert_ne!(out.tgid, pid);
    assert_ne!(
        out.tgid, setsid.tgid,
        "the writer is a forked child, not the setsid process"
    );
    assert_eq!(out.agent, r.agent.unwrap());
    let exit = sub.wait_for("grandchild exit", T, |e| {
        e.tgid == out.tgid && matches!(e.body, Body::Exit { .. })
    });
    assert_eq!(
        exit.body,
        Body::Exit {
            code: Some(4),
            signal: None
        }
    );
}

#[test]
fn sigkill_restart_keeps_programs_attached_and_delivers_what_was_written_meanwhile() {
    let mut d = Daemon::start("sensor_restart", &[]);
    let cg = Cgroup::new("restart");
    let agent = d.track_cgroup(&cg);
    let before = link_program_ids(&d);
    d.kill9();
    // axiomd is gone; the tracked process writes anyway.
    let (pid, st) = run_in(
        &cg,
        "i=0; while [ $i -lt 200 ]; do echo while-down-$i; i=$((i+1)); done",
    );
    assert!(st.success());
    d.spawn();
    let status = d.status();
    assert!(
        status.reused_pins,
        "restart must reuse the pinned programs: {status:?}"
    );
    assert_eq!(
        before,
        link_program_ids(&d),
        "programs were replaced or detached"
    );
    let mut sub = d.subscribe(true);
    sub.wait_for("exit of the writer", T, |e| {
        e.tgid == pid && matches!(e.body, Body::Exit { .. })
    });
    // Output comes on its own ring; its last line marks the end of what was written.
    sub.wait_for("last line", T, |e| {
        e.tgid == pid && output_text(e) == Some("while-down-199\n")
    });
    let got: std::collections::BTreeSet<String> = sub
        .seen
        .iter()
        .filter(|e| e.tgid == pid)
        .filter_map(output_text)
        .map(str::to_string)
        .collect();
    for i in 0..200 {
        assert!(
            got.contains(&format!("while-down-{i}\n")),
            "line {i} missing after restart"
        );
    }
    // Tracking state survived too: new processes in the cgroup still carry the agent id.
    let (pid2, _) = run_in(&cg, "echo after-restart");
    let e = sub.wait_for("post-restart output", T, |e| {
        e.tgid == pid2 && output_text(e).is_some()
    });
    assert_eq!(e.agent, agent);
}

#[test]
fn records_beyond_ring_capacity_while_down_are_counted_as_lost() {
    // A 64 KiB output ring holds a few hundred records; 5,000 writes overflow it.
    let mut d = Daemon::start("sensor_overflow", &["--output-ring-bytes", "65536"]);
    let cg = Cgroup::new("overflow");
    d.track_cgroup(&cg);
    let lost_before = d.status().lost["ring_full_output"];
    d.kill9();
    let n = 5000;
    let (pid, _) = run_in(
        &cg,
        &format!(
            "i=0; while [ $i -lt {n} ]; do echo overflow-line-$i-................................................; i=$((i+1)); done"
        ),
    );
    d.spawn();
    let mut sub = d.subscribe(true);
    sub.wait_for("writer exit", T, |e| {
        e.tgid == pid && matches!(e.body, Body::Exit { .. })
    });
    let count = |sub: &Subscription| {
        sub.seen
            .iter()
            .filter(|e| {
                e.tgid == pid && output_text(e).is_some_and(|t| t.starts_with("overflow-line-"))
            })
            .count() as u64
    };
    let lost = d.status().lost["ring_full_output"] - lost_before;
    // What the ring held arrives after the restart; read until it is all in (or time is up).
    let t0 = Instant::now();
    while count(&sub) + lost < n && t0.elapsed() < T {
        sub.drain_for(Duration::from_millis(100));
    }
    let delivered = count(&sub);
    assert!(
        delivered > 0,
        "the ring's contents must be delivered after the restart"
    );
    assert!(lost > 0, "overflow must be counted");
    assert_eq!(
        delivered + lost,
        n,
        "every write is either delivered or counted as lost"
    );
}

#[test]
fn capture_size_is_configurable() {
    let d = Daemon::start("sensor_capture", &["--capture-bytes", "8192"]);
    let cg = Cgroup::new("capture");
    d.track_cgroup(&cg);
    let mut sub = d.subscribe(false);
    let (pid, _) = run_in(&cg, "printf '%6000s' x");
    let e = sub.wait_for("6000-byte write", T, |e| {
        e.tgid == pid && matches!(e.body, Body::Output { count: 6000, .. })
    });
    assert!(
        matches!(e.body, Body::Output { captured: 6000, .. }),
        "{e:?}"
    );
}

#[test]
fn default_capture_is_4096_bytes_and_counts_the_rest() {
    let d = Daemon::start("sensor_capture_default", &[]);
    let cg = Cgroup::new("capture_default");
    d.track_cgroup(&cg);
    let mut sub = d.subscribe(false);
    let (pid, _) = run_in(
        &cg,
        "printf '%6000s' x; /usr/bin/python3 -c 'import os; os.writev(1, [b\"ab\", b\"cd\"])'",
    );
    let e = sub.wait_for("6000-byte write", T, |e| {
        e.tgid == pid && matches!(e.body, Body::Output { count: 6000, .. })
    });
    assert!(matches!(&e.body, Body::Output { captured: 4096, text, .. } if text.len() == 4096));
    let v = sub.wait_for(
        "writev",
        T,
        |e| matches!(&e.body, Body::Output { syscall, .. } if syscall == "writev"),
    );
    assert_eq!(output_text(&v), Some("abcd"));
}

#[test]
fn clean_stop_without_keep_sensors_unpins_everything() {
    let mut d = Daemon::start("sensor_unpin", &["--keep-sensors-on-exit", "false"]);
    let ids = link_program_ids(&d);
    assert!(ids.iter().any(|(name, _)| name == "enter_write"));
    assert!(d.stop().success());
    assert!(
        !d.pin_dir.exists(),
        "pins left behind: {}",
        d.pin_dir.display()
    );
    // With the links unpinned and axiomd gone, the kernel frees the programs.
    wait_until_unloaded(&ids);
}

fn wait_until_unloaded(ids: &[(String, u32)]) {
    let t0 = Instant::now();
    loop {
        let live: Vec<u32> = aya::programs::loaded_programs()
            .flatten()
            .map(|p| p.id())
            .filter(|id| ids.iter().any(|(_, i)| i == id))
            .collect();
        if live.is_empty() {
            return;
        }
        assert!(t0.elapsed() < T, "programs still loaded: {live:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tempdir(name: &str) -> String {
    let p = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&p).unwrap();
    p.display().to_string()
}

/// Program id behind each pinned link.
fn link_program_ids(d: &Daemon) -> Vec<(String, u32)> {
    let mut v: Vec<(String, u32)> = std::fs::read_dir(d.pin_dir.join("links"))
        .unwrap()
        .flatten()
        .map(|e| {
            let l = aya::programs::links::PinnedLink::from_pin(e.path()).unwrap();
            let id = aya::programs::links::FdLink::from(l)
                .info()
                .unwrap()
                .program_id();
            (e.file_name().to_string_lossy().into_owned(), id)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_different_sensor_replaces_the_pinned_one_and_keeps_tracking_state() {
    let mut d = Daemon::start("sensor_upgrade", &["--output-ring-bytes", "1048576"]);
    let cg = Cgroup::new("upgrade");
    let agent = d.track_cgroup(&cg);
    let before = link_program_ids(&d);
    d.kill9();
    // Another ring size is another sensor (as a new version would be): loaded fresh, its links
    // pinned over the old ones; the tracking maps are reused.
    d.set_args(&["--output-ring-bytes", "2097152"]);
    d.spawn();
    let st = d.status();
    assert!(!st.reused_pins, "{st:?}");
    let after = link_program_ids(&d);
    assert_eq!(before.len(), after.len());
    for ((name_a, id_a), (name_b, id_b)) in before.iter().zip(&after) {
        assert_eq!(name_a, name_b);
        assert_ne!(id_a, id_b, "{name_a} was not replaced");
    }
    // The old programs are freed once unpinned (the kernel releases them asynchronously).
    wait_until_unloaded(&before);
    let mut sub = d.subscribe(false);
    let (pid, _) = run_in(&cg, "echo after-upgrade");
    let e = sub.wait_for("output after the upgrade", T, |e| {
        e.tgid == pid && output_text(e) == Some("after-upgrade\n")
    });
    assert_eq!(e.agent, agent, "tracking state was lost in the upgrade");
}
