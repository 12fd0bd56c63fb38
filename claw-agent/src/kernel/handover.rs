//! The maps handed out of the enforcer to the one task that reads or writes each: the event
//! ring buffer and report counts (to `events::ingest`), the resolved addresses (to `dns`).

use std::path::PathBuf;

use aya::maps::{HashMap, MapData, RingBuf};
use claw_common::{AgentEvents, RateState, Reported, Resolved, ResolvedKey, ThrottleKey};

use crate::kernel::{
    catalogue::maps,
    enforcer::{map_error, Enforcer, EnforcerError},
    object::take_map,
};

/// The report rates the programs enforce (0: unlimited), for the summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportLimits {
    pub identical_per_second: u64,
    pub agent_per_second: u64,
}

/// The kernel side of the event pipeline, handed over by the enforcer.
pub struct KernelEvents {
    pub ring: RingBuf<MapData>,
    pub agent_events: HashMap<MapData, u64, AgentEvents>,
    pub throttle: HashMap<MapData, ThrottleKey, RateState>,
    /// What has been reported and accounted for of AGENT_EVENTS, kept for the next claw-agent.
    pub reported: HashMap<MapData, u64, Reported>,
    /// The cgroup v2 mount, where the records' cgroup ids are named.
    pub cgroup_root: PathBuf,
}

impl Enforcer {
    /// The addresses the agents' resolvers answered, for the resolvers (dns.rs), which alone
    /// add and remove them.
    pub fn take_resolved_addresses(
        &mut self,
    ) -> Result<HashMap<MapData, ResolvedKey, Resolved>, EnforcerError> {
        let map = take_map(&mut self.ebpf, maps::DNS_ALLOW)?;
        HashMap::try_from(map).map_err(map_error(maps::DNS_ALLOW))
    }

    /// The event ring buffer and the report counts, for the one task that reads them.
    pub fn take_events(&mut self) -> Result<KernelEvents, EnforcerError> {
        let mut take = |name| take_map(&mut self.ebpf, name);
        let (ring, agent_events, throttle, reported) = (
            take(maps::EVENTS)?,
            take(maps::AGENT_EVENTS)?,
            take(maps::THROTTLE)?,
            take(maps::REPORTED)?,
        );
        Ok(KernelEvents {
            ring: RingBuf::try_from(ring).map_err(map_error(maps::EVENTS))?,
            agent_events: HashMap::try_from(agent_events).map_err(map_error(maps::AGENT_EVENTS))?,
            throttle: HashMap::try_from(throttle).map_err(map_error(maps::THROTTLE))?,
            reported: HashMap::try_from(reported).map_err(map_error(maps::REPORTED))?,
            cgroup_root: self.cgroup_root.clone(),
        })
    }
}
