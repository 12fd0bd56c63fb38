//! The enforcer: the one object that holds claw's loaded programs and maps. It installs compiled
//! policies into the maps (atomically per agent) and switches each agent's cgroup to its new
//! rules. Loading, attaching, the rule maps, tool calls, grants and status are its other files
//! in this folder; one owner holds it, and nothing else touches BPF.

use std::{
    collections::HashMap as StdHashMap,
    io,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, ArrayOfMaps, HashMap, MapData},
    programs::{links::PinnedLink, ProgramError},
    Ebpf,
};
use claw_common::{agent_flags, mode, AgentEntry, DeviceKey, MAX_AGENT_LEVEL};

use crate::{
    kernel::{
        btf::BtfError,
        catalogue::maps,
        cgroupfs::{self, CgroupError},
        object::{map_mut, take_map},
        pins::{PinError, Pins},
        tracefs::TracefsError,
    },
    policy::{
        compile::{Compiled, CompiledAgent, FileRule, NetRule, RedirectEntry},
        devices, Mode,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum EnforcerError {
    #[error("tool call `{call}`: {reason}")]
    Call { call: String, reason: String },
    #[error(
        "cgroup {cgroup} is at level {level} of the hierarchy: an agent's cgroup must be below the \
         root and at most {MAX_AGENT_LEVEL} levels deep — give the agent a shorter cgroup path"
    )]
    TooDeep { cgroup: String, level: usize },
    #[error("reading kernel struct layout: {0}")]
    Btf(#[from] BtfError),
    #[error("loading claw's eBPF object: {0}")]
    Object(#[source] aya::EbpfError),
    #[error("claw's eBPF object has no {what} `{name}` (a build mismatch)")]
    Missing { what: &'static str, name: String },
    #[error("reading the kernel's BTF: {0}")]
    KernelBtf(#[source] aya::BtfError),
    #[error(
        "this kernel refuses BPF LSM programs: loading lsm/{hook} failed: {reason}. \
         claw enforces file and exec rules with BPF LSM and will not run without it; use a kernel \
         built with CONFIG_BPF_LSM=y that permits BPF trampolines (`bpf` in the lsm= boot \
         parameter), or start claw-agent with --degraded to accept less: network rules for every \
         process, file and exec rules by Landlock for the processes claw starts (`claw-agent \
         --check` says which)"
    )]
    LsmRefused { hook: &'static str, reason: String },
    #[error(
        "BPF LSM is not active: the kernel's LSM list ({list}) has no `bpf`, so attached programs \
         would never run — add bpf to the lsm= boot parameter, e.g. lsm={list},bpf (`claw-agent \
         --check` says where), or start claw-agent with --degraded to accept less: network rules \
         for every process, file and exec rules by Landlock for the processes claw starts"
    )]
    LsmInactive { list: String },
    #[error(
        "cannot confirm that BPF LSM is active: reading {path}: {source} — mount securityfs \
         (`mount -t securityfs securityfs /sys/kernel/security`)"
    )]
    LsmListUnreadable {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("loading {program}: {reason}")]
    Load { program: String, reason: String },
    #[error("attaching {program}: {source}")]
    Attach {
        program: String,
        #[source]
        source: ProgramError,
    },
    #[error("opening cgroup {path}: {source}")]
    CgroupOpen {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error("pinning {what} at {path}: {reason}")]
    PinLink {
        what: String,
        path: PathBuf,
        reason: String,
    },
    #[error("map `{map}`: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

pub(super) fn map_error(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> EnforcerError {
    move |source| EnforcerError::Map { map, source }
}

/// Which programs run: all of them, or (without BPF LSM) the network programs only — with the
/// processes claw starts file-confined by Landlock, or not. Status and every event say which
/// (`full`, `landlock`, `degraded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Coverage {
    #[serde(rename = "full")]
    Full,
    /// No BPF LSM: network rules enforced for every process of an agent; file and exec rules
    /// for the processes claw starts (`run:`, `clawctl run`), by Landlock.
    #[serde(rename = "landlock")]
    Landlock,
    /// No BPF LSM: network rules enforced, file and exec rules not.
    #[serde(rename = "degraded")]
    NetworkOnly,
}

