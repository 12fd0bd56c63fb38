//! Host tests of the binaries without a running daemon: claw-agent's refusal on this machine's
//! kernel (no BPF LSM), policy errors, and the control-socket protocol between the daemon's
//! server (in this process, over a scripted owner) and the real clawctl, exit codes included.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use claw_agent::{
    control::{
        protocol::{Counters, ProgramStatus, Status},
        server::{self, Control, Handles},
    },
    events::{
        bus::Bus,
        event::{Decision, Event, Kind},
    },
    kernel::enforcer::Coverage,
};
use tokio::sync::mpsc;

mod common;

fn claw_agent() -> PathBuf {
    common::sibling("claw-agent")
}

fn clawctl() -> PathBuf {
    common::sibling("clawctl")
}

fn policy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policies")
        .join(name)
}

/// This host's kernel refuses trampoline programs (lsm/*): claw-agent must say so and stop
/// before it creates anything. On a host that can run BPF LSM this test fails loudly, because
/// its premise (and the README's statement about these machines) no longer holds.
#[test]
fn claw_agent_refuses_without_bpf_lsm_and_creates_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let socket = scratch.path().join("claw.sock");
    let out = Command::new(claw_agent())
        .arg("--policy")
        .arg(policy("tools.yaml"))
        .arg("--socket")
        .arg(&socket)
        .arg("--cgroup-root")
        .arg(scratch.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "claw-agent started on this host: {stderr}"
    );
    assert!(
        stderr.contains("this kernel refuses BPF LSM programs: loading lsm/file_open failed")
            || stderr.contains("BPF LSM is not active"),
        "unclear refusal: {stderr}"
    );
    assert!(
        stderr.contains("will not run without it") || stderr.contains("lsm="),
        "{stderr}"
    );
    assert!(!socket.exists(), "a refused daemon opened its socket");
    assert!(
        !scratch.path().join("claw").exists(),
        "a refused daemon created cgroups"
    );
}

/// The preflight on this host: BPF LSM built and listed, but trampolines refused (EPERM), so
/// network rules only and exit code 1; Landlock found; nothing mounted, pinned or created. On a
/// host that can run BPF LSM this fails loudly, as the test above does.
#[test]
fn check_reports_this_hosts_coverage_and_changes_nothing() {
    // In a mount namespace of its own, so that what other tests mount meanwhile does not count.
    let scratch = tempfile::tempdir().unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"cat /proc/self/mountinfo > "$1/before"; "$2" --check --json; code=$?; cat /proc/self/mountinfo > "$1/after"; exit $code"#)
        .arg("sh")
        .arg(scratch.path())
        .arg(claw_agent())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // No BPF LSM here, but Landlock: files and exec fall back to it for what claw starts.
    assert_eq!(report["coverage"], "landlock", "{report}");
    assert_eq!(report["full"], false);
    let verdict = |name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {report}"))
            .clone()
    };
    let trampolines = verdict("BPF trampolines");
    assert_eq!(trampolines["verdict"], "fail", "{trampolines}");
    assert!(
        trampolines["detail"]
            .as_str()
            .unwrap()
            .contains("Operation not permitted"),
        "{trampolines}"
    );
    assert_eq!(verdict("BPF LSM built")["verdict"], "ok");
    assert_eq!(verdict("cgroup programs")["verdict"], "ok");
    let cgroup = verdict("cgroup v2");
    assert!(
        cgroup["detail"].as_str().unwrap().starts_with("hybrid"),
        "{cgroup}"
    );
    let landlock = verdict("Landlock");
    assert!(
        landlock["detail"].as_str().unwrap().starts_with("ABI "),
        "{landlock}"
    );
    let kinds = report["enforcement"].as_array().unwrap();
    let enforced = |rules: &str| {
        kinds
            .iter()
            .find(|k| k["rules"].as_str().unwrap().starts_with(rules))
            .unwrap()["enforced"]
            .clone()
    };
    assert_eq!(enforced("files"), true);
    assert_eq!(enforced("jit"), false);
    assert_eq!(enforced("connect"), true);
    let files = kinds
        .iter()
        .find(|k| k["rules"].as_str().unwrap().starts_with("files"))
        .unwrap();
    assert!(
        files["by"]
            .as_str()
            .unwrap()
            .contains("for the processes claw starts only"),
        "{files}"
    );
    let mounts = |name| std::fs::read_to_string(scratch.path().join(name)).unwrap();
    assert_eq!(
        mounts("before"),
        mounts("after"),
        "--check mounted something"
    );
}

