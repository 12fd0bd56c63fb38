//! Network rules on this host, whose kernel has no BPF LSM: `claw-agent --degraded` enforces them
//! with cgroup sock_addr programs on a cgroup this test creates (and removes, also on failure).

use std::{
    io::{BufRead as _, BufReader},
    net::{TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use claw_tests::harness::in_cgroup;

const PROBE: &str = env!("CARGO_BIN_EXE_claw-vmtest");
const EPERM: i32 = 1;

/// claw-agent and clawctl, built beside the probe by `cargo test` of the workspace.
fn sibling(name: &str) -> PathBuf {
    let path = Path::new(PROBE).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: run the workspace's tests (`cargo test`), which build claw-agent's binaries",
        path.display()
    );
    path
}

/// The test's own cgroups and daemon, removed and stopped whatever happens.
struct Fixture {
    base: PathBuf,
    agent: PathBuf,
    socket: PathBuf,
    daemon: Option<Child>,
    dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
            let _ = daemon.wait();
        }
        let _ = std::fs::remove_dir(&self.agent);
        let _ = std::fs::remove_dir(&self.base);
    }
}

fn probe(args: &[&str], cgroup: Option<&Path>) -> i32 {
    let mut command = Command::new(PROBE);
    command.arg("probe").args(args).stderr(Stdio::null());
    let (mut command, _procs) = match cgroup {
        Some(cgroup) => {
            let (command, procs) = in_cgroup(command, cgroup).unwrap();
            (command, Some(procs))
        }
        None => (command, None),
    };
    command.status().unwrap().code().expect("probe exit code")
}

