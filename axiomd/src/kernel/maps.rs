//! The maps a load hands out, by the stage that uses them.
use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, RingBuf, lpm_trie::LpmTrie},
};
use std::time::Duration;

use axiom_common::Tracked;

use super::{LoadError, Pins, Programs, open_pinned};

/// The rings the reader drains.
pub(crate) struct Rings {
    pub(crate) events: RingBuf<MapData>,
    pub(crate) output: RingBuf<MapData>,
    pub(crate) matches: RingBuf<MapData>,
}

/// The maps that say what is tracked: the agent registry writes them.
pub(crate) struct TrackingMaps {
    /// tgid → agent.
    pub(crate) tracked: Array<MapData, u64>,
    /// cgroup id → agent.
    pub(crate) cgroups: HashMap<MapData, u64, Tracked>,
}

/// The connect and path-socket policy maps: the agents' confinement writes them
/// (`confine::net`), read by the cgroup programs at every connect of an agent's processes.
pub(crate) struct NetMaps {
    pub(crate) policy: HashMap<MapData, u64, u32>,
    pub(crate) allow: LpmTrie<MapData, axiom_common::NetKey, axiom_common::NetPorts>,
    /// cgroup id → agent: the cgroup whose processes (tracked or not) the agent's policy binds.
    pub(crate) cgroups: HashMap<MapData, u64, u64>,
    /// Agents whose path Unix sockets are limited to `UNIX_ALLOW` (value unused).
    pub(crate) unix: HashMap<MapData, u64, u32>,
}

/// A load, each part handed out once, by type, to the stage that uses it: the programs and
/// their counters stay with the sensor, the rings go to the reader, the tracking and policy
/// maps to the agents.
pub(crate) struct Parts {
    pub(crate) programs: Programs,
    pub(crate) rings: Rings,
    pub(crate) tracking: TrackingMaps,
    pub(crate) net: NetMaps,
}

/// A per-CPU counter, summed over the CPUs (0 if it cannot be read).
pub(super) fn cpu_sum(map: &PerCpuArray<MapData, u64>, index: u32) -> u64 {
    map.get(&index, 0).map(|v| v.iter().sum()).unwrap_or(0)
}

pub(super) struct Maps {
    tracking: TrackingMaps,
    rings: Rings,
    net: NetMaps,
    lost: PerCpuArray<MapData, u64>,
    work: PerCpuArray<MapData, u64>,
    dfa: Array<MapData, axiom_common::Dfa>,
}

pub(super) fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> LoadError {
    move |source| LoadError::Map {
        name,
        source: Box::new(source),
    }
}

impl Maps {
    pub(super) fn pinned(pins: &Pins) -> Result<Maps, LoadError> {
        Ok(Maps {
            tracking: TrackingMaps {
                tracked: Array::try_from(Map::Array(open_pinned(pins, "TRACKED")?))
                    .map_err(map_err("TRACKED"))?,
                cgroups: HashMap::try_from(Map::HashMap(open_pinned(pins, "TRACKED_CGROUPS")?))
                    .map_err(map_err("TRACKED_CGROUPS"))?,
            },
            rings: Rings {
                events: RingBuf::try_from(Map::RingBuf(open_pinned(pins, "EVENTS")?))
                    .map_err(map_err("EVENTS"))?,
                output: RingBuf::try_from(Map::RingBuf(open_pinned(pins, "OUTPUT")?))
                    .map_err(map_err("OUTPUT"))?,
                matches: RingBuf::try_from(Map::RingBuf(open_pinned(pins, "MATCHES")?))
                    .map_err(map_err("MATCHES"))?,
            },
            net: NetMaps {
                policy: HashMap::try_from(Map::HashMap(open_pinned(pins, "NET_POLICY")?))
                    .map_err(map_err("NET_POLICY"))?,
                allow: LpmTrie::try_from(Map::LpmTrie(open_pinned(pins, "NET_ALLOW")?))
                    .map_err(map_err("NET_ALLOW"))?,
                cgroups: HashMap::try_from(Map::HashMap(open_pinned(pins, "NET_CGROUP")?))
                    .map_err(map_err("NET_CGROUP"))?,
                unix: HashMap::try_from(Map::HashMap(open_pinned(pins, "UNIX_POLICY")?))
                    .map_err(map_err("UNIX_POLICY"))?,
            },
            lost: PerCpuArray::try_from(Map::PerCpuArray(open_pinned(pins, "LOST")?))
                .map_err(map_err("LOST"))?,
            work: PerCpuArray::try_from(Map::PerCpuArray(open_pinned(pins, "WORK")?))
                .map_err(map_err("WORK"))?,
            dfa: Array::try_from(Map::Array(open_pinned(pins, "DFA")?)).map_err(map_err("DFA"))?,
        })
    }

    pub(super) fn take(ebpf: &mut Ebpf) -> Result<(Maps, Array<MapData, u64>), LoadError> {
        fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, LoadError> {
            ebpf.take_map(name).ok_or(LoadError::MissingMap(name))
        }
        Ok((
            Maps {
                tracking: TrackingMaps {
                    tracked: Array::try_from(take(ebpf, "TRACKED")?).map_err(map_err("TRACKED"))?,
                    cgroups: HashMap::try_from(take(ebpf, "TRACKED_CGROUPS")?)
                        .map_err(map_err("TRACKED_CGROUPS"))?,
                },
                rings: Rings {
                    events: RingBuf::try_from(take(ebpf, "EVENTS")?).map_err(map_err("EVENTS"))?,
                    output: RingBuf::try_from(take(ebpf, "OUTPUT")?).map_err(map_err("OUTPUT"))?,
                    matches: RingBuf::try_from(take(ebpf, "MATCHES")?)
                        .map_err(map_err("MATCHES"))?,
                },
                net: NetMaps {
                    policy: HashMap::try_from(take(ebpf, "NET_POLICY")?)
                        .map_err(map_err("NET_POLICY"))?,
                    allow: LpmTrie::try_from(take(ebpf, "NET_ALLOW")?)
                        .map_err(map_err("NET_ALLOW"))?,
                    cgroups: HashMap::try_from(take(ebpf, "NET_CGROUP")?)
                        .map_err(map_err("NET_CGROUP"))?,
                    unix: HashMap::try_from(take(ebpf, "UNIX_POLICY")?)
                        .map_err(map_err("UNIX_POLICY"))?,
                },
                lost: PerCpuArray::try_from(take(ebpf, "LOST")?).map_err(map_err("LOST"))?,
                work: PerCpuArray::try_from(take(ebpf, "WORK")?).map_err(map_err("WORK"))?,
                dfa: Array::try_from(take(ebpf, "DFA")?).map_err(map_err("DFA"))?,
            },
            Array::try_from(take(ebpf, "CONFIG")?).map_err(map_err("CONFIG"))?,
        ))
    }

    pub(super) fn into_parts(
        self,
        config: Array<MapData, u64>,
        pins: &Pins,
        reused: bool,
        attached: Vec<&'static str>,
        log_program_id: Option<u32>,
        ebpf: Option<Ebpf>,
    ) -> Parts {
        Parts {
            programs: Programs {
                config,
                lost: self.lost,
                work: self.work,
                dfa: self.dfa,
                log_program_id,
                reused,
                attached,
                skipped: Vec::new(),
                startup: Duration::ZERO,
                pins: pins.clone(),
                ebpf,
            },
            rings: self.rings,
            tracking: self.tracking,
            net: self.net,
        }
    }
}
