//! Accounting: what has been reported of the kernel's counts (throttled repeats per key and per
//! agent, records lost), so that each summary says only what is new.

use std::{collections::HashMap, sync::Arc};

use claw_common::{AgentEvents, RateState, RecordHeader, ThrottleKey};
use serde_json::json;

use super::{identity_of, key_of};
use crate::{
    events::{
        bus::Stage,
        event::{self, Event, Kind},
        identities::Identities,
    },
    kernel::{enforcer::Coverage, handover::ReportLimits},
};

/// Keys followed at most (each keeps its first event): repeats of keys beyond it are still
/// reported, per agent, without their object.
const MAX_TRACKED_KEYS: usize = 4096;

/// A key whose window is this old has seen no report for a while: its next report will be sent
/// (and learned again), so it is no longer followed.
pub(super) const IDLE_KEY_NS: u64 = 3_000_000_000;

struct Tracked {
    /// The first report of the key that arrived: what summaries of it name.
    template: Arc<Event>,
    /// Its suppressed count already reported.
    reported: u64,
}

/// What has been reported of the kernel's counts so far.
pub struct Accounting {
    limits: ReportLimits,
    coverage: Coverage,
    keys: HashMap<ThrottleKey, Tracked>,
    agents: HashMap<u64, AgentEvents>,
}

impl Accounting {
    pub fn new(limits: ReportLimits, coverage: Coverage) -> Self {
        Self {
            limits,
            coverage,
            keys: HashMap::new(),
            agents: HashMap::new(),
        }
    }

    /// Starts from what was reported before this daemon (an earlier claw-agent's record, or the
    /// kernel's counts when there is none): not reported again.
    pub fn baseline(&mut self, cgroup_id: u64, counts: AgentEvents) {
        self.agents.insert(cgroup_id, counts);
    }

    /// What has been reported of an agent's counts.
    pub fn reported(&self, cgroup_id: u64) -> Option<AgentEvents> {
        self.agents.get(&cgroup_id).copied()
    }

    /// Follows the key of a report that arrived, counting its repeats from those the kernel had
    /// when it sent the report (earlier ones are the agent's to report, without their object).
    pub fn learn(&mut self, header: &RecordHeader, event: &Arc<Event>) {
        let key = key_of(header);
        let unlimited = self.limits.identical_per_second == 0;
        if unlimited || self.keys.len() >= MAX_TRACKED_KEYS || self.keys.contains_key(&key) {
            return;
        }
        self.keys.insert(
            key,
            Tracked {
                template: event.clone(),
                reported: header.repeats_before,
            },
        );
    }

    #[cfg(test)]
    pub(super) fn is_tracked(&self, header: &RecordHeader) -> bool {
        self.keys.contains_key(&key_of(header))
    }

    /// Summaries of every followed key whose repeats grew; `read` gives a key's kernel state
    /// (None once the kernel evicted it). Each summary's count is added to its agent's reported
    /// repeats. Also the idle keys no longer followed, whose kernel entries the caller removes.
    pub fn key_summaries(
        &mut self,
        now_ns: u64,
        read: impl Fn(&ThrottleKey) -> Option<RateState>,
    ) -> (Vec<Event>, Vec<ThrottleKey>) {
        let mut summaries = Vec::new();
        let mut idle = Vec::new();
        let mut attributed: HashMap<u64, u64> = HashMap::new();
        self.keys.retain(|key, tracked| {
            let Some(state) = read(key) else {
                return false;
            };
            let grown = state.suppressed.saturating_sub(tracked.reported);
            if grown > 0 {
                tracked.reported = state.suppressed;
                *attributed.entry(key.cgroup_id).or_default() += grown;
                let mut summary = Event::clone(&tracked.template);
                summary.kind = Kind::Throttled;
                summary.time = event::now();
                summary.pid = 0;
                summary.record = None;
                summary.comm = String::new();
                summary.details = Some(json!({
                    "suppressed": grown,
                    "reason": "identical",
                    "limit_per_second": self.limits.identical_per_second,
                }));
                summaries.push(summary);
            }
            let follow = grown > 0 || now_ns.saturating_sub(state.window_start_ns) < IDLE_KEY_NS;
            if !follow {
                idle.push(*key);
            }
            follow
        });
        for (cgroup_id, count) in attributed {
            self.agents
                .entry(cgroup_id)
                .or_default()
                .throttled_identical += count;
        }
        (summaries, idle)
    }

    /// Summaries of what grew in an agent's counts (read before the keys were): reports over
    /// its budget, reports lost, and repeats no followed key accounts for.
    pub fn agent_summaries(
        &mut self,
        cgroup_id: u64,
        counts: AgentEvents,
        identities: &Identities,
    ) -> Vec<Event> {
        let (name, cgroup) = identity_of(cgroup_id, identities);
        let reported = self.agents.entry(cgroup_id).or_default();
        let mut summaries = Vec::new();
        let mut summary = |kind: Kind, details: serde_json::Value| {
            let mut event = Event::about(kind, &name, &cgroup, "*", self.coverage);
            event.details = Some(details);
            summaries.push(event);
        };
        let grown = |now: u64, before: &mut u64| {
            let grown = now.saturating_sub(*before);
            *before = (*before).max(now);
            grown
        };
        let lost = grown(counts.lost, &mut reported.lost);
        if lost > 0 {
            summary(
                Kind::Lost,
                json!({ "lost": lost, "stage": Stage::Kernel.name() }),
            );
        }
        let over_budget = grown(counts.throttled_budget, &mut reported.throttled_budget);
        if over_budget > 0 {
            summary(
                Kind::Throttled,
                json!({
                    "suppressed": over_budget,
                    "reason": "agent-budget",
                    "limit_per_second": self.limits.agent_per_second,
                }),
            );
        }
        let unattributed = grown(
            counts.throttled_identical,
            &mut reported.throttled_identical,
        );
        if unattributed > 0 {
            summary(
                Kind::Throttled,
                json!({
                    "suppressed": unattributed,
                    "reason": "identical",
                    "limit_per_second": self.limits.identical_per_second,
                    "note": "repeats of objects whose first report did not arrive",
                }),
            );
        }
        summaries
    }

    /// Lost reports counted in `summaries` (for the loss metrics).
    pub fn lost_in(summaries: &[Event]) -> u64 {
        summaries
            .iter()
            .filter(|e| e.kind == Kind::Lost)
            .filter_map(|e| e.details.as_ref()?.get("lost")?.as_u64())
            .sum()
    }
}
