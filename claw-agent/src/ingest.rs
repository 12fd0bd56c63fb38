//! Kernel -> bus: decodes the ring buffer's records into events, and each second turns the
//! programs' counts of reports they did not send (throttled repeats, an agent over its budget,
//! records the ring buffer had no room for) into `throttled` and `lost` events, so that every
//! decision is either an event or part of a count.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use claw_common::{AgentEvents, RateState, RecordHeader, ThrottleKey};
use prometheus_client::metrics::histogram::Histogram;
use serde_json::json;
use tokio::io::{unix::AsyncFd, Interest};

use crate::{
    bus::{Bus, Stage},
    event::{self, Event, Identities},
};

/// Keys followed at most (each keeps its first event): repeats of keys beyond it are still
/// reported, per agent, without their object.
const MAX_TRACKED_KEYS: usize = 4096;

/// A key whose window is this old has seen no report for a while: its next report will be sent
/// (and learned again), so it is no longer followed.
const IDLE_KEY_NS: u64 = 3_000_000_000;

/// Events the audit log writer may be behind before the reader stops publishing: well inside the
/// bus's buffer, so that the writer never loses one.
const PACE_LAG: u64 = (crate::bus::SUBSCRIBER_BUFFER / 2) as u64;
const PACE_PAUSE: Duration = Duration::from_millis(1);

/// How often the counts are turned into events: the "second" of "+N more in the last second".
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(1);

/// The report rates the programs enforce (0: unlimited), for the summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportLimits {
    pub identical_per_second: u64,
    pub agent_per_second: u64,
}

struct Tracked {
    /// The first report of the key that arrived: what summaries of it name.
    template: Arc<Event>,
    /// Its suppressed count already reported.
    reported: u64,
}

/// What has been reported of the kernel's counts so far.
pub struct Accounting {
    limits: ReportLimits,
    coverage: &'static str,
    keys: HashMap<ThrottleKey, Tracked>,
    agents: HashMap<u64, AgentEvents>,
}

