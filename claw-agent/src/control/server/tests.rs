//! The sockets' handlers against a scripted owner task and a real audit log.

use tokio::{
    io::{duplex, AsyncBufReadExt as _},
    sync::Semaphore,
};

use super::{
    agents::{serve_agent, AgentRequests},
    *,
};
use crate::{
    control::{peer::Peer, protocol::Counters},
    events::{audit, bus::Stage, event::tests::sample},
};

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
    let Reply::Error { message, .. } = other else {
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
    let Reply::Error { message, .. } = status else {
        panic!("{status:?}")
    };
    assert!(message.contains("only `event` requests"), "{message}");
}

#[tokio::test]
async fn garbage_gets_an_error_that_shows_the_fix() {
    let f = fixture(4, &[]);
    let replies = exchange("hello\n", f.handles, 1).await;
    let [Reply::Error { message, .. }] = replies.as_slice() else {
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
            coverage: crate::kernel::enforcer::Coverage::Full,
            landlock: false,
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
    let first: Reply = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
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
    let Reply::Error { message, .. } = &replies[1] else {
        panic!("{replies:?}")
    };
    assert!(message.contains("2026-11-22T10:00:00Z"), "{message}");
}
