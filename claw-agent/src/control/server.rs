//! The control socket: accepts clients, answers their one request, streams events to followers.

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use tokio::{
    io::{
        AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _,
        BufReader,
    },
    net::UnixListener,
    sync::{broadcast, mpsc, oneshot, Semaphore},
};

use crate::{
    control::advise,
    control::grant::Lifetime,
    control::peer::{self, Peer},
    control::protocol::{Reply, Request, Status, MAX_REQUEST_BYTES},
    events::audit::{self, ReplayFrom},
    events::bus::{Bus, Stage},
    events::event::Event,
    policy::call::Narrowing,
    policy::describe::RuleLine,
};

/// Questions for the task that owns the kernel objects.
#[derive(Debug)]
pub enum Control {
    Status(oneshot::Sender<Status>),
    /// The enforced policy's file and rule lines.
    Rules(oneshot::Sender<(String, Vec<RuleLine>)>),
    /// Housekeeping, each second: ended calls, spent grants.
    Tick,
    /// Stop the supervised processes (claw-agent is shutting down); answered when they are.
    Shutdown(oneshot::Sender<()>),
    /// Apply a policy file; the answer is (file, generation) or why it was rejected.
    Apply {
        policy: PathBuf,
        reply: oneshot::Sender<Result<(String, u64), String>>,
    },
    /// Start a tool call; the answer is its cgroup (absolute path) and cgroup id, or why not.
    StartCall {
        agent: String,
        call: String,
        narrowing: Narrowing,
        command: Vec<String>,
        reply: oneshot::Sender<Result<(String, u64), String>>,
    },
    /// Grant the object of logged denial `event`; the answer says what was granted, or why not.
    Allow {
        event: u64,
        lifetime: Lifetime,
        call_only: bool,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// End the tool call whose cgroup is `cgroup_id` (its command exited with `status`, or
    /// with None its client went away); answered once its processes are gone.
    EndCall {
        cgroup_id: u64,
        status: Option<i32>,
        reply: oneshot::Sender<()>,
    },
}

/// What connections need from the rest of the daemon.
#[derive(Clone)]
pub struct Handles {
    pub bus: Arc<Bus>,
    pub control: mpsc::Sender<Control>,
    /// The audit log, from which followers that resume or look back are replayed.
    pub audit_log: PathBuf,
    /// The agents' cgroups: no client inside one is served.
    pub agents: crate::events::watch::Agents,
}

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
struct AgentRequests {
    answering: std::sync::Mutex<std::collections::HashSet<String>>,
    lookups: Semaphore,
}

/// The claim of one agent's turn; released when dropped.
struct Turn<'a> {
    requests: &'a AgentRequests,
    agent: String,
}

impl AgentRequests {
    fn new() -> Self {
        Self {
            answering: Default::default(),
            lookups: Semaphore::new(1),
        }
    }

