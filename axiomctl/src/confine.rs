//! The launcher's half of confinement, run in the agent's child after it has dropped to the
//! invoking user and before it executes the agent: read-only mounts over protected paths, then
//! Landlock. (axiomd applies the other half — limits, the connect allowlist — to the cgroup.)
use std::os::fd::AsFd as _;

use axiom_common::confine::{Applied, Confinement, FsRules, NetRules};
use landlock::{
    ABI, Access as _, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible as _, NetPort,
    PathBeneath, PathFd, Ruleset, RulesetAttr as _, RulesetCreatedAttr as _, RulesetStatus, Scope,
};

/// The newest Landlock ABI this build knows how to ask for.
const KNOWN: ABI = ABI::V7;

/// The running kernel's Landlock ABI (0: none), as the kernel itself reports it.
pub fn kernel_abi() -> u32 {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a NULL attribute and size 0 only returns
    // the ABI version (or an error).
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    if v < 0 { 0 } else { v as u32 }
}

/// What each ABI adds, for saying exactly what an older kernel does not enforce.
fn missing_for(abi: u32, c: &Confinement) -> Vec<String> {
    let mut out = Vec::new();
    if c.fs.is_some() {
        if abi < 1 {
            out.push("filesystem rules: this kernel has no Landlock (all files writable)".into());
            return out;
        }
        if abi < 2 {
            out.push("renames and links across directories (Landlock ABI 2)".into());
        }
        if abi < 3 {
            out.push("truncating files outside writable paths (Landlock ABI 3)".into());
        }
        if abi < 5 {
            out.push("ioctl on devices (Landlock ABI 5)".into());
        }
        if abi < 6 {
            out.push("signals to processes outside the agent (Landlock ABI 6)".into());
        }
    }
    if landlock_tcp(&c.net).is_some() && abi < 4 {
        out.push(
            "TCP connect rules by port (Landlock ABI 4; the cgroup allowlist still applies)".into(),
        );
    }
    out
}

/// The TCP ports Landlock should allow, when the network rules can be said in ports only
/// (Landlock knows ports, not addresses): `Some([])` denies every TCP connect.
fn landlock_tcp(net: &NetRules) -> Option<Vec<u16>> {
    if net.allow_all {
        return None;
    }
    let mut ports = Vec::new();
    for a in &net.allow {
        if a.port == 0 {
            // Any port to some address: only the cgroup program can say that.
            return None;
        }
        ports.push(a.port);
    }
    Some(ports)
}

fn beneath(path: &str, roots: &[String]) -> bool {
    roots.iter().any(|r| {
        let r = r.trim_end_matches('/');
        path == r || path.starts_with(&format!("{r}/")) || r.is_empty()
    })
}

/// Applies `c` to this (single-threaded, not yet exec'd) process. `Err` is a refusal (strict
/// mode, or a step that failed outright); `Ok` says what the kernel could not enforce.
pub fn apply(c: &Confinement) -> Result<Applied, String> {
    let abi = kernel_abi();
    let mut applied = Applied {
        landlock_abi: abi,
        not_enforced: missing_for(abi, c),
    };
    if let Some(fs) = &c.fs {
        applied.not_enforced.extend(protect(fs)?);
    }
    if c.strict && !applied.not_enforced.is_empty() {
        return Err(format!(
            "profile {} is strict and this kernel cannot enforce: {}",
            c.profile,
            applied.not_enforced.join("; ")
        ));
    }
    landlock(c, &mut applied)?;
    if c.strict && !applied.not_enforced.is_empty() {
        return Err(format!(
            "profile {} is strict and this kernel cannot enforce: {}",
            c.profile,
            applied.not_enforced.join("; ")
        ));
    }
    Ok(applied)
}

