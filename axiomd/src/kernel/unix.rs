//! The Unix path socket programs (`connect_unix`, `sendmsg_unix` in `axiom-ebpf/src/network.rs`).
//!
//! The kernel has had cgroup hooks for Unix connects and sends since 6.7
//! (`BPF_CGROUP_UNIX_CONNECT`, `BPF_CGROUP_UNIX_SENDMSG`), but aya 0.14's attach types stop at the
//! inet ones, so it cannot load or attach a program for them. These two programs are therefore
//! taken from the same object with aya-obj (aya's own parser), their map references bound to the
//! maps the sensor pinned, and loaded, attached and pinned with the bpf(2) commands aya itself
//! would use. Everything else about them (the pins, their replacement without a detach window)
//! is as for the other cgroup programs.
use std::{
    collections::{HashMap, HashSet},
    ffi::CString,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    path::Path,
};

use aya::maps::MapData;
use aya_obj::generated::{bpf_attach_type, bpf_attr, bpf_cmd, bpf_prog_type};

/// Program name → the hook it is loaded for.
pub(crate) const PROGRAMS: [(&str, bpf_attach_type); 2] = [
    ("connect_unix", bpf_attach_type::BPF_CGROUP_UNIX_CONNECT),
    ("sendmsg_unix", bpf_attach_type::BPF_CGROUP_UNIX_SENDMSG),
];

#[derive(Debug, thiserror::Error)]
pub enum UnixError {
    #[error("parsing the object: {0}")]
    Parse(String),
    #[error("program {0} is missing from the object")]
    Missing(String),
    #[error("binding {program}'s maps: {reason}")]
    Relocate { program: String, reason: String },
    #[error("the kernel refused {program} ({errno}); verifier log:\n{log}")]
    Verifier {
        program: String,
        errno: std::io::Error,
        log: String,
    },
    #[error("{what} {program}: {errno}")]
    Bpf {
        what: &'static str,
        program: String,
        errno: std::io::Error,
    },
}

/// Loads `program` from `object` for `attach`, its maps those pinned in `maps_dir`; the program's
/// fd.
pub(crate) fn load(
    object: &[u8],
    maps_dir: &Path,
    program: &str,
    attach: bpf_attach_type,
) -> Result<OwnedFd, UnixError> {
    let mut obj = aya_obj::Object::parse(object).map_err(|e| UnixError::Parse(e.to_string()))?;
    let key = obj
        .programs
        .get(program)
        .ok_or_else(|| UnixError::Missing(program.into()))?
        .function_key();
    // As aya does: every section holding a function takes part in call relocation.
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
    let program_sections: HashSet<usize> = obj.programs.values().map(|p| p.section_index).collect();
    // Only this program and the shared functions: the other programs' references to maps that
    // are not pinned (read-only data) are not ours to bind.
    obj.programs.retain(|name, _| name == program);
    obj.functions
        .retain(|k, _| *k == key || !program_sections.contains(&k.0));
    let relocate = |reason: String| UnixError::Relocate {
        program: program.into(),
        reason,
    };
    let objs = obj.maps.clone();
    let mut fds: HashMap<String, MapData> = HashMap::new();
    for name in objs.keys() {
        if let Ok(m) = MapData::from_pin(maps_dir.join(name)) {
            fds.insert(name.clone(), m);
        }
    }
    obj.relocate_maps(
        objs.iter().filter_map(|(name, m)| {
            fds.get(name)
                .map(|d| (name.as_str(), d.fd().as_fd().as_raw_fd(), m))
        }),
        &text_sections,
    )
    .map_err(|e| relocate(e.to_string()))?;
    obj.relocate_calls(&text_sections)
        .map_err(|e| relocate(e.to_string()))?;
    let function = obj
        .functions
        .get(&key)
        .ok_or_else(|| UnixError::Missing(program.into()))?;
    let license = obj
        .programs
        .get(program)
        .map(|p| p.license.clone())
        .unwrap_or_else(|| CString::from(c"GPL"));

    let mut log = vec![0u8; 1 << 20];
    // SAFETY: an all-zero bpf_attr is the documented "unset" for every field.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: BPF_PROG_LOAD reads the union's program-load member.
    let u = unsafe { &mut attr.__bindgen_anon_3 };
    u.prog_type = bpf_prog_type::BPF_PROG_TYPE_CGROUP_SOCK_ADDR as u32;
    u.expected_attach_type = attach as u32;
    u.insns = function.instructions.as_ptr() as u64;
    u.insn_cnt = function.instructions.len() as u32;
    u.license = license.as_ptr() as u64;
    for (d, s) in u.prog_name.iter_mut().zip(program.bytes().take(15)) {
        *d = s as libc::c_char;
    }
    u.log_level = 1;
    u.log_buf = log.as_mut_ptr() as u64;
    u.log_size = log.len() as u32;
    // SAFETY: attr is a valid BPF_PROG_LOAD attribute whose pointers outlive the call.
    let fd = unsafe { sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr) }.map_err(|errno| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        UnixError::Verifier {
            program: program.into(),
            errno,
            log: String::from_utf8_lossy(&log[..end]).into_owned(),
        }
    })?;
    Ok(fd)
}

/// Attaches a loaded program to `cgroup` as a bpf link (beside any older one: links stack); the
/// link's fd.
pub(crate) fn attach(
    program: &str,
    prog: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    attach: bpf_attach_type,
) -> Result<OwnedFd, UnixError> {
    // SAFETY: as in `load`.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.link_create.__bindgen_anon_1.prog_fd = prog.as_raw_fd() as u32;
    attr.link_create.__bindgen_anon_2.target_fd = cgroup.as_raw_fd() as u32;
    attr.link_create.attach_type = attach as u32;
    // SAFETY: a valid BPF_LINK_CREATE attribute.
    unsafe { sys_bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr) }.map_err(|errno| UnixError::Bpf {
        what: "attaching",
        program: program.into(),
        errno,
    })
}

/// Pins an fd (a link) at `path`.
pub(crate) fn pin(fd: BorrowedFd<'_>, path: &Path) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: as in `load`.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: BPF_OBJ_PIN reads the union's object member.
    let u = unsafe { &mut attr.__bindgen_anon_4 };
    u.bpf_fd = fd.as_raw_fd() as u32;
    u.pathname = c.as_ptr() as u64;
    // SAFETY: a valid BPF_OBJ_PIN attribute; the path outlives the call.
    unsafe { sys_bpf_raw(bpf_cmd::BPF_OBJ_PIN, &mut attr) }.map(drop)
}

/// bpf(2), for the commands that return a new fd (ours to own).
///
/// # Safety
/// `attr` must be valid for `cmd`, every pointer in it live for the call.
unsafe fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> std::io::Result<OwnedFd> {
    // SAFETY: the caller's.
    let r = unsafe { sys_bpf_raw(cmd, attr) }?;
    // SAFETY: a command of this kind returned a new fd.
    Ok(unsafe { OwnedFd::from_raw_fd(r as libc::c_int) })
}

/// bpf(2), its return value.
///
/// # Safety
/// As `sys_bpf`.
unsafe fn sys_bpf_raw(cmd: bpf_cmd, attr: &mut bpf_attr) -> std::io::Result<libc::c_long> {
    // SAFETY: the caller's.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_int,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r)
}
