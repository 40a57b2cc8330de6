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

/// The map `name` from `get`, as the type the sensor declared it with.
fn typed<T: TryFrom<Map, Error = aya::maps::MapError>>(
    get: &mut impl FnMut(&'static str) -> Result<Map, LoadError>,
    name: &'static str,
) -> Result<T, LoadError> {
    T::try_from(get(name)?).map_err(map_err(name))
}

impl Maps {
    /// The maps of a pin set the sensor left.
    pub(super) fn pinned(pins: &Pins) -> Result<Maps, LoadError> {
        Maps::from(|name| Map::from_map_data(open_pinned(pins, name)?).map_err(map_err(name)))
    }

    /// The maps of a fresh load, and its CONFIG array.
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<(Maps, Array<MapData, u64>), LoadError> {
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(LoadError::MissingMap(name));
        let maps = Maps::from(&mut take)?;
        let config = typed(&mut take, "CONFIG")?;
        Ok((maps, config))
    }

    /// Every map by name from `get`, each as its type.
    fn from(
        mut get: impl FnMut(&'static str) -> Result<Map, LoadError>,
    ) -> Result<Maps, LoadError> {
        Ok(Maps {
            tracking: TrackingMaps {
                tracked: typed(&mut get, "TRACKED")?,
                cgroups: typed(&mut get, "TRACKED_CGROUPS")?,
            },
            rings: Rings {
                events: typed(&mut get, "EVENTS")?,
                output: typed(&mut get, "OUTPUT")?,
                matches: typed(&mut get, "MATCHES")?,
            },
            net: NetMaps {
                policy: typed(&mut get, "NET_POLICY")?,
                allow: typed(&mut get, "NET_ALLOW")?,
                cgroups: typed(&mut get, "NET_CGROUP")?,
                unix: typed(&mut get, "UNIX_POLICY")?,
            },
            lost: typed(&mut get, "LOST")?,
            work: typed(&mut get, "WORK")?,
            dfa: typed(&mut get, "DFA")?,
        })
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
