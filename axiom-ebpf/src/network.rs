//! Network: connects of tracked processes, and the cgroup programs that hold an agent to its
//! connect allowlist.
use axiom_common::*;
use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_ancestor_cgroup_id, bpf_probe_read_kernel, bpf_probe_read_user,
    },
    macros::{cgroup_sock, cgroup_sock_addr, map, tracepoint},
    maps::{
        Array, HashMap,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{SockAddrContext, SockContext, TracePointContext},
};
use core::ffi::c_void;

use crate::*;

#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn enter_connect(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, agent)) = tracked() else {
        return 0;
    };
    let fd = arg(&ctx, 0);
    let addr = arg(&ctx, 1);
    let addrlen = arg(&ctx, 2);
    emit::<ConnectEvent>(KIND_CONNECT, pid_tgid, agent, |e| unsafe {
        (*e).fd = fd as i32;
        (*e).addrlen = addrlen as u32;
        let n = if addrlen > SOCKADDR_LEN as u64 {
            SOCKADDR_LEN as u64
        } else {
            addrlen
        };
        (*e).addr[0] = 0;
        (*e).addr[1] = 0;
        if bpf_probe_read_user(
            (*e).addr.as_mut_ptr() as *mut c_void,
            (n & 127) as u32,
            addr as *const c_void,
        ) < 0
        {
            (*e).hdr.flags |= FLAG_TRUNCATED;
        }
    });
    0
}

// ---------------------------------------------------------------- network policy

/// Agents whose connects are checked against `NET_ALLOW` (value unused); others connect freely.
#[map]
pub(crate) static NET_POLICY: HashMap<u64, u32> = HashMap::pinned(4096, 0);
/// Allowed destinations per agent (see `NetKey`).
#[map]
pub(crate) static NET_ALLOW: LpmTrie<NetKey, NetPorts> = LpmTrie::pinned(16384, 0);
/// The agent whose policy holds in a cgroup (cgroup id → agent id), for every process in it or
/// below it, tracked or not: the policy belongs to the cgroup axiomd made for the agent, not to
/// the pid slots that tracking (and `untrack`) sets and clears.
#[map]
pub(crate) static NET_CGROUP: HashMap<u64, u64> = HashMap::pinned(4096, 0);

/// Cgroup levels looked at from the root down for a policy's cgroup (`/axiom/agent-N` is at
/// level 2, or 3 under the v2 mount of a hybrid hierarchy; an agent may nest cgroups of its own
/// below it).
const NET_CGROUP_LEVELS: i32 = 8;

/// The agent whose connect policy binds the current process: by its cgroup or an ancestor of it,
/// else by its tracking.
#[inline(always)]
fn policy_agent() -> Option<(u64, u64)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let mut level = 1;
    while level <= NET_CGROUP_LEVELS {
        let cg = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if cg == 0 {
            break;
        }
        if let Some(a) = unsafe { NET_CGROUP.get(&cg) } {
            return Some((pid_tgid, *a));
        }
        level += 1;
    }
    tracked()
}

