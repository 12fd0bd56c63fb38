//! Kernel -> bus: decodes the ring buffer's records into events, and each second turns the
//! programs' counts of reports they did not send (throttled repeats, an agent over its budget,
//! records the ring buffer had no room for) into `throttled` and `lost` events, so that every
//! decision is either an event or part of a count.

use std::{
    collections::{HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use claw_common::{AgentEvents, RateState, RecordHeader, Reported, ThrottleKey};
use prometheus_client::metrics::histogram::Histogram;
use serde_json::json;
use tokio::io::{unix::AsyncFd, Interest};

use crate::{
    events::{
        bus::{Bus, Stage},
        decode,
        event::{self, Event, Kind},
        identities::Identities,
    },
    kernel::{
        enforcer::Coverage,
        handover::{KernelEvents, ReportLimits},
    },
};

/// Keys followed at most (each keeps its first event): repeats of keys beyond it are still
/// reported, per agent, without their object.
const MAX_TRACKED_KEYS: usize = 4096;

/// A key whose window is this old has seen no report for a while: its next report will be sent
/// (and learned again), so it is no longer followed.
const IDLE_KEY_NS: u64 = 3_000_000_000;

/// Events the audit log writer may be behind before the reader stops publishing: well inside the
/// bus's buffer, so that the writer never loses one.
const PACE_LAG: u64 = (crate::events::bus::SUBSCRIBER_BUFFER / 2) as u64;
const PACE_PAUSE: Duration = Duration::from_millis(1);

/// How often the counts are turned into events: the "second" of "+N more in the last second".
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(1);

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

/// Whether every record the kernel placed in the ring buffer, and every count it keeps, reached
/// the audit log, across claw-agents. The kernel numbers each agent's records; a claw-agent
/// counts the records the audit log writer has handled (`accounted`) and the counts whose
/// summaries it has handled (`reported`), and keeps both pinned with the bus position they are
/// complete up to. One that starts adds what the log holds after that position, then counts,
/// for each agent, the numbers below the kernel's count at its start that are neither accounted
/// for nor waiting in the ring buffer: records a predecessor read but was killed before logging
/// — lost, exactly, and said so.
#[derive(Debug, Default)]
pub struct Delivery {
    agents: HashMap<u64, Delivered>,
    /// Published, not yet handled by the audit log writer: (bus position, cgroup id, what).
    pending: VecDeque<(u64, u64, Pending)>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Delivered {
    accounted: u64,
    reported: AgentEvents,
    /// At this claw-agent's start: the kernel's count, the records accounted for by then, and
    /// the records numbered below the count read since; None once the restart is settled.
    start: Option<(u64, u64, u64)>,
}

#[derive(Debug, Clone, Copy)]
enum Pending {
    /// Records (one read from the kernel, or a count of records lost).
    Records(u64),
    /// The agent's counts as reported once a tick's summaries, from bus position `first`, are
    /// logged.
    Reported { first: u64, counts: AgentEvents },
}

/// What the audit log holds of an agent after a bus position.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Logged {
    pub records: u64,
    pub counts: AgentEvents,
}

impl Delivery {
    /// An agent's state at this claw-agent's start: the kernel's count of its records, and what
    /// earlier claw-agents accounted for and reported.
    pub fn start(&mut self, cgroup_id: u64, submitted: u64, accounted: u64, reported: AgentEvents) {
        self.agents.insert(
            cgroup_id,
            Delivered {
                accounted,
                reported,
                start: Some((submitted, accounted, 0)),
            },
        );
    }

    /// A record published on the bus at `seq`: whether it was placed before this claw-agent
    /// started (it waited in the ring buffer).
    pub fn published(&mut self, header: &RecordHeader, seq: u64) -> bool {
        if header.record == claw_common::UNNUMBERED {
            return false;
        }
        let agent = self.agents.entry(header.cgroup_id).or_default();
        let mut waited = false;
        if let Some((submitted, _, read)) = &mut agent.start {
            if header.record < *submitted {
                *read += 1;
                waited = true;
            }
        }
        self.pending
            .push_back((seq, header.cgroup_id, Pending::Records(1)));
        waited
    }

    /// Summaries published at bus positions `first..=last` brought the agent's reported counts
    /// to `counts`.
    pub fn summarised(&mut self, (first, last): (u64, u64), cgroup_id: u64, counts: AgentEvents) {
        self.pending
            .push_back((last, cgroup_id, Pending::Reported { first, counts }));
    }

    /// A `lost` event published at `seq` for `lost` of the agent's records.
    pub fn lost(&mut self, seq: u64, cgroup_id: u64, lost: u64) {
        self.pending
            .push_back((seq, cgroup_id, Pending::Records(lost)));
    }

    /// The audit log writer has handled every event before `written`.
    pub fn handled(&mut self, written: u64) {
        while let Some(&(seq, cgroup_id, what)) = self.pending.front() {
            if seq >= written {
                break;
            }
            self.pending.pop_front();
            let agent = self.agents.entry(cgroup_id).or_default();
            match what {
                Pending::Records(n) => agent.accounted += n,
                Pending::Reported { counts, .. } => agent.reported = counts,
            }
        }
    }

    /// Once the records that waited for this claw-agent have been read: per agent, those its
    /// predecessors read and never logged (to be published as lost, then passed to `lost`).
    pub fn settle_restart(&mut self) -> Vec<(u64, u64)> {
        let mut lost = Vec::new();
        for (cgroup_id, agent) in &mut self.agents {
            let Some((submitted, accounted, read)) = agent.start.take() else {
                continue;
            };
            let missing = submitted.saturating_sub(accounted + read);
            if missing > 0 {
                lost.push((*cgroup_id, missing));
            }
        }
        lost
    }

    /// What to keep pinned for the next claw-agent, once the audit log writer has handled every
    /// event before `written`: the counts of a tick whose summaries are not all handled yet are
    /// not in it, so a successor reads the log from that tick's first summary on.
    pub fn record(&self, cgroup_id: u64, written: u64) -> Reported {
        let agent = self.agents.get(&cgroup_id).copied().unwrap_or_default();
        let unconfirmed = self.pending.iter().find_map(|(_, id, what)| match what {
            Pending::Reported { first, .. } if *id == cgroup_id => Some(*first),
            _ => None,
        });
        Reported {
            counts: agent.reported,
            accounted: agent.accounted,
            accounted_through: written,
            reported_through: unconfirmed.map_or(written, |first| first.min(written)),
        }
    }
}

/// Per agent cgroup: what the audit log at `path` holds of it from the bus positions
/// `from[cgroup]` on — its records from the first, the counts its summaries reported from
/// the second. Reads the newest files first and stops at the first one that begins before
/// every position asked for.
pub fn logged_after(
    path: &std::path::Path,
    from: &HashMap<String, (u64, u64)>,
) -> HashMap<String, Logged> {
    let mut logged: HashMap<String, Logged> = HashMap::new();
    let Some(earliest) = from.values().map(|&(a, b)| a.min(b)).min() else {
        return logged;
    };
    for file in crate::events::audit::files_of(path).iter().rev() {
        let mut first = None;
        for event in crate::events::audit::events_of(file) {
            first.get_or_insert(event.seq);
            let Some(&(records_from, counts_from)) = from.get(&event.cgroup) else {
                continue;
            };
            let text = |key: &str| {
                event
                    .details
                    .as_ref()
                    .and_then(|d| d.get(key)?.as_str().map(str::to_owned))
            };
            let number = |key: &str| {
                event
                    .details
                    .as_ref()
                    .and_then(|d| d.get(key)?.as_u64())
                    .unwrap_or(0)
            };
            let (records, counts) = (event.seq >= records_from, event.seq >= counts_from);
            let stage = text("stage");
            let entry = logged.entry(event.cgroup.clone()).or_default();
            match (event.kind.as_str(), stage.as_deref()) {
                // Records a killed claw-agent read: accounted for as records, not counts.
                ("lost", Some(stage)) if stage == Stage::Restart.name() => {
                    entry.records += if records { number("lost") } else { 0 }
                }
                ("lost", _) if counts => entry.counts.lost += number("lost"),
                ("throttled", _) if counts && text("reason").as_deref() == Some("agent-budget") => {
                    entry.counts.throttled_budget += number("suppressed")
                }
                ("throttled", _) if counts => {
                    entry.counts.throttled_identical += number("suppressed")
                }
                ("lost" | "throttled", _) => {}
                _ if records && event.record.is_some() => entry.records += 1,
                _ => {}
            }
        }
        if first.is_some_and(|first| first < earliest) {
            break;
        }
    }
    logged
}

/// A `lost` event for the records of an agent that a killed claw-agent read and never logged.
fn restart_loss(cgroup_id: u64, lost: u64, identities: &Identities, coverage: Coverage) -> Event {
    let (name, cgroup) = identity_of(cgroup_id, identities);
    let mut event = Event::about(Kind::Lost, &name, &cgroup, "*", coverage);
    event.details = Some(json!({
        "lost": lost,
        "stage": Stage::Restart.name(),
        "reason": "read from the kernel by a claw-agent that was killed before logging them",
    }));
    event
}

/// An agent's name and cgroup, or placeholders naming the cgroup id.
fn identity_of(cgroup_id: u64, identities: &Identities) -> (String, String) {
    identities
        .values()
        .find(|i| i.cgroup_id == cgroup_id)
        .map(|i| (i.name.clone(), i.cgroup.clone()))
        .unwrap_or_else(|| {
            (
                format!("unknown-cgroup-{cgroup_id}"),
                format!("cgroup-id:{cgroup_id}"),
            )
        })
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
    coverage: Coverage,
    (accounting, delivery): (&mut Accounting, &mut Delivery),
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
        match decode::decode_with_header(&item, identities, offset, coverage) {
            Ok((header, event)) => {
                tracing::debug!(
                    kind = %event.kind, agent = %event.agent, pid = event.pid,
                    comm = %event.comm, op = %event.op,
                    object = event.object().unwrap_or(""), "{}", event.decision
                );
                let event = bus.publish(event);
                // A record that waited in the ring buffer carries the repeats of its key from
                // before a predecessor's summaries of them: following the key from it would
                // report those again. Its key's repeats stay the agent's to report until a
                // record placed in this claw-agent's time arrives.
                if !delivery.published(&header, event.seq) {
                    accounting.learn(&header, &event);
                }
            }
            Err(err) => {
                bus.count_lost(Stage::Decode, 1);
                tracing::warn!("dropping a kernel record: {err}");
            }
        }
    }
    (waiting, true)
}

/// Reads records until the ring buffer fails; publishes summaries every SUMMARY_INTERVAL.
pub async fn run(
    kernel: KernelEvents,
    audit_log: PathBuf,
    limits: ReportLimits,
    coverage: Coverage,
    identities: Arc<RwLock<Identities>>,
    bus: Arc<Bus>,
    backlog: Histogram,
) {
    let KernelEvents {
        ring,
        agent_events,
        throttle,
        reported,
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
    let mut reader = Reader {
        accounting: Accounting::new(limits, coverage),
        delivery: Delivery::default(),
        agent_events,
        throttle,
        reported,
        coverage,
        identities,
        bus,
        restart_settled: false,
        persisted: HashMap::new(),
    };
    reader.resume(&audit_log);
    // What waited in the ring buffer while no claw-agent ran is read now: the kernel does not
    // wake a new reader for records already there.
    while reader.drain(ring.get_mut()).1 {
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
                let (mut waiting, mut paced) = reader.drain(ready.get_inner_mut());
                if !paced {
                    // The kernel wakes the reader only when it had caught up: a record
                    // submitted between the drain above and clearing readiness would wait for a
                    // wake-up that never comes. Draining again after clearing closes that window.
                    ready.clear_ready();
                    let (more, again) = reader.drain(ready.get_inner_mut());
                    waiting += more;
                    paced = again;
                }
                backlog.observe(waiting as f64);
                if paced {
                    // The audit log writer is behind: let it catch up; records wait in the
                    // kernel's ring buffer meanwhile (or are counted there, per agent).
                    tokio::time::sleep(PACE_PAUSE).await;
                }
            }
            _ = ticks.tick() => reader.tick(),
        }
    }
}

