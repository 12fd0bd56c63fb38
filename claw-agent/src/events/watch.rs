//! Events the cgroups themselves tell: OOM kills (the kernel's report on /dev/kmsg, confirmed by
//! memory.events) and refused forks at pids.max (pids.events), each attributed to its agent.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Duration,
};

use serde_json::json;
use tokio::sync::mpsc;

use crate::{
    events::{
        bus::Bus,
        event::{Decision, Event, Kind},
        kmsg,
    },
    kernel::{cgroupfs, enforcer::Coverage},
};

/// What the watchers need to know of an agent (updated on every apply).
#[derive(Debug, Clone)]
pub struct AgentView {
    pub name: String,
    /// Relative to the cgroup v2 root.
    pub cgroup: String,
    pub memory_max: Option<u64>,
    pub pids_max: Option<u64>,
}

pub type Agents = Arc<RwLock<Vec<AgentView>>>;

fn event(
    kind: Kind,
    agent: &AgentView,
    pid: u32,
    comm: &str,
    op: &str,
    details: serde_json::Value,
    coverage: Coverage,
) -> Event {
    let mut event = Event::about(kind, &agent.name, &agent.cgroup, op, coverage);
    event.pid = pid;
    event.comm = comm.to_owned();
    event.decision = Decision::Kill;
    event.details = Some(details);
    event
}

/// Follows /dev/kmsg on a thread of its own and publishes each OOM kill of an agent's process.
pub fn oom_kills(root: PathBuf, agents: Agents, events: Arc<Bus>, coverage: Coverage) {
    let (kills, mut received) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        if let Err(err) = kmsg::follow(|kill| {
            let _ = kills.send(kill);
        }) {
            tracing::error!(
                "reading {}: {err}; OOM kills are NOT reported (memory.events still counts them)",
                kmsg::KMSG
            );
        }
    });
    tokio::spawn(async move {
        while let Some(kill) = received.recv().await {
            let agent = agents
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .find(|a| format!("/{}", a.cgroup) == kill.task_memcg)
                .cloned();
            let Some(agent) = agent else {
                continue;
            };
            let oom_kills =
                cgroupfs::read_file(&root, &agent.cgroup, "memory.events").and_then(|text| {
                    text.lines()
                        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse::<u64>().ok())
                });
            let details = json!({
                "limit_bytes": agent.memory_max,
                "victim_rss_bytes": kill.anon_rss_bytes,
                "oom_memcg": kill.oom_memcg,
                "memory_events_oom_kill": oom_kills,
            });
            let event = event(
                Kind::Oom,
                &agent,
                kill.pid,
                &kill.comm,
                "oom-kill",
                details,
                coverage,
            );
            tracing::warn!(agent = %event.agent, pid = event.pid, comm = %event.comm, "OOM kill");
            events.publish(event);
        }
    });
}

/// Polls each agent's pids.events and publishes when forks were refused at pids.max.
pub fn pids_limits(root: PathBuf, agents: Agents, events: Arc<Bus>, coverage: Coverage) {
    tokio::spawn(async move {
        let mut seen: HashMap<String, u64> = HashMap::new();
        let mut ticks = tokio::time::interval(Duration::from_millis(500));
        loop {
            ticks.tick().await;
            let agents = agents.read().unwrap_or_else(|p| p.into_inner()).clone();
            for agent in agents {
                let Some(count) = cgroupfs::read_file(&root, &agent.cgroup, "pids.events")
                    .and_then(|t| {
                        t.lines()
                            .find_map(|l| l.strip_prefix("max ")?.trim().parse::<u64>().ok())
                    })
                else {
                    continue;
                };
                let before = seen.insert(agent.cgroup.clone(), count);
                match before {
                    Some(before) if count > before => {
                        let details =
                            json!({ "limit": agent.pids_max, "refused_forks": count - before });
                        let event = event(Kind::PidsMax, &agent, 0, "", "fork", details, coverage);
                        tracing::warn!(agent = %event.agent, refused = count - before, "pids.max reached");
                        events.publish(event);
                    }
                    _ => {}
                }
            }
        }
    });
}
