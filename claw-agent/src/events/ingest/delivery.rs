//! Delivery: which of an agent's records and counts the audit log holds, kept in the kernel for
//! the next claw-agent, so that one killed between reading a record and logging it is told by
//! its successor, exactly.

use std::collections::{HashMap, VecDeque};

use claw_common::{AgentEvents, RecordHeader, Reported};

use crate::events::bus::Stage;

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
    /// Records read from the kernel, one at each bus position from the entry's on: a storm of
    /// one agent's records is one entry, not one per record (it waits here until the audit log
    /// writer has handled it).
    Read { count: u64 },
    /// A count of records lost, published at one bus position.
    Lost(u64),
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
        match self.pending.back_mut() {
            Some((first, cgroup_id, Pending::Read { count }))
                if *cgroup_id == header.cgroup_id && *first + *count == seq =>
            {
                *count += 1
            }
            _ => self
                .pending
                .push_back((seq, header.cgroup_id, Pending::Read { count: 1 })),
        }
        waited
    }

    #[cfg(test)]
    pub(super) fn pending_entries(&self) -> usize {
        self.pending.len()
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
            .push_back((seq, cgroup_id, Pending::Lost(lost)));
    }

    /// The audit log writer has handled every event before `written`.
    pub fn handled(&mut self, written: u64) {
        while let Some((seq, cgroup_id, what)) = self.pending.front_mut() {
            if *seq >= written {
                break;
            }
            let agent = self.agents.entry(*cgroup_id).or_default();
            match what {
                Pending::Read { count } if *seq + *count > written => {
                    // Handled up to `written`: the rest of the run stays pending.
                    let handled = written - *seq;
                    agent.accounted += handled;
                    *count -= handled;
                    *seq = written;
                    break;
                }
                Pending::Read { count } => agent.accounted += *count,
                Pending::Lost(n) => agent.accounted += *n,
                Pending::Reported { counts, .. } => agent.reported = *counts,
            }
            self.pending.pop_front();
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
