//! Loading, attaching and pinning the kernel programs.
//!
//! Everything lives under one bpffs directory (`/sys/fs/bpf/axiom` by default):
//! `maps/<MAP>` for every map and `links/<program>` for every attachment. Pinned links keep the
//! programs attached while axiomd is down, and pinned maps keep the tracking state and the rings,
//! so a restart (crash, upgrade, SIGKILL) has no detach window: records produced meanwhile wait in
//! the rings, and anything beyond their capacity is counted in `LOST`.
//!
//! On start, if every link is pinned and the pinned `CONFIG` carries this binary's object hash,
//! axiomd reuses the pins and loads nothing. Otherwise it loads the object (reusing compatible
//! pinned maps), attaches, and only then replaces the old link pins, so the old programs run until
//! the new ones are in.
pub(crate) mod btf;
pub(crate) mod cgroup;
pub(crate) mod config;
pub(crate) mod features;
mod maps;
mod pins;
pub(crate) mod procfs;
pub(crate) mod pty;
pub(crate) mod unix;

use maps::{Maps, cpu_sum, map_err};
pub(crate) use maps::{NetMaps, Parts, Rings, TrackingMaps};
pub use pins::Pins;
use pins::{drop_resized_ring, mkdir, open_pinned, own_pin_dirs, replace_pin, replace_pin_with};

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use axiom_common::{
    CFG_CAPTURE_BYTES, CFG_OBJECT_HASH, CFG_OUTPUT_WAKEUP_RECORDS, HOOKS, Hook, LostCause,
    MAX_CAPTURE,
};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, Map, MapData, PerCpuArray},
    programs::{
        CgroupAttachMode, CgroupSockAddr, ProgramError, TracePoint,
        links::{FdLink, PinnedLink},
    },
};

/// The sensor object, built by build.rs from `axiom-ebpf`.
pub(crate) static SENSOR_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/axiom"));
/// The baseline object: same program names and hooks, every program returns at once.
pub(crate) static EMPTY_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/axiom-empty"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("kernel feature unavailable: {feature}: {remedy}")]
    Feature {
        feature: &'static str,
        remedy: String,
    },
    #[error(
        "the kernel refused program {program} ({errno}); rerun with RUST_LOG=axiomd=debug for the verifier log"
    )]
    Verifier {
        program: String,
        errno: std::io::Error,
    },
    #[error("attaching {program} to {category}:{event}: {source}")]
    Attach {
        program: String,
        category: String,
        event: String,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("loading the sensor object: {0}")]
    Load(Box<aya::EbpfError>),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("program {0} is missing from the object")]
    MissingProgram(&'static str),
    #[error("pin {path}: {reason}")]
    Pin { path: PathBuf, reason: String },
    #[error("the Unix sockets allowed to agents (confine.unix_sockets and api.socket): {0}")]
    UnixAllow(String),
    #[error("Unix socket program: {0}")]
    Unix(Box<unix::UnixError>),
}

#[derive(Clone, Debug)]
pub(crate) struct LoadOptions {
    /// The `[sensor]` section as configured: pins, capture, rings.
    pub(crate) sensor: config::SensorConfig,
    /// The cgroup whose descendants (the agents' cgroups) get the connect allowlist programs.
    pub(crate) net_cgroup: Option<PathBuf>,
    /// The path sockets an agent held to `UNIX_ALLOW` may still use (axiomd's own first), exactly
    /// as clients spell them: the kernel compares the names, before any lookup.
    pub(crate) unix_allow: Vec<PathBuf>,
}

/// The connect allowlist programs, attached to `LoadOptions::net_cgroup`: connects, and
/// datagrams sent to an address without one.
const NET_PROGRAMS: [&str; 5] = [
    "connect4",
    "connect6",
    "sendmsg4",
    "sendmsg6",
    "sock_create",
];

/// The kernel programs as loaded (or found pinned) and attached, and every map userspace holds
/// of them. The `sensor` stage reads their rings; this is the kernel side it reads from.
pub(crate) struct Programs {
    pub(crate) config: Array<MapData, u64>,
    pub(crate) lost: PerCpuArray<MapData, u64>,
    /// What the programs did (`axiom_common::Work`).
    pub(crate) work: PerCpuArray<MapData, u64>,
    /// The kernel matcher's tables.
    pub(crate) dfa: Array<MapData, axiom_common::Dfa>,
    /// Program id of one attached program, to find the aya-log ring of the running programs.
    pub(crate) log_program_id: Option<u32>,
    /// The pins were reused: nothing was loaded or attached by this process.
    pub(crate) reused: bool,
    /// Hooks attached (or found attached), and optional ones the kernel lacks.
    pub(crate) attached: Vec<&'static str>,
    pub(crate) skipped: Vec<&'static str>,
    pub(crate) startup: Duration,
    pub(crate) pins: Pins,
    /// Keeps a fresh load alive (its aya-log map among others): held, never read.
    #[expect(
        dead_code,
        reason = "held for its Drop: dropping it detaches a fresh load"
    )]
    pub(crate) ebpf: Option<Ebpf>,
}