fn clawctl(socket: &Path, args: &[&str]) -> std::process::Output {
    Command::new(sibling("clawctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn degraded_mode_enforces_network_rules_on_this_host() {
    let root = claw_agent::cgroupfs::find_cgroup2_root().expect("a cgroup v2 mount");
    let relative = format!("claw-host-test-{}", std::process::id());
    let mut fixture = Fixture {
        base: root.join(&relative),
        agent: root.join(&relative).join("net"),
        socket: PathBuf::new(),
        daemon: None,
        dir: tempfile::tempdir().unwrap(),
    };
    fixture.socket = fixture.dir.path().join("claw.sock");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let allowed_tcp = listener.local_addr().unwrap().port();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let allowed_udp = udp.local_addr().unwrap().port();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let denied_port = other.local_addr().unwrap().port();

    let policy = fixture.dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "agents:\n  - name: net\n    cgroup: {relative}/net\n    connect:\n      - 127.0.0.1:{allowed_tcp}/tcp\n      - 127.0.0.1:{allowed_udp}/udp\n"
        ),
    )
    .unwrap();
    fixture.daemon = Some(
        Command::new(sibling("claw-agent"))
            .arg("--degraded")
            .arg("--policy")
            .arg(&policy)
            .arg("--socket")
            .arg(&fixture.socket)
            .arg("--cgroup-root")
            .arg(&root)
            .arg("--audit-log")
            .arg(fixture.dir.path().join("audit.log"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !clawctl(&fixture.socket, &["status"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "claw-agent --degraded did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status: serde_json::Value =
        serde_json::from_slice(&clawctl(&fixture.socket, &["status", "--json"]).stdout).unwrap();
    assert_eq!(status["coverage"], "degraded", "{status}");
    let human = String::from_utf8_lossy(&clawctl(&fixture.socket, &["status"]).stdout).into_owned();
    assert!(
        human.contains("file and exec rules NOT enforced"),
        "{human}"
    );

    // File and exec rules are not enforced, but what breaks them is reported, marked degraded.
    let mut follower = Command::new(sibling("clawctl"))
        .arg("--socket")
        .arg(&fixture.socket)
        .args(["deny-log", "--follow", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut notice = String::new();
    BufReader::new(follower.stderr.take().unwrap())
        .read_line(&mut notice)
        .unwrap();
    assert!(notice.contains("following denials"), "{notice}");
    let agent = fixture.agent.clone();
    assert_eq!(
        probe(&["open", "/etc/hostname"], Some(&agent)),
        0,
        "degraded mode refused an open"
    );
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    let (mut exec_seen, mut open_seen) = (false, false);
    while !(exec_seen && open_seen) {
        let line = lines.next().expect("a degraded-mode report").unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(event["coverage"], "degraded", "{line}");
        assert_eq!(event["kind"], "audit", "{line}");
        assert_eq!(event["decision"], "allow", "{line}");
        exec_seen |= event["op"] == "exec" && event["path"] == PROBE;
        open_seen |= event["op"] == "open" && event["path"] == "/etc/hostname";
    }
    follower.kill().unwrap();
    follower.wait().unwrap();

    let agent = fixture.agent.clone();
    let inside = Some(agent.as_path());
    let allowed = format!("127.0.0.1:{allowed_tcp}");
    let denied = format!("127.0.0.1:{denied_port}");
    let denied_mapped = format!("[::ffff:127.0.0.1]:{denied_port}");
    assert_eq!(probe(&["connect", &allowed], inside), 0, "allowed connect");
    assert_eq!(
        probe(&["connect", &denied], inside),
        EPERM,
        "denied connect"
    );
    assert_eq!(
        probe(&["connect", &denied_mapped], inside),
        EPERM,
        "IPv4-mapped IPv6"
    );
    assert_eq!(probe(&["connect", &denied], None), 0, "outside the agent");
    let allowed_datagram = format!("127.0.0.1:{allowed_udp}");
    assert_eq!(
        probe(&["sendto", &allowed_datagram], inside),
        0,
        "allowed UDP"
    );
    assert_eq!(probe(&["sendto", &denied], inside), EPERM, "UDP elsewhere");
    assert_eq!(
        probe(&["sendto", &denied], None),
        0,
        "UDP outside the agent"
    );

    // Stopping the daemon removes its programs: nothing of claw stays on this host.
    let mut daemon = fixture.daemon.take().unwrap();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert!(daemon.wait().unwrap().success());
    assert_eq!(
        probe(&["connect", &denied], inside),
        0,
        "enforcement outlived the daemon"
    );
}

/// This host's cgroup v2 tree has no memory controller (hybrid mode): a memory limit cannot be
/// enforced, so claw-agent refuses the policy — or, when told, runs and reports it unenforced.
#[test]
fn limits_the_hierarchy_cannot_enforce_are_refused_or_reported() {
    let root = claw_agent::cgroupfs::find_cgroup2_root().expect("a cgroup v2 mount");
    let available = claw_agent::limits::available_controllers(&root).unwrap();
    assert!(
        !available.iter().any(|c| c == "memory"),
        "this test's premise (no memory controller in the cgroup v2 tree) does not hold here: {available:?}"
    );
    let relative = format!("claw-host-limits-{}", std::process::id());
    let mut fixture = Fixture {
        base: root.join(&relative),
        agent: root.join(&relative).join("big"),
        socket: PathBuf::new(),
        daemon: None,
        dir: tempfile::tempdir().unwrap(),
    };
    fixture.socket = fixture.dir.path().join("claw.sock");
    let policy = fixture.dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!("agents:\n  - name: big\n    cgroup: {relative}/big\n    limits: {{ memory_max: 64M }}\n"),
    )
    .unwrap();
    let agent = |extra: &[&str]| {
        let mut command = Command::new(sibling("claw-agent"));
        command
            .args(["--degraded", "--policy"])
            .arg(&policy)
            .arg("--socket")
            .arg(&fixture.socket)
            .arg("--cgroup-root")
            .arg(&root)
            .arg("--audit-log")
            .arg(fixture.dir.path().join("audit.log"))
            .args(extra);
        command
    };
    let refused = agent(&[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "claw-agent ran an agent with an unenforceable limit"
    );
    assert!(
        stderr.contains("agent `big`: memory_max cannot be enforced")
            && stderr.contains("no `memory` controller")
            && stderr.contains("--allow-missing-limits"),
        "{stderr}"
    );
    assert!(
        !fixture.agent.exists(),
        "a refused policy created the cgroup"
    );

    fixture.daemon = Some(
        agent(&["--allow-missing-limits"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !clawctl(&fixture.socket, &["status"]).status.success() {
        assert!(Instant::now() < deadline, "claw-agent did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let agents: serde_json::Value =
        serde_json::from_slice(&clawctl(&fixture.socket, &["agents", "--json"]).stdout).unwrap();
    let limit = &agents[0]["limits"][0];
    assert_eq!(limit["name"], "memory_max", "{agents}");
    assert_eq!(limit["enforced"], false, "{agents}");
    let human = String::from_utf8_lossy(&clawctl(&fixture.socket, &["agents"]).stdout).into_owned();
    assert!(
        human.contains("memory_max 67108864 (NOT ENFORCED"),
        "{human}"
    );
}