impl Coverage {
    pub fn as_str(self) -> &'static str {
        match self {
            Coverage::Full => "full",
            Coverage::Landlock => "landlock",
            Coverage::NetworkOnly => "degraded",
        }
    }

    /// Whether the BPF LSM programs run (else the network programs and the reporting
    /// tracepoints).
    pub fn has_bpf_lsm(self) -> bool {
        self == Coverage::Full
    }
}

/// One agent as installed in the kernel.
#[derive(Debug, Clone)]
pub struct InstalledAgent {
    pub name: String,
    pub cgroup: String,
    pub cgroup_id: u64,
    pub ruleset: u32,
    pub mode: Mode,
    pub jit: bool,
    pub file_rules: Vec<FileRule>,
    pub net_rules: Vec<NetRule>,
    pub redirects: Vec<RedirectEntry>,
    /// ENV_RULES entries: the preload variables refused ("NAME=").
    pub env_rules: Vec<FileRule>,
    pub device_keys: Vec<DeviceKey>,
    /// The agent whose reports this cgroup's are counted with: `cgroup_id` itself for an agent,
    /// the agent's for a tool call.
    pub agent_cgroup_id: u64,
    /// The port of the agent's resolver on 127.0.0.1 (0: none).
    pub resolver_port: u16,
    /// Held to the agent's rules, so also to the addresses its resolver answered (DNS_ALLOW).
    pub resolved_names: bool,
}

impl InstalledAgent {
    /// Entries of the agent's rules in the rule maps.
    pub fn rule_count(&self) -> usize {
        self.file_rules.len()
            + self.net_rules.len()
            + self.redirects.len()
            + self.env_rules.len()
            + self.device_keys.len()
    }
}

/// A tool call's cgroup as installed: a child of its agent's, held to the agent's rules or to
/// narrower ones of its own.
#[derive(Debug, Clone)]
pub struct InstalledCall {
    pub call: String,
    /// `name` is the agent's, `cgroup` and `cgroup_id` the call's. Without rules of its own the
    /// rule lists are empty and `ruleset` is the agent's.
    pub entry: InstalledAgent,
    pub narrowed: bool,
}

impl InstalledAgent {
    /// Names the cgroup the programs are attached to: its path and its id, because a cgroup
    /// removed and made again under the same path is a new cgroup, with nothing attached.
    pub(super) fn link_key(&self) -> String {
        format!("{}@{}", self.cgroup, self.cgroup_id)
    }
}

pub struct Enforcer {
    pub(super) ebpf: Ebpf,
    /// Keeps the kernel counting program runs and run time while claw-agent runs (the live proof
    /// `explain` shows); None where the kernel refused.
    pub(super) _stats: Option<std::os::fd::OwnedFd>,
    pub(super) coverage: Coverage,
    pub(super) cgroup_root: PathBuf,
    /// LSM programs, or in degraded mode tracepoints, attached so far.
    pub(super) attached: Vec<&'static str>,
    /// The LSM programs' links, pinned: they stay attached when claw-agent dies.
    pub(super) lsm_links: Vec<PinnedLink>,
    /// Per agent cgroup (InstalledAgent::link_key): its network program links, pinned.
    pub(super) net_links: StdHashMap<String, Vec<(&'static str, PinnedLink)>>,
    /// Per agent cgroup: where its device program's link is pinned.
    pub(super) device_links: StdHashMap<String, PathBuf>,
    pub(super) installed: Vec<InstalledAgent>,
    pub(super) calls: Vec<InstalledCall>,
    pub(super) next_ruleset: u32,
    pub(super) pins: Pins,
    /// The maps were an earlier claw-agent's: the first apply also clears what it left.
    pub(super) adopting: bool,
    pub(super) grace_period: GracePeriod,
    /// LSM hooks of the catalogue this kernel does not have (catalogue::NEWER_HOOKS): not loaded,
    /// not attached.
    pub(super) absent_hooks: Vec<&'static str>,
}

/// Waits until every program run that began before has ended: the kernel waits for an RCU grace
/// period after each update of a map of maps, and programs run inside RCU read sections.
pub(super) struct GracePeriod {
    outer: ArrayOfMaps<MapData, Array<MapData, u32>>,
    inner: Array<MapData, u32>,
}

impl GracePeriod {
    pub(super) fn new(ebpf: &mut Ebpf) -> Result<Self, EnforcerError> {
        let map = take_map(ebpf, maps::GRACE_PERIOD)?;
        Ok(Self {
            outer: ArrayOfMaps::try_from(map).map_err(map_error(maps::GRACE_PERIOD))?,
            inner: Array::create(1, 0).map_err(map_error(maps::GRACE_PERIOD))?,
        })
    }

