//! What a confined agent may do, as axiomd resolves it from a profile for one launch.
//!
//! axiomd owns the policy (profiles live in its configuration, not in the client); the
//! launcher (`axiomctl run`) receives the resolved `Confinement` and applies the parts that
//! must be applied by the process itself before it executes the agent (Landlock, read-only
//! mounts over protected paths); axiomd applies the rest to the agent's cgroup (resource
//! limits, the connect allowlist).
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
// A field this side does not know is a confinement it cannot enforce: refused, never
// ignored (version skew between axiomd and the launcher fails closed).
#[serde(deny_unknown_fields)]
pub struct Confinement {
    /// The profile it came from (`read-only`, `workspace-write`, `full`, or a configured one).
    pub profile: String,
    /// Refuse to start the agent when any part cannot be enforced on this kernel; otherwise
    /// apply what can be and report exactly what is not.
    pub strict: bool,
    /// Filesystem rules (Landlock). `None`: no filesystem restriction (the `full` profile).
    pub fs: Option<FsRules>,
    pub net: NetRules,
    pub limits: Limits,
}

/// Absolute paths. Landlock grants rights on a file or a directory and everything beneath it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FsRules {
    /// Read and execute beneath these.
    pub read: Vec<String>,
    /// Read, write, create, remove, rename beneath these.
    pub write: Vec<String>,
    /// Never writable, even beneath a `write` path (mounted read-only over themselves in the
    /// agent's own mount namespace: Landlock alone cannot take a right back beneath a grant).
    /// A trailing `/` names a directory the launcher makes when it is absent.
    pub protect: Vec<String>,
    /// Not readable either (credentials): something empty is mounted over each in the agent's
    /// own view (Landlock cannot take a read right back beneath a grant either).
    #[serde(default)]
    pub hide: Vec<String>,
    /// The agent kind's own state, where it lives (`config/agents.toml`, `writable`): read,
    /// write, create, remove, rename beneath these too. A trailing `/` names a directory the
    /// launcher makes (as the agent's user) when it is absent, so that a first run can keep it.
    #[serde(default)]
    pub state: Vec<String>,
}

impl FsRules {
    /// Every path writable to the agent: `write` and its kind's `state` (a directory's
    /// trailing `/` dropped). What the launcher grants and holds protected paths beneath.
    pub fn writable(&self) -> Vec<String> {
        self.write
            .iter()
            .cloned()
            .chain(self.state.iter().map(|s| {
                let t = s.trim_end_matches('/');
                if t.is_empty() {
                    s.clone()
                } else {
                    t.to_string()
                }
            }))
            .collect()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetRules {
    /// `true`: every connection allowed (nothing else applies).
    pub allow_all: bool,
    /// Otherwise only these destinations (nothing, when empty: deny all).
    pub allow: Vec<NetAllow>,
    /// Path Unix sockets: any (`true`), or only axiomd's and the configured ones. Absent (an
    /// older sender): only those.
    #[serde(default)]
    pub unix_any: bool,
}

impl NetRules {
    /// Whether anything of the agent's connects is checked in the kernel.
    pub fn confines(&self) -> bool {
        !self.allow_all || !self.unix_any
    }
}

/// One allowed destination: an address or prefix, and a port (0: any).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetAllow {
    /// `10.0.0.0/8`, `127.0.0.1`, `::1/128`, or `*` for any address.
    pub net: String,
    pub port: u16,
}

impl NetAllow {
    /// `addr[/prefix][:port]`, `[v6addr][/prefix]:port`, `*:port`, or `*`.
    pub fn parse(s: &str) -> Result<NetAllow, String> {
        let s = s.trim();
        let (net, port) = if let Some(rest) = s.strip_prefix('[') {
            let (addr, tail) = rest
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: missing ']'"))?;
            // `[::1]/128:443` or `[::1]:443` or `[::1]`
            let (prefix, port) = match tail.split_once(':') {
                Some((p, port)) => (p, Some(port)),
                None => (tail, None),
            };
            (format!("{addr}{prefix}"), port)
        } else if s.matches(':').count() > 1 {
            (s.to_string(), None) // a bare IPv6 address
        } else {
            match s.split_once(':') {
                Some((a, p)) => (a.to_string(), Some(p)),
                None => (s.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("{s:?}: {p:?} is not a port"))?,
            None => 0,
        };
        let allow = NetAllow { net, port };
        allow.prefix()?;
        Ok(allow)
    }

    /// The address as 16 bytes (IPv4 mapped into `::ffff:0:0/96`) and the prefix length over
    /// those 128 bits: one lookup key for both families.
    pub fn prefix(&self) -> Result<([u8; 16], u8), String> {
        if self.net == "*" {
            return Ok(([0; 16], 0));
        }
        let (addr, len) = match self.net.split_once('/') {
            Some((a, l)) => (
                a,
                Some(
                    l.parse::<u8>()
                        .map_err(|_| format!("{}: bad prefix length", self.net))?,
                ),
            ),
            None => (self.net.as_str(), None),
        };
        let ip: std::net::IpAddr = addr
            .parse()
            .map_err(|_| format!("{:?} is not an IP address", addr))?;
        match ip {
            std::net::IpAddr::V4(v4) => {
                let len = len.unwrap_or(32);
                if len > 32 {
                    return Err(format!("{}: prefix longer than 32", self.net));
                }
                Ok((v4.to_ipv6_mapped().octets(), 96 + len))
            }
            std::net::IpAddr::V6(v6) => {
                let len = len.unwrap_or(128);
                if len > 128 {
                    return Err(format!("{}: prefix longer than 128", self.net));
                }
                Ok((v6.octets(), len))
            }
        }
    }
}

impl std::fmt::Display for NetAllow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.port, self.net.contains(':')) {
            (0, _) => write!(f, "{}", self.net),
            (p, true) => write!(f, "[{}]:{p}", self.net),
            (p, false) => write!(f, "{}:{p}", self.net),
        }
    }
}