impl From<aya::EbpfError> for LoadError {
    fn from(e: aya::EbpfError) -> Self {
        LoadError::Load(Box::new(e))
    }
}

/// What the rest of axiomd asks of the loaded sensor once it runs: its kernel matcher table,
/// what `status` shows of it, and unpinning at a stop that asks for it. A trait, so that the
/// API's decisions run in unit tests without programs in the kernel.
pub(crate) trait Loaded: Send {
    /// Puts a matcher table into the kernel (none: matching stays in userspace); the table
    /// slot it went into (0: none).
    fn install_matcher(&mut self, dfa: Option<&axiom_common::Dfa>) -> Result<u16, LoadError>;
    /// Fills in what the sensor knows: pins, programs, its losses by cause.
    fn describe(&self, st: &mut axiom_proto::wire::Status);
    /// Detaches and unpins everything.
    fn unpin(&self) -> std::io::Result<()>;
}

impl Loaded for Programs {
    fn install_matcher(&mut self, dfa: Option<&axiom_common::Dfa>) -> Result<u16, LoadError> {
        Programs::install_matcher(self, dfa)
    }

    fn describe(&self, st: &mut axiom_proto::wire::Status) {
        st.pin_dir = self.pins.root.display().to_string();
        st.reused_pins = self.reused;
        st.startup_ms = self.startup.as_secs_f64() * 1e3;
        st.attached = self.attached.iter().map(|s| s.to_string()).collect();
        st.skipped = self.skipped.iter().map(|s| s.to_string()).collect();
        for (cause, n) in self.lost_counts() {
            st.lost.insert(cause.name().into(), n);
        }
        for w in axiom_common::Work::ALL {
            st.kernel_work
                .insert(w.name().into(), cpu_sum(&self.work, w as u32));
        }
    }

    fn unpin(&self) -> std::io::Result<()> {
        self.pins.remove_all()
    }
}

impl Programs {
    /// Loads or reuses the sensor. Start-up time to "attached" is measured and returned.
    pub(crate) fn open(opts: &LoadOptions) -> Result<Parts, LoadError> {
        let t0 = Instant::now();
        features::ensure_bpffs()?;
        let tracefs = features::ensure_tracefs()?;
        features::check_ringbuf()?;
        features::check_lockdown()?;
        let pins = Pins {
            root: opts.sensor.pin_dir.clone(),
        };
        let hash = object_hash(SENSOR_OBJECT, opts);
        let (hooks, skipped) = available_hooks(&tracefs)?;
        own_pin_dirs(&pins)?;

        let mut parts = match reuse(&pins, hash, &hooks, opts)? {
            Some(s) => s,
            None => fresh(&pins, hash, &hooks, opts)?,
        };
        set_unix_allow(&pins, &opts.unix_allow)?;
        parts.programs.skipped = skipped;
        parts.programs.startup = t0.elapsed();
        Ok(parts)
    }

    /// Sum over CPUs of each lost-record cause.
    pub(crate) fn lost_counts(&self) -> Vec<(LostCause, u64)> {
        LostCause::ALL
            .iter()
            .map(|&c| (c, cpu_sum(&self.lost, c as u32)))
            .collect()
    }

    /// Puts a rule set's literals into the kernel matcher: the idle table is written, then
    /// `CFG_DFA_ACTIVE` flips to it (programs never read a half-written table). Returns the
    /// table now live (1 or 2), or 0 when the rules have nothing for the kernel to scan.
    pub(crate) fn install_matcher(
        &mut self,
        dfa: Option<&axiom_common::Dfa>,
    ) -> Result<u16, LoadError> {
        use axiom_common::CFG_DFA_ACTIVE;
        let Some(dfa) = dfa else {
            self.config
                .set(CFG_DFA_ACTIVE, 0, 0)
                .map_err(map_err("CONFIG"))?;
            return Ok(0);
        };
        let live = self.config.get(&CFG_DFA_ACTIVE, 0).unwrap_or(0);
        let next: u16 = if live == 1 { 2 } else { 1 };
        self.dfa
            .set(u32::from(next) - 1, dfa, 0)
            .map_err(map_err("DFA"))?;
        self.config
            .set(CFG_DFA_ACTIVE, u64::from(next), 0)
            .map_err(map_err("CONFIG"))?;
        Ok(next)
    }

