//! The agent socket: processes inside agents ask it about their own logged events (`clawctl
//! why N` from inside an agent), one request per agent at a time; and who may use the control
//! socket at all.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, BufReader},
    sync::Semaphore,
};

use super::{logged::logged_event, send, Handles};
use crate::{
    control::{
        peer::Peer,
        protocol::{ErrorKind, Reply, Request, MAX_REQUEST_BYTES},
    },
    events::event::Event,
};

/// Why a client may not use the control socket, if it may not: it must be root (the socket's
/// mode already says so) and outside every agent's cgroup, or an agent's root could reach the
/// daemon that confines it.
pub fn refusal(peer: &Peer, agents: &[String]) -> Option<String> {
    if peer.uid != 0 {
        return Some(format!(
            "the control socket serves root only (this client runs as uid {})",
            peer.uid
        ));
    }
    agent_of(&peer.cgroup, agents).map(|agent| {
        format!(
            "the control socket serves no process inside an agent (pid {} is in /{agent}); inside an agent, ask the agent socket about its own denials (`clawctl why N` does)",
            peer.pid
        )
    })
}

/// The agent cgroup `cgroup` (a /proc/PID/cgroup path) lies in, itself included; of nested
/// agents' cgroups, the innermost.
pub fn agent_of<'a>(cgroup: &str, agents: &'a [String]) -> Option<&'a str> {
    let path = cgroup.trim_start_matches('/');
    agents
        .iter()
        .filter(|agent| path == agent.as_str() || path.starts_with(&format!("{agent}/")))
        .max_by_key(|agent| agent.len())
        .map(String::as_str)
}

/// Whether a process of agent `agent` in cgroup `cgroup` (a /proc/PID/cgroup path) may read
/// `event`: one of that agent's, from its own cgroup or one below it (an agent's tool calls) —
/// not from a nested agent's.
pub fn owns(agent: &str, cgroup: &str, event: &Event) -> bool {
    event.agent == agent
        && (event.cgroup == cgroup
            || event
                .cgroup
                .starts_with(&format!("{}/", cgroup.trim_end_matches('/'))))
}

/// Longest the agent socket waits for a client's request line.
const AGENT_REQUEST_WAIT: Duration = Duration::from_secs(2);

/// Who the agent socket is answering: one request per agent at a time (an agent that holds
/// connections open waits only on itself), and one audit log lookup at a time across agents
/// (a lookup reads the log; agents asking together must not take the cores the kernel's
/// events and their resolvers need).
pub(super) struct AgentRequests {
    answering: std::sync::Mutex<std::collections::HashSet<String>>,
    pub(super) lookups: Semaphore,
}

/// The claim of one agent's turn; released when dropped.
pub(super) struct Turn<'a> {
    requests: &'a AgentRequests,
    agent: String,
}

impl AgentRequests {
    pub(super) fn new() -> Self {
        Self {
            answering: Default::default(),
            lookups: Semaphore::new(1),
        }
    }

    pub(super) fn take_turn(&self, agent: &str) -> Option<Turn<'_>> {
        let mut answering = self.answering.lock().unwrap_or_else(|p| p.into_inner());
        answering.insert(agent.to_owned()).then(|| Turn {
            requests: self,
            agent: agent.to_owned(),
        })
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.requests
            .answering
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.agent);
    }
}

/// The agent `peer` is in (its name) and its cgroup, or why the agent socket does not serve it.
pub(super) fn asker_in_agent(handles: &Handles, peer: Peer) -> Result<(String, String), String> {
    let agents = handles.agents.read().unwrap_or_else(|p| p.into_inner());
    let cgroups: Vec<String> = agents.iter().map(|a| a.cgroup.clone()).collect();
    agent_of(&peer.cgroup, &cgroups)
        .and_then(|cgroup| agents.iter().find(|a| a.cgroup == cgroup))
        .map(|agent| (agent.name.clone(), peer.cgroup.clone()))
        .ok_or_else(|| {
            format!(
                "the agent socket serves processes inside agents (pid {} is in {}) — outside agents, ask the control socket as root",
                peer.pid, peer.cgroup
            )
        })
}

pub(super) fn agent_cgroups(handles: &Handles) -> Vec<String> {
    handles
        .agents
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|a| a.cgroup.clone())
        .collect()
}

/// Answers a process of `agent` in cgroup `cgroup` its one request: one of its own logged
/// events, by number (`owns`). Whether another's event of that number exists is not told.
pub(super) async fn serve_agent(
    read: impl AsyncRead + Unpin,
    write: &mut (impl AsyncWrite + Unpin),
    handles: &Handles,
    lookups: &Semaphore,
    agent: &str,
    cgroup: &str,
) -> std::io::Result<()> {
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES));
    match tokio::time::timeout(AGENT_REQUEST_WAIT, reader.read_line(&mut line)).await {
        Ok(read) => read?,
        Err(_) => return Ok(()),
    };
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Event { seq }) => {
            let found = match lookups.acquire().await {
                Ok(_lookup) => logged_event(handles, seq).await,
                Err(_) => None,
            };
            match found {
                Some(event) if owns(agent, cgroup, &event) => Reply::Event {
                    event: Arc::new(event),
                },
                _ => Reply::error(
                    ErrorKind::NotFound,
                    format!(
                        "no event {seq} of {cgroup} in the audit log (another's, rotated away, or not yet written)"
                    ),
                ),
            }
        }
        Ok(_) => Reply::error(
            ErrorKind::Forbidden,
            "the agent socket answers only `event` requests, about the asker's own events (`clawctl why N`); the rest is the operator's, on the control socket",
        ),
        Err(err) => Reply::error(
            ErrorKind::BadRequest,
            format!(
                "bad request: {err} — send one JSON object on one line, e.g. {{\"request\":\"event\",\"seq\":42}}"
            ),
        ),
    };
    send(write, &reply).await
}