    fn take_turn(&self, agent: &str) -> Option<Turn<'_>> {
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

/// The daemon's two sockets.
pub struct Listeners {
    /// Root, outside every agent: everything.
    pub control: UnixListener,
    /// Processes inside agents: their own logged events, one `event` request per connection.
    pub agents: UnixListener,
}

/// Bytes of events a follower is sent in one write at most.
const FOLLOW_BATCH_BYTES: usize = 64 * 1024;

/// Longest a replay waits for the audit log writer to reach the live stream.
const AUDIT_CATCH_UP: Duration = Duration::from_secs(2);

/// Serves both sockets until `shutdown` completes.
pub async fn run(listeners: Listeners, handles: Handles, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let requests = Arc::new(AgentRequests::new());
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            accepted = listeners.control.accept() => match accepted {
                Ok((stream, _)) => {
                    let handles = handles.clone();
                    tokio::spawn(async move {
                        let refused = match peer::identify(&stream) {
                            Ok(peer) => refusal(&peer, &agent_cgroups(&handles)),
                            Err(err) => Some(format!("{err}; refused")),
                        };
                        let (read, mut write) = stream.into_split();
                        if let Some(message) = refused {
                            tracing::warn!("control socket: refused a client: {message}");
                            let _ = send(&mut write, &Reply::Error { message }).await;
                            return;
                        }
                        if let Err(err) = serve(read, write, handles).await {
                            tracing::debug!("client connection ended: {err}");
                        }
                    });
                }
                Err(err) => tracing::warn!("accept on the control socket failed: {err}"),
            },
            accepted = listeners.agents.accept() => match accepted {
                Ok((stream, _)) => {
                    let handles = handles.clone();
                    let requests = requests.clone();
                    tokio::spawn(async move {
                        let asker = peer::identify(&stream);
                        let (read, mut write) = stream.into_split();
                        let answered = match asker.and_then(|peer| asker_in_agent(&handles, peer)) {
                            Ok((agent, cgroup)) => match requests.take_turn(&agent) {
                                Some(_turn) => {
                                    serve_agent(read, &mut write, &handles, &requests.lookups, &agent, &cgroup).await
                                }
                                None => {
                                    let message = format!("claw-agent is answering another request of agent `{agent}`: one at a time — retry when it is answered");
                                    send(&mut write, &Reply::Error { message }).await
                                }
                            },
                            Err(message) => send(&mut write, &Reply::Error { message }).await,
                        };
                        if let Err(err) = answered {
                            tracing::debug!("agent socket connection ended: {err}");
                        }
                    });
                }
                Err(err) => tracing::warn!("accept on the agent socket failed: {err}"),
            },
        }
    }
}

/// The agent `peer` is in (its name) and its cgroup, or why the agent socket does not serve it.
fn asker_in_agent(handles: &Handles, peer: Peer) -> Result<(String, String), String> {
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

fn agent_cgroups(handles: &Handles) -> Vec<String> {
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
async fn serve_agent(
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
                _ => Reply::Error {
                    message: format!(
                        "no event {seq} of {cgroup} in the audit log (another's, rotated away, or not yet written)"
                    ),
                },
            }
        }
        Ok(_) => Reply::Error {
            message: "the agent socket answers only `event` requests, about the asker's own events (`clawctl why N`); the rest is the operator's, on the control socket".to_owned(),
        },
        Err(err) => Reply::Error {
            message: format!(
                "bad request: {err} — send one JSON object on one line, e.g. {{\"request\":\"event\",\"seq\":42}}"
            ),
        },
    };
    send(write, &reply).await
}

