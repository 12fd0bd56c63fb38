//! SIEM forwarding to a real rsyslog (Debian's, unpacked by `cargo xtask setup`; found through
//! $CLAW_RSYSLOG_ROOT, which `cargo xtask test` sets), started by the test on loopback: every
//! record arrives once and in order across a collector restart, spooled meanwhile; UDP and CEF
//! arrive too; the metrics endpoint shows the spool.

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{probe, Host, EPERM};
use serde_json::Value;

/// rsyslogd listening on loopback TCP and UDP ports, writing each to its own file.
struct Rsyslog {
    root: PathBuf,
    dir: PathBuf,
    tcp_port: u16,
    udp_port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Rsyslog {
    fn new(dir: &Path) -> Self {
        let root = std::env::var_os("CLAW_RSYSLOG_ROOT").map(PathBuf::from).expect(
            "CLAW_RSYSLOG_ROOT is not set: run the tests with `cargo xtask test` (it unpacks rsyslog and sets it)",
        );
        assert!(
            root.join("usr/sbin/rsyslogd").exists(),
            "no rsyslogd under {}: run `cargo xtask setup`",
            root.display()
        );
        let dir = dir.join("rsyslog");
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            root,
            dir,
            tcp_port: free_port(),
            udp_port: free_port(),
            child: None,
        }
    }

    fn output(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn start(&mut self) {
        let config = self.dir.join("rsyslog.conf");
        std::fs::write(
            &config,
            format!(
                r#"global(workDirectory="{dir}")
module(load="imtcp")
module(load="imudp")
template(name="message" type="string" string="%msg%\n")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="tcp")
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="udp")
ruleset(name="tcp") {{ action(type="omfile" file="{dir}/tcp.log" template="message") }}
ruleset(name="udp") {{ action(type="omfile" file="{dir}/udp.log" template="message") }}
"#,
                dir = self.dir.display(),
                tcp = self.tcp_port,
                udp = self.udp_port
            ),
        )
        .unwrap();
        let libraries = self.root.join("usr/lib/x86_64-linux-gnu");
        let child = Command::new(self.root.join("usr/sbin/rsyslogd"))
            .arg("-n")
            .arg("-f")
            .arg(&config)
            .arg("-M")
            .arg(libraries.join("rsyslog"))
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .env("LD_LIBRARY_PATH", &libraries)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("rsyslogd.err")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.tcp_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "rsyslogd did not listen: {}",
                std::fs::read_to_string(self.dir.join("rsyslogd.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid, not yet reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            child.wait().unwrap();
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The JSON events in a collector's file (after the syslog header rsyslog strips).
fn json_records(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line.trim()).ok())
        .collect()
}

fn metrics(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).unwrap();
    page
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_record_reaches_rsyslog_once_in_order_across_a_collector_restart() {
    let mut host = Host::new("forward");
    let (relative, agent) = host.agent("fwd");
    let mut rsyslog = Rsyslog::new(host.dir.path());
    rsyslog.start();
    let metrics_port = free_port();
    let config = host.dir.path().join("claw-agent.yaml");
    std::fs::write(
        &config,
        format!(
            "metrics:\n  listen: 127.0.0.1:{metrics_port}\nforward:\n  - name: siem\n    address: tcp://127.0.0.1:{tcp}\n    spool: {spool}/siem\n  - name: siem-udp\n    address: udp://127.0.0.1:{udp}\n    format: cef\n    spool: {spool}/udp\n",
            tcp = rsyslog.tcp_port,
            udp = rsyslog.udp_port,
            spool = host.dir.path().display()
        ),
    )
    .unwrap();
    let policy = host.policy(&format!("agents:\n  - name: fwd\n    cgroup: {relative}\n"));
    // Each probe run here also makes ~90 degraded-mode audit events (a debug build opening its
    // libraries): lift the agent's budget so that none of the denials is throttled.
    host.start(
        &policy,
        &[
            "--config",
            config.to_str().unwrap(),
            "--agent-events-per-second",
            "0",
        ],
    );

    let tcp_log = rsyslog.output("tcp.log");
    let denials = |records: &[Value]| -> Vec<u64> {
        records
            .iter()
            .filter(|r| r["agent"] == "fwd" && r["kind"] == "deny" && r["op"] == "connect")
            .filter_map(|r| {
                r["destination"]
                    .as_str()?
                    .strip_prefix("127.0.0.1:")?
                    .strip_suffix("/tcp")?
                    .parse()
                    .ok()
            })
            .collect()
    };
    let deny = |ports: std::ops::Range<u16>| {
        for port in ports {
            assert_eq!(
                probe(&["connect", &format!("127.0.0.1:{port}")], Some(&agent)),
                EPERM
            );
        }
    };

    deny(10001..10006);
    wait_for(
        "the first five denials at rsyslog",
        Duration::from_secs(20),
        || denials(&json_records(&tcp_log)).len() >= 5,
    );

    rsyslog.stop();
    deny(10006..10011);
    wait_for(
        "the forwarder to see rsyslog gone and spool",
        Duration::from_secs(20),
        || {
            let page = metrics(metrics_port);
            let line = |name: &str| {
                page.lines()
                    .find(|l| l.starts_with(&format!("{name}{{forwarder=\"siem\"")))
                    .map(str::to_owned)
                    .unwrap_or_default()
            };
            line("claw_forward_connected").ends_with(" 0")
                && !line("claw_forward_spool_records").ends_with(" 0")
        },
    );
    wait_for(
        "the ten denials counted in the metrics",
        Duration::from_secs(10),
        || {
            metrics(metrics_port)
                .contains("claw_denials_total{agent=\"fwd\",op=\"connect\",decision=\"deny\"} 10")
        },
    );

    rsyslog.start();
    deny(10011..10016);
    wait_for(
        "all fifteen denials at rsyslog",
        Duration::from_secs(30),
        || denials(&json_records(&tcp_log)).len() >= 15,
    );
    // Nothing more trickles in after a moment: each arrived once.
    std::thread::sleep(Duration::from_secs(2));
    let records = json_records(&tcp_log);
    assert_eq!(
        denials(&records),
        (10001..10016).collect::<Vec<u64>>(),
        "every denial once, in order"
    );
    let sequence: Vec<u64> = records.iter().filter_map(|r| r["seq"].as_u64()).collect();
    assert!(
        sequence.windows(2).all(|w| w[1] == w[0] + 1),
        "every record once, in order, none missing: {sequence:?}"
    );

    let udp = std::fs::read_to_string(rsyslog.output("udp.log")).unwrap_or_default();
    let cef: Vec<&str> = udp
        .lines()
        .filter(|l| l.contains("CEF:0|claw|claw-agent|") && l.contains("cs1=fwd"))
        .filter(|l| l.contains("|deny:connect|"))
        .collect();
    assert!(
        cef.iter()
            .any(|l| l.contains("dst=127.0.0.1 dpt=10001 proto=tcp")),
        "the UDP forwarder's CEF records: {udp}"
    );
}