/// The reader of the kernel's records and counts: what it has published and reported, per
/// agent, and what it keeps in the kernel for the next claw-agent.
struct Reader {
    accounting: Accounting,
    delivery: Delivery,
    agent_events: BpfHashMap<MapData, u64, AgentEvents>,
    throttle: BpfHashMap<MapData, ThrottleKey, RateState>,
    reported: BpfHashMap<MapData, u64, Reported>,
    coverage: Coverage,
    identities: Arc<RwLock<Identities>>,
    bus: Arc<Bus>,
    /// Whether the records a killed predecessor read and never logged have been reported.
    restart_settled: bool,
    /// What was last written to `reported`, per agent.
    persisted: HashMap<u64, Reported>,
}

impl Reader {
    /// Takes up where an earlier claw-agent left off: what it reported of each agent's counts
    /// (kept in the kernel) and what its audit log holds since.
    fn resume(&mut self, audit_log: &Path) {
        let at_start: Vec<(u64, AgentEvents, Reported)> = self
            .agent_events
            .iter()
            .filter_map(Result::ok)
            .map(|(cgroup_id, counts)| {
                // No record of an earlier claw-agent: it was killed before its first summary of
                // the agent, so nothing of the counts was reported, and the agent's records in
                // the audit log are all it accounted for.
                let earlier = self.reported.get(&cgroup_id, 0).unwrap_or_default();
                (cgroup_id, counts, earlier)
            })
            .collect();
        let cgroups: HashMap<u64, String> = {
            let identities = self.identities.read().unwrap_or_else(|p| p.into_inner());
            identities
                .values()
                .map(|i| (i.cgroup_id, format!("/{}", i.cgroup)))
                .collect()
        };
        let from: HashMap<String, (u64, u64)> = at_start
            .iter()
            .filter_map(|(id, _, earlier)| {
                let from = (earlier.accounted_through, earlier.reported_through);
                Some((cgroups.get(id)?.clone(), from))
            })
            .collect();
        let logged = logged_after(audit_log, &from);
        for (cgroup_id, counts, earlier) in at_start {
            let since = cgroups
                .get(&cgroup_id)
                .and_then(|cgroup| logged.get(cgroup))
                .copied()
                .unwrap_or_default();
            let reported = AgentEvents {
                throttled_identical: earlier.counts.throttled_identical
                    + since.counts.throttled_identical,
                throttled_budget: earlier.counts.throttled_budget + since.counts.throttled_budget,
                lost: earlier.counts.lost + since.counts.lost,
                ..earlier.counts
            };
            // Counted while no claw-agent ran (it died, it restarts) is reported now.
            self.accounting.baseline(cgroup_id, reported);
            self.delivery.start(
                cgroup_id,
                counts.submitted,
                earlier.accounted + since.records,
                reported,
            );
        }
    }