async fn serve(
    read: impl AsyncRead + Unpin,
    mut write: impl AsyncWrite + Unpin,
    handles: Handles,
) -> std::io::Result<()> {
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES));
    reader.read_line(&mut line).await?;
    let request = match serde_json::from_str::<Request>(&line) {
        Ok(request) => request,
        Err(err) => {
            let message = format!(
                "bad request: {err} — send one JSON object on one line, e.g. {{\"request\":\"status\"}} or {{\"request\":\"follow\"}}"
            );
            return send(&mut write, &Reply::Error { message }).await;
        }
    };
    match request {
        Request::Call {
            agent,
            call,
            narrowing,
            command,
        } => {
            let started = ask(&handles, |reply| Control::StartCall {
                agent,
                call: call.clone(),
                narrowing,
                command,
                reply,
            })
            .await;
            let cgroup_id = match started {
                Some(Ok((cgroup, cgroup_id))) => {
                    let sent = send(&mut write, &Reply::CallStarted { cgroup, cgroup_id }).await;
                    if sent.is_err() {
                        // The client went before it could run anything: the call ends now.
                        let _ = ask(&handles, |reply| Control::EndCall {
                            cgroup_id,
                            status: None,
                            reply,
                        })
                        .await;
                        return sent;
                    }
                    cgroup_id
                }
                Some(Err(message)) => return send(&mut write, &Reply::Error { message }).await,
                None => return send(&mut write, &shutting_down()).await,
            };
            // The call lasts until the client says it ended or goes away (killed with its
            // command, or the command with it): either way the call ends here.
            line.clear();
            let status = match reader.read_line(&mut line).await {
                Ok(read) if read > 0 => match serde_json::from_str::<Request>(&line) {
                    Ok(Request::CallEnd { status }) => Some(status),
                    _ => None,
                },
                _ => None,
            };
            let _ = ask(&handles, |reply| Control::EndCall {
                cgroup_id,
                status,
                reply,
            })
            .await;
            send(&mut write, &Reply::CallEnded { call }).await
        }
        Request::Allow {
            event,
            lifetime,
            call_only,
        } => {
            let reply = match ask(&handles, |reply| Control::Allow {
                event,
                lifetime,
                call_only,
                reply,
            })
            .await
            {
                Some(Ok(message)) => Reply::Allowed { message },
                Some(Err(message)) => Reply::Error { message },
                None => shutting_down(),
            };
            send(&mut write, &reply).await
        }
        Request::Event { seq } => {
            let reply = match logged_event(&handles, seq).await {
                Some(event) => Reply::Event {
                    event: Arc::new(event),
                },
                None => Reply::Error {
                    message: format!(
                        "no event {seq} in the audit log (rotated away, or not yet written)"
                    ),
                },
            };
            send(&mut write, &reply).await
        }
        Request::Advise { since, agent, call } => {
            let reply = match humantime::parse_rfc3339_weak(&since) {
                Ok(time) => {
                    let path = handles.audit_log.clone();
                    let until = handles.bus.next_seq();
                    handles.bus.until_written(until, AUDIT_CATCH_UP).await;
                    let events = tokio::task::spawn_blocking(move || {
                        audit::replay(&path, &ReplayFrom::Since(time), until)
                    })
                    .await
                    .unwrap_or_default();
                    let chosen = events.iter().filter(|e| {
                        agent.as_ref().is_none_or(|a| *a == e.agent)
                            && call.as_ref().is_none_or(|c| Some(c) == e.call.as_ref())
                    });
                    draft_reply(&handles, advise::draft(chosen)).await
                }
                Err(err) => Reply::Error {
                    message: format!(
                        "since `{since}`: {err} — give a time like 2026-11-22T10:00:00Z"
                    ),
                },
            };
            send(&mut write, &reply).await
        }
        Request::Persist { event } => {
            let reply = match logged_event(&handles, event).await {
                Some(denial) if denial.kind == "deny" => {
                    draft_reply(&handles, advise::draft([&denial])).await
                }
                Some(other) => Reply::Error {
                    message: format!(
                        "event {event} is a `{}` event — only denials can be allowed",
                        other.kind
                    ),
                },
                None => Reply::Error {
                    message: format!(
                        "no event {event} in the audit log (rotated away, or not yet written)"
                    ),
                },
            };
            send(&mut write, &reply).await
        }
        Request::CallEnd { .. } => {
            let message = "call-end outside a call — send it on the connection that sent `call`, after `call-started`".to_owned();
            send(&mut write, &Reply::Error { message }).await
        }
        Request::Status {} => {
            let reply = ask(&handles, Control::Status)
                .await
                .map_or_else(shutting_down, Reply::Status);
            send(&mut write, &reply).await
        }
        Request::Rules {} => {
            let reply = ask(&handles, Control::Rules).await.map_or_else(
                shutting_down,
                |(policy, lines)| Reply::Rules { policy, lines },
            );
            send(&mut write, &reply).await
        }
        Request::Apply { policy } => {
            let path = PathBuf::from(&policy);
            let reply = if !path.is_absolute() {
                Reply::Error {
                    message: format!(
                        "policy path `{policy}` is relative — send an absolute path (clawctl does)"
                    ),
                }
            } else {
                match ask(&handles, |reply| Control::Apply {
                    policy: path,
                    reply,
                })
                .await
                {
                    Some(Ok((policy, generation))) => Reply::Applied { policy, generation },
                    Some(Err(message)) => Reply::Error { message },
                    None => shutting_down(),
                }
            };
            send(&mut write, &reply).await
        }
        Request::Follow { after, since } => {
            let (mut events, first_live) = handles.bus.subscribe();
            send(&mut write, &Reply::Subscribed).await?;
            let from = match (after, since) {
                (Some(seq), _) => Some(ReplayFrom::After(seq)),
                (None, Some(time)) => match humantime::parse_rfc3339_weak(&time) {
                    Ok(time) => Some(ReplayFrom::Since(time)),
                    Err(err) => {
                        let message = format!(
                            "since `{time}`: {err} — give a time like 2026-11-22T10:00:00Z"
                        );
                        return send(&mut write, &Reply::Error { message }).await;
                    }
                },
                (None, None) => None,
            };
            if let Some(from) = from {
                for reply in replay(&handles, from, first_live).await {
                    send(&mut write, &reply).await?;
                }
            }
            // What has arrived goes out with one write, not one per event, once the audit log
            // holds it: a follower that resumes after a restart then finds there whatever the
            // connection lost.
            let mut lines = Vec::new();
            loop {
                let first = events.recv().await;
                let mut next = Some(first);
                let mut last_seq = None;
                while let Some(received) = next.take() {
                    let reply = match received {
                        Ok(event) => {
                            last_seq = Some(event.seq);
                            Reply::Event { event }
                        }
                        Err(broadcast::error::RecvError::Lagged(count)) => {
                            handles.bus.count_lost(Stage::Follower, count);
                            Reply::Lost { count }
                        }
                        Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    };
                    serde_json::to_writer(&mut lines, &reply).map_err(std::io::Error::other)?;
                    lines.push(b'\n');
                    if lines.len() < FOLLOW_BATCH_BYTES {
                        next = match events.try_recv() {
                            Ok(event) => Some(Ok(event)),
                            Err(broadcast::error::TryRecvError::Lagged(count)) => {
                                Some(Err(broadcast::error::RecvError::Lagged(count)))
                            }
                            Err(_) => None,
                        };
                    }
                }
                if let Some(seq) = last_seq {
                    handles.bus.until_written(seq + 1, AUDIT_CATCH_UP).await;
                }
                write.write_all(&lines).await?;
                write.flush().await?;
                lines.clear();
            }
        }
    }
}

