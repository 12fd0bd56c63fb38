//! `call`: a tool call's connection. The owner makes the call's cgroup and answers
//! `call-started`; the client runs its command there and sends `call-end`. The call ends, and
//! its processes are killed, when the client says so or its connection closes.

use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncWrite};

use super::{ask, send, shutting_down, CallStart, Control, Handles};
use crate::{
    control::protocol::{ErrorKind, Reply, Request},
    policy::call::Narrowing,
};

/// What the `call` request asked for.
pub(super) struct Started {
    pub agent: String,
    pub call: String,
    pub narrowing: Narrowing,
    pub command: Vec<String>,
    /// The client starts the command under the Landlock layer it is answered with.
    pub applies_landlock: bool,
}

pub(super) async fn call(
    handles: &Handles,
    reader: &mut (impl AsyncBufRead + Unpin),
    write: &mut (impl AsyncWrite + Unpin),
    started: Started,
) -> std::io::Result<()> {
    let Started {
        agent,
        call,
        narrowing,
        command,
        applies_landlock,
    } = started;
    let started = ask(handles, |reply| Control::StartCall {
        agent,
        call: call.clone(),
        narrowing,
        command,
        reply,
    })
    .await;
    let cgroup_id = match started {
        Some(Ok(CallStart {
            cgroup_id,
            landlock: Some(_),
            ..
        })) if !applies_landlock => {
            // An older client would run the command without the Landlock layer: never that.
            let _ = ask(handles, |reply| Control::EndCall {
                cgroup_id,
                status: None,
                reply,
            })
            .await;
            let message = "this clawctl does not apply claw's Landlock layer, which this claw-agent runs with — use the clawctl of claw-agent's release";
            return send(write, &Reply::error(ErrorKind::Refused, message)).await;
        }
        Some(Ok(CallStart {
            cgroup,
            cgroup_id,
            landlock,
        })) => {
            let reply = Reply::CallStarted {
                cgroup,
                cgroup_id,
                landlock,
            };
            let sent = send(write, &reply).await;
            if sent.is_err() {
                // The client went before it could run anything: the call ends now.
                let _ = ask(handles, |reply| Control::EndCall {
                    cgroup_id,
                    status: None,
                    reply,
                })
                .await;
                return sent;
            }
            cgroup_id
        }
        Some(Err(failure)) => return send(write, &failure.into()).await,
        None => return send(write, &shutting_down()).await,
    };
    // The call lasts until the client says it ended or goes away (killed with its command, or
    // the command with it): either way the call ends here.
    let mut line = String::new();
    let status = match reader.read_line(&mut line).await {
        Ok(read) if read > 0 => match serde_json::from_str::<Request>(&line) {
            Ok(Request::CallEnd { status }) => Some(status),
            _ => None,
        },
        _ => None,
    };
    let _ = ask(handles, |reply| Control::EndCall {
        cgroup_id,
        status,
        reply,
    })
    .await;
    send(write, &Reply::CallEnded { call }).await
}

/// The Landlock layer a command run in `agent` (not as a tool call) must start under.
pub(super) async fn landlock(
    handles: &Handles,
    write: &mut (impl AsyncWrite + Unpin),
    agent: String,
) -> std::io::Result<()> {
    match ask(handles, |reply| Control::Landlock { agent, reply }).await {
        Some(Ok(landlock)) => send(write, &Reply::Landlock { landlock }).await,
        Some(Err(failure)) => send(write, &failure.into()).await,
        None => send(write, &shutting_down()).await,
    }
}

pub(super) async fn call_end_outside_a_call(
    write: &mut (impl AsyncWrite + Unpin),
) -> std::io::Result<()> {
    let message = "call-end outside a call — send it on the connection that sent `call`, after `call-started`".to_owned();
    send(write, &Reply::error(ErrorKind::BadRequest, message)).await
}