    fn wait(&mut self) -> Result<(), EnforcerError> {
        self.outer
            .set(0, &self.inner, 0)
            .map_err(map_error(maps::GRACE_PERIOD))
    }
}

impl Enforcer {
    pub fn cgroup_root(&self) -> &Path {
        &self.cgroup_root
    }

    pub fn coverage(&self) -> Coverage {
        self.coverage
    }

    pub fn installed(&self) -> &[InstalledAgent] {
        &self.installed
    }

    pub fn calls(&self) -> &[InstalledCall] {
        &self.calls
    }

    /// Makes `compiled` the enforced policy. Every agent's new rules are complete in the maps
    /// before its cgroup switches to them (one map update per agent); on any error the previous
    /// policy stays fully in force.
    ///
    /// Live tool calls follow their agents: onto the new rules, or with `narrowed` (by call
    /// cgroup id) onto narrowed rules of their own compiled from the new policy.
    ///
    /// `resolvers`: agent name -> the port of its resolver on 127.0.0.1.
    pub fn apply(
        &mut self,
        compiled: &Compiled,
        narrowed: &StdHashMap<u64, CompiledAgent>,
        resolvers: &StdHashMap<String, u16>,
    ) -> Result<(), EnforcerError> {
        // Majors that GPU drivers registered when they loaded (none on a machine without them).
        let majors = devices::registered_majors(
            &std::fs::read_to_string("/proc/devices").unwrap_or_default(),
        );
        let mut staged = Vec::new();
        // Rulesets installed before and kept as they are: their entries are neither written
        // again nor removed.
        let mut kept = Vec::new();
        for agent in &compiled.agents {
            let cgroup_id = cgroupfs::ensure(&self.cgroup_root, &agent.cgroup)?;
            let device_keys = |ruleset| {
                let mut keys = devices::keys(devices::BASE, ruleset, &majors);
                if agent.gpu {
                    keys.extend(devices::keys(devices::GPU, ruleset, &majors));
                }
                keys
            };
            // An agent whose rules did not change keeps its ruleset: a re-apply writes only the
            // rules of agents that changed (a swap of a ruleset of 10,000 rules costs seconds).
            // The name too: records read after the switch are named by their ruleset.
            let unchanged = self.installed.iter().find(|old| {
                old.cgroup_id == cgroup_id
                    && old.name == agent.name
                    && old.file_rules == agent.file_rules
                    && old.net_rules == agent.net_rules
                    && old.redirects == agent.redirects
                    && old.env_rules == agent.env_rules
                    && old.device_keys == device_keys(old.ruleset)
            });
            let ruleset = match unchanged {
                Some(old) => {
                    kept.push(old.ruleset);
                    old.ruleset
                }
                None => {
                    self.next_ruleset += 1;
                    self.next_ruleset - 1
                }
            };
            staged.push(InstalledAgent {
                name: agent.name.clone(),
                cgroup: agent.cgroup.clone(),
                cgroup_id,
                ruleset,
                mode: agent.mode,
                jit: agent.jit,
                file_rules: agent.file_rules.clone(),
                net_rules: agent.net_rules.clone(),
                redirects: agent.redirects.clone(),
                env_rules: agent.env_rules.clone(),
                device_keys: device_keys(ruleset),
                agent_cgroup_id: cgroup_id,
                resolver_port: resolvers.get(&agent.name).copied().unwrap_or(0),
                resolved_names: true,
            });
        }
        let staged_calls: Vec<InstalledCall> = self
            .calls
            .clone()
            .iter()
            .map(|call| {
                let agent = staged.iter().find(|a| a.name == call.entry.name);
                self.stage_call(agent, call, narrowed.get(&call.entry.cgroup_id), &majors)
            })
            .collect();
        let mut entries = staged.clone();
        entries.extend(staged_calls.iter().map(|c| c.entry.clone()));
        let fresh: Vec<InstalledAgent> = entries
            .iter()
            .filter(|e| !kept.contains(&e.ruleset))
            .cloned()
            .collect();
        if let Err(err) = self.insert_rules(&fresh) {
            let _ = self.remove_rules(&fresh);
            return Err(err);
        }
        if let Err(err) = self.attach_net(&staged) {
            self.detach_net_except(
                &self
                    .installed
                    .iter()
                    .map(InstalledAgent::link_key)
                    .collect::<Vec<_>>(),
            );
            let _ = self.remove_rules(&fresh);
            return Err(err);
        }
        let first = self.installed.is_empty() && self.calls.is_empty();
        let mut previous = std::mem::take(&mut self.installed);
        let previous_agents = previous.len();
        previous.extend(self.calls.iter().map(|c| c.entry.clone()));
        if let Err(err) = self.switch(&entries, &previous) {
            // Put every cgroup back on its previous rules.
            let _ = self.switch(&previous, &entries);
            let _ = self.remove_rules(&fresh);
            previous.truncate(previous_agents);
            self.installed = previous;
            return Err(err);
        }
        // The previous rulesets no longer in use; those kept stay.
        previous.retain(|p| !kept.contains(&p.ruleset));
        let keep: Vec<String> = staged.iter().map(InstalledAgent::link_key).collect();
        self.detach_net_except(&keep);
        // A program that read an agent's old ruleset id just before the switch still looks its
        // rules up under that id: they stay until such runs are over.
        match self.grace_period.wait() {
            Ok(()) => {
                if let Err(err) = self.remove_rules(&previous) {
                    tracing::warn!("removing the previous policy's rules: {err}");
                }
            }
            Err(err) => tracing::warn!("previous policy's rules left in the maps: {err}"),
        }
        self.installed = staged;
        self.calls = staged_calls;
        let unremovable = if first {
            self.remove_leftover_calls()
        } else {
            Vec::new()
        };
        if self.adopting {
            self.adopting = false;
            self.remove_foreign(&unremovable)?;
        }
        Ok(())
    }

