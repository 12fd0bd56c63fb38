//! The daemon's sockets: accepts clients, reads their one request, and hands it to its handler
//! (one function per request, in this folder's files); `agents` serves the agent socket.

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use tokio::{
    io::{
        AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _,
        BufReader,
    },
    net::UnixListener,
    sync::{mpsc, oneshot},
};

use crate::{
    control::{
        grant::Lifetime,
        peer,
        protocol::{ErrorKind, Failure, Reply, Request, Status, MAX_REQUEST_BYTES},
    },
    events::bus::Bus,
    policy::{call::Narrowing, describe::RuleLine, landlock::Plan},
};

mod agents;
mod call;
mod follow;
mod logged;
mod policy;
mod remedy;

pub use agents::{agent_of, owns, refusal};

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
        reply: oneshot::Sender<Result<(String, u64), Failure>>,
    },
    /// Start a tool call; the answer is its cgroup (absolute path), cgroup id and Landlock
    /// layer, or why not.
    StartCall {
        agent: String,
        call: String,
        narrowing: Narrowing,
        command: Vec<String>,
        reply: oneshot::Sender<Result<CallStart, Failure>>,
    },
    /// The Landlock layer a process started in agent `agent` must run under (None: none).
    Landlock {
        agent: String,
        reply: oneshot::Sender<Result<Option<Plan>, Failure>>,
    },
    /// Grant the object of logged denial `event`; the answer says what was granted, or why not.
    Allow {
        event: u64,
        lifetime: Lifetime,
        call_only: bool,
        reply: oneshot::Sender<Result<String, Failure>>,
    },
    /// End the tool call whose cgroup is `cgroup_id` (its command exited with `status`, or
    /// with None its client went away); answered once its processes are gone.
    EndCall {
        cgroup_id: u64,
        status: Option<i32>,
        reply: oneshot::Sender<()>,
    },
}

/// A tool call the owner started: its cgroup (absolute path), cgroup id, and the Landlock layer
/// its command must start under (None: none).
#[derive(Debug)]
pub struct CallStart {
    pub cgroup: String,
    pub cgroup_id: u64,
    pub landlock: Option<Plan>,
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
    let requests = Arc::new(agents::AgentRequests::new());
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            accepted = listeners.control.accept() => match accepted {
                Ok((stream, _)) => {
                    let handles = handles.clone();
                    tokio::spawn(async move {
                        let refused = match peer::identify(&stream) {
                            Ok(peer) => refusal(&peer, &agents::agent_cgroups(&handles)),
                            Err(err) => Some(format!("{err}; refused")),
                        };
                        let (read, mut write) = stream.into_split();
                        if let Some(message) = refused {
                            tracing::warn!("control socket: refused a client: {message}");
                            let _ = send(&mut write, &Reply::error(ErrorKind::Forbidden, message)).await;
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
                        let answered = match asker.map_err(|err| err.to_string()).and_then(|peer| agents::asker_in_agent(&handles, peer)) {
                            Ok((agent, cgroup)) => match requests.take_turn(&agent) {
                                Some(_turn) => {
                                    agents::serve_agent(read, &mut write, &handles, &requests.lookups, &agent, &cgroup).await
                                }
                                None => {
                                    let message = format!("claw-agent is answering another request of agent `{agent}`: one at a time — retry when it is answered");
                                    send(&mut write, &Reply::error(ErrorKind::Unavailable, message)).await
                                }
                            },
                            Err(message) => send(&mut write, &Reply::error(ErrorKind::Forbidden, message)).await,
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

async fn serve(
    read: impl AsyncRead + Unpin,
    mut write: impl AsyncWrite + Unpin,
    handles: Handles,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES));
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let request = match serde_json::from_str::<Request>(&line) {
        Ok(request) => request,
        Err(err) => {
            let message = format!(
                "bad request: {err} — send one JSON object on one line, e.g. {{\"request\":\"status\"}} or {{\"request\":\"follow\"}}"
            );
            return send(&mut write, &Reply::error(ErrorKind::BadRequest, message)).await;
        }
    };
    match request {
        Request::Status {} => policy::status(&handles, &mut write).await,
        Request::Rules {} => policy::rules(&handles, &mut write).await,
        Request::Apply { policy } => policy::apply(&handles, &mut write, policy).await,
        Request::Follow { after, since } => {
            follow::follow(&handles, &mut write, after, since).await
        }
        Request::Event { seq } => logged::event(&handles, &mut write, seq).await,
        Request::Call {
            agent,
            call,
            narrowing,
            command,
            landlock,
        } => {
            let started = call::Started {
                agent,
                call,
                narrowing,
                command,
                applies_landlock: landlock,
            };
            call::call(&handles, &mut reader, &mut write, started).await
        }
        Request::CallEnd { .. } => call::call_end_outside_a_call(&mut write).await,
        Request::Allow {
            event,
            lifetime,
            call_only,
        } => remedy::allow(&handles, &mut write, event, lifetime, call_only).await,
        Request::Advise { since, agent, call } => {
            remedy::advise(&handles, &mut write, since, agent, call).await
        }
        Request::Persist { event } => remedy::persist(&handles, &mut write, event).await,
        Request::Landlock { agent } => call::landlock(&handles, &mut write, agent).await,
    }
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
    Reply::error(ErrorKind::Unavailable, "claw-agent is shutting down")
}

async fn send(write: &mut (impl AsyncWrite + Unpin), reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    write.flush().await
}

#[cfg(test)]
mod tests;