    /// Publishes what waits in `ring`: (bytes read, whether it stopped for the audit log writer).
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> (usize, bool) {
        let identities = self.identities.read().unwrap_or_else(|p| p.into_inner());
        drain(
            ring,
            &identities,
            self.coverage,
            (&mut self.accounting, &mut self.delivery),
            &self.bus,
        )
    }

    /// Once a second: the summaries of what the kernel counted instead of sending, the loss of
    /// records a killed predecessor read, and what is reported kept in the kernel.
    fn tick(&mut self) {
        // A storm's events are allocated on one thread and freed on others, leaving free memory
        // in glibc's per-thread arenas; give it back once a second.
        // SAFETY: malloc_trim(3) only releases free memory.
        unsafe { libc::malloc_trim(0) };
        // Agents first, then keys: a repeat the kernel counts for its key before its agent is
        // then never reported twice (see Accounting::agent_summaries).
        let agents: Vec<(u64, AgentEvents)> =
            self.agent_events.iter().filter_map(Result::ok).collect();
        let now_ns = event::boot_time_ns();
        let throttle = &self.throttle;
        let (mut summaries, idle) = self
            .accounting
            .key_summaries(now_ns, |key| throttle.get(key, 0).ok());
        for key in idle {
            let _ = self.throttle.remove(&key);
        }
        let identities = self
            .identities
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let written = self.bus.audit_written();
        self.delivery.handled(written);
        for (cgroup_id, counts) in &agents {
            summaries.extend(
                self.accounting
                    .agent_summaries(*cgroup_id, *counts, &identities),
            );
        }
        self.publish_summaries(summaries, &agents);
        if !self.restart_settled {
            self.restart_settled = true;
            self.report_restart_loss(&identities);
        }
        self.persist(&agents, written);
    }

