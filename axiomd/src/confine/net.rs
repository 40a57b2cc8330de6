//! The connect allowlist in the kernel: per agent, the destinations it may connect to, read by
//! the `connect4`/`connect6` cgroup programs at every connect() of the agent's processes. A
//! refused connect fails with EPERM and is reported as a `denied` event. Path Unix sockets
//! likewise, by `connect_unix`/`sendmsg_unix`, for agents whose profile denies them.
use std::collections::BTreeMap;

use axiom_common::{NET_PORTS, NetKey, NetPorts};
use axiom_proto::confine::{NetAllow, NetRules};
use aya::maps::lpm_trie::Key;

#[derive(Debug, thiserror::Error)]
pub(crate) enum NetError {
    #[error("network rule {0}")]
    Rule(String),
    #[error("{what}: more than {NET_PORTS} ports for one destination")]
    TooManyPorts { what: String },
    #[error("connect allowlist map: {0}")]
    Map(#[from] aya::maps::MapError),
}

/// One prefix's value: its own ports plus those of every wider prefix containing it (an LPM
/// lookup returns the longest match only).
pub(crate) fn fold(rules: &[NetAllow]) -> Result<Vec<([u8; 16], u8, NetPorts)>, NetError> {
    let mut own: BTreeMap<([u8; 16], u8), (bool, Vec<u16>)> = BTreeMap::new();
    for r in rules {
        let (addr, len) = r.prefix().map_err(NetError::Rule)?;
        let e = own.entry((mask(addr, len), len)).or_default();
        if r.port == 0 {
            e.0 = true;
        } else if !e.1.contains(&r.port) {
            e.1.push(r.port);
        }
    }
    let mut out = Vec::new();
    for (&(addr, len), _) in own.iter() {
        let mut v = NetPorts::default();
        let mut ports = Vec::new();
        for (&(a2, l2), (any, p2)) in own.iter() {
            if l2 <= len && mask(addr, l2) == a2 {
                v.any |= *any as u32;
                for p in p2 {
                    if !ports.contains(p) {
                        ports.push(*p);
                    }
                }
            }
        }
        if ports.len() > NET_PORTS {
            return Err(NetError::TooManyPorts {
                what: format!("{}/{len}", std::net::Ipv6Addr::from(addr)),
            });
        }
        v.n = ports.len() as u32;
        v.ports[..ports.len()].copy_from_slice(&ports);
        out.push((addr, len, v));
    }
    Ok(out)
}

fn mask(mut a: [u8; 16], len: u8) -> [u8; 16] {
    for (i, b) in a.iter_mut().enumerate() {
        let bits = (len as usize).saturating_sub(i * 8).min(8);
        *b &= if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
    }
    a
}

/// What the confinement writes into the kernel's policy maps.
impl crate::kernel::NetMaps {
    /// Installs the agent's allowlist (nothing when it may connect anywhere).
    pub(crate) fn apply(&mut self, agent: u64, rules: &NetRules) -> Result<(), NetError> {
        if !rules.unix_any {
            self.unix.insert(agent, 1, 0)?;
        }
        if rules.allow_all {
            return Ok(());
        }
        for (addr, len, ports) in fold(&rules.allow)? {
            let key = Key::new(
                64 + len as u32,
                NetKey {
                    agent: agent.to_be_bytes(),
                    addr,
                },
            );
            self.allow.insert(&key, ports, 0)?;
        }
        // Last: until the policy is in, the agent is not checked at all (it is held before exec).
        self.policy.insert(agent, 1, 0)?;
        Ok(())
    }

    /// Binds the agent's policy to its cgroup: every process in it or below it is held to it,
    /// whatever its tracking says (`untrack` clears pid slots, not this).
    pub(crate) fn bind_cgroup(&mut self, cgroup: u64, agent: u64) -> Result<(), NetError> {
        self.cgroups.insert(cgroup, agent, 0)?;
        Ok(())
    }

    /// Removes an agent's allowlist and its cgroup binding.
    pub(crate) fn remove(&mut self, agent: u64) {
        let bound: Vec<u64> = self
            .cgroups
            .iter()
            .flatten()
            .filter(|(_, a)| *a == agent)
            .map(|(cg, _)| cg)
            .collect();
        for cg in bound {
            let _ = self.cgroups.remove(&cg);
        }
        let _ = self.policy.remove(&agent);
        let _ = self.unix.remove(&agent);
        let keys: Vec<Key<NetKey>> = self
            .allow
            .keys()
            .flatten()
            .filter(|k| k.data().agent == agent.to_be_bytes())
            .collect();
        for k in keys {
            let _ = self.allow.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wider_prefixes_lend_their_ports_to_narrower_ones() {
        let rules: Vec<NetAllow> = ["10.0.0.0/8:443", "10.1.0.0/16:80", "10.1.2.3", "[::1]:8080"]
            .iter()
            .map(|s| NetAllow::parse(s).unwrap())
            .collect();
        let f = fold(&rules).unwrap();
        let get = |net: &str| {
            let (a, l) = NetAllow::parse(net).unwrap().prefix().unwrap();
            f.iter()
                .find(|(x, y, _)| *x == mask(a, l) && *y == l)
                .map(|(_, _, p)| *p)
                .unwrap()
        };
        let p8 = get("10.0.0.0/8");
        assert_eq!((p8.any, &p8.ports[..p8.n as usize]), (0, &[443][..]));
        let p16 = get("10.1.0.0/16");
        let mut ports = p16.ports[..p16.n as usize].to_vec();
        ports.sort();
        assert_eq!(ports, vec![80, 443]);
        assert_eq!(get("10.1.2.3").any, 1);
        let v6 = get("::1");
        assert_eq!(&v6.ports[..v6.n as usize], &[8080]);
        assert_eq!(mask([0xff; 16], 12)[..3], [0xff, 0xf0, 0]);
    }
}