    /// A call's entry for the rules of `agent` (as staged now): the agent's own ruleset, or with
    /// `own` a fresh ruleset of narrowed rules. A call without its agent, or whose narrowed
    /// rules are missing, gets ruleset 0, which holds no rules: everything is denied to it.
    pub(super) fn stage_call(
        &mut self,
        agent: Option<&InstalledAgent>,
        call: &InstalledCall,
        own: Option<&CompiledAgent>,
        majors: &StdHashMap<String, u32>,
    ) -> InstalledCall {
        let mut entry = InstalledAgent {
            file_rules: Vec::new(),
            net_rules: Vec::new(),
            redirects: Vec::new(),
            env_rules: Vec::new(),
            device_keys: Vec::new(),
            ruleset: 0,
            ..call.entry.clone()
        };
        if let Some(agent) = agent {
            entry.mode = agent.mode;
            entry.jit = agent.jit;
            entry.agent_cgroup_id = agent.cgroup_id;
            entry.resolver_port = agent.resolver_port;
            entry.resolved_names = own.is_none() && !call.narrowed;
            match own {
                Some(own) => {
                    entry.ruleset = self.next_ruleset;
                    self.next_ruleset += 1;
                    entry.file_rules = own.file_rules.clone();
                    entry.net_rules = own.net_rules.clone();
                    entry.redirects = own.redirects.clone();
                    entry.env_rules = own.env_rules.clone();
                    entry.device_keys = devices::keys(devices::BASE, entry.ruleset, majors);
                    if own.gpu {
                        entry.device_keys.extend(devices::keys(
                            devices::GPU,
                            entry.ruleset,
                            majors,
                        ));
                    }
                }
                None if call.narrowed => {}
                None => entry.ruleset = agent.ruleset,
            }
        }
        InstalledCall {
            call: call.call.clone(),
            entry,
            narrowed: call.narrowed,
        }
    }

