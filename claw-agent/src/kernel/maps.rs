//! The rule maps, driven from one table: FILE_RULES, NET_RULES, REDIRECTS, ENV_RULES and
//! DEVICE_RULES each hold entries keyed by ruleset. Inserting an agent's entries, removing them,
//! listing the rulesets present and removing an earlier daemon's are one routine each, over the
//! table; a new rule map is one row.

use std::{
    collections::HashMap as StdHashMap,
    hash::Hash as StdHash,
    os::fd::{AsFd, AsRawFd},
    sync::Mutex,
};

use aya::{
    maps::{lpm_trie::Key, HashMap, IterableMap, LpmTrie, Map, MapError},
    sys::SyscallError,
    Pod,
};
use aya_obj::generated::{bpf_attr, bpf_cmd};
use claw_common::{AgentEntry, DeviceKey, NetRuleKey, NetRuleValue, PathRuleKey, Redirect};

use crate::kernel::{
    catalogue::maps,
    enforcer::{map_error, Enforcer, EnforcerError, InstalledAgent},
    object::map_mut,
};

/// One rule map: its entries for installed agents, and the ruleset each of its keys is in.
trait RuleMap: Sync {
    fn name(&self) -> &'static str;
    /// Inserts every entry of `agents`.
    fn insert(&self, map: &mut Map, agents: &[InstalledAgent]) -> Result<(), MapError>;
    /// Removes the entries of `agents`; entries already absent are no error.
    fn remove(&self, map: &mut Map, agents: &[InstalledAgent]) -> Result<(), MapError>;
    /// The ruleset of every entry in the map.
    fn rulesets(&self, map: &mut Map) -> Result<Vec<u32>, MapError>;
    /// Removes every entry whose ruleset is not in `keep`.
    fn retain(&self, map: &mut Map, keep: &[u32]) -> Result<(), MapError>;
}

/// How an installed agent's entries of one map are made.
type Entries<K, V> = fn(&InstalledAgent) -> Vec<(K, V)>;

/// A rule map that is an LPM trie: keys are a ruleset and bytes, matched by longest prefix.
struct Trie<K, V> {
    name: &'static str,
    entries: Entries<Key<K>, V>,
    ruleset: fn(&K) -> u32,
}

/// A rule map that is a hash map: keys are matched exactly.
struct Hash<K, V> {
    name: &'static str,
    entries: Entries<K, V>,
    ruleset: fn(&K) -> u32,
}

impl<K: Pod, V: Pod> RuleMap for Trie<K, V> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn insert(&self, map: &mut Map, agents: &[InstalledAgent]) -> Result<(), MapError> {
        let trie = LpmTrie::<_, K, V>::try_from(&*map)?;
        insert_batched(&trie, agents.iter().flat_map(self.entries))
    }

    fn remove(&self, map: &mut Map, agents: &[InstalledAgent]) -> Result<(), MapError> {
        let mut trie = LpmTrie::<_, K, V>::try_from(map)?;
        for (key, _) in agents.iter().flat_map(self.entries) {
            let _ = trie.remove(&key);
        }
        Ok(())
    }

    fn rulesets(&self, map: &mut Map) -> Result<Vec<u32>, MapError> {
        let trie = LpmTrie::<_, K, V>::try_from(map)?;
        let keys = trie.keys().filter_map(Result::ok);
        Ok(keys.map(|key| (self.ruleset)(&key.data())).collect())
    }

    fn retain(&self, map: &mut Map, keep: &[u32]) -> Result<(), MapError> {
        let mut trie = LpmTrie::<_, K, V>::try_from(map)?;
        let foreign: Vec<Key<K>> = trie
            .keys()
            .filter_map(Result::ok)
            .filter(|key| !keep.contains(&(self.ruleset)(&key.data())))
            .collect();
        for key in &foreign {
            let _ = trie.remove(key);
        }
        Ok(())
    }
}

