//! The event pipeline on this host, driven by connect denials (the cgroup network programs load
//! here): repeats throttled in the kernel and counted exactly, one agent's storm not crowding out
//! another's events, followers resuming across a daemon restart and looking back.

mod common;

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader},
    process::Child,
    sync::mpsc,
    time::{Duration, Instant},
};

use claw_tests::harness::audit_accounts;
use common::{probe, probe_output, Host, EPERM};
use serde_json::Value;

/// Lines of a clawctl child's stdout, parsed, as they arrive.
fn json_lines(child: &mut Child) -> mpsc::Receiver<Value> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
            if tx.send(value).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for clawctl's "following ..." notice on stderr, then keeps reading its notices (a
/// closed stderr would end it with SIGPIPE at its next one).
fn subscribed(child: &mut Child) {
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut notice = String::new();
    stderr.read_line(&mut notice).unwrap();
    assert!(notice.contains("following"), "{notice}");
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
}

/// Each agent's decisions as the events account for them: deny events, plus repeats summarised
/// as throttled, plus reports lost.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Accounted {
    denied: u64,
    throttled: u64,
    lost: u64,
}

impl Accounted {
    fn total(&self) -> u64 {
        self.denied + self.throttled + self.lost
    }
}

fn count(event: &Value, key: &str) -> u64 {
    event["details"][key].as_u64().unwrap_or(0)
}

/// Reads events until `done` says the accounts are complete or `timeout` passes.
fn account(
    events: &mpsc::Receiver<Value>,
    timeout: Duration,
    seen: &mut Vec<Value>,
    done: impl Fn(&HashMap<String, Accounted>) -> bool,
) -> HashMap<String, Accounted> {
    let mut accounts: HashMap<String, Accounted> = HashMap::new();
    for event in seen.iter() {
        add(&mut accounts, event);
    }
    let deadline = Instant::now() + timeout;
    while !done(&accounts) {
        let Ok(event) = events.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        else {
            break;
        };
        add(&mut accounts, &event);
        seen.push(event);
    }
    accounts
}

fn add(accounts: &mut HashMap<String, Accounted>, event: &Value) {
    let Some(agent) = event["agent"].as_str() else {
        return;
    };
    let account = accounts.entry(agent.to_owned()).or_default();
    match event["kind"].as_str() {
        Some("deny") => account.denied += 1,
        Some("throttled") => account.throttled += count(event, "suppressed"),
        Some("lost") => account.lost += count(event, "lost"),
        _ => {}
    }
}

fn storm(args: &[&str], cgroup: &std::path::Path) -> u64 {
    let (code, out) = probe_output(args, Some(cgroup));
    assert_eq!(code, 0, "probe {args:?}: {out}");
    let denied = out
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("probe printed {out}"));
    assert!(out.ends_with("other 0\n"), "{out}");
    denied
}