    /// Points each cgroup of `agents` at its ruleset; drops cgroups of `previous` not in `agents`.
    pub(super) fn switch(
        &mut self,
        agents: &[InstalledAgent],
        previous: &[InstalledAgent],
    ) -> Result<(), EnforcerError> {
        let mut levels = Vec::with_capacity(agents.len());
        for agent in agents {
            levels.push(cgroup_level(&agent.cgroup)?);
        }
        self.mark_levels(&levels)?;
        let mut map: HashMap<_, u64, AgentEntry> =
            HashMap::try_from(map_mut(&mut self.ebpf, maps::AGENTS)?)
                .map_err(map_error(maps::AGENTS))?;
        for agent in agents {
            let entry = AgentEntry {
                ruleset: agent.ruleset,
                mode: match agent.mode {
                    Mode::Enforce => mode::ENFORCE,
                    Mode::Audit => mode::AUDIT,
                },
                flags: [
                    (agent.jit, agent_flags::JIT),
                    (agent.resolved_names, agent_flags::RESOLVED_NAMES),
                ]
                .iter()
                .filter(|(on, _)| *on)
                .fold(0, |flags, (_, flag)| flags | flag),
                resolver_port: agent.resolver_port,
                _pad: 0,
                agent_cgroup_id: agent.agent_cgroup_id,
                cgroup_id: agent.cgroup_id,
            };
            map.insert(agent.cgroup_id, entry, 0)
                .map_err(map_error(maps::AGENTS))?;
        }
        for gone in previous
            .iter()
            .filter(|p| !agents.iter().any(|a| a.cgroup_id == p.cgroup_id))
        {
            let _ = map.remove(&gone.cgroup_id);
        }
        Ok(())
    }

    /// Adds `levels` to AGENT_LEVELS, before any entry at them is added: a process below a
    /// registered cgroup is held by it from the moment the entry exists. Bits are never cleared
    /// (a stale one costs the programs one lookup).
    fn mark_levels(&mut self, levels: &[u16]) -> Result<(), EnforcerError> {
        let mut map: Array<_, u64> = Array::try_from(map_mut(&mut self.ebpf, maps::AGENT_LEVELS)?)
            .map_err(map_error(maps::AGENT_LEVELS))?;
        let marked = map.get(&0, 0).map_err(map_error(maps::AGENT_LEVELS))?;
        let wanted = levels.iter().fold(marked, |bits, level| bits | 1 << level);
        if wanted != marked {
            map.set(0, wanted, 0)
                .map_err(map_error(maps::AGENT_LEVELS))?;
        }
        Ok(())
    }
}

/// The level in the cgroup hierarchy of `cgroup` (relative to the cgroup v2 mount, which is the
/// hierarchy's root: claw-agent runs in the host's cgroup namespace).
fn cgroup_level(cgroup: &str) -> Result<u16, EnforcerError> {
    let level = cgroup.split('/').filter(|part| !part.is_empty()).count();
    u16::try_from(level)
        .ok()
        .filter(|level| (1..=MAX_AGENT_LEVEL).contains(level))
        .ok_or_else(|| EnforcerError::TooDeep {
            cgroup: cgroup.to_owned(),
            level,
        })
}
