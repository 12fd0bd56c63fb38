//! The control socket: accepts clients, answers their one request, streams events to followers.

use std::{future::Future, path::PathBuf};

use tokio::{
    io::{
        AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _,
        BufReader,
    },
    net::UnixListener,
    sync::{broadcast, mpsc, oneshot},
};

use crate::{
    describe::RuleLine,
    event::Event,
    protocol::{Reply, Request, Status, MAX_REQUEST_BYTES},
};

/// Questions for the task that owns the kernel objects.
#[derive(Debug)]
pub enum Control {
    Status(oneshot::Sender<Status>),
    /// The enforced policy's file and rule lines.
    Rules(oneshot::Sender<(String, Vec<RuleLine>)>),
    /// Re-resolve hostname rules whose answers have expired.
    Refresh,
    /// Stop the supervised processes (claw-agent is shutting down); answered when they are.
    Shutdown(oneshot::Sender<()>),
    /// Apply a policy file; the answer is (file, generation) or why it was rejected.
    Apply {
        policy: PathBuf,
        reply: oneshot::Sender<Result<(String, u64), String>>,
    },
}

/// What connections need from the rest of the daemon.
#[derive(Clone)]
pub struct Handles {
    pub events: broadcast::Sender<Event>,
    pub control: mpsc::Sender<Control>,
}

/// Serves `listener` until `shutdown` completes.
pub async fn run(listener: UnixListener, handles: Handles, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let handles = handles.clone();
                    tokio::spawn(async move {
                        let (read, write) = stream.into_split();
                        if let Err(err) = serve(read, write, handles).await {
                            tracing::debug!("client connection ended: {err}");
                        }
                    });
                }
                Err(err) => tracing::warn!("accept on the control socket failed: {err}"),
            },
        }
    }
}

async fn serve(
    read: impl AsyncRead + Unpin,
    mut write: impl AsyncWrite + Unpin,
    handles: Handles,
) -> std::io::Result<()> {
    let mut line = String::new();
    BufReader::new(read.take(MAX_REQUEST_BYTES))
        .read_line(&mut line)
        .await?;
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
        Request::Follow {} => {
            let mut events = handles.events.subscribe();
            send(&mut write, &Reply::Subscribed).await?;
            loop {
                let reply = match events.recv().await {
                    Ok(event) => Reply::Event { event },
                    Err(broadcast::error::RecvError::Lagged(count)) => Reply::Lost { count },
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                };
                send(&mut write, &reply).await?;
            }
        }
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
    use crate::protocol::Counters;

    fn handles() -> (Handles, mpsc::Receiver<Control>) {
        let (events, _) = broadcast::channel(4);
        let (control, requests) = mpsc::channel(1);
        (Handles { events, control }, requests)
    }

    async fn exchange(request: &str, handles: Handles) -> Vec<Reply> {
        let (client, server) = duplex(1 << 16);
        let (server_read, server_write) = tokio::io::split(server);
        let task = tokio::spawn(serve(server_read, server_write, handles));
        let (client_read, mut client_write) = tokio::io::split(client);
        client_write.write_all(request.as_bytes()).await.unwrap();
        let mut lines = BufReader::new(client_read).lines();
        let mut replies = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            replies.push(serde_json::from_str(&line).unwrap());
            if !matches!(
                replies.last(),
                Some(Reply::Subscribed | Reply::Event { .. })
            ) {
                break;
            }
        }
        task.abort();
        replies
    }

    #[tokio::test]
    async fn garbage_gets_an_error_that_shows_the_fix() {
        let (handles, _requests) = handles();
        let replies = exchange("hello\n", handles).await;
        let [Reply::Error { message }] = replies.as_slice() else {
            panic!("{replies:?}")
        };
        assert!(message.starts_with("bad request: "), "{message}");
        assert!(message.contains(r#"{"request":"status"}"#), "{message}");
    }

    #[tokio::test]
    async fn status_is_answered_by_the_owner_task() {
        let (handles, mut requests) = handles();
        tokio::spawn(async move {
            let Some(Control::Status(reply)) = requests.recv().await else {
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
        let replies = exchange("{\"request\":\"status\"}\n", handles).await;
        let [Reply::Status(status)] = replies.as_slice() else {
            panic!("{replies:?}")
        };
        assert!(status.enforcing);
    }

    #[tokio::test]
    async fn slow_follower_is_told_how_many_it_lost() {
        let (handles, _requests) = handles();
        let events = handles.events.clone();
        let (client, server) = duplex(1 << 16);
        let (server_read, server_write) = tokio::io::split(server);
        tokio::spawn(serve(server_read, server_write, handles));
        let (client_read, mut client_write) = tokio::io::split(client);
        client_write
            .write_all(b"{\"request\":\"follow\"}\n")
            .await
            .unwrap();
        let mut lines = BufReader::new(client_read).lines();
        let first: Reply =
            serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert_eq!(first, Reply::Subscribed);
        let event = |pid| Event {
            schema: 1,
            kind: "deny".to_owned(),
            time: "t".to_owned(),
            agent: "a".to_owned(),
            cgroup: "/c".to_owned(),
            pid,
            comm: "x".to_owned(),
            op: "open".to_owned(),
            path: Some("/p".to_owned()),
            destination: None,
            device: None,
            capability: None,
            access: Some("read".to_owned()),
            decision: "deny".to_owned(),
            coverage: "full".to_owned(),
            details: None,
        };
        // Capacity 4: six sends before the follower reads drop the two oldest for it.
        for pid in 0..6 {
            events.send(event(pid)).unwrap();
        }
        let mut replies = Vec::new();
        for _ in 0..5 {
            replies.push(
                serde_json::from_str::<Reply>(&lines.next_line().await.unwrap().unwrap()).unwrap(),
            );
        }
        assert_eq!(replies[0], Reply::Lost { count: 2 });
        let pids: Vec<u32> = replies[1..]
            .iter()
            .map(|r| match r {
                Reply::Event { event } => event.pid,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(pids, [2, 3, 4, 5]);
    }
}
