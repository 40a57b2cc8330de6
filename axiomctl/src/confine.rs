//! The launcher's half of confinement, run in the agent's child after it has dropped to the
//! invoking user and before it executes the agent: read-only mounts over protected paths, then
//! Landlock. (axiomd applies the other half — limits, the connect allowlist — to the cgroup.)
use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use axiom_proto::confine::{Applied, Confinement, FsRules, NetRules};

/// Landlock's uapi (linux/landlock.h), used through the raw system calls: the rights each ABI
/// version added, so that an older kernel is asked only for what it knows.
mod uapi {
    pub const FS_EXECUTE: u64 = 1 << 0;
    pub const FS_WRITE_FILE: u64 = 1 << 1;
    pub const FS_READ_FILE: u64 = 1 << 2;
    pub const FS_READ_DIR: u64 = 1 << 3;
    /// Every right of ABI 1 (remove, make char/dir/reg/sock/fifo/block/sym, and the above).
    pub const FS_V1: u64 = (1 << 13) - 1;
    pub const FS_REFER: u64 = 1 << 13; // ABI 2
    pub const FS_TRUNCATE: u64 = 1 << 14; // ABI 3
    pub const FS_IOCTL_DEV: u64 = 1 << 15; // ABI 5
    pub const NET_CONNECT_TCP: u64 = 1 << 1; // ABI 4
    pub const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0; // ABI 6
    pub const SCOPE_SIGNAL: u64 = 1 << 1; // ABI 6
    pub const RULE_PATH_BENEATH: u32 = 1;
    pub const RULE_NET_PORT: u32 = 2;

    #[repr(C)]
    pub struct RulesetAttr {
        pub handled_access_fs: u64,
        pub handled_access_net: u64,
        pub scoped: u64,
    }

    #[repr(C, packed)]
    pub struct PathBeneathAttr {
        pub allowed_access: u64,
        pub parent_fd: i32,
    }

    #[repr(C)]
    pub struct NetPortAttr {
        pub allowed_access: u64,
        pub port: u64,
    }

    /// Every filesystem right the kernel of `abi` handles.
    pub fn fs_all(abi: u32) -> u64 {
        let mut a = FS_V1;
        if abi >= 2 {
            a |= FS_REFER;
        }
        if abi >= 3 {
            a |= FS_TRUNCATE;
        }
        if abi >= 5 {
            a |= FS_IOCTL_DEV;
        }
        a
    }

    /// The rights that apply to a file (not a directory).
    pub const FS_FILE: u64 = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV;
    pub const FS_READ: u64 = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR;
}

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
            out.push("abstract Unix sockets outside the agent (Landlock ABI 6)".into());
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
/// mode, or a step that failed outright); `Ok` says what the kernel could not enforce. `keep`:
/// paths below /tmp the agent must still reach in its private /tmp (axiomd's socket).
pub fn apply(
    c: &Confinement,
    keep: &[PathBuf],
    over: &[(PathBuf, PathBuf)],
) -> Result<Applied, String> {
    // The kind's state is writable as the workspace is: one list from here on.
    let mut c = c.clone();
    if let Some(fs) = c.fs.as_mut() {
        make_state_dirs(fs);
        fs.write = fs.writable();
    }
    let c = &c;
    let abi = kernel_abi();
    let mut applied = Applied {
        landlock_abi: abi,
        not_enforced: missing_for(abi, c),
    };
    if let Some(fs) = &c.fs {
        applied.not_enforced.extend(protect(fs, keep, over)?);
    }
    refuse_if_strict(c, &applied)?;
    landlock(c, &mut applied)?;
    if c.fs.is_some()
        && let Err(e) = no_io_uring()
    {
        applied.not_enforced.push(format!(
            "io_uring left open ({e}): its writes are not observed"
        ));
    }
    refuse_if_strict(c, &applied)?;
    Ok(applied)
}