impl Accounting {
    pub fn new(limits: ReportLimits, coverage: &'static str) -> Self {
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
    fn is_tracked(&self, header: &RecordHeader) -> bool {
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
                summary.kind = "throttled".to_owned();
                summary.time = event::now();
                summary.pid = 0;
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
        let (name, cgroup) = identities
            .values()
            .find(|i| i.cgroup_id == cgroup_id)
            .map(|i| (i.name.clone(), i.cgroup.clone()))
            .unwrap_or_else(|| {
                (
                    format!("unknown-cgroup-{cgroup_id}"),
                    format!("cgroup-id:{cgroup_id}"),
                )
            });
        let reported = self.agents.entry(cgroup_id).or_default();
        let mut summaries = Vec::new();
        let mut summary = |kind: &str, details: serde_json::Value| {
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
                "lost",
                json!({ "lost": lost, "stage": Stage::Kernel.name() }),
            );
        }
        let over_budget = grown(counts.throttled_budget, &mut reported.throttled_budget);
        if over_budget > 0 {
            summary(
                "throttled",
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
                "throttled",
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
            .filter(|e| e.kind == "lost")
            .filter_map(|e| e.details.as_ref()?.get("lost")?.as_u64())
            .sum()
    }
}

fn key_of(header: &RecordHeader) -> ThrottleKey {
    ThrottleKey {
        cgroup_id: header.cgroup_id,
        object_hash: header.object_hash,
        op: header.op,
        _pad: 0,
    }
}

/// Publishes the records waiting in `ring` until it is empty or the audit log writer is behind:
/// (bytes read, whether it stopped for the writer).
fn drain(
    ring: &mut RingBuf<MapData>,
    identities: &Identities,
    coverage: &'static str,
    accounting: &mut Accounting,
    bus: &Bus,
) -> (usize, bool) {
    let offset = event::boot_to_wall_offset();
    let mut waiting = 0;
    while bus.audit_lag() < PACE_LAG {
        let Some(item) = ring.next() else {
            return (waiting, false);
        };
        // Each record also takes the ring buffer's 8-byte header.
        waiting += item.len() + 8;
        match event::decode_with_header(&item, identities, offset, coverage) {
            Ok((header, event)) => {
                tracing::debug!(
                    kind = %event.kind, agent = %event.agent, pid = event.pid,
                    comm = %event.comm, op = %event.op,
                    object = event.object().unwrap_or(""), "{}", event.decision
                );
                accounting.learn(&header, &bus.publish(event));
            }
            Err(err) => {
                bus.count_lost(Stage::Decode, 1);
                tracing::warn!("dropping a kernel record: {err}");
            }
        }
    }
    (waiting, true)
}

/// The kernel side of the pipeline, handed over by the enforcer.
pub struct KernelEvents {
    pub ring: RingBuf<MapData>,
    pub agent_events: BpfHashMap<MapData, u64, AgentEvents>,
    pub throttle: BpfHashMap<MapData, ThrottleKey, RateState>,
    /// What has been reported of AGENT_EVENTS, kept for the next claw-agent.
    pub reported: BpfHashMap<MapData, u64, AgentEvents>,
}

/// Reads records until the ring buffer fails; publishes summaries every SUMMARY_INTERVAL.
pub async fn run(
    kernel: KernelEvents,
    limits: ReportLimits,
    coverage: &'static str,
    identities: Arc<RwLock<Identities>>,
    bus: Arc<Bus>,
    backlog: Histogram,
) {
    let KernelEvents {
        ring,
        agent_events,
        mut throttle,
        mut reported,
    } = kernel;

    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for as long as it lives,
    // and it lives inside the AsyncFd.
    let mut ring = match unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) } {
        Ok(ring) => ring,
        Err(err) => {
            tracing::error!("watching the event ring buffer: {err}; NO events will be reported");
            return;
        }
    };
    let mut accounting = Accounting::new(limits, coverage);
    // Counted while no claw-agent ran (it died, it restarts) is reported now.
    for (cgroup_id, counts) in agent_events.iter().filter_map(Result::ok) {
        accounting.baseline(cgroup_id, reported.get(&cgroup_id, 0).unwrap_or(counts));
    }
    // What waited in the ring buffer while no claw-agent ran is read now: the kernel does not
    // wake a new reader for records already there.
    loop {
        let paced = {
            let identities = identities.read().unwrap_or_else(|p| p.into_inner());
            drain(ring.get_mut(), &identities, coverage, &mut accounting, &bus).1
        };
        if !paced {
            break;
        }
        tokio::time::sleep(PACE_PAUSE).await;
    }
    let mut ticks = tokio::time::interval(SUMMARY_INTERVAL);
    loop {
        tokio::select! {
            ready = ring.readable_mut() => {
                let mut ready = match ready {
                    Ok(ready) => ready,
                    Err(err) => {
                        tracing::error!("waiting on the event ring buffer: {err}");
                        return;
                    }
                };
                let paced = {
                    let identities = identities.read().unwrap_or_else(|p| p.into_inner());
                    let mut drain = |ring: &mut RingBuf<MapData>| {
                        drain(ring, &identities, coverage, &mut accounting, &bus)
                    };
                    let (mut waiting, mut paced) = drain(ready.get_inner_mut());
                    if !paced {
                        // The kernel wakes the reader only when it had caught up: a record
                        // submitted between the drain above and clearing readiness would wait
                        // for a wake-up that never comes. Draining again after clearing closes
                        // that window.
                        ready.clear_ready();
                        let (more, again) = drain(ready.get_inner_mut());
                        waiting += more;
                        paced = again;
                    }
                    backlog.observe(waiting as f64);
                    paced
                };
                if paced {
                    // The audit log writer is behind: let it catch up; records wait in the
                    // kernel's ring buffer meanwhile (or are counted there, per agent).
                    tokio::time::sleep(PACE_PAUSE).await;
                }
            }
            _ = ticks.tick() => {
                // A storm's events are allocated on one thread and freed on others, leaving
                // free memory in glibc's per-thread arenas; give it back once a second.
                // SAFETY: malloc_trim(3) only releases free memory.
                unsafe { libc::malloc_trim(0) };
                // Agents first, then keys: a repeat the kernel counts for its key before its
                // agent is then never reported twice (see Accounting::agent_summaries).
                let agents: Vec<(u64, AgentEvents)> =
                    agent_events.iter().filter_map(Result::ok).collect();
                let now_ns = event::boot_time_ns();
                let (mut summaries, idle) =
                    accounting.key_summaries(now_ns, |key| throttle.get(key, 0).ok());
                for key in idle {
                    let _ = throttle.remove(&key);
                }
                let identities = identities.read().unwrap_or_else(|p| p.into_inner()).clone();
                for (cgroup_id, counts) in agents {
                    let before = accounting.reported(cgroup_id);
                    summaries.extend(accounting.agent_summaries(cgroup_id, counts, &identities));
                    if let Some(now) = accounting.reported(cgroup_id).filter(|now| Some(*now) != before) {
                        if let Err(err) = reported.insert(cgroup_id, now, 0) {
                            tracing::warn!("recording reported counts: {err}");
                        }
                    }
                }
                bus.count_lost(Stage::Kernel, Accounting::lost_in(&summaries));
                for summary in summaries {
                    tracing::info!(
                        kind = %summary.kind, agent = %summary.agent, op = %summary.op,
                        object = summary.object().unwrap_or(""),
                        details = %summary.details.clone().unwrap_or_default(), "summary"
                    );
                    bus.publish(summary);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use claw_common::COMM_BYTES;

    use super::*;
    use crate::event::tests::{identities, sample};

    const LIMITS: ReportLimits = ReportLimits {
        identical_per_second: 10,
        agent_per_second: 100,
    };

    fn header(object_hash: u64) -> RecordHeader {
        RecordHeader {
            kind: 1,
            op: 1,
            boot_time_ns: 0,
            cgroup_id: 77,
            object_hash,
            repeats_before: 0,
            pid: 1,
            ruleset: 5,
            decision: 1,
            access: 1,
            comm: [0; COMM_BYTES],
        }
    }

    fn suppressed(events: &[Event]) -> u64 {
        events
            .iter()
            .filter_map(|e| e.details.as_ref()?.get("suppressed")?.as_u64())
            .sum()
    }

    #[test]
    fn repeats_are_summarised_once_with_their_object() {
        let mut accounting = Accounting::new(LIMITS, "full");
        accounting.learn(&header(9), &Arc::new(sample("deny")));
        let state = RefCell::new(RateState {
            window_start_ns: 1_000,
            sent: 10,
            suppressed: 12_345,
        });
        let read = |_: &ThrottleKey| Some(*state.borrow());
        let (summaries, _) = accounting.key_summaries(2_000, read);
        assert_eq!(summaries.len(), 1);
        assert_eq!(summaries[0].kind, "throttled");
        assert_eq!(summaries[0].path.as_deref(), Some("/etc/shadow"));
        assert_eq!(suppressed(&summaries), 12_345);
        assert!(accounting.key_summaries(2_000, read).0.is_empty());
        state.borrow_mut().suppressed += 5;
        assert_eq!(suppressed(&accounting.key_summaries(2_000, read).0), 5);
    }

    #[test]
    fn agent_counts_cover_what_keys_do_not_and_nothing_twice() {
        let mut accounting = Accounting::new(LIMITS, "full");
        accounting.learn(&header(9), &Arc::new(sample("deny")));
        // When the agent was read it had 30 repeats: 20 of the followed key, 10 of a key the
        // kernel evicted. By the time the key is read it has 25 (5 more since).
        let agent = AgentEvents {
            throttled_identical: 30,
            throttled_budget: 7,
            lost: 3,
            ..Default::default()
        };
        let read = |_: &ThrottleKey| {
            Some(RateState {
                window_start_ns: 0,
                sent: 10,
                suppressed: 25,
            })
        };
        let (keys, _) = accounting.key_summaries(0, read);
        assert_eq!(suppressed(&keys), 25);
        let agents = accounting.agent_summaries(77, agent, &identities());
        assert_eq!(Accounting::lost_in(&agents), 3);
        // 7 over budget; 5 identical repeats without a key so far.
        assert_eq!(suppressed(&agents), 12);
        assert!(agents.iter().all(|e| e.agent == "tools"));
        // Next second the agent's count includes the 5 the key had already: the other 5 of the
        // evicted key appear now; in all, every one of the 35 repeats was reported once.
        let later = AgentEvents {
            throttled_identical: 35,
            ..agent
        };
        assert!(accounting.key_summaries(0, read).0.is_empty());
        assert_eq!(
            suppressed(&accounting.agent_summaries(77, later, &identities())),
            5
        );
        assert!(accounting
            .agent_summaries(77, later, &identities())
            .is_empty());
    }

    #[test]
    fn a_key_counts_from_the_repeats_its_first_report_carried() {
        let mut accounting = Accounting::new(LIMITS, "full");
        let mut first = header(9);
        first.repeats_before = 95;
        accounting.learn(&first, &Arc::new(sample("deny")));
        let read = |_: &ThrottleKey| {
            Some(RateState {
                window_start_ns: 0,
                sent: 1,
                suppressed: 100,
            })
        };
        assert_eq!(suppressed(&accounting.key_summaries(0, read).0), 5);
    }

    #[test]
    fn evicted_and_idle_keys_are_no_longer_followed() {
        let mut accounting = Accounting::new(LIMITS, "full");
        accounting.learn(&header(1), &Arc::new(sample("deny")));
        accounting.learn(&header(2), &Arc::new(sample("deny")));
        let read = |key: &ThrottleKey| {
            (key.object_hash == 2).then_some(RateState {
                window_start_ns: 0,
                sent: 1,
                suppressed: 0,
            })
        };
        let (_, idle) = accounting.key_summaries(IDLE_KEY_NS - 1, read);
        assert!(idle.is_empty(), "an evicted key needs no removal");
        assert!(!accounting.is_tracked(&header(1)));
        assert!(accounting.is_tracked(&header(2)));
        let (_, idle) = accounting.key_summaries(IDLE_KEY_NS, read);
        assert_eq!(idle, [key_of(&header(2))]);
        assert!(!accounting.is_tracked(&header(2)));
    }

    #[test]
    fn counts_from_before_the_daemon_are_not_reported() {
        let mut accounting = Accounting::new(LIMITS, "full");
        let before = AgentEvents {
            lost: 4,
            ..Default::default()
        };
        accounting.baseline(77, before);
        assert!(accounting
            .agent_summaries(77, before, &identities())
            .is_empty());
    }
}
