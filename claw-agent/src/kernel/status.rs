//! Status: which programs are attached, with their kernel ids and run counts (the live proof
//! `explain` shows), and the kernel's decision counters.

use aya::maps::PerCpuArray;
use claw_common::{counter, CpuState};
use serde::{Deserialize, Serialize};

use crate::kernel::{
    catalogue::{self, maps, Attach},
    enforcer::{map_error, Enforcer, EnforcerError, InstalledAgent},
    object::program_info,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramStatus {
    pub program: String,
    pub hook: String,
    pub attached: bool,
    /// The kernel's id for the loaded program (`bpftool prog show id N`).
    pub id: Option<u32>,
    /// The rules it enforces.
    pub enforces: String,
    /// Times the kernel ran it since claw-agent started measuring (live proof it is in the path).
    pub run_count: u64,
}

/// Sums over all CPUs of the kernel's counters, and the daemon's own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub allowed: u64,
    pub denied: u64,
    /// Operations an audit-mode agent was let through although no rule allowed them.
    pub audited: u64,
    /// Deny events the kernel could not queue (ring buffer full).
    pub events_lost_kernel: u64,
    /// Operations whose path could not be resolved (decided as unmatched).
    pub path_errors: u64,
    /// Kernel records the daemon could not decode.
    pub events_undecodable: u64,
    /// Events lost, by stage: kernel (ring buffer full), decode, follower, audit, forward.
    #[serde(default)]
    pub events_lost: std::collections::BTreeMap<String, u64>,
}

impl Enforcer {
    /// Every program of the catalogue this coverage loads, attached or not, in catalogue order;
    /// hooks this kernel does not have are not among them.
    pub fn programs(&self) -> Vec<ProgramStatus> {
        let every_agent = |linked: &dyn Fn(&InstalledAgent) -> bool| {
            !self.installed.is_empty() && self.installed.iter().all(linked)
        };
        catalogue::PROGRAMS
            .iter()
            .filter(|program| match program.attach {
                Attach::Tracepoint { .. } => !self.coverage.has_bpf_lsm(),
                Attach::Fentry { .. } => self.coverage.has_bpf_lsm(),
                _ => !self.absent_hooks.contains(&program.name),
            })
            .map(|program| {
                let info = program_info(&self.ebpf, program.name);
                let attached = match program.attach {
                    Attach::Lsm | Attach::Fentry { .. } | Attach::Tracepoint { .. } => {
                        self.attached.contains(&program.name)
                    }
                    Attach::CgroupSockAddr => every_agent(&|agent| {
                        self.net_links
                            .get(&agent.link_key())
                            .is_some_and(|links| links.iter().any(|(p, _)| *p == program.name))
                    }),
                    Attach::CgroupDevice => {
                        every_agent(&|agent| self.device_links.contains_key(&agent.link_key()))
                    }
                };
                ProgramStatus {
                    program: program.name.to_owned(),
                    hook: program.hook(),
                    attached,
                    id: info.as_ref().map(|i| i.id()),
                    enforces: program.enforces.to_owned(),
                    run_count: info.map_or(0, |i| i.run_count()),
                }
            })
            .collect()
    }

    /// True when every program the coverage calls for is attached for every agent.
    pub fn is_enforcing(&self) -> bool {
        self.programs()
            .iter()
            .all(|p| p.attached || (!self.coverage.has_bpf_lsm() && p.hook.starts_with("lsm/")))
    }

    /// The kernel's counters summed over CPUs; `events_undecodable` is the daemon's to fill.
    pub fn counters(&self) -> Result<Counters, EnforcerError> {
        let map = self
            .ebpf
            .map(maps::CPU_STATE)
            .ok_or(EnforcerError::Missing {
                what: "map",
                name: maps::CPU_STATE.to_owned(),
            })?;
        let states: PerCpuArray<_, CpuState> =
            PerCpuArray::try_from(map).map_err(map_error(maps::CPU_STATE))?;
        let per_cpu = states.get(&0, 0).map_err(map_error(maps::CPU_STATE))?;
        let sum = |index: u32| -> u64 {
            per_cpu
                .iter()
                .map(|state| state.counters[index as usize])
                .sum()
        };
        Ok(Counters {
            allowed: sum(counter::ALLOWED),
            denied: sum(counter::DENIED),
            audited: sum(counter::AUDITED),
            events_lost_kernel: sum(counter::EVENTS_LOST),
            path_errors: sum(counter::PATH_ERRORS),
            ..Default::default()
        })
    }
}