/// `draft` written into the enforced policy file's text.
async fn draft_reply(handles: &Handles, draft: advise::Draft) -> Reply {
    let Some((policy, _)) = ask(handles, Control::Rules).await else {
        return shutting_down();
    };
    let current = match tokio::fs::read_to_string(&policy).await {
        Ok(text) => text,
        Err(err) => {
            return Reply::Error {
                message: format!("reading the enforced policy {policy}: {err}"),
            }
        }
    };
    match advise::add_rules(&policy, &current, &draft.rules) {
        Ok(proposed) => Reply::Draft {
            policy,
            rules: draft.rules.into_iter().collect(),
            notes: draft.notes.into_iter().collect(),
            current,
            proposed,
        },
        Err(message) => Reply::Error { message },
    }
}

/// The event numbered `seq`, from the audit log.
pub async fn logged_event(handles: &Handles, seq: u64) -> Option<Event> {
    handles
        .bus
        .until_written(seq.saturating_add(1), AUDIT_CATCH_UP)
        .await;
    find_logged(handles.audit_log.clone(), seq).await
}

/// The event numbered `seq` in the audit log at `path`.
pub async fn find_logged(path: PathBuf, seq: u64) -> Option<Event> {
    let from = match seq.checked_sub(1) {
        Some(before) => ReplayFrom::After(before),
        None => ReplayFrom::Since(std::time::SystemTime::UNIX_EPOCH),
    };
    tokio::task::spawn_blocking(move || audit::replay(&path, &from, seq.saturating_add(1)))
        .await
        .ok()?
        .into_iter()
        .find(|e| e.seq == seq)
}

/// The logged events from `from` up to the live stream's first (`until`), with `lost` markers
/// where sequence numbers are missing (rotated away, or never written).
async fn replay(handles: &Handles, from: ReplayFrom, until: u64) -> Vec<Reply> {
    handles.bus.until_written(until, AUDIT_CATCH_UP).await;
    let path = handles.audit_log.clone();
    let start = from.clone();
    let events = tokio::task::spawn_blocking(move || audit::replay(&path, &start, until))
        .await
        .unwrap_or_default();
    let mut expected = match from {
        ReplayFrom::After(seq) => Some(seq + 1),
        ReplayFrom::Since(_) => events.first().map(|e| e.seq),
    };
    let mut replies = Vec::new();
    for event in events {
        if let Some(gap) = expected
            .map(|e| event.seq.saturating_sub(e))
            .filter(|&g| g > 0)
        {
            replies.push(Reply::Lost { count: gap });
        }
        expected = Some(event.seq + 1);
        replies.push(Reply::Event {
            event: Arc::new(event),
        });
    }
    if let Some(gap) = expected.map(|e| until.saturating_sub(e)).filter(|&g| g > 0) {
        replies.push(Reply::Lost { count: gap });
    }
    replies
}