#[test]
fn repeats_are_throttled_in_the_kernel_and_counted_exactly() {
    let mut host = Host::new("throttle");
    let (relative, noisy) = host.agent("noisy");
    let policy = host.policy(&format!(
        "agents:\n  - name: noisy\n    cgroup: {relative}\n"
    ));
    host.start(&policy, &[]);
    let mut follower = host.clawctl_child(&["events", "--follow", "--json", "--agent", "noisy"]);
    subscribed(&mut follower);
    let events = json_lines(&mut follower);

    let attempts = storm(
        &["connect-storm", "127.0.0.1:9", "1", "20000", "60"],
        &noisy,
    );
    assert_eq!(attempts, 20000);
    let mut seen = Vec::new();
    let accounts = account(&events, Duration::from_secs(20), &mut seen, |a| {
        a.get("noisy").map_or(0, Accounted::total) >= attempts
    });
    let noisy_account = accounts.get("noisy").copied().unwrap_or_default();
    assert_eq!(
        noisy_account.total(),
        attempts,
        "every denial is an event or part of a count: {noisy_account:?}"
    );
    assert!(
        noisy_account.denied < attempts / 10,
        "identical denials were not throttled: {noisy_account:?}"
    );
    let summary = seen
        .iter()
        .find(|e| e["kind"] == "throttled")
        .expect("a throttled summary");
    assert_eq!(summary["destination"], "127.0.0.1:9/tcp", "{summary}");
    assert_eq!(summary["op"], "connect", "{summary}");
    assert_eq!(summary["details"]["reason"], "identical", "{summary}");

    // The human form says how many more, of what.
    let mut human = host.clawctl_child(&[
        "deny-log", "--follow", "--agent", "noisy", "--op", "connect",
    ]);
    subscribed(&mut human);
    let lines = json_lines(&mut human);
    storm(&["connect-storm", "127.0.0.1:9", "1", "2000", "60"], &noisy);
    let line = (0..100)
        .filter_map(|_| lines.recv_timeout(Duration::from_secs(5)).ok())
        .find_map(|l| {
            l.as_str()
                .filter(|l| l.contains("THROTTLED"))
                .map(str::to_owned)
        })
        .expect("a THROTTLED line");
    assert!(
        line.contains("more identical connect 127.0.0.1:9/tcp (deny) in the last second"),
        "{line}"
    );
    human.kill().unwrap();
    human.wait().unwrap();
    follower.kill().unwrap();
    follower.wait().unwrap();
}

#[test]
fn a_storming_agent_does_not_crowd_out_another() {
    let mut host = Host::new("storm");
    let (storm_relative, storm_cgroup) = host.agent("storm");
    let (quiet_relative, quiet_cgroup) = host.agent("quiet");
    let policy = host.policy(&format!(
        "agents:\n  - name: storm\n    cgroup: {storm_relative}\n  - name: quiet\n    cgroup: {quiet_relative}\n"
    ));
    host.start(&policy, &[]);
    let mut follower = host.clawctl_child(&["events", "--follow", "--json"]);
    subscribed(&mut follower);
    let events = json_lines(&mut follower);

    // Distinct ports: no two denials identical, so only the agent's budget holds the storm.
    let storming = {
        let cgroup = storm_cgroup.clone();
        std::thread::spawn(move || {
            storm(
                &[
                    "connect-storm",
                    "127.0.0.1:20000",
                    "30000",
                    "100000000",
                    "6",
                ],
                &cgroup,
            )
        })
    };
    for _ in 0..5 {
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(
            probe(&["connect", "127.0.0.1:9"], Some(&quiet_cgroup)),
            EPERM
        );
    }
    let stormed = storming.join().unwrap();
    assert!(stormed > 1000, "the storm made only {stormed} denials");
    let mut seen = Vec::new();
    let accounts = account(&events, Duration::from_secs(20), &mut seen, |a| {
        a.get("storm").map_or(0, Accounted::total) >= stormed
            && a.get("quiet").is_some_and(|q| q.denied >= 5)
    });
    let quiet = accounts.get("quiet").copied().unwrap_or_default();
    assert_eq!(
        quiet,
        Accounted {
            denied: 5,
            throttled: 0,
            lost: 0
        },
        "every one of the quiet agent's denials arrives"
    );
    let storm_account = accounts.get("storm").copied().unwrap_or_default();
    assert_eq!(storm_account.total(), stormed, "{storm_account:?}");
    let budget_summaries = seen
        .iter()
        .filter(|e| e["kind"] == "throttled" && e["details"]["reason"] == "agent-budget")
        .count();
    assert!(budget_summaries > 0, "the storm never hit its budget");
    follower.kill().unwrap();
    follower.wait().unwrap();
}