    fn publish_summaries(&mut self, summaries: Vec<Event>, agents: &[(u64, AgentEvents)]) {
        self.bus
            .count_lost(Stage::Kernel, Accounting::lost_in(&summaries));
        let mut published: Option<(u64, u64)> = None;
        for summary in summaries {
            tracing::info!(
                kind = %summary.kind, agent = %summary.agent, op = %summary.op,
                object = summary.object().unwrap_or(""),
                details = %summary.details.clone().unwrap_or_default(), "summary"
            );
            let seq = self.bus.publish(summary).seq;
            published = Some((published.map_or(seq, |(first, _)| first), seq));
        }
        if let Some(seqs) = published {
            for (cgroup_id, _) in agents {
                if let Some(reported) = self.accounting.reported(*cgroup_id) {
                    self.delivery.summarised(seqs, *cgroup_id, reported);
                }
            }
        }
    }

    /// Records a killed predecessor read from the kernel and never logged, reported as lost.
    fn report_restart_loss(&mut self, identities: &Identities) {
        for (cgroup_id, lost) in self.delivery.settle_restart() {
            self.bus.count_lost(Stage::Restart, lost);
            let summary = restart_loss(cgroup_id, lost, identities, self.coverage);
            tracing::warn!(
                agent = %summary.agent, lost,
                "records read by a killed claw-agent and never logged"
            );
            let seq = self.bus.publish(summary).seq;
            self.delivery.lost(seq, cgroup_id, lost);
        }
    }