/// Protected paths beneath a writable one are mounted read-only over themselves, in a user and
/// mount namespace of the agent's own (the uid inside is the same uid). Landlock then forbids
/// the agent to change mounts. Returns what could not be protected.
fn protect(fs: &FsRules) -> Result<Vec<String>, String> {
    let mut missing = Vec::new();
    let mut targets = Vec::new();
    for p in &fs.protect {
        if !beneath(p, &fs.write) {
            continue; // Landlock alone keeps it read-only.
        }
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.file_type().is_symlink() => {
                // Mounting over a symlink would follow it: protect what it names, if that is
                // beneath a writable path too, else Landlock covers it.
                if let Ok(t) = std::fs::canonicalize(p) {
                    let t = t.display().to_string();
                    if beneath(&t, &fs.write) {
                        targets.push(t);
                    }
                }
            }
            Ok(_) => targets.push(p.clone()),
            Err(_) => missing.push(format!(
                "{p}: protected but does not exist, so creating it is not prevented"
            )),
        }
    }
    if targets.is_empty() {
        return Ok(missing);
    }
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    use nix::sched::CloneFlags;
    if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS) {
        missing.extend(targets.iter().map(|t| {
            format!("{t}: protected path inside a writable one (no user namespace: {e})")
        }));
        return Ok(missing);
    }
    let map =
        |file: &str, text: String| std::fs::write(file, text).map_err(|e| format!("{file}: {e}"));
    map("/proc/self/setgroups", "deny".into())?;
    map("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
    map("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    use nix::mount::{MsFlags, mount};
    // Nothing mounted here propagates back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| format!("making / a slave mount: {e}"))?;
    for t in &targets {
        mount(
            Some(t.as_str()),
            t.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| format!("bind-mounting {t}: {e}"))?;
        read_only(t).map_err(|e| format!("making {t} read-only: {e}"))?;
    }
    Ok(missing)
}

/// mount_setattr(2): sets read-only on the mount at `path` and below, leaving every other
/// attribute as it is (a remount would have to repeat the locked ones).
fn read_only(path: &str) -> Result<(), std::io::Error> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: 0x1, // MOUNT_ATTR_RDONLY
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let c = std::ffi::CString::new(path)?;
    // SAFETY: a valid NUL-terminated path and a mount_attr of the size given.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            0x8000u32, // AT_RECURSIVE
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn ll<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> String + '_ {
    move |e| format!("landlock: {what}: {e}")
}

/// The Landlock domain: read beneath `read`, write beneath `write`, TCP connect by port where
/// the rules say ports only, and no signals to processes outside the agent.
fn landlock(c: &Confinement, applied: &mut Applied) -> Result<(), String> {
    let fs = c.fs.as_ref();
    let tcp = landlock_tcp(&c.net);
    if fs.is_none() && tcp.is_none() {
        return Ok(());
    }
    let level = if c.strict {
        CompatLevel::HardRequirement
    } else {
        CompatLevel::BestEffort
    };
    let mut rs = Ruleset::default().set_compatibility(level);
    if fs.is_some() {
        rs = rs
            .handle_access(AccessFs::from_all(KNOWN))
            .map_err(ll("filesystem rights"))?
            .scope(Scope::Signal)
            .map_err(ll("signal scope"))?;
    }
    if tcp.is_some() {
        rs = rs
            .handle_access(AccessNet::ConnectTcp)
            .map_err(ll("TCP rights"))?;
    }
    let mut created = rs.create().map_err(ll("creating the ruleset"))?;
    if let Some(fs) = fs {
        for (paths, access) in [
            (&fs.read, AccessFs::from_read(KNOWN)),
            (&fs.write, AccessFs::from_all(KNOWN)),
        ] {
            for p in paths {
                let Ok(fd) = PathFd::new(p) else {
                    continue; // absent here: nothing to grant
                };
                let access = rights_for(&fd, access);
                created = created
                    .add_rule(PathBeneath::new(fd, access))
                    .map_err(ll(p))?;
            }
        }
    }
    if let Some(ports) = &tcp {
        for p in ports {
            created = created
                .add_rule(NetPort::new(*p, AccessNet::ConnectTcp))
                .map_err(ll("TCP port"))?;
        }
    }
    let status = created.restrict_self().map_err(ll("restricting"))?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => {}
        RulesetStatus::PartiallyEnforced => {
            if applied.not_enforced.is_empty() {
                applied
                    .not_enforced
                    .push("some Landlock rights (partially enforced by this kernel)".into());
            }
        }
        RulesetStatus::NotEnforced => {
            applied
                .not_enforced
                .push("Landlock: not enforced by this kernel".into());
        }
    }
    if !status.no_new_privs {
        applied
            .not_enforced
            .push("no_new_privs (setuid programs keep their privileges)".into());
    }
    Ok(())
}

