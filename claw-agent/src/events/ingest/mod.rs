//! Kernel -> bus: decodes the ring buffer's records into events, and each second turns the
//! programs' counts of reports they did not send (throttled repeats, an agent over its budget,
//! records the ring buffer had no room for) into `throttled` and `lost` events, so that every
//! decision is either an event or part of a count.

mod accounting;
mod delivery;
mod names;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

pub use accounting::Accounting;
use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use claw_common::{AgentEvents, RateState, RecordHeader, Reported, ThrottleKey};
pub use delivery::{logged_after, Delivery, Logged};
use names::CgroupNames;
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

/// Events the audit log writer may be behind before the reader stops publishing: well inside the
/// bus's buffer, so that the writer never loses one.
const PACE_LAG: u64 = (crate::events::bus::SUBSCRIBER_BUFFER / 2) as u64;
const PACE_PAUSE: Duration = Duration::from_millis(1);

/// How often the counts are turned into events: the "second" of "+N more in the last second".
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(1);

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
    (identities, names): (&Identities, &mut CgroupNames),
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
            Ok((header, mut event)) => {
                names.name(
                    header.ruleset,
                    header.task_cgroup_id,
                    identities,
                    &mut event,
                );
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
        cgroup_root,
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
        names: CgroupNames::new(cgroup_root),
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
    names: CgroupNames,
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
            (&identities, &mut self.names),
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