/// The agent kind's state directories that are absent (a first run), and the profile's writable
/// directories in the home (`~/.cache` of the default profile; a new user has none), made as the
/// agent's user while the filesystem is still writable: Landlock grants only what exists, and
/// an agent whose directory could not be made would fail as Codex did ("its local database
/// appears to be damaged") and opencode did (EROFS making `~/.cache`). axiomd checked that each
/// state directory is in the owner's home or the workspace.
fn make_state_dirs(fs: &FsRules) {
    use std::os::unix::fs::DirBuilderExt as _;
    // The home from the user database, as axiomd expands `~` (this child is already the
    // agent's user; $HOME may still be root's under sudo).
    let home = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.dir);
    let in_home = |w: &&String| {
        home.as_ref()
            .is_some_and(|h| Path::new(w.as_str()).starts_with(h) && Path::new(w.as_str()) != h)
    };
    let state = fs.state.iter().filter(|s| s.len() > 1 && s.ends_with('/'));
    for d in state.chain(fs.write.iter().filter(in_home)) {
        let d = Path::new(d.trim_end_matches('/'));
        if std::fs::symlink_metadata(d).is_err() {
            let _ = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d);
        }
    }
}

/// io_uring refused (ENOSYS, as where it is compiled out) in a filesystem-confined agent: the
/// kernel does its reads and writes in its own workers, past the system calls the sensor sees
/// (`UV_USE_IO_URING=1 node` writes a file with no write(2) at all), so what an agent wrote
/// through it would be neither captured nor read back. Its users (libuv, liburing) fall back to
/// ordinary calls on ENOSYS, as container runtimes' default seccomp profiles expect. Applied
/// after Landlock, which already set no_new_privs.
fn no_io_uring() -> Result<(), String> {
    use seccompiler::{SeccompAction, SeccompFilter, TargetArch};
    let arch: TargetArch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("seccomp: {e:?}"))?;
    let rules = [
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
    ]
    .into_iter()
    .map(|nr| (nr, Vec::new()))
    .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| format!("seccomp: {e}"))?;
    let prog: seccompiler::BpfProgram = filter.try_into().map_err(|e| format!("seccomp: {e}"))?;
    seccompiler::apply_filter(&prog).map_err(|e| format!("seccomp: {e}"))
}

/// In strict mode, anything not enforced is a refusal.
fn refuse_if_strict(c: &Confinement, applied: &Applied) -> Result<(), String> {
    if c.strict && !applied.not_enforced.is_empty() {
        return Err(format!(
            "profile {} is strict and this kernel cannot enforce: {}",
            c.profile,
            applied.not_enforced.join("; ")
        ));
    }
    Ok(())
}

/// The agent's own view of the filesystem, in a user and mount namespace of its own (the uid
/// inside is the same uid): every mount read-only, the writable paths bound back read-write,
/// the protected paths inside them read-only again, and the top of each protected tree made a
/// mount point so it cannot be renamed or removed away (`mv .git .git-orig` is EBUSY). A
/// read-only mount refuses what Landlock does not cover: chmod, chown, utimes, xattrs. /dev/shm
/// is a tmpfs of the agent's own, /dev/pts a devpts instance of its own. Landlock then forbids
/// the agent to change mounts. Returns what could not be done.
fn protect(
    fs: &FsRules,
    keep: &[PathBuf],
    over: &[(PathBuf, PathBuf)],
) -> Result<Vec<String>, String> {
    let (targets, mut missing) = protected_targets(fs);
    let cwd = std::env::current_dir().ok();
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    // The owner's MCP tokens are covered below; the directory must exist to be covered (made
    // now, while the filesystem is still writable, so a server started later writes where the
    // agent cannot see).
    let tokens = axiom_proto::confine::mcp_token_dir(uid.as_raw());
    if !tokens.exists() {
        use std::os::unix::fs::DirBuilderExt as _;
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&tokens);
    }
    use nix::sched::CloneFlags;
    if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS) {
        missing.push(format!(
            "a read-only view of the filesystem (chmod, utimes, xattrs outside writable paths; no user namespace: {e})"
        ));
        missing.extend(targets.iter().map(|t| {
            format!("{t}: protected path inside a writable one (no user namespace: {e})")
        }));
        missing.extend(
            fs.hide
                .iter()
                .filter(|h| Path::new(h.as_str()).exists())
                .map(|h| {
                    format!("{h}: credentials readable by the agent (no user namespace: {e})")
                }),
        );
        missing.extend(over.iter().map(|(_, t)| {
            format!(
                "{}: Axiom's hooks not shown in it (no user namespace: {e})",
                t.display()
            )
        }));
        return Ok(missing);
    }
    map_ids_and_isolate(uid, gid)?;
    read_only_view(fs, &mut missing);
    own_devices(fs, &tokens, &mut missing);
    private_tmp(fs, keep, &mut missing);
    pin_protected(fs, &targets)?;
    hide(fs, &mut missing);
    show_over(over, &mut missing);
    // The working directory was resolved on the mounts below: look it up again.
    if let Some(d) = cwd {
        let _ = std::env::set_current_dir(d);
    }
    Ok(missing)
}