/// Limits on the agent's cgroup (all its processes together).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Processes and threads at once (a fork bomb stops here).
    pub pids: Option<u64>,
    /// Memory in bytes (beyond it the kernel reclaims, then kills inside the agent only).
    pub memory_bytes: Option<u64>,
    /// CPU time as a percentage of one CPU (200: two CPUs' worth).
    pub cpu_percent: Option<u32>,
}

/// What the launcher reports back about the confinement it applied.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Applied {
    /// The kernel's Landlock ABI (0: none).
    pub landlock_abi: u32,
    /// Each requested restriction the kernel could not enforce, in words.
    pub not_enforced: Vec<String>,
}

/// Where `axiomctl mcp --http` keeps its bearer tokens by default: one directory per user,
/// `/run/user/<uid>/axiom-mcp` (else `/tmp/axiom-mcp-<uid>`), the same whatever the environment
/// says. A confined agent runs as the same user and could read a token anywhere it may read,
/// so its launcher covers this directory with an empty one in the agent's own mount namespace.
pub fn mcp_token_dir(uid: u32) -> std::path::PathBuf {
    let run = std::path::PathBuf::from(format!("/run/user/{uid}"));
    if run.is_dir() {
        run.join("axiom-mcp")
    } else {
        std::path::PathBuf::from(format!("/tmp/axiom-mcp-{uid}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_for_both_families() {
        let a = NetAllow::parse("10.0.0.0/8:443").unwrap();
        assert_eq!(
            (a.net.as_str(), a.port, a.prefix().unwrap().1),
            ("10.0.0.0/8", 443, 104)
        );
        let a = NetAllow::parse("127.0.0.1").unwrap();
        assert_eq!((a.port, a.prefix().unwrap().1), (0, 128));
        let a = NetAllow::parse("[::1]:8080").unwrap();
        assert_eq!((a.net.as_str(), a.port), ("::1", 8080));
        let a = NetAllow::parse("[fd00::]/8:53").unwrap();
        assert_eq!(
            (a.net.as_str(), a.port, a.prefix().unwrap().1),
            ("fd00::/8", 53, 8)
        );
        assert_eq!(NetAllow::parse("*:443").unwrap().prefix().unwrap().1, 0);
        assert_eq!(NetAllow::parse("::1").unwrap().prefix().unwrap().1, 128);
        assert!(NetAllow::parse("example.com:443").is_err());
        assert!(NetAllow::parse("10.0.0.0/33").is_err());
        assert!(NetAllow::parse("1.2.3.4:99999").is_err());
        assert_eq!(
            NetAllow::parse("[::1]:8080").unwrap().to_string(),
            "[::1]:8080"
        );
    }
}