    /// Keeps in the kernel what is reported of each agent, for the next claw-agent.
    fn persist(&mut self, agents: &[(u64, AgentEvents)], written: u64) {
        for (cgroup_id, _) in agents {
            let now = self.delivery.record(*cgroup_id, written);
            if self.persisted.get(cgroup_id) == Some(&now) {
                continue;
            }
            match self.reported.insert(cgroup_id, now, 0) {
                Ok(()) => {
                    self.persisted.insert(*cgroup_id, now);
                }
                Err(err) => tracing::warn!("recording reported counts: {err}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use claw_common::COMM_BYTES;

    use super::*;
    use crate::events::event::tests::{identities, sample};

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
            task_cgroup_id: 77,
            object_hash,
            repeats_before: 0,
            record: 0,
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
        let mut accounting = Accounting::new(LIMITS, Coverage::Full);
        let first = Event {
            record: Some(3),
            ..sample("deny")
        };
        accounting.learn(&header(9), &Arc::new(first));
        let state = RefCell::new(RateState {
            window_start_ns: 1_000,
            sent: 10,
            suppressed: 12_345,
        });
        let read = |_: &ThrottleKey| Some(*state.borrow());
        let (summaries, _) = accounting.key_summaries(2_000, read);
        assert_eq!(summaries.len(), 1);
        assert_eq!(summaries[0].kind, Kind::Throttled);
        assert_eq!(summaries[0].path.as_deref(), Some("/etc/shadow"));
        assert_eq!(
            summaries[0].record, None,
            "a summary is not the record it names"
        );
        assert_eq!(suppressed(&summaries), 12_345);
        assert!(accounting.key_summaries(2_000, read).0.is_empty());
        state.borrow_mut().suppressed += 5;
        assert_eq!(suppressed(&accounting.key_summaries(2_000, read).0), 5);
    }

    #[test]
    fn agent_counts_cover_what_keys_do_not_and_nothing_twice() {
        let mut accounting = Accounting::new(LIMITS, Coverage::Full);
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
        let mut accounting = Accounting::new(LIMITS, Coverage::Full);
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
        let mut accounting = Accounting::new(LIMITS, Coverage::Full);
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
        let mut accounting = Accounting::new(LIMITS, Coverage::Full);
        let before = AgentEvents {
            lost: 4,
            ..Default::default()
        };
        accounting.baseline(77, before);
        assert!(accounting
            .agent_summaries(77, before, &identities())
            .is_empty());
    }

    fn numbered(cgroup_id: u64, record: u64) -> RecordHeader {
        RecordHeader {
            cgroup_id,
            record,
            ..header(1)
        }
    }

    #[test]
    fn records_a_killed_claw_agent_read_are_counted_exactly_once() {
        let mut delivery = Delivery::default();
        // Agent 77's kernel count at start: 100. Earlier claw-agents accounted for 90 (of them,
        // records 0..=89 say); records 95..=99 waited in the ring buffer; 90..=94 are gone.
        delivery.start(77, 100, 90, AgentEvents::default());
        for (seq, record) in (95..100).enumerate() {
            assert!(delivery.published(&numbered(77, record), seq as u64));
        }
        // Records placed after the start did not wait.
        assert!(!delivery.published(&numbered(77, 100), 5));
        assert_eq!(delivery.settle_restart(), [(77, 5)]);
        assert!(delivery.settle_restart().is_empty(), "settled once");
        delivery.lost(6, 77, 5);
        let accounted = |delivery: &Delivery| delivery.record(77, 0).accounted;
        assert_eq!(
            accounted(&delivery),
            90,
            "nothing handled by the audit log yet"
        );
        delivery.handled(6);
        assert_eq!(accounted(&delivery), 96);
        delivery.handled(7);
        assert_eq!(
            accounted(&delivery),
            101,
            "every record accounted for, the lost ones too"
        );
        assert_eq!(delivery.record(77, 7).accounted_through, 7);
    }

    #[test]
    fn reported_counts_are_kept_once_their_summaries_are_logged() {
        let mut delivery = Delivery::default();
        let before = AgentEvents {
            lost: 10,
            ..Default::default()
        };
        delivery.start(77, 0, 0, before);
        let after = AgentEvents {
            lost: 25,
            ..Default::default()
        };
        delivery.summarised((2, 3), 77, after);
        delivery.handled(3);
        let kept = delivery.record(77, 3);
        assert_eq!(kept.counts, before);
        assert_eq!(
            kept.reported_through, 2,
            "summary 2 is logged but not in the counts"
        );
        delivery.handled(4);
        let kept = delivery.record(77, 4);
        assert_eq!((kept.counts, kept.reported_through), (after, 4));
    }

    #[test]
    fn agents_first_seen_after_the_start_and_unnumbered_records_claim_no_loss() {
        let mut delivery = Delivery::default();
        delivery.start(77, 10, 10, AgentEvents::default());
        delivery.published(&numbered(88, 0), 0);
        delivery.published(&numbered(88, claw_common::UNNUMBERED), 1);
        assert!(delivery.settle_restart().is_empty());
        delivery.handled(2);
        let accounted = |id| delivery.record(id, 2).accounted;
        assert_eq!((accounted(77), accounted(88)), (10, 1));
    }

    #[test]
    fn the_log_after_a_position_gives_records_and_reported_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut writer = crate::events::audit::Writer::open(&path, 1 << 20).unwrap();
        let event = |seq: u64, kind: &str, record: Option<u64>, details: serde_json::Value| {
            let mut event = sample(kind);
            event.seq = seq;
            event.cgroup = "/claw/a".to_owned();
            event.record = record;
            event.details = (!details.is_null()).then_some(details);
            crate::events::audit::Entry::Event(Arc::new(event))
        };
        for entry in [
            event(1, "deny", Some(0), json!(null)),
            event(2, "deny", Some(1), json!(null)),
            event(3, "lost", None, json!({ "lost": 7, "stage": "kernel" })),
            event(4, "lost", None, json!({ "lost": 2, "stage": "restart" })),
            event(
                5,
                "throttled",
                None,
                json!({ "suppressed": 4, "reason": "agent-budget" }),
            ),
            event(
                6,
                "throttled",
                None,
                json!({ "suppressed": 3, "reason": "identical" }),
            ),
            event(7, "policy", None, json!(null)),
        ] {
            writer.append(entry).unwrap();
        }
        let from = HashMap::from([("/claw/a".to_owned(), (2, 4))]);
        let logged = logged_after(&path, &from);
        assert_eq!(
            logged["/claw/a"],
            Logged {
                records: 3,
                counts: AgentEvents {
                    throttled_budget: 4,
                    throttled_identical: 3,
                    ..Default::default()
                },
            }
        );
    }
}