/// The protected paths that need a mount of their own (those beneath a writable path; a
/// symlink is followed to what it names), and what cannot be protected.
///
/// A `.git` directory is not one of them (git must write in it); its own entries are. A `.git`
/// that is a file (a worktree's or submodule's gitfile) is. `.git/modules` and `.git/worktrees`
/// stand for each submodule's and worktree's hooks and configuration. A directory entry
/// (trailing `/`) that is absent is made, empty, so that it can be held; an absent file cannot
/// be held, and is undone after the agent's end instead (`Absent`).
fn protected_targets(fs: &FsRules) -> (Vec<String>, Vec<String>) {
    let mut missing = Vec::new();
    let mut targets = Vec::new();
    for entry in &fs.protect {
        let dir = entry.len() > 1 && entry.ends_with('/');
        let p = entry.trim_end_matches('/');
        if !beneath(p, &fs.write) {
            continue; // Landlock alone keeps it read-only.
        }
        let name = std::path::Path::new(p)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let in_git = p.contains("/.git/");
        if name == ".git" {
            targets.extend(submodule_gitfiles(Path::new(p)));
        }
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.file_type().is_symlink() => {
                if name == ".git" {
                    missing.push(format!(
                        "{p}: a symlink: what it names is held, the link itself can be replaced \
                         (put back when the agent ends)"
                    ));
                }
                // Mounting over a symlink would follow it: protect what it names, if that is
                // beneath a writable path too, else Landlock covers it.
                if let Ok(t) = std::fs::canonicalize(p) {
                    let t = t.display().to_string();
                    if beneath(&t, &fs.write) && !(name == ".git" && Path::new(&t).is_dir()) {
                        targets.push(t);
                    }
                }
            }
            Ok(m) if m.is_dir() && name == ".git" => {}
            Ok(m) if m.is_dir() && in_git && (name == "modules" || name == "worktrees") => {
                git_children(Path::new(p), 0, &mut targets);
            }
            Ok(_) => targets.push(p.to_string()),
            // Made only where its parent is (`.git/hooks` in a repository, not a `.git` in a
            // directory that is none).
            Err(_) if dir && Path::new(p).parent().is_some_and(Path::is_dir) => {
                match std::fs::create_dir(p) {
                    Ok(()) => targets.push(p.to_string()),
                    Err(e) => {
                        missing.push(format!("{p}: protected but absent, and not made ({e})"))
                    }
                }
            }
            Err(_) if dir => missing.push(format!(
                "{p}: protected but absent (and its parent), so creating it is not prevented"
            )),
            // An absent file is not held, but it is enforced all the same: creating it is
            // reported, and undone when the agent ends (`Absent`, `restore`).
            Err(_) => {}
        }
    }
    (targets, missing)
}

/// The gitfile (`<path>/.git`, a file naming where the submodule's repository is) of each
/// submodule `.gitmodules` beside `git` names: rewritten, it points git at a repository of the
/// agent's choosing.
fn submodule_gitfiles(git: &Path) -> Vec<String> {
    let Some(top) = git.parent() else {
        return Vec::new();
    };
    let Ok(text) = std::fs::read_to_string(top.join(".gitmodules")) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "path").then(|| v.trim().trim_matches('"').to_string())
        })
        .filter(|p| !p.is_empty() && !p.split('/').any(|c| c == ".."))
        .map(|p| top.join(p).join(".git"))
        .filter(|g| std::fs::symlink_metadata(g).is_ok_and(|m| m.is_file()))
        .map(|g| g.display().to_string())
        .collect()
}

/// The hooks and configuration of each submodule (`.git/modules/<name>/…`, nested) or worktree
/// (`.git/worktrees/<name>/…`) below `dir`.
fn git_children(dir: &Path, depth: usize, out: &mut Vec<String>) {
    const OWN: &[&str] = &["hooks", "config", "config.worktree", "commondir", "gitdir"];
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(t) = e.file_type() else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        if t.is_symlink() {
            continue;
        }
        if OWN.contains(&name.as_str()) {
            out.push(e.path().display().to_string());
        } else if t.is_dir() && depth < 6 && !["objects", "refs", "logs"].contains(&name.as_str()) {
            git_children(&e.path(), depth + 1, out);
        }
    }
}