#[test]
fn claw_agent_reports_policy_errors_with_position() {
    let scratch = tempfile::tempdir().unwrap();
    let bad = scratch.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "agents:\n  - name: tools\n    cgroup: claw/tools\n    files:\n      read: [usr/]\n",
    )
    .unwrap();
    let out = Command::new(claw_agent())
        .arg("--policy")
        .arg(&bad)
        .arg("--socket")
        .arg(scratch.path().join("claw.sock"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let position = format!("{}:5:14: ", bad.display());
    assert!(stderr.contains(&position), "want {position} in: {stderr}");
    assert!(stderr.contains("path `usr/` is relative"), "{stderr}");
}

fn sample_event(pid: u32) -> Event {
    Event {
        schema: 1,
        seq: 0,
        kind: Kind::Deny,
        time: "2026-11-22T10:00:00.000000000Z".to_owned(),
        agent: "tools".to_owned(),
        cgroup: "/claw/tools".to_owned(),
        call: None,
        pid,
        comm: "cat".to_owned(),
        record: Some(0),
        op: "open".to_owned(),
        path: Some("/etc/shadow".to_owned()),
        destination: None,
        device: None,
        capability: None,
        name: None,
        access: Some("read".to_owned()),
        object_key: None,
        decision: Decision::Deny,
        reason: None,
        coverage: Some(Coverage::Full),
        details: None,
    }
}

/// The daemon's server on a temporary socket, answering status as an enforcing daemon would.
struct Server {
    socket: PathBuf,
    bus: Arc<Bus>,
    _dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
}

fn start_server(enforcing: bool) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("claw.sock");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bus = Arc::new(Bus::new(0));
    let (control, mut requests) = mpsc::channel(4);
    let listeners = runtime
        .block_on(async {
            Ok::<_, std::io::Error>(server::Listeners {
                control: tokio::net::UnixListener::bind(&socket)?,
                agents: tokio::net::UnixListener::bind(dir.path().join("agent.sock"))?,
            })
        })
        .unwrap();
    runtime.spawn(async move {
        while let Some(Control::Status(reply)) = requests.recv().await {
            let _ = reply.send(Status {
                enforcing,
                coverage: Coverage::Full,
                landlock: false,
                generation: 1,
                policy: "policies/tools.yaml".to_owned(),
                cgroup_root: "/sys/fs/cgroup".to_owned(),
                agents: vec![],
                programs: vec![ProgramStatus {
                    program: "file_open".to_owned(),
                    hook: "lsm/file_open".to_owned(),
                    attached: enforcing,
                    id: Some(7),
                    enforces: "files.read".to_owned(),
                    run_count: 0,
                }],
                counters: Counters::default(),
            });
        }
    });
    let handles = Handles {
        bus: bus.clone(),
        control,
        audit_log: dir.path().join("audit.log"),
        agents: Default::default(),
    };
    runtime.spawn(server::run(listeners, handles, std::future::pending()));
    Server {
        socket,
        bus,
        _dir: dir,
        runtime,
    }
}

fn clawctl_status(socket: &Path) -> std::process::Output {
    Command::new(clawctl())
        .arg("--socket")
        .arg(socket)
        .arg("status")
        .output()
        .unwrap()
}