    /// Applies the runtime settings (capture size, wakeup watermark) to the running programs.
    pub(crate) fn configure(&mut self, opts: &LoadOptions) -> Result<(), LoadError> {
        configure(&mut self.config, opts)
    }
}

fn configure(config: &mut Array<MapData, u64>, opts: &LoadOptions) -> Result<(), LoadError> {
    let n = (opts.sensor.capture_bytes as usize).clamp(1, MAX_CAPTURE) as u64;
    config
        .set(CFG_CAPTURE_BYTES, n, 0)
        .map_err(map_err("CONFIG"))?;
    config
        .set(
            CFG_OUTPUT_WAKEUP_RECORDS,
            opts.sensor.output_wakeup_records as u64,
            0,
        )
        .map_err(map_err("CONFIG"))
}

/// Hooks this kernel offers; a missing required one is an error that names it.
fn available_hooks(tracefs: &Path) -> Result<(Vec<&'static Hook>, Vec<&'static str>), LoadError> {
    let mut hooks = Vec::new();
    let mut skipped = Vec::new();
    for h in HOOKS {
        if features::has_tracepoint(tracefs, h.category, h.event) {
            hooks.push(h);
        } else if h.optional() {
            skipped.push(h.event);
        } else {
            return Err(features::tracepoint_missing(h.category, h.event));
        }
    }
    Ok((hooks, skipped))
}

/// FNV-1a over the object bytes and the options baked into maps: a change in either means the
/// pins are not ours to reuse.
fn object_hash(obj: &[u8], opts: &LoadOptions) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let sizes = [opts.sensor.events_ring_bytes, opts.sensor.output_ring_bytes];
    let net = opts
        .net_cgroup
        .as_ref()
        .map(|p| p.as_os_str().as_encoded_bytes().to_vec())
        .unwrap_or_default();
    for b in obj
        .iter()
        .copied()
        .chain(sizes.iter().flat_map(|s| s.to_le_bytes()))
        .chain(net)
    {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // 0 means "unset" in CONFIG.
    h.max(1)
}

/// Writes the kernel struct offsets the programs read through: the exec record's argv (see
/// `CFG_TASK_MM`) and the open record's path from the file the kernel opened (see
/// `CFG_KPATH`). Without BTF they stay 0: argv comes from the stash and paths from the caller's
/// memory, as the README says. At a fresh load only: reused pins were written by this same
/// binary on this same boot (pins do not outlive one).
fn set_kernel_offsets(config: &mut Array<MapData, u64>) {
    use axiom_common::*;
    let btf = match btf::Btf::kernel() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(
                "no kernel BTF ({e}): argv and opened paths are read from the caller's memory"
            );
            return;
        }
    };
    // (what goes without them, the slot saying they are set, (slot, struct, member)…)
    type Group = (
        &'static str,
        Option<u32>,
        &'static [(u32, &'static str, &'static str)],
    );
    let groups: [Group; 2] = [
        (
            "argv is read at exec entry",
            None,
            &[
                (CFG_TASK_MM, "task_struct", "mm"),
                (CFG_MM_ARG_START, "mm_struct", "arg_start"),
                (CFG_MM_ARG_END, "mm_struct", "arg_end"),
            ],
        ),
        (
            "opened paths are read from the caller's memory",
            Some(CFG_KPATH),
            &[
                (CFG_TASK_FILES, "task_struct", "files"),
                (CFG_FILES_FDT, "files_struct", "fdt"),
                (CFG_FDT_FD, "fdtable", "fd"),
                (CFG_FILE_PATH, "file", "f_path"),
                (CFG_DENTRY_PARENT, "dentry", "d_parent"),
                (CFG_DENTRY_NAME, "dentry", "d_name"),
                (CFG_MOUNT_MNT, "mount", "mnt"),
                (CFG_MOUNT_PARENT, "mount", "mnt_parent"),
                (CFG_MOUNT_MOUNTPOINT, "mount", "mnt_mountpoint"),
                (CFG_VFSMOUNT_ROOT, "vfsmount", "mnt_root"),
            ],
        ),
    ];
    for (without, ready, fields) in groups {
        let offsets: Result<Vec<(u32, u32)>, String> = fields
            .iter()
            .map(|(i, s, m)| btf.offset(s, m).map(|o| (*i, o)).ok_or(format!("{s}.{m}")))
            .collect();
        let offsets = match offsets {
            Ok(o) => o,
            Err(missing) => {
                tracing::warn!("kernel BTF lacks {missing}: {without}");
                continue;
            }
        };
        let ready = ready.map(|i| (i, 1));
        for (i, o) in offsets
            .into_iter()
            .map(|(i, o)| (i, u64::from(o)))
            .chain(ready)
        {
            if let Err(e) = config.set(i, o, 0) {
                tracing::warn!("CONFIG[{i}]: {e}");
            }
        }
    }
}