/// Protected paths that did not exist when the agent started (a file git or an agent would
/// read, `.git/commondir`, `.claude/settings.local.json`), and each `.git` that was a symlink:
/// Landlock cannot keep a name from being created in a writable directory, so what the agent
/// made there is moved aside when it ends (`restore`), before its owner runs anything there.
#[derive(Debug, Default)]
pub struct Absent {
    files: Vec<PathBuf>,
    links: Vec<(PathBuf, PathBuf)>,
}

/// Taken by the launcher before the agent starts.
pub fn absent(fs: &FsRules) -> Absent {
    let fs = &FsRules {
        write: fs.writable(),
        ..fs.clone()
    };
    let mut a = Absent::default();
    for entry in &fs.protect {
        if entry.ends_with('/') {
            continue;
        }
        let p = Path::new(entry.as_str());
        if !beneath(entry, &fs.write) {
            continue;
        }
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.file_type().is_symlink() && p.file_name() == Some(".git".as_ref()) => {
                if let Ok(t) = std::fs::read_link(p) {
                    a.links.push((p.to_path_buf(), t));
                }
            }
            Ok(_) => {}
            Err(_) => {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if !(entry.contains("/.git/") && (name == "modules" || name == "worktrees")) {
                    a.files.push(p.to_path_buf());
                }
            }
        }
    }
    a
}

/// After the agent's end: what appeared where a protected path was absent is moved aside
/// (`<name>.axiom-quarantine`), and a `.git` symlink that was replaced is put back. Returns
/// what was done, for the owner to read.
pub fn restore(a: &Absent) -> Vec<String> {
    let mut done = Vec::new();
    let aside = |p: &Path| -> Option<PathBuf> {
        let mut q = p.as_os_str().to_owned();
        q.push(".axiom-quarantine");
        let q = PathBuf::from(q);
        std::fs::rename(p, &q).ok().map(|()| q)
    };
    for p in &a.files {
        if std::fs::symlink_metadata(p).is_ok()
            && let Some(q) = aside(p)
        {
            done.push(format!(
                "the agent created the protected {}: moved to {}",
                p.display(),
                q.display()
            ));
        }
    }
    for (p, target) in &a.links {
        let same = std::fs::read_link(p).is_ok_and(|t| &t == target);
        if !same {
            let q = aside(p);
            if std::os::unix::fs::symlink(target, p).is_ok() {
                done.push(format!(
                    "the agent replaced the symlink {} (to {}): put back{}",
                    p.display(),
                    target.display(),
                    q.map(|q| format!(", what it made is at {}", q.display()))
                        .unwrap_or_default()
                ));
            }
        }
    }
    done
}