/// Directory rights only make sense on a directory: on a file keep the file rights.
fn rights_for(fd: &PathFd, access: BitFlags<AccessFs>) -> BitFlags<AccessFs> {
    let is_dir = nix::sys::stat::fstat(fd.as_fd())
        .map(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR)
        .unwrap_or(true);
    if is_dir {
        access
    } else {
        access & AccessFs::from_file(KNOWN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `check` in a forked child after applying `c`; the child's exit code is the answer.
    fn in_child(c: &Confinement, check: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the test thread forks; the child only runs `apply` and `check`, then exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = match apply(c) {
                    Ok(_) => check(),
                    Err(e) => {
                        eprintln!("apply: {e}");
                        100
                    }
                };
                unsafe { libc::_exit(code) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                match nix::sys::wait::waitpid(child, None).unwrap() {
                    nix::sys::wait::WaitStatus::Exited(_, c) => c,
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    #[test]
    fn writes_land_in_the_workspace_only_and_never_in_protected_paths() {
        let base = std::env::temp_dir().join(format!("axiom-confine-{}", std::process::id()));
        let ws = base.join("ws");
        let outside = base.join("outside");
        std::fs::create_dir_all(ws.join(".git/hooks")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let s = |p: &std::path::Path| p.display().to_string();
        let c = Confinement {
            profile: "test".into(),
            strict: false,
            fs: Some(FsRules {
                read: vec!["/".into()],
                write: vec![s(&ws)],
                protect: vec![s(&ws.join(".git/hooks"))],
            }),
            net: NetRules {
                allow_all: true,
                allow: vec![],
            },
            limits: Default::default(),
        };
        let (ws2, out2) = (ws.clone(), outside.clone());
        let code = in_child(&c, move || {
            let ok = |p: std::path::PathBuf| std::fs::write(p, "x").is_ok();
            let mut bad = 0;
            if !ok(ws2.join("allowed.txt")) {
                bad |= 1;
            }
            if ok(out2.join("escape.txt")) {
                bad |= 2;
            }
            if ok(ws2.join(".git/hooks/pre-commit")) {
                bad |= 4;
            }
            // A symlink inside the workspace pointing out of it grants nothing.
            let _ = std::os::unix::fs::symlink(&out2, ws2.join("link"));
            if ok(ws2.join("link/via-symlink.txt")) {
                bad |= 8;
            }
            // Renaming the protected directory away is refused as well.
            if std::fs::rename(ws2.join(".git/hooks"), ws2.join("hooks-moved")).is_ok() {
                bad |= 16;
            }
            bad
        });
        assert_eq!(
            code, 0,
            "bitmask of escapes that worked (or 100: apply failed)"
        );
        assert!(ws.join("allowed.txt").exists());
        assert!(!outside.join("escape.txt").exists());
        assert!(!outside.join("via-symlink.txt").exists());
        assert!(!ws.join(".git/hooks/pre-commit").exists());
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn strict_mode_refuses_what_it_cannot_enforce() {
        let c = Confinement {
            profile: "strict-test".into(),
            strict: true,
            fs: Some(FsRules {
                read: vec!["/".into()],
                write: vec!["/tmp".into()],
                protect: vec!["/tmp/axiom-does-not-exist-protected".into()],
            }),
            net: NetRules::default(),
            limits: Default::default(),
        };
        // The protected path does not exist beneath a writable one: strict refuses.
        assert_eq!(in_child(&c, || 0), 100);
    }
}
