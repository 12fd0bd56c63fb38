//! claw-agent under systemd's notify protocol, against a notify socket of the test's own: READY=1
//! comes when `clawctl status` first answers (the policy enforced), with a STATUS= line; SIGHUP
//! gives RELOADING=1 and READY=1 saying whether the policy was re-applied or rejected; WATCHDOG=1
//! while the owner answers; STOPPING=1 on SIGTERM.

use std::{
    os::unix::net::UnixDatagram,
    process::{Child, Command},
    time::{Duration, Instant},
};

mod common;

use common::Host;

/// The daemon, ended (SIGTERM, then reaped) whatever the test does.
struct Daemon(Child);

impl Daemon {
    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid, not yet reaped.
        unsafe { libc::kill(self.0.id() as i32, signal) };
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.signal(libc::SIGTERM);
        let _ = self.0.wait();
    }
}

/// The next notification (one datagram: newline-separated KEY=VALUE) for which `wanted` holds;
/// the others (watchdog pings) are passed over.
fn next_where(socket: &UnixDatagram, wanted: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buffer = [0u8; 4096];
    loop {
        assert!(
            Instant::now() < deadline,
            "no such notification within 60 s"
        );
        let len = socket
            .recv(&mut buffer)
            .expect("claw-agent sent no notification in time");
        let message = String::from_utf8_lossy(&buffer[..len]).into_owned();
        if wanted(&message) {
            return message;
        }
    }
}

#[test]
fn claw_agent_notifies_ready_once_enforcing_reloads_watchdog_and_stopping() {
    let mut host = Host::new("notify");
    let (cgroup, _) = host.agent("tools");
    let yaml =
        format!("agents:\n  - name: tools\n    cgroup: {cgroup}\n    connect: [127.0.0.1:9/tcp]\n");
    let policy = host.policy(&yaml);
    let notify_path = host.dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // WATCHDOG_PID must be claw-agent's own: the shell sets its pid and execs claw-agent.
    let daemon_command = host.daemon_command(&policy, &[]);
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"WATCHDOG_PID=$$ exec "$0" "$@""#)
        .arg(daemon_command.get_program())
        .args(daemon_command.get_args())
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "2000000")
        .stderr(std::process::Stdio::null());
    let daemon = Daemon(command.spawn().unwrap());

    let ready = next_where(&notify, |m| m.contains("READY=1"));
    assert!(
        host.clawctl(&["status"]).status.success(),
        "READY=1 came before clawctl status answered: {ready}"
    );
    assert!(
        ready.contains(&format!("STATUS=enforcing {}", policy.display())),
        "{ready}"
    );
    assert!(ready.contains("1 agents"), "{ready}");

    let ping = next_where(&notify, |m| m.contains("WATCHDOG=1"));
    assert!(ping.contains("STATUS=enforcing"), "{ping}");

    daemon.signal(libc::SIGHUP);
    next_where(&notify, |m| m.contains("RELOADING=1"));
    let reloaded = next_where(&notify, |m| m.contains("READY=1"));
    assert!(reloaded.contains("re-applied: generation 2"), "{reloaded}");

    std::fs::write(&policy, "agents:\n  - name: tools\n    cgroup: /absolute\n").unwrap();
    daemon.signal(libc::SIGHUP);
    next_where(&notify, |m| m.contains("RELOADING=1"));
    let rejected = next_where(&notify, |m| m.contains("READY=1"));
    assert!(
        rejected.contains("reload rejected, the previous policy stays enforced"),
        "{rejected}"
    );
    assert!(host.clawctl(&["status"]).status.success());

    daemon.signal(libc::SIGTERM);
    next_where(&notify, |m| m.contains("STOPPING=1"));
    drop(daemon);
    let uninstalled = host.uninstall();
    assert!(uninstalled.status.success(), "{uninstalled:?}");
}