/// 1: let the connect through; 0: refuse it (EPERM), after reporting it.
#[inline(always)]
pub(crate) fn connect_policy(ctx: &SockAddrContext, v6: bool) -> i32 {
    let Some((pid_tgid, agent)) = policy_agent() else {
        return 1;
    };
    if unsafe { NET_POLICY.get(&agent) }.is_none() {
        return 1;
    }
    let sa = ctx.sock_addr;
    let mut addr = [0u8; 16];
    unsafe {
        if v6 {
            for i in 0..4 {
                let w = (*sa).user_ip6[i].to_ne_bytes();
                addr[i * 4..i * 4 + 4].copy_from_slice(&w);
            }
        } else {
            addr[10] = 0xff;
            addr[11] = 0xff;
            addr[12..16].copy_from_slice(&(*sa).user_ip4.to_ne_bytes());
        }
    }
    let port = u16::from_be(unsafe { (*sa).user_port } as u16);
    let key = Key::new(
        64 + 128,
        NetKey {
            agent: agent.to_be_bytes(),
            addr,
        },
    );
    if let Some(p) = NET_ALLOW.get(&key) {
        if p.any != 0 {
            return 1;
        }
        let mut i = 0;
        while i < NET_PORTS {
            if (i as u32) < p.n && p.ports[i] == port {
                return 1;
            }
            i += 1;
        }
    }
    // Refused: the record carries a sockaddr as the process gave it, and the denied flag.
    emit::<ConnectEvent>(KIND_CONNECT, pid_tgid, agent, |e| unsafe {
        (*e).hdr.flags |= FLAG_DENIED;
        (*e).fd = -1;
        let a = &mut (*e).addr;
        let pb = port.to_be_bytes();
        if v6 {
            (*e).addrlen = 28;
            a[0..2].copy_from_slice(&(AF_INET6 as u16).to_ne_bytes());
            a[2..4].copy_from_slice(&pb);
            a[4..8].copy_from_slice(&[0; 4]);
            a[8..24].copy_from_slice(&addr);
        } else {
            (*e).addrlen = 16;
            a[0..2].copy_from_slice(&(AF_INET as u16).to_ne_bytes());
            a[2..4].copy_from_slice(&pb);
            a[4..8].copy_from_slice(&addr[12..16]);
        }
    });
    0
}

pub(crate) const AF_INET: u32 = 2;
pub(crate) const AF_INET6: u32 = 10;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    connect_policy(&ctx, false)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    connect_policy(&ctx, true)
}

/// A datagram sent with a destination (`sendto`/`sendmsg` without `connect`: UDP, DNS) is a
/// connect of its own: the same allowlist.
#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    connect_policy(&ctx, false)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    connect_policy(&ctx, true)
}

/// Path sockets an agent in `UNIX_POLICY` may still use (see `UnixPath`).
#[map]
pub(crate) static UNIX_ALLOW: Array<UnixPath> = Array::pinned(UNIX_ALLOW_ENTRIES, 0);
/// Agents whose path Unix sockets are limited to `UNIX_ALLOW` (value unused).
#[map]
pub(crate) static UNIX_POLICY: HashMap<u64, u32> = HashMap::pinned(4096, 0);

const AF_UNIX: u16 = 1;
/// `offsetof(struct sockaddr_un, sun_path)`.
const SUN_PATH: usize = 2;

/// What the kernel passes these programs: `struct bpf_sock_addr_kern` (6.7 and later; the Unix
/// hooks came with 6.7). The context's user-visible fields do not include a Unix path, and
/// aya 0.14 has no kfuncs (`bpf_cast_to_kern_ctx`), so the struct is read whole.
#[repr(C)]
struct SockAddrKern {
    sk: u64,
    uaddr: u64,
    tmp_reg: u64,
    t_ctx: u64,
    uaddrlen: u32,
}

/// Whether `name` (a `sun_path` of `n` bytes) is one of `UNIX_ALLOW`'s. Every index is a loop
/// counter below a constant, so that the verifier sees each read in bounds.
#[inline(always)]
fn unix_allowed(name: &[u8; SOCKADDR_LEN], n: usize) -> bool {
    let mut i = 0;
    while i < UNIX_ALLOW_ENTRIES {
        if let Some(a) = UNIX_ALLOW.get(i) {
            let len = a.len as usize;
            let mut j = 0;
            while len > 0 && j < UNIX_PATH_MAX {
                let c = name[SUN_PATH + j];
                if j == len {
                    // The name ends where the entry does: a NUL, or the end of the address.
                    if c == 0 || j == n {
                        return true;
                    }
                    break;
                }
                if j >= n || a.path[j] != c {
                    break;
                }
                j += 1;
            }
        }
        i += 1;
    }
    false
}

