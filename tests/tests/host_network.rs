//! Network rules on this host, whose kernel has no BPF LSM: `claw-agent --degraded` enforces them
//! with cgroup sock_addr programs on a cgroup this test creates (and removes, also on failure).

mod common;

use std::{
    io::{BufRead as _, BufReader},
    net::{TcpListener, UdpSocket},
    os::unix::process::ExitStatusExt as _,
};

use common::{probe, Host, EPERM, PROBE};

#[test]
fn degraded_mode_enforces_network_rules_on_this_host() {
    let mut host = Host::new("host-test");
    let (relative, agent) = host.agent("net");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let allowed_tcp = listener.local_addr().unwrap().port();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let allowed_udp = udp.local_addr().unwrap().port();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let denied_port = other.local_addr().unwrap().port();
    // A port nothing listens on, for the agent's listen rule.
    let serve_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let policy = host.policy(&format!(
        "agents:\n  - name: net\n    cgroup: {relative}\n    connect:\n      - 127.0.0.1:{allowed_tcp}/tcp\n      - 127.0.0.1:{allowed_udp}/udp\n    listen: [127.0.0.1:{serve_port}/tcp]\n"
    ));
    host.start(&policy, &[]);
    let status: serde_json::Value =
        serde_json::from_slice(&host.clawctl(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["coverage"], "degraded", "{status}");
    let human = String::from_utf8_lossy(&host.clawctl(&["status"]).stdout).into_owned();
    assert!(
        human.contains("file and exec rules NOT enforced"),
        "{human}"
    );

    // Root inside an agent cannot use the control socket (no LSM here: SO_PEERCRED alone).
    let (mut inside_clawctl, _procs) = claw_tests::harness::in_cgroup(
        {
            let mut command = std::process::Command::new(common::sibling("clawctl"));
            command.arg("--socket").arg(&host.socket).arg("status");
            command
        },
        &agent,
    )
    .unwrap();
    let refused = inside_clawctl.output().unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("serves no process inside an agent"), "{said}");

    // File and exec rules are not enforced, but what breaks them is reported, marked degraded.
    let mut follower = host.clawctl_child(&["deny-log", "--follow", "--json"]);
    let mut notice = String::new();
    BufReader::new(follower.stderr.take().unwrap())
        .read_line(&mut notice)
        .unwrap();
    assert!(notice.contains("following denials"), "{notice}");
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

    // Binding a port: cgroup/bind4 and bind6 decide here. Listening on a port bound as 0 needs
    // lsm/socket_listen, which this kernel cannot run: not enforced (status says so).
    let serve = format!("127.0.0.1:{serve_port}");
    let serve_wider = format!("0.0.0.0:{serve_port}");
    let serve_v6 = format!("[::]:{serve_port}");
    assert_eq!(probe(&["listen", &serve], inside), 0, "a declared listener");
    assert_eq!(probe(&["listen", &serve_wider], inside), EPERM, "0.0.0.0");
    assert_eq!(probe(&["listen", &serve_v6], inside), EPERM, "[::]");
    assert_eq!(probe(&["udp-bind", &serve], inside), EPERM, "UDP there");
    assert_eq!(probe(&["udp-bind", "127.0.0.1:0"], inside), 0, "port 0");
    assert_eq!(
        probe(&["listen", &serve_wider], None),
        0,
        "outside the agent"
    );

    // Fail-closed: a stopped daemon, or a killed one, leaves enforcement exactly as it was.
    assert!(host.stop().success());
    assert_eq!(
        probe(&["connect", &denied], inside),
        EPERM,
        "enforcement ended with the daemon"
    );
    assert_eq!(probe(&["connect", &allowed], inside), 0, "allowed connect");
    host.start(&policy, &[]);
    assert_eq!(
        host.signal_and_wait(libc::SIGKILL).signal(),
        Some(libc::SIGKILL)
    );
    assert_eq!(
        probe(&["connect", &denied], inside),
        EPERM,
        "enforcement ended with a killed daemon"
    );

    // Uninstalling, on purpose, removes it all: nothing of claw stays on this host.
    let uninstalled = host.uninstall();
    assert!(uninstalled.status.success(), "{uninstalled:?}");
    assert_eq!(
        probe(&["connect", &denied], inside),
        0,
        "enforcement outlived --uninstall"
    );
    assert!(!host.bpffs.pins().exists());
}

/// This host's cgroup v2 tree has no memory controller (hybrid mode): a memory limit cannot be
/// enforced, so claw-agent refuses the policy — or, when told, runs and reports it unenforced.
#[test]
fn limits_the_hierarchy_cannot_enforce_are_refused_or_reported() {
    let root = claw_agent::kernel::cgroupfs::find_cgroup2_root().expect("a cgroup v2 mount");
    let available = claw_agent::policy::limits::available_controllers(&root).unwrap();
    assert!(
        !available.iter().any(|c| c == "memory"),
        "this test's premise (no memory controller in the cgroup v2 tree) does not hold here: {available:?}"
    );
    let mut host = Host::new("host-limits");
    let (relative, agent) = host.agent("big");
    let policy = host.policy(&format!(
        "agents:\n  - name: big\n    cgroup: {relative}\n    limits: {{ memory_max: 64M }}\n"
    ));
    let refused = host
        .daemon_command(&policy, &[])
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
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
    assert!(!agent.exists(), "a refused policy created the cgroup");

    host.start(&policy, &["--allow-missing-limits"]);
    let agents: serde_json::Value =
        serde_json::from_slice(&host.clawctl(&["agents", "--json"]).stdout).unwrap();
    let limit = &agents[0]["limits"][0];
    assert_eq!(limit["name"], "memory_max", "{agents}");
    assert_eq!(limit["enforced"], false, "{agents}");
    let human = String::from_utf8_lossy(&host.clawctl(&["agents"]).stdout).into_owned();
    assert!(
        human.contains("memory_max 67108864 (NOT ENFORCED"),
        "{human}"
    );
}