/// Sends a request to the owner task and waits for its answer; None if it has stopped.
async fn ask<T>(
    handles: &Handles,
    request: impl FnOnce(oneshot::Sender<T>) -> Control,
) -> Option<T> {
    let (reply, answer) = oneshot::channel();
    handles.control.send(request(reply)).await.ok()?;
    answer.await.ok()
}

fn shutting_down() -> Reply {
    Reply::Error {
        message: "claw-agent is shutting down".to_owned(),
    }
}

async fn send(write: &mut (impl AsyncWrite + Unpin), reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    write.flush().await
}

#[cfg(test)]
mod tests {
    use tokio::io::{duplex, AsyncBufReadExt as _};

    use super::*;
    use crate::{control::protocol::Counters, events::event::tests::sample};

    struct Fixture {
        handles: Handles,
        requests: mpsc::Receiver<Control>,
        _dir: tempfile::TempDir,
    }

    /// Handles over a bus of `capacity` whose audit log holds events numbered `logged`.
    fn fixture(capacity: usize, logged: &[u64]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let audit_log = dir.path().join("audit.log");
        let mut writer = audit::Writer::open(&audit_log, 1 << 20).unwrap();
        for &seq in logged {
            let mut event = sample("deny");
            event.seq = seq;
            event.pid = seq as u32;
            writer.append(audit::Entry::Event(Arc::new(event))).unwrap();
        }
        let next = logged.last().map_or(0, |s| s + 1);
        let (control, requests) = mpsc::channel(1);
        Fixture {
            handles: Handles {
                bus: Arc::new(Bus::with_capacity(next, capacity)),
                control,
                audit_log,
                agents: Default::default(),
            },
            requests,
            _dir: dir,
        }
    }

    /// Sends `request`, then reads `count` replies (fewer if the server stops).
    async fn exchange(request: &str, handles: Handles, count: usize) -> Vec<Reply> {
        let (client, server) = duplex(1 << 16);
        let (server_read, server_write) = tokio::io::split(server);
        let task = tokio::spawn(serve(server_read, server_write, handles));
        let (client_read, mut client_write) = tokio::io::split(client);
        client_write.write_all(request.as_bytes()).await.unwrap();
        let mut lines = BufReader::new(client_read).lines();
        let mut replies = Vec::new();
        while replies.len() < count {
            let Ok(Some(line)) = lines.next_line().await else {
                break;
            };
            replies.push(serde_json::from_str(&line).unwrap());
        }
        task.abort();
        replies
    }