impl<K: Pod + Eq + StdHash, V: Pod> RuleMap for Hash<K, V> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn insert(&self, map: &mut Map, agents: &[InstalledAgent]) -> Result<(), MapError> {
        let hash = HashMap::<_, K, V>::try_from(&*map)?;
        insert_batched(&hash, agents.iter().flat_map(self.entries))
    }

    fn remove(&self, map: &mut Map, agents: &[InstalledAgent]) -> Result<(), MapError> {
        let mut hash = HashMap::<_, K, V>::try_from(map)?;
        for (key, _) in agents.iter().flat_map(self.entries) {
            let _ = hash.remove(&key);
        }
        Ok(())
    }

    fn rulesets(&self, map: &mut Map) -> Result<Vec<u32>, MapError> {
        let hash = HashMap::<_, K, V>::try_from(map)?;
        let keys = hash.keys().filter_map(Result::ok);
        Ok(keys.map(|key| (self.ruleset)(&key)).collect())
    }

    fn retain(&self, map: &mut Map, keep: &[u32]) -> Result<(), MapError> {
        let mut hash = HashMap::<_, K, V>::try_from(map)?;
        let foreign: Vec<K> = hash
            .keys()
            .filter_map(Result::ok)
            .filter(|key| !keep.contains(&(self.ruleset)(key)))
            .collect();
        for key in &foreign {
            let _ = hash.remove(key);
        }
        Ok(())
    }
}

/// Entries per BPF_MAP_UPDATE_BATCH call: enough that the syscall's own cost vanishes, few
/// enough that one call's keys stay a few hundred KiB.
const BATCH_ENTRIES: usize = 1024;

/// Inserts `entries` into `map`, BATCH_ENTRIES per BPF_MAP_UPDATE_BATCH (Linux 5.6; LPM tries
/// and hash maps). Written by hand: aya 0.14 has no batch operations, and one syscall per entry
/// cost a fifth more in filling the maps for 100 agents with 10,000 rules. The kernel reads the
/// arrays at its map's key and value sizes: those are compared with K's and V's first (a map
/// adopted from an earlier claw-agent may have been made with other sizes).
pub fn insert_batched<K: Pod, V: Pod>(
    map: &impl IterableMap<K, V>,
    entries: impl Iterator<Item = (K, V)>,
) -> Result<(), MapError> {
    let info = map.map().info()?;
    let (key_size, value_size) = (info.key_size() as usize, info.value_size() as usize);
    if key_size != std::mem::size_of::<K>() {
        return Err(MapError::InvalidKeySize {
            size: std::mem::size_of::<K>(),
            expected: key_size,
        });
    }
    if value_size != std::mem::size_of::<V>() {
        return Err(MapError::InvalidValueSize {
            size: std::mem::size_of::<V>(),
            expected: value_size,
        });
    }
    let mut keys = Vec::with_capacity(BATCH_ENTRIES);
    let mut values = Vec::with_capacity(BATCH_ENTRIES);
    let mut entries = entries.peekable();
    while entries.peek().is_some() {
        keys.clear();
        values.clear();
        for (key, value) in entries.by_ref().take(BATCH_ENTRIES) {
            keys.push(key);
            values.push(value);
        }
        // SAFETY: zeroed is a valid bpf_attr (plain integers).
        let mut attr = unsafe { std::mem::zeroed::<bpf_attr>() };
        // SAFETY: the batch member is the one BPF_MAP_UPDATE_BATCH reads; plain integers.
        let batch = unsafe { &mut attr.batch };
        batch.map_fd = map.map().fd().as_fd().as_raw_fd() as u32;
        batch.keys = keys.as_ptr() as u64;
        batch.values = values.as_ptr() as u64;
        batch.count = keys.len() as u32;
        // SAFETY: bpf(2) reads `count` keys and values from the arrays we own, laid out with the
        // map's key and value sizes, and writes back only `count` in the attr we own.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                bpf_cmd::BPF_MAP_UPDATE_BATCH as libc::c_long,
                &mut attr as *mut bpf_attr,
                std::mem::size_of::<bpf_attr>(),
            )
        };
        if ret < 0 {
            let err = std::io::Error::last_os_error();
            // SAFETY: as above; the kernel wrote back how many entries it took.
            let written = unsafe { attr.batch.count };
            return Err(MapError::SyscallError(SyscallError {
                call: "bpf_map_update_batch",
                io_error: std::io::Error::new(
                    err.kind(),
                    format!("{err} ({written} of {} entries written)", keys.len()),
                ),
            }));
        }
    }
    Ok(())
}