/// Writes `UNIX_ALLOW` (at every start: it is not part of the object's identity). Entries past
/// the map's size, or names too long for `sun_path`, are an error, never dropped in silence.
fn set_unix_allow(pins: &Pins, paths: &[PathBuf]) -> Result<(), LoadError> {
    use axiom_common::{UNIX_ALLOW_ENTRIES, UNIX_PATH_MAX, UnixPath};
    let mut map: Array<MapData, UnixPath> =
        Array::try_from(Map::Array(open_pinned(pins, "UNIX_ALLOW")?))
            .map_err(map_err("UNIX_ALLOW"))?;
    if paths.len() > UNIX_ALLOW_ENTRIES as usize {
        return Err(LoadError::UnixAllow(format!(
            "{} paths, at most {UNIX_ALLOW_ENTRIES} (axiomd's socket among them)",
            paths.len()
        )));
    }
    for i in 0..UNIX_ALLOW_ENTRIES {
        let mut e = UnixPath::default();
        if let Some(p) = paths.get(i as usize) {
            let b = p.as_os_str().as_encoded_bytes();
            if b.is_empty() || b.len() >= UNIX_PATH_MAX || b.contains(&0) {
                return Err(LoadError::UnixAllow(format!(
                    "{}: not a socket name (1 to {} bytes, no NUL)",
                    p.display(),
                    UNIX_PATH_MAX - 1
                )));
            }
            e.len = b.len() as u32;
            e.path[..b.len()].copy_from_slice(b);
        }
        map.set(i, e, 0).map_err(map_err("UNIX_ALLOW"))?;
    }
    Ok(())
}

/// Reuses an intact, same-version pin set; `None` when anything is missing or different.
fn reuse(
    pins: &Pins,
    hash: u64,
    hooks: &[&'static Hook],
    opts: &LoadOptions,
) -> Result<Option<Parts>, LoadError> {
    if !hooks.iter().all(|h| pins.link(h.program).exists()) || !pins.map("CONFIG").exists() {
        return Ok(None);
    }
    if opts.net_cgroup.is_some()
        && !NET_PROGRAMS
            .iter()
            .chain(unix::PROGRAMS.iter().map(|(name, _)| name))
            .all(|p| pins.link(p).exists())
    {
        return Ok(None);
    }
    let config: Array<MapData, u64> =
        Array::try_from(Map::Array(open_pinned(pins, "CONFIG")?)).map_err(map_err("CONFIG"))?;
    let pinned_hash = config.get(&CFG_OBJECT_HASH, 0).unwrap_or(0);
    if pinned_hash != hash {
        tracing::info!(
            pinned = format!("{pinned_hash:#x}"),
            ours = format!("{hash:#x}"),
            "pinned sensor is another version: loading ours and replacing it without a detach window"
        );
        return Ok(None);
    }
    let mut log_program_id = None;
    for h in hooks {
        let link = PinnedLink::from_pin(pins.link(h.program)).map_err(|e| LoadError::Pin {
            path: pins.link(h.program),
            reason: e.to_string(),
        })?;
        if log_program_id.is_none() {
            log_program_id = FdLink::from(link).info().ok().map(|i| i.program_id());
        }
    }
    let maps = Maps::pinned(pins)?;
    Ok(Some(maps.into_parts(
        config,
        pins,
        true,
        hooks.iter().map(|h| h.program).collect(),
        log_program_id,
        None,
    )))
}

/// Entries of the tgid-indexed tracking array: kernel.pid_max (a pinned array keeps the size it was
/// created with; pids beyond it are counted as `track_map_full`).
fn pid_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4 << 20)
}