/// In the agent's new user and mount namespace: the uid and gid inside the same as outside
/// (both read before the unshare: inside, unmapped, they read as the overflow ids), and nothing
/// mounted from here on propagating back to the host.
fn map_ids_and_isolate(uid: nix::unistd::Uid, gid: nix::unistd::Gid) -> Result<(), String> {
    let map =
        |file: &str, text: String| std::fs::write(file, text).map_err(|e| format!("{file}: {e}"));
    map("/proc/self/setgroups", "deny".into())?;
    map("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
    map("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    use nix::mount::{MsFlags, mount};
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| format!("making / a slave mount: {e}"))?;
    Ok(())
}

/// Every mount read-only but the writable paths (bound back from copies taken while they were
/// still writable) and a process's own /proc files.
fn read_only_view(fs: &FsRules, missing: &mut Vec<String>) {
    // The writable paths, copied while they are still writable (device nodes are written
    // through read-only mounts alike; /proc stays as it is).
    let mut writable: Vec<&String> = fs
        .write
        .iter()
        .filter(|w| !w.starts_with("/dev/") && !w.starts_with("/proc/") && w.as_str() != "/")
        .filter(|w| std::path::Path::new(w.as_str()).exists())
        .collect();
    writable.sort_by_key(|w| w.len());
    writable.dedup();
    let mut copies = Vec::new();
    for w in writable {
        match open_tree(w) {
            Ok(fd) => copies.push((w, fd)),
            Err(e) => missing.push(format!("{w}: not writable in the agent's view ({e})")),
        }
    }
    let everything_writable = fs.write.iter().any(|w| w.trim_end_matches('/').is_empty());
    let view = if everything_writable {
        Ok(())
    } else {
        mount_attr("/", RDONLY, 0, true)
    };
    match view {
        Ok(()) => {
            // A process's own /proc files (oom_score_adj, a sandbox's uid_map) stay writable.
            if !everything_writable {
                let _ = mount_attr("/proc", 0, RDONLY, true);
            }
            for (w, fd) in copies {
                if let Err(e) = move_mount(&fd, w) {
                    missing.push(format!("{w}: not writable in the agent's view ({e})"));
                }
            }
        }
        Err(e) => missing.push(format!(
            "a read-only view of the filesystem (chmod, utimes, xattrs outside writable paths: {e})"
        )),
    }
}

/// /dev/shm, the terminals and the owner's MCP tokens: the agent's own, not the host's.
fn own_devices(fs: &FsRules, tokens: &std::path::Path, missing: &mut Vec<String>) {
    use nix::mount::{MsFlags, mount};
    if fs.write.iter().any(|w| w == "/dev/shm")
        && let Err(e) = mount(
            Some("tmpfs"),
            "/dev/shm",
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        )
    {
        missing.push(format!("/dev/shm: shared with the host ({e})"));
    }
    // Terminals: a devpts instance of the agent's own, so that the owner's other terminals are
    // not there to write to (its own stays open on 0, 1, 2 and /dev/tty; new ones it opens
    // through /dev/ptmx come from its instance).
    if fs.write.iter().any(|w| w == "/dev/pts") {
        let own = mount(
            Some("devpts"),
            "/dev/pts",
            Some("devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )
        .and_then(|()| {
            mount(
                Some("/dev/pts/ptmx"),
                "/dev/ptmx",
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        });
        if let Err(e) = own {
            missing.push(format!(
                "/dev/pts: the owner's other terminals are writable ({e})"
            ));
        }
    }
    if let Err(e) = mount(
        Some("tmpfs"),
        tokens,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=4k,mode=0700"),
    ) {
        missing.push(format!(
            "{}: the owner's MCP tokens are readable ({e})",
            tokens.display()
        ));
    }
}

/// A /tmp of the agent's own (a tmpfs), when /tmp is writable to it: what it leaves there is
/// not its owner's to run into (a tmux server it started at `/tmp/tmux-$UID/default` before
/// its owner did read every keystroke of the owner's later sessions), and the owner's sockets
/// there (an ssh agent's) are not the agent's. What the agent must still see below /tmp — its
/// workspace, its home, the paths its profile names, axiomd's socket (`keep`) — is carried
/// over as it was.
fn private_tmp(fs: &FsRules, keep: &[PathBuf], missing: &mut Vec<String>) {
    use nix::mount::{MsFlags, mount};
    if !fs.write.iter().any(|w| w.trim_end_matches('/') == "/tmp") {
        return;
    }
    // The workspace is /tmp itself: the user asked for the shared one.
    if keep.iter().any(|k| k == Path::new("/tmp")) {
        missing.push("/tmp: the workspace itself, so shared with the host".into());
        return;
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut wanted: Vec<PathBuf> = fs
        .write
        .iter()
        .chain(&fs.read)
        .map(PathBuf::from)
        .chain(home)
        .chain(keep.iter().cloned())
        .filter(|p| p.starts_with("/tmp") && p != Path::new("/tmp") && p.exists())
        .collect();
    wanted.sort();
    wanted.dedup();
    // One copy per tree: a path below another one kept comes with it.
    let mut trees: Vec<PathBuf> = Vec::new();
    for p in wanted {
        if !trees.iter().any(|t| p.starts_with(t)) {
            trees.push(p);
        }
    }
    let mut copies = Vec::new();
    for t in &trees {
        match open_tree(&t.display().to_string()) {
            Ok(fd) => copies.push((t, t.is_dir(), fd)),
            Err(e) => missing.push(format!(
                "{}: not in the agent's private /tmp ({e})",
                t.display()
            )),
        }
    }
    if let Err(e) = mount(
        Some("tmpfs"),
        "/tmp",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    ) {
        missing.push(format!("/tmp: shared with the host ({e})"));
        return;
    }
    // Below the new /tmp, the copies' places are made again (as they were: a directory or a
    // file) and the copies attached there.
    for (t, dir, fd) in copies {
        let made = if dir {
            std::fs::create_dir_all(t)
        } else {
            t.parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::File::create(t).map(drop))
        };
        if let Err(e) = made.and_then(|()| move_mount(&fd, &t.display().to_string())) {
            missing.push(format!(
                "{}: not in the agent's private /tmp ({e})",
                t.display()
            ));
        }
    }
}

/// The owner's credentials out of the agent's view: an empty read-only tmpfs over each hidden
/// directory, /dev/null over each hidden file (a read finds nothing; nothing can be written).
fn hide(fs: &FsRules, missing: &mut Vec<String>) {
    use nix::mount::{MsFlags, mount};
    for p in &fs.hide {
        let Ok(m) = std::fs::metadata(p) else {
            continue; // Nothing there to read.
        };
        let done = if m.is_dir() {
            mount(
                Some("tmpfs"),
                p.as_str(),
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
                Some("size=4k,mode=0500"),
            )
        } else {
            mount(
                Some("/dev/null"),
                p.as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .and_then(|()| {
                mount_attr(p, RDONLY, 0, false)
                    .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
            })
        };
        if let Err(e) = done {
            missing.push(format!("{p}: credentials readable by the agent ({e})"));
        }
    }
}

/// The protected paths bound read-only over themselves, and the top of each protected tree
/// below its writable root made a mount point: renaming or removing a mount point is refused,
/// so `.git` cannot be swapped for one with hooks.
fn pin_protected(fs: &FsRules, targets: &[String]) -> Result<(), String> {
    use nix::mount::{MsFlags, mount};
    let mut tops: Vec<String> = targets
        .iter()
        .filter_map(|t| top_below(t, &fs.write))
        .filter(|t| !targets.contains(t))
        .collect();
    tops.sort();
    tops.dedup();
    for t in tops.iter().chain(targets) {
        mount(
            Some(t.as_str()),
            t.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| format!("bind-mounting {t}: {e}"))?;
    }
    for t in targets {
        mount_attr(t, RDONLY, 0, true).map_err(|e| format!("making {t} read-only: {e}"))?;
    }
    Ok(())
}

/// Each `(copy, file)`: the copy bound read-only in place of the file (an agent's settings with
/// Axiom's hooks for the run, `gemini_config`), on top of the file's own read-only pin.
fn show_over(over: &[(PathBuf, PathBuf)], missing: &mut Vec<String>) {
    use nix::mount::{MsFlags, mount};
    for (copy, file) in over {
        let done = mount(
            Some(copy.as_path()),
            file.as_path(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| e.to_string())
        .and_then(|()| {
            mount_attr(&file.display().to_string(), RDONLY, 0, false).map_err(|e| e.to_string())
        });
        if let Err(e) = done {
            missing.push(format!(
                "{}: Axiom's hooks not shown in it ({e})",
                file.display()
            ));
        }
    }
}

/// The first directory of `path` below the writable root that holds it (`ws/.git` for
/// `ws/.git/hooks`); `None` when `path` is itself that directory.
fn top_below(path: &str, roots: &[String]) -> Option<String> {
    let root = roots
        .iter()
        .map(|r| r.trim_end_matches('/'))
        .filter(|r| path.starts_with(&format!("{r}/")))
        .max_by_key(|r| r.len())?;
    let first = path[root.len() + 1..].split('/').next()?;
    let top = format!("{root}/{first}");
    (top != path).then_some(top)
}

/// A detached copy of the mount tree at `path` (open_tree(2) with OPEN_TREE_CLONE).
fn open_tree(path: &str) -> Result<OwnedFd, std::io::Error> {
    let c = std::ffi::CString::new(path)?;
    // SAFETY: a valid NUL-terminated path; the result is a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            1u32 | libc::O_CLOEXEC as u32 | 0x8000, // OPEN_TREE_CLONE | CLOEXEC | AT_RECURSIVE
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches a detached mount tree at `path` (move_mount(2)).
fn move_mount(tree: &OwnedFd, path: &str) -> Result<(), std::io::Error> {
    let c = std::ffi::CString::new(path)?;
    // SAFETY: a mount descriptor, an empty source path (MOVE_MOUNT_F_EMPTY_PATH) and a valid
    // NUL-terminated target.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            0x4u32, // MOVE_MOUNT_F_EMPTY_PATH
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

const RDONLY: u64 = 0x1; // MOUNT_ATTR_RDONLY

/// mount_setattr(2): sets and clears attributes on the mount at `path` (and below, if
/// `recursive`), leaving every other attribute as it is (a remount would have to repeat the
/// locked ones).
fn mount_attr(path: &str, set: u64, clr: u64, recursive: bool) -> Result<(), std::io::Error> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clr,
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
            if recursive { 0x8000u32 } else { 0 }, // AT_RECURSIVE
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The Landlock domain: read beneath `read`, write beneath `write`, TCP connect by port where
/// the rules say ports only, and no signals to, nor abstract Unix sockets of, processes outside
/// the agent. Each right is asked
/// for only if this kernel's ABI has it (what is left out was listed by `missing_for`).
fn landlock(c: &Confinement, applied: &mut Applied) -> Result<(), String> {
    let fs = c.fs.as_ref();
    let tcp = landlock_tcp(&c.net);
    let abi = applied.landlock_abi;
    if (fs.is_none() && tcp.is_none()) || abi == 0 {
        return Ok(());
    }
    let all = uapi::fs_all(abi);
    let attr = uapi::RulesetAttr {
        handled_access_fs: if fs.is_some() { all } else { 0 },
        handled_access_net: if tcp.is_some() && abi >= 4 {
            uapi::NET_CONNECT_TCP
        } else {
            0
        },
        scoped: if fs.is_some() && abi >= 6 {
            uapi::SCOPE_SIGNAL | uapi::SCOPE_ABSTRACT_UNIX_SOCKET
        } else {
            0
        },
    };
    if attr.handled_access_fs == 0 && attr.handled_access_net == 0 {
        return Ok(());
    }
    // An older kernel reads only the fields it knows.
    let size = match abi {
        1..=3 => 8,
        4 | 5 => 16,
        _ => std::mem::size_of::<uapi::RulesetAttr>(),
    };
    // SAFETY: a valid attribute of at least `size` bytes.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const uapi::RulesetAttr,
            size,
            0u32,
        )
    };
    if fd < 0 {
        return Err(format!(
            "landlock: creating the ruleset: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a new descriptor we own.
    let ruleset = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if let Some(fs) = fs {
        for (paths, access) in [(&fs.read, uapi::FS_READ), (&fs.write, all)] {
            for p in paths {
                let Ok(f) = nix::fcntl::open(
                    p.as_str(),
                    nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                ) else {
                    continue; // absent here: nothing to grant
                };
                let is_dir = nix::sys::stat::fstat(&f)
                    .map(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR)
                    .unwrap_or(true);
                // Directory rights only make sense on a directory.
                let access = if is_dir {
                    access
                } else {
                    access & uapi::FS_FILE
                } & all;
                let rule = uapi::PathBeneathAttr {
                    allowed_access: access,
                    parent_fd: f.as_raw_fd(),
                };
                add_rule(&ruleset, uapi::RULE_PATH_BENEATH, &rule as *const _ as _, p)?;
            }
        }
    }
    if let (Some(ports), true) = (&tcp, abi >= 4) {
        for port in ports {
            let rule = uapi::NetPortAttr {
                allowed_access: uapi::NET_CONNECT_TCP,
                port: *port as u64,
            };
            add_rule(
                &ruleset,
                uapi::RULE_NET_PORT,
                &rule as *const _ as _,
                &format!("TCP port {port}"),
            )?;
        }
    }
    if let Err(e) = nix::sys::prctl::set_no_new_privs() {
        return Err(format!("no_new_privs: {e}"));
    }
    // SAFETY: restricts this (single-threaded) process with the ruleset.
    if unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) } < 0 {
        return Err(format!(
            "landlock: restricting: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn add_rule(
    ruleset: &OwnedFd,
    kind: u32,
    attr: *const libc::c_void,
    what: &str,
) -> Result<(), String> {
    // SAFETY: `attr` points at the attribute struct of `kind`, alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            kind,
            attr,
            0u32,
        )
    };
    if r < 0 {
        return Err(format!(
            "landlock: rule for {what}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `check` in a forked child after applying `c`; the child's exit code is the answer.
    fn in_child(c: &Confinement, check: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the test thread forks; the child only runs `apply` and `check`, then exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = match apply(c, &[], &[]) {
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
    fn the_top_of_a_protected_tree_is_its_first_directory_below_the_writable_root() {
        let roots = ["/ws".to_string(), "/ws/sub".to_string()];
        assert_eq!(
            top_below("/ws/.git/hooks", &roots).as_deref(),
            Some("/ws/.git")
        );
        assert_eq!(top_below("/ws/.git", &roots), None);
        assert_eq!(
            top_below("/ws/sub/a/b", &roots).as_deref(),
            Some("/ws/sub/a")
        );
        assert_eq!(top_below("/elsewhere/x", &roots), None);
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
                hide: vec![],
                state: vec![],
            }),
            net: NetRules {
                allow_all: true,
                allow: vec![],
                unix_any: true,
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

    /// Credentials read as nothing; /tmp is the agent's own, its workspace below /tmp still
    /// there; a protected file the agent creates is moved aside when it ends, and a `.git`
    /// gitfile cannot be rewritten.
    #[test]
    fn credentials_are_hidden_tmp_is_private_and_planted_git_files_are_undone() {
        let base = std::env::temp_dir().join(format!("axiom-private-{}", std::process::id()));
        // The home outside /tmp, so that what hides its credentials is the hiding alone.
        let home = Path::new("/var/tmp").join(format!("axiom-private-home-{}", std::process::id()));
        let ws = base.join("ws");
        std::fs::create_dir_all(ws.join(".git")).unwrap();
        std::fs::create_dir_all(home.join(".aws")).unwrap();
        std::fs::write(home.join(".aws/credentials"), "aws_secret").unwrap();
        std::fs::write(home.join(".netrc"), "machine x password y").unwrap();
        let sub = ws.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(".git"), "gitdir: ../.git\n").unwrap();
        let s = |p: &std::path::Path| p.display().to_string();
        let fs = FsRules {
            read: vec!["/".into()],
            write: vec![s(&ws), "/tmp".into()],
            protect: vec![s(&ws.join(".git/commondir")), s(&sub.join(".git"))],
            hide: vec![s(&home.join(".aws")), s(&home.join(".netrc"))],
            state: vec![],
        };
        let before = absent(&fs);
        let c = Confinement {
            profile: "test".into(),
            strict: false,
            fs: Some(fs),
            net: NetRules {
                allow_all: true,
                allow: vec![],
                unix_any: true,
            },
            limits: Default::default(),
        };
        let (ws2, home2, sub2) = (ws.clone(), home.clone(), sub.clone());
        let marker = format!("/tmp/axiom-private-marker-{}", std::process::id());
        let m2 = marker.clone();
        let code = in_child(&c, move || {
            let mut bad = 0;
            if std::fs::read_to_string(home2.join(".aws/credentials")).is_ok() {
                bad |= 1;
            }
            if std::fs::read_to_string(home2.join(".netrc")).is_ok_and(|t| !t.is_empty()) {
                bad |= 2;
            }
            if std::fs::write(&m2, "x").is_err() || std::fs::write(ws2.join("ok"), "x").is_err() {
                bad |= 4;
            }
            // Planted: a commondir (allowed to be made, undone after) and a gitfile rewrite.
            let _ = std::fs::write(ws2.join(".git/commondir"), "/tmp/evil\n");
            if std::fs::write(sub2.join(".git"), "gitdir: /tmp/evil\n").is_ok() {
                bad |= 8;
            }
            bad
        });
        assert_eq!(
            code, 0,
            "bitmask of what the agent could do (100: apply failed)"
        );
        assert!(
            !Path::new(&marker).exists(),
            "the agent's /tmp was the host's"
        );
        assert!(
            ws.join("ok").exists(),
            "the workspace below /tmp was not the real one"
        );
        assert!(
            ws.join(".git/commondir").exists(),
            "the plant is there until the end"
        );
        let done = restore(&before);
        assert_eq!(done.len(), 1, "{done:?}");
        assert!(!ws.join(".git/commondir").exists());
        assert_eq!(
            std::fs::read_to_string(sub.join(".git")).unwrap(),
            "gitdir: ../.git\n"
        );
        let _ = std::fs::remove_dir_all(&base);
        let _ = std::fs::remove_dir_all(&home);
    }

    #[test]
    fn strict_mode_refuses_what_it_cannot_enforce() {
        let c = Confinement {
            profile: "strict-test".into(),
            strict: true,
            fs: Some(FsRules {
                read: vec!["/".into()],
                write: vec!["/tmp".into()],
                protect: vec!["/tmp/axiom-does-not-exist/protected/".into()],
                hide: vec![],
                state: vec![],
            }),
            net: NetRules::default(),
            limits: Default::default(),
        };
        // The protected path does not exist beneath a writable one: strict refuses.
        assert_eq!(in_child(&c, || 0), 100);
    }
}