#[test]
fn followers_resume_across_a_daemon_restart_and_look_back() {
    let mut host = Host::new("resume");
    let (relative, agent) = host.agent("a");
    let policy = host.policy(&format!("agents:\n  - name: a\n    cgroup: {relative}\n"));
    host.start(&policy, &[]);
    let mut follower = host.clawctl_child(&["events", "--follow", "--json"]);
    subscribed(&mut follower);
    let events = json_lines(&mut follower);
    let until = |destination: &str| {
        let mut received = Vec::new();
        while !received
            .last()
            .is_some_and(|e: &Value| e["destination"] == destination)
        {
            received.push(
                events
                    .recv_timeout(Duration::from_secs(15))
                    .unwrap_or_else(|_| panic!("no {destination} after {received:?}")),
            );
        }
        received
    };
    assert_eq!(probe(&["connect", "127.0.0.1:9"], Some(&agent)), EPERM);
    let mut received = until("127.0.0.1:9/tcp");

    assert!(host.stop().success());
    host.start(&policy, &[]);
    assert_eq!(probe(&["connect", "127.0.0.1:10"], Some(&agent)), EPERM);
    received.extend(until("127.0.0.1:10/tcp"));
    let numbers: Vec<u64> = received.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(numbers.len(), received.len());
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "numbering continues without a gap across the restart: {numbers:?}"
    );

    // Applies, accepted or rejected, are events too.
    let applied = host.clawctl(&["policy", "apply", policy.to_str().unwrap()]);
    assert!(applied.status.success(), "{applied:?}");
    let broken = host.dir.path().join("broken.yaml");
    std::fs::write(&broken, "agents: [").unwrap();
    assert!(!host
        .clawctl(&["policy", "apply", broken.to_str().unwrap()])
        .status
        .success());
    let policy_events: Vec<Value> = (0..2)
        .map(|_| loop {
            let event = events.recv_timeout(Duration::from_secs(15)).unwrap();
            if event["kind"] == "policy" {
                break event;
            }
        })
        .collect();
    assert_eq!(policy_events[0]["decision"], "applied", "{policy_events:?}");
    assert_eq!(policy_events[0]["details"]["generation"], 2);
    assert_eq!(
        policy_events[1]["decision"], "rejected",
        "{policy_events:?}"
    );
    assert!(
        policy_events[1]["details"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("broken.yaml:")),
        "{policy_events:?}"
    );
    follower.kill().unwrap();
    follower.wait().unwrap();

    // A new follower looks back through the audit log, then follows.
    let mut late = host.clawctl_child(&[
        "deny-log", "--follow", "--json", "--op", "connect", "--since", "1h",
    ]);
    subscribed(&mut late);
    let replayed = json_lines(&mut late);
    let destinations: Vec<Value> = (0..2)
        .map(|_| replayed.recv_timeout(Duration::from_secs(10)).unwrap()["destination"].clone())
        .collect();
    assert_eq!(destinations, ["127.0.0.1:9/tcp", "127.0.0.1:10/tcp"]);
    late.kill().unwrap();
    late.wait().unwrap();
    let verify = std::process::Command::new(common::sibling("clawctl"))
        .args(["audit", "verify"])
        .arg(&host.audit_log)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
fn a_full_ring_buffer_loses_nothing_uncounted() {
    let mut host = Host::new("overflow");
    let (relative, flood) = host.agent("flood");
    let policy = host.policy(&format!(
        "agents:\n  - name: flood\n    cgroup: {relative}\n"
    ));
    // No throttling and the smallest ring buffer: a storm of distinct denials overflows it.
    host.start(
        &policy,
        &[
            "--identical-events-per-second",
            "0",
            "--agent-events-per-second",
            "0",
            "--ring-buffer-mib",
            "1",
        ],
    );
    let denied = storm(
        &[
            "connect-storm",
            "127.0.0.1:20000",
            "30000",
            "100000000",
            "3",
        ],
        &flood,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut recorded, mut lost) = audit_accounts(&host.audit_log, "flood");
    while recorded + lost < denied && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        (recorded, lost) = audit_accounts(&host.audit_log, "flood");
    }
    assert_eq!(
        recorded + lost,
        denied,
        "the audit log accounts for every denial: {recorded} recorded + {lost} counted lost"
    );
    assert!(
        lost > 0,
        "{denied} denials did not overflow a 1 MiB ring buffer: the test proves nothing"
    );
}