#[test]
fn clawctl_status_exit_code_follows_enforcement() {
    let server = start_server(true);
    let out = clawctl_status(&server.socket);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("enforcing"));

    let server = start_server(false);
    let out = clawctl_status(&server.socket);
    assert_eq!(out.status.code(), Some(3), "not enforcing exits 3: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("policy not enforced: not attached: lsm/file_open"),
        "{stderr}"
    );
}

#[test]
fn clawctl_status_without_daemon_says_how_to_start_it() {
    let out = clawctl_status(Path::new("/nonexistent/claw.sock"));
    assert_eq!(out.status.code(), Some(3), "unreachable exits 3: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach claw-agent at /nonexistent/claw.sock"),
        "{stderr}"
    );
}

#[test]
fn deny_log_follow_json_prints_each_event_with_the_documented_keys() {
    let server = start_server(true);
    let mut follower = Command::new(clawctl())
        .arg("--socket")
        .arg(&server.socket)
        .args(["deny-log", "--follow", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut notices = BufReader::new(follower.stderr.take().unwrap());
    let mut notice = String::new();
    notices.read_line(&mut notice).unwrap();
    assert!(notice.contains("following denials"), "{notice}");

    for pid in [10, 11] {
        server.bus.publish(sample_event(pid));
    }
    // As the audit log writer would: followers are sent what the log holds.
    server.bus.mark_written(2);
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    for pid in [10, 11] {
        let line = lines.next().unwrap().unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        for key in [
            "time", "agent", "cgroup", "pid", "comm", "op", "path", "decision",
        ] {
            assert!(value.get(key).is_some(), "missing {key}: {line}");
        }
        assert_eq!(value["pid"], pid);
        assert_eq!(value["path"], "/etc/shadow");
    }
    follower.kill().unwrap();
    follower.wait().unwrap();
    server.runtime.shutdown_timeout(Duration::from_secs(1));
}

#[test]
fn deny_log_requires_follow() {
    let out = Command::new(clawctl()).arg("deny-log").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--follow"));
}

#[test]
fn clawctl_policy_check_accepts_the_shipped_policies() {
    for name in ["openclaw.yaml", "tools.yaml"] {
        let out = Command::new(clawctl())
            .args(["policy", "check"])
            .arg(policy(name))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("valid — it would enforce"), "{stdout}");
        assert!(stdout.contains("agent tools"), "{stdout}");
    }
}

#[test]
fn clawctl_policy_check_reports_errors_with_position_and_exit_1() {
    let scratch = tempfile::tempdir().unwrap();
    let bad = scratch.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "agents:\n  - name: tools\n    cgroup: claw/tools\n    connect: [10.0.0.1]\n",
    )
    .unwrap();
    let out = Command::new(clawctl())
        .args(["policy", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let position = format!("{}:4:15: ", bad.display());
    assert!(stderr.contains(&position), "want {position} in: {stderr}");
    assert!(stderr.contains("has no port"), "{stderr}");
}

#[test]
fn deny_log_narrows_to_agents_and_operations() {
    let server = start_server(true);
    let mut follower = Command::new(clawctl())
        .arg("--socket")
        .arg(&server.socket)
        .args([
            "deny-log", "--follow", "--json", "--agent", "tools", "--op", "connect",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut notice = String::new();
    BufReader::new(follower.stderr.take().unwrap())
        .read_line(&mut notice)
        .unwrap();
    assert!(notice.contains("following denials"), "{notice}");
    let mut other_agent = sample_event(1);
    other_agent.agent = "inference".to_owned();
    other_agent.op = "connect".to_owned();
    let open = sample_event(2);
    let mut wanted = sample_event(3);
    wanted.op = "connect".to_owned();
    for event in [other_agent, open, wanted] {
        server.bus.publish(event);
    }
    server.bus.mark_written(3);
    let line = BufReader::new(follower.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["pid"], 3, "only tools' connects pass: {line}");
    follower.kill().unwrap();
    follower.wait().unwrap();
    server.runtime.shutdown_timeout(Duration::from_secs(1));
}