/// Rule map keys begin with the ruleset, big-endian, so that one ruleset's entries share a
/// prefix.
fn path_ruleset(key: &PathRuleKey) -> u32 {
    u32::from_be_bytes(key.ruleset)
}

fn net_ruleset(key: &NetRuleKey) -> u32 {
    u32::from_be_bytes(key.ruleset)
}

/// Every rule map, with how an installed agent's entries are made.
static RULE_MAPS: [&dyn RuleMap; 5] = [
    &Trie::<PathRuleKey, u32> {
        name: maps::FILE_RULES,
        entries: |agent| {
            let rules = agent.file_rules.iter();
            rules.map(|r| (r.key(agent.ruleset), r.access)).collect()
        },
        ruleset: path_ruleset,
    },
    &Trie::<NetRuleKey, NetRuleValue> {
        name: maps::NET_RULES,
        entries: |agent| {
            let rules = agent.net_rules.iter();
            rules.map(|r| (r.key(agent.ruleset), r.value())).collect()
        },
        ruleset: net_ruleset,
    },
    &Trie::<NetRuleKey, Redirect> {
        name: maps::REDIRECTS,
        entries: |agent| {
            let redirects = agent.redirects.iter();
            redirects
                .map(|r| (r.key(agent.ruleset), r.value()))
                .collect()
        },
        ruleset: net_ruleset,
    },
    &Trie::<PathRuleKey, u32> {
        name: maps::ENV_RULES,
        entries: |agent| {
            let rules = agent.env_rules.iter();
            rules.map(|r| (r.key(agent.ruleset), r.access)).collect()
        },
        ruleset: path_ruleset,
    },
    &Hash::<DeviceKey, u8> {
        name: maps::DEVICE_RULES,
        entries: |agent| agent.device_keys.iter().map(|key| (*key, 1)).collect(),
        ruleset: |key| key.ruleset,
    },
];

/// Entries from which a batch fills the rule maps side by side.
const SIDE_BY_SIDE_FROM: usize = 10_000;

/// What is done to each rule map.
type MapWork = fn(&dyn RuleMap, &mut Map, &[InstalledAgent]) -> Result<(), MapError>;

impl Enforcer {
    /// Inserts the rules of `agents` into every rule map.
    pub(super) fn insert_rules(&mut self, agents: &[InstalledAgent]) -> Result<(), EnforcerError> {
        self.each_rule_map(agents, |rules, map, agents| rules.insert(map, agents))
    }

    /// Removes rules of `agents`; entries already absent are no error.
    pub(super) fn remove_rules(&mut self, agents: &[InstalledAgent]) -> Result<(), EnforcerError> {
        self.each_rule_map(agents, |rules, map, agents| rules.remove(map, agents))
    }