#[test]
fn denials_while_no_daemon_runs_are_delivered_by_the_next() {
    let mut host = Host::new("down");
    let (relative, agent) = host.agent("a");
    let policy = host.policy(&format!("agents:\n  - name: a\n    cgroup: {relative}\n"));
    host.start(&policy, &[]);
    let mut follower = host.clawctl_child(&["deny-log", "--follow", "--json", "--op", "connect"]);
    subscribed(&mut follower);
    let events = json_lines(&mut follower);
    assert_eq!(probe(&["connect", "127.0.0.1:10"], Some(&agent)), EPERM);
    let before = events.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(before["destination"], "127.0.0.1:10/tcp", "{before}");
    host.signal_and_wait(libc::SIGKILL);
    assert_eq!(probe(&["connect", "127.0.0.1:11"], Some(&agent)), EPERM);
    host.start(&policy, &[]);
    let event = events
        .recv_timeout(Duration::from_secs(20))
        .expect("the denial made while no daemon ran");
    assert_eq!(event["destination"], "127.0.0.1:11/tcp", "{event}");
    assert_eq!(event["agent"], "a", "{event}");
    follower.kill().unwrap();
    follower.wait().unwrap();
}

#[test]
fn sigkill_during_a_deny_storm_loses_nothing_uncounted() {
    let mut host = Host::new("killstorm");
    let (relative, agent) = host.agent("storm");
    let policy = host.policy(&format!(
        "agents:\n  - name: storm\n    cgroup: {relative}\n"
    ));
    let unthrottled = [
        "--identical-events-per-second",
        "0",
        "--agent-events-per-second",
        "0",
    ];
    host.start(&policy, &unthrottled);
    let storm_cgroup = agent.clone();
    let storm = std::thread::spawn(move || storm_for_three_seconds(&storm_cgroup));
    // Kill claw-agent once the storm is well under way (and it has summed up the kernel's
    // counts at least once): records are then in flight between the ring buffer and the
    // audit log.
    let storm_started = Instant::now();
    let deadline = storm_started + Duration::from_secs(30);
    while audit_accounts(&host.audit_log, "storm").0 < 2_000
        || storm_started.elapsed() < Duration::from_millis(1500)
    {
        assert!(
            Instant::now() < deadline,
            "the storm's denials never reached the audit log"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    host.signal_and_wait(libc::SIGKILL);
    let (logged_by_the_killed, _) = audit_accounts(&host.audit_log, "storm");
    let denied = storm.join().unwrap();
    assert!(
        denied > logged_by_the_killed,
        "the storm ended before claw-agent was killed: the test proves nothing"
    );
    host.start(&policy, &unthrottled);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut recorded, mut lost) = audit_accounts(&host.audit_log, "storm");
    while recorded + lost < denied && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        (recorded, lost) = audit_accounts(&host.audit_log, "storm");
    }
    // Settle: a count arriving late would show as more than the denials.
    std::thread::sleep(Duration::from_millis(1500));
    (recorded, lost) = audit_accounts(&host.audit_log, "storm");
    assert_eq!(
        recorded + lost,
        denied,
        "{denied} denials: {recorded} logged ({logged_by_the_killed} by the killed claw-agent) + {lost} counted lost"
    );
}

/// Distinct denied connects for 3 s, as fast as they go; how many were denied.
fn storm_for_three_seconds(cgroup: &std::path::Path) -> u64 {
    storm(
        &[
            "connect-storm",
            "127.0.0.1:20000",
            "30000",
            "100000000",
            "3",
        ],
        cgroup,
    )
}