/// 1: let a Unix connect or send through; 0: refuse it (EPERM), after reporting it. Loaded by
/// axiomd as `BPF_CGROUP_UNIX_CONNECT` and `BPF_CGROUP_UNIX_SENDMSG` (the sections say
/// connect4/sendmsg4 only so that aya parses the object).
#[inline(always)]
fn unix_policy(ctx: &SockAddrContext) -> i32 {
    let Some((pid_tgid, agent)) = policy_agent() else {
        return 1;
    };
    if unsafe { UNIX_POLICY.get(&agent) }.is_none() {
        return 1;
    }
    let mut kern = SockAddrKern {
        sk: 0,
        uaddr: 0,
        tmp_reg: 0,
        t_ctx: 0,
        uaddrlen: 0,
    };
    let mut name = [0u8; SOCKADDR_LEN];
    // The context pointer is the kernel struct at run time (reading it needs CAP_PERFMON, which
    // axiomd has). A read that fails, or finds no Unix address, is refused: fail closed.
    let ok = unsafe {
        bpf_probe_read_kernel(
            &mut kern as *mut SockAddrKern as *mut c_void,
            core::mem::size_of::<SockAddrKern>() as u32,
            ctx.sock_addr as *const c_void,
        ) == 0
            && bpf_probe_read_kernel(
                name.as_mut_ptr() as *mut c_void,
                (SUN_PATH + UNIX_PATH_MAX) as u32,
                kern.uaddr as *const c_void,
            ) == 0
    };
    let addrlen = kern.uaddrlen as usize;
    let family = u16::from_ne_bytes([name[0], name[1]]);
    if ok && family == AF_UNIX && addrlen > SUN_PATH && addrlen <= SUN_PATH + UNIX_PATH_MAX {
        // Abstract names (a leading NUL) are scoped by Landlock, not here.
        if name[SUN_PATH] == 0 || unix_allowed(&name, addrlen - SUN_PATH) {
            return 1;
        }
    }
    emit::<ConnectEvent>(KIND_CONNECT, pid_tgid, agent, |e| unsafe {
        (*e).hdr.flags |= FLAG_DENIED;
        (*e).fd = -1;
        (*e).addrlen = if addrlen > SOCKADDR_LEN {
            SOCKADDR_LEN as u32
        } else {
            addrlen as u32
        };
        (*e).addr = name;
        (&mut (*e).addr)[0..2].copy_from_slice(&AF_UNIX.to_ne_bytes());
    });
    0
}

#[cgroup_sock_addr(connect4)]
pub fn connect_unix(ctx: SockAddrContext) -> i32 {
    unix_policy(&ctx)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg_unix(ctx: SockAddrContext) -> i32 {
    unix_policy(&ctx)
}

const IPPROTO_ICMP: u32 = 1;
const IPPROTO_ICMPV6: u32 = 58;
const SOCK_RAW: u32 = 3;

/// Sockets with no address or port an allowlist could name: ICMP "ping" sockets (open to every
/// user where `net.ipv4.ping_group_range` allows, Debian's default) and raw sockets. An agent
/// under a connect policy may not make them; refused (EPERM) and reported like a connect.
#[cgroup_sock(sock_create)]
pub fn sock_create(ctx: SockContext) -> i32 {
    let Some((pid_tgid, agent)) = policy_agent() else {
        return 1;
    };
    if unsafe { NET_POLICY.get(&agent) }.is_none() {
        return 1;
    }
    let sk = ctx.sock;
    let (family, ty, proto) = unsafe { ((*sk).family, (*sk).type_, (*sk).protocol) };
    let addressless = ty == SOCK_RAW
        || (family == AF_INET && proto == IPPROTO_ICMP)
        || (family == AF_INET6 && proto == IPPROTO_ICMPV6);
    if !addressless {
        return 1;
    }
    emit::<ConnectEvent>(KIND_CONNECT, pid_tgid, agent, |e| unsafe {
        (*e).hdr.flags |= FLAG_DENIED;
        (*e).fd = -1;
        (*e).addrlen = 2;
        let a = &mut (*e).addr;
        a[0..2].copy_from_slice(&(family as u16).to_ne_bytes());
        a[2..8].copy_from_slice(&[0; 6]);
    });
    0
}