    /// `work` on every rule map. Large batches fill the maps side by side: each has a lock of
    /// its own in the kernel, and an LPM trie takes microseconds per entry (seconds for 100
    /// agents with 10,000 rules). The maps are a queue this thread works on too, so a helper
    /// thread the system refuses only means one thread does it all; a small batch (a tool
    /// call's) runs here alone. Errors are reported in RULE_MAPS order.
    fn each_rule_map(
        &mut self,
        agents: &[InstalledAgent],
        work: MapWork,
    ) -> Result<(), EnforcerError> {
        let mut by_name: StdHashMap<&str, &mut Map> = self.ebpf.maps_mut().collect();
        let mut queue: Vec<(usize, &dyn RuleMap, &mut Map)> = Vec::with_capacity(RULE_MAPS.len());
        for (index, rules) in RULE_MAPS.iter().enumerate() {
            let map = by_name
                .remove(rules.name())
                .ok_or_else(|| EnforcerError::Missing {
                    what: "map",
                    name: rules.name().to_owned(),
                })?;
            queue.push((index, *rules, map));
        }
        let entries: usize = agents.iter().map(InstalledAgent::rule_count).sum();
        let helpers = if entries < SIDE_BY_SIDE_FROM {
            0
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get()) - 1
        };
        let queue = Mutex::new(queue);
        let results = Mutex::new(Vec::with_capacity(RULE_MAPS.len()));
        let drain = || loop {
            let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let Some((index, rules, map)) = next else {
                return;
            };
            let result = work(rules, map, agents).map_err(map_error(rules.name()));
            results
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((index, result));
        };
        std::thread::scope(|scope| {
            for _ in 0..helpers {
                // Refused: the queue is drained here anyway.
                let _ = std::thread::Builder::new().spawn_scoped(scope, drain);
            }
            drain();
        });
        let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        results.sort_by_key(|(index, _)| *index);
        results.into_iter().try_for_each(|(_, result)| result)
    }

    /// Every ruleset id the rule maps and AGENTS hold.
    pub(super) fn rulesets_in_maps(&mut self) -> Result<Vec<u32>, EnforcerError> {
        let agents: HashMap<_, u64, AgentEntry> =
            HashMap::try_from(map_mut(&mut self.ebpf, maps::AGENTS)?)
                .map_err(map_error(maps::AGENTS))?;
        let mut rulesets: Vec<u32> = agents
            .iter()
            .filter_map(Result::ok)
            .map(|(_, a)| a.ruleset)
            .collect();
        for rules in RULE_MAPS {
            let map = map_mut(&mut self.ebpf, rules.name())?;
            rulesets.extend(rules.rulesets(map).map_err(map_error(rules.name()))?);
        }
        rulesets.sort_unstable();
        rulesets.dedup();
        Ok(rulesets)
    }

    /// After adopting an earlier daemon's maps and installing this daemon's policy: removes the
    /// cgroups and rules it installed that this policy does not have.
    /// `unremovable`: cgroups of left-over tool calls whose entries stay.
    pub(super) fn remove_foreign(&mut self, unremovable: &[u64]) -> Result<(), EnforcerError> {
        let ours: Vec<u32> = self.installed.iter().map(|a| a.ruleset).collect();
        let mut cgroups: Vec<u64> = self.installed.iter().map(|a| a.cgroup_id).collect();
        cgroups.extend(unremovable);
        let mut agents: HashMap<_, u64, AgentEntry> =
            HashMap::try_from(map_mut(&mut self.ebpf, maps::AGENTS)?)
                .map_err(map_error(maps::AGENTS))?;
        let stale: Vec<u64> = agents
            .keys()
            .filter_map(Result::ok)
            .filter(|id| !cgroups.contains(id))
            .collect();
        for id in &stale {
            let _ = agents.remove(id);
        }
        for rules in RULE_MAPS {
            let map = map_mut(&mut self.ebpf, rules.name())?;
            rules.retain(map, &ours).map_err(map_error(rules.name()))?;
        }
        tracing::info!(
            cgroups = stale.len(),
            "adopted state reconciled with the policy file"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::object::OBJECT;

    /// The one table covers every rule map of the eBPF object, once each.
    #[test]
    fn one_table_drives_every_rule_map() {
        let names: Vec<&str> = RULE_MAPS.iter().map(|m| m.name()).collect();
        assert_eq!(
            names,
            [
                maps::FILE_RULES,
                maps::NET_RULES,
                maps::REDIRECTS,
                maps::ENV_RULES,
                maps::DEVICE_RULES
            ]
        );
        let object = aya_obj::Object::parse(OBJECT).expect("claw's eBPF object parses");
        for name in &names {
            assert!(
                object.maps.contains_key(*name),
                "{name} is not in the object"
            );
        }
    }
}