    fn seqs(replies: &[Reply]) -> Vec<String> {
        replies
            .iter()
            .map(|r| match r {
                Reply::Event { event } => event.seq.to_string(),
                Reply::Lost { count } => format!("lost {count}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn peer(uid: u32, cgroup: &str) -> Peer {
        Peer {
            uid,
            pid: 7,
            cgroup: cgroup.to_owned(),
        }
    }

    #[test]
    fn only_root_outside_agents_is_served() {
        let agents = ["claw/tools".to_owned()];
        assert_eq!(refusal(&peer(0, "/user.slice"), &agents), None);
        assert_eq!(refusal(&peer(0, "/claw/toolsmith"), &agents), None);
        for inside in ["/claw/tools", "/claw/tools/call-1"] {
            let refused = refusal(&peer(0, inside), &agents).unwrap();
            assert!(refused.contains("inside an agent"), "{refused}");
            assert!(refused.contains("clawctl why"), "{refused}");
        }
        assert!(refusal(&peer(1000, "/"), &agents)
            .unwrap()
            .contains("root only"));
    }

    #[test]
    fn an_agent_owns_its_events_and_its_calls_a_call_only_its_own() {
        let event = |agent: &str, cgroup: &str| {
            let mut event = sample("deny");
            event.agent = agent.to_owned();
            event.cgroup = cgroup.to_owned();
            event
        };
        let tools = |cgroup: &str| event("tools", cgroup);
        assert!(owns("tools", "/claw/tools", &tools("/claw/tools")));
        assert!(owns("tools", "/claw/tools", &tools("/claw/tools/call-1")));
        assert!(owns(
            "tools",
            "/claw/tools/call-1",
            &tools("/claw/tools/call-1")
        ));
        assert!(!owns("tools", "/claw/tools/call-1", &tools("/claw/tools")));
        assert!(!owns(
            "tools",
            "/claw/tools/call-1",
            &tools("/claw/tools/call-10")
        ));
        assert!(!owns("tools", "/claw/tools", &tools("/claw/toolsmith")));
        assert!(!owns("tools", "/claw/tools", &tools("-")));
        // A nested agent's events are its own, not its parent's.
        assert!(!owns(
            "tools",
            "/claw/tools",
            &event("inner", "/claw/tools/inner")
        ));
        let agents = ["claw/tools".to_owned(), "claw/tools/inner".to_owned()];
        assert_eq!(
            agent_of("/claw/tools/inner/x", &agents),
            Some("claw/tools/inner")
        );
        assert_eq!(agent_of("/claw/tools/call-1", &agents), Some("claw/tools"));
    }

    /// Sends `request` to the agent socket's server as a process of agent `agent` in `cgroup`.
    async fn ask_as(agent: &str, cgroup: &str, request: &str, handles: Handles) -> Reply {
        let (client, server) = duplex(1 << 16);
        let (server_read, mut server_write) = tokio::io::split(server);
        let (agent, cgroup) = (agent.to_owned(), cgroup.to_owned());
        let task = tokio::spawn(async move {
            let lookups = Semaphore::new(1);
            serve_agent(
                server_read,
                &mut server_write,
                &handles,
                &lookups,
                &agent,
                &cgroup,
            )
            .await
        });
        let (client_read, mut client_write) = tokio::io::split(client);
        client_write.write_all(request.as_bytes()).await.unwrap();
        let line = BufReader::new(client_read)
            .lines()
            .next_line()
            .await
            .unwrap()
            .unwrap();
        task.await.unwrap().unwrap();
        serde_json::from_str(&line).unwrap()
    }

    #[test]
    fn one_request_per_agent_at_a_time() {
        let requests = AgentRequests::new();
        let turn = requests.take_turn("tools").unwrap();
        assert!(requests.take_turn("tools").is_none());
        assert!(requests.take_turn("other").is_some());
        drop(turn);
        assert!(requests.take_turn("tools").is_some());
    }

    #[tokio::test]
    async fn the_agent_socket_answers_an_agent_about_its_own_events_only() {
        let f = fixture(16, &[0, 1]);
        let logged = sample("deny");
        let request = "{\"request\":\"event\",\"seq\":1}\n";
        let own = ask_as(&logged.agent, &logged.cgroup, request, f.handles.clone()).await;
        let Reply::Event { event } = own else {
            panic!("{own:?}")
        };
        assert_eq!(event.seq, 1);
        let other = ask_as("other", "/claw/other", request, f.handles.clone()).await;
        let Reply::Error { message } = other else {
            panic!("{other:?}")
        };
        assert!(message.contains("no event 1 of /claw/other"), "{message}");
        let status = ask_as(
            &logged.agent,
            &logged.cgroup,
            "{\"request\":\"status\"}\n",
            f.handles,
        )
        .await;
        let Reply::Error { message } = status else {
            panic!("{status:?}")
        };
        assert!(message.contains("only `event` requests"), "{message}");
    }

    #[tokio::test]
    async fn garbage_gets_an_error_that_shows_the_fix() {
        let f = fixture(4, &[]);
        let replies = exchange("hello\n", f.handles, 1).await;
        let [Reply::Error { message }] = replies.as_slice() else {
            panic!("{replies:?}")
        };
        assert!(message.starts_with("bad request: "), "{message}");
        assert!(message.contains(r#"{"request":"status"}"#), "{message}");
    }

    #[tokio::test]
    async fn status_is_answered_by_the_owner_task() {
        let mut f = fixture(4, &[]);
        tokio::spawn(async move {
            let Some(Control::Status(reply)) = f.requests.recv().await else {
                return;
            };
            let _ = reply.send(Status {
                enforcing: true,
                coverage: "full".to_owned(),
                generation: 1,
                policy: "p.yaml".to_owned(),
                cgroup_root: "/sys/fs/cgroup".to_owned(),
                agents: vec![],
                programs: vec![],
                counters: Counters::default(),
            });
        });
        let replies = exchange("{\"request\":\"status\"}\n", f.handles, 1).await;
        let [Reply::Status(status)] = replies.as_slice() else {
            panic!("{replies:?}")
        };
        assert!(status.enforcing);
    }

    #[tokio::test]
    async fn slow_follower_is_told_how_many_it_lost() {
        let f = fixture(4, &[]);
        let bus = f.handles.bus.clone();
        let (client, server) = duplex(1 << 16);
        let (server_read, server_write) = tokio::io::split(server);
        tokio::spawn(serve(server_read, server_write, f.handles));
        let (client_read, mut client_write) = tokio::io::split(client);
        client_write
            .write_all(b"{\"request\":\"follow\"}\n")
            .await
            .unwrap();
        let mut lines = BufReader::new(client_read).lines();
        let first: Reply =
            serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert_eq!(first, Reply::Subscribed);
        // Capacity 4: six events before the follower reads drop the two oldest for it.
        for _ in 0..6 {
            bus.publish(sample("deny"));
        }
        bus.mark_written(6);
        let mut replies = Vec::new();
        for _ in 0..5 {
            replies.push(
                serde_json::from_str::<Reply>(&lines.next_line().await.unwrap().unwrap()).unwrap(),
            );
        }
        assert_eq!(seqs(&replies), ["lost 2", "2", "3", "4", "5"]);
        assert_eq!(bus.lost(Stage::Follower), 2);
    }

    #[tokio::test]
    async fn a_resuming_follower_gets_what_it_missed_then_the_live_stream() {
        let f = fixture(16, &[0, 1, 2, 3, 4, 5]);
        let bus = f.handles.bus.clone();
        let follow = tokio::spawn(exchange(
            "{\"request\":\"follow\",\"after\":2}\n",
            f.handles,
            5,
        ));
        while bus.subscribers() == 0 {
            tokio::task::yield_now().await;
        }
        bus.publish(sample("deny"));
        bus.mark_written(7);
        let replies = follow.await.unwrap();
        assert_eq!(replies[0], Reply::Subscribed);
        assert_eq!(seqs(&replies[1..]), ["3", "4", "5", "6"]);
    }

    #[tokio::test]
    async fn missing_records_are_reported_as_lost_not_skipped() {
        let f = fixture(16, &[0, 1, 4, 5]);
        let replies = exchange("{\"request\":\"follow\",\"after\":0}\n", f.handles, 5).await;
        assert_eq!(seqs(&replies[1..]), ["1", "lost 2", "4", "5"]);
    }

    #[tokio::test]
    async fn since_replays_by_time_and_bad_times_are_explained() {
        let f = fixture(16, &[0, 1]);
        let replies = exchange(
            "{\"request\":\"follow\",\"since\":\"2000-01-01T00:00:00Z\"}\n",
            f.handles.clone(),
            3,
        )
        .await;
        assert_eq!(seqs(&replies[1..]), ["0", "1"]);
        let replies = exchange(
            "{\"request\":\"follow\",\"since\":\"yesterday\"}\n",
            f.handles,
            2,
        )
        .await;
        let Reply::Error { message } = &replies[1] else {
            panic!("{replies:?}")
        };
        assert!(message.contains("2026-11-22T10:00:00Z"), "{message}");
    }
}