/// Loads one program, turning a verifier refusal into a one-line error (log at debug).
fn load_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut TracePoint, LoadError> {
    let prog: &mut TracePoint = ebpf
        .program_mut(name)
        .ok_or(LoadError::MissingProgram(name))?
        .try_into()
        .map_err(|source| LoadError::Attach {
            program: name.into(),
            category: String::new(),
            event: String::new(),
            source: Box::new(source),
        })?;
    match prog.load() {
        Ok(()) => Ok(prog),
        Err(ProgramError::LoadError {
            io_error,
            verifier_log,
        }) => {
            tracing::debug!(program = name, "verifier log:\n{verifier_log}");
            Err(LoadError::Verifier {
                program: name.into(),
                errno: io_error,
            })
        }
        Err(source) => Err(LoadError::Attach {
            program: name.into(),
            category: String::new(),
            event: String::new(),
            source: Box::new(source),
        }),
    }
}

fn fresh(
    pins: &Pins,
    hash: u64,
    hooks: &[&'static Hook],
    opts: &LoadOptions,
) -> Result<Parts, LoadError> {
    // The pin directories were made (root's, 0700) by `own_pin_dirs`.
    drop_resized_ring(pins, "EVENTS", opts.sensor.events_ring_bytes);
    drop_resized_ring(pins, "OUTPUT", opts.sensor.output_ring_bytes);
    let maps_dir = pins.maps();
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(&maps_dir)
        .map_max_entries("TRACKED", pid_max())
        .map_max_entries("EVENTS", opts.sensor.events_ring_bytes)
        .map_max_entries("OUTPUT", opts.sensor.output_ring_bytes)
        .load(SENSOR_OBJECT)?;
    let (maps, mut config) = Maps::take(&mut ebpf)?;
    configure(&mut config, opts)?;
    set_kernel_offsets(&mut config);

    let mut attached = Vec::new();
    let mut log_program_id = None;
    for h in hooks {
        let prog = load_program(&mut ebpf, h.program)?;
        let attach_err = |source| LoadError::Attach {
            program: h.program.into(),
            category: h.category.into(),
            event: h.event.into(),
            source: Box::new(source),
        };
        let id = prog.attach(h.category, h.event).map_err(attach_err)?;
        if log_program_id.is_none() {
            log_program_id = prog.info().ok().map(|i| i.id());
        }
        let link = prog.take_link(id).map_err(attach_err)?;
        let fd_link: FdLink = link
            .try_into()
            .map_err(|e: aya::programs::links::LinkError| LoadError::Pin {
                path: pins.link(h.program),
                reason: format!("tracepoint link is not an fd link: {e}"),
            })?;
        replace_pin(pins, h.program, fd_link)?;
        attached.push(h.program);
    }
    if let Some(cg) = &opts.net_cgroup {
        // Without them axiomd still watches; agents whose profile needs a connect allowlist are
        // refused at start (never run unconfined).
        match attach_net(&mut ebpf, pins, cg) {
            Ok(()) => {
                attached.extend(NET_PROGRAMS);
                attached.extend(unix::PROGRAMS.map(|(name, _)| name));
            }
            Err(e) => tracing::warn!("connect allowlist unavailable: {e}"),
        }
    }
    // Written last: a start that dies half-way leaves a mismatch, and the next one reloads.
    config
        .set(CFG_OBJECT_HASH, hash, 0)
        .map_err(map_err("CONFIG"))?;
    Ok(maps.into_parts(config, pins, false, attached, log_program_id, Some(ebpf)))
}

/// Attaches the connect allowlist programs to `cgroup` (every agent cgroup is below it; the
/// programs let untracked processes and agents without a policy through at once). As bpf links
/// they attach beside any older version, so the swap of pins leaves no unchecked moment.
fn attach_net(ebpf: &mut Ebpf, pins: &Pins, cgroup: &Path) -> Result<(), LoadError> {
    use std::os::fd::AsFd as _;
    mkdir(cgroup)?;
    let dir = std::fs::File::open(cgroup).map_err(|e| LoadError::Pin {
        path: cgroup.into(),
        reason: e.to_string(),
    })?;
    for name in NET_PROGRAMS {
        let attach_err = |source| LoadError::Attach {
            program: name.into(),
            category: "cgroup".into(),
            event: cgroup.display().to_string(),
            source: Box::new(source),
        };
        let loaded = |e: ProgramError| match e {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => {
                tracing::debug!(program = name, "verifier log:\n{verifier_log}");
                LoadError::Verifier {
                    program: name.into(),
                    errno: io_error,
                }
            }
            other => attach_err(other),
        };
        let not_fd = |e: aya::programs::links::LinkError| LoadError::Pin {
            path: pins.link(name),
            reason: format!("cgroup link is not an fd link: {e}"),
        };
        let program = ebpf
            .program_mut(name)
            .ok_or(LoadError::MissingProgram(name))?;
        // The socket program (`sock_create`) is of another type than the address ones, with the
        // same calls (aya gives them no common trait).
        macro_rules! attach {
            ($prog:expr) => {{
                let prog = $prog;
                prog.load().map_err(loaded)?;
                let id = prog
                    .attach(&dir, CgroupAttachMode::Single)
                    .map_err(attach_err)?;
                prog.take_link(id)
                    .map_err(attach_err)?
                    .try_into()
                    .map_err(not_fd)?
            }};
        }
        let fd_link: FdLink = match program {
            aya::programs::Program::CgroupSock(prog) => attach!(prog),
            program => {
                attach!(TryInto::<&mut CgroupSockAddr>::try_into(program).map_err(attach_err)?)
            }
        };
        replace_pin(pins, name, fd_link)?;
    }
    for (name, hook) in unix::PROGRAMS {
        let prog = unix::load(SENSOR_OBJECT, &pins.maps(), name, hook).map_err(|e| {
            tracing::debug!(program = name, "{e}");
            LoadError::Unix(Box::new(e))
        })?;
        let link = unix::attach(name, prog.as_fd(), dir.as_fd(), hook)
            .map_err(|e| LoadError::Unix(Box::new(e)))?;
        replace_pin_with(pins, name, |next| {
            unix::pin(link.as_fd(), next).map_err(|e| e.to_string())
        })?;
    }
    Ok(())
}

/// Loads and attaches the empty baseline object (benchmarks only). Links live as long as the
/// returned `Ebpf`; nothing is pinned.
pub fn load_empty() -> Result<Ebpf, LoadError> {
    features::ensure_bpffs()?;
    let tracefs = features::ensure_tracefs()?;
    let (hooks, _) = available_hooks(&tracefs)?;
    let mut ebpf = Ebpf::load(EMPTY_OBJECT)?;
    for h in hooks {
        let prog = load_program(&mut ebpf, h.program)?;
        prog.attach(h.category, h.event)
            .map_err(|source| LoadError::Attach {
                program: h.program.into(),
                category: h.category.into(),
                event: h.event.into(),
                source: Box::new(source),
            })?;
    }
    Ok(ebpf)
}

/// The loaded sensor behind its own lock: a rule reload puts a matcher table into it while
/// status reads its counters. Other rooms reach it only through these methods.
pub(crate) struct Sensor(std::sync::Mutex<Box<dyn Loaded>>);

impl Sensor {
    pub(crate) fn new(loaded: Box<dyn Loaded>) -> Sensor {
        Sensor(std::sync::Mutex::new(loaded))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Box<dyn Loaded>> {
        // The sensor's own state is in the kernel; what the lock guards is handles to it.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// See [`Loaded::install_matcher`].
    pub(crate) fn install_matcher(
        &self,
        dfa: Option<&axiom_common::Dfa>,
    ) -> Result<u16, LoadError> {
        self.lock().install_matcher(dfa)
    }

    /// See [`Loaded::unpin`].
    pub(crate) fn unpin(&self) -> std::io::Result<()> {
        self.lock().unpin()
    }
}

impl crate::bus::Describe for Sensor {
    fn describe(&self, st: &mut axiom_proto::wire::Status) {
        self.lock().describe(st);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether an ELF object holds `needle`, NUL-bounded on both sides as in its string tables.
    fn has_string(obj: &[u8], needle: &str) -> bool {
        let mut n = vec![0u8];
        n.extend_from_slice(needle.as_bytes());
        n.push(0);
        obj.windows(n.len()).any(|w| w == n.as_slice())
    }

    /// `bench sensor` attaches the empty object to every hook the sensor has: a hook added to the
    /// sensor and not to `axiom-ebpf/src/empty.rs` made the baseline refuse to start.
    #[test]
    fn empty_object_defines_every_hook() {
        for (name, obj) in [("sensor", SENSOR_OBJECT), ("empty", EMPTY_OBJECT)] {
            for h in HOOKS {
                let section = format!("tracepoint/{}/{}", h.category, h.event);
                assert!(has_string(obj, &section), "{name} object lacks {section}");
                assert!(
                    has_string(obj, h.program),
                    "{name} object lacks program {}",
                    h.program
                );
            }
        }
    }
}
