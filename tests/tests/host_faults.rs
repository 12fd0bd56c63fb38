//! Faults on this host: the policy file replaced by garbage before a reload, an agent's cgroup
//! removed from outside, the audit log's disk full. claw-agent keeps enforcing what it enforced,
//! says what happened, and recovers.

mod common;

use std::{
    ffi::CString,
    io::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use claw_tests::harness::audit_accounts;
use common::{probe, probe_output, Host, EPERM};

fn connect_allowed_and_denied(host: &Host, agent: &std::path::Path, allowed: &str, denied: &str) {
    assert_eq!(probe(&["connect", denied], Some(agent)), EPERM, "{denied}");
    assert_ne!(
        probe(&["connect", allowed], Some(agent)),
        EPERM,
        "{allowed} (daemon log in {})",
        host.dir.path().display()
    );
}

#[test]
fn garbage_in_the_policy_file_at_reload_changes_nothing() {
    let mut host = Host::new("garbage");
    let (relative, agent) = host.agent("a");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let allowed = listener.local_addr().unwrap().to_string();
    let policy = host.policy(&format!(
        "agents:\n  - name: a\n    cgroup: {relative}\n    connect: [\"{allowed}/tcp\"]\n"
    ));
    host.start(&policy, &[]);
    let generation = |host: &Host| {
        let status: serde_json::Value =
            serde_json::from_slice(&host.clawctl(&["status", "--json"]).stdout).unwrap();
        status["generation"].as_u64().unwrap()
    };
    let before = generation(&host);
    std::fs::write(&policy, "agents:\n  - name: a\n    cgroup: [not a path\n").unwrap();
    host.reload();
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(generation(&host), before, "a garbage policy was applied");
    connect_allowed_and_denied(&host, &agent, &allowed, "127.0.0.1:9");
    assert!(host.clawctl(&["status"]).status.success());
}

#[test]
fn an_agent_cgroup_removed_from_outside_comes_back_enforced_at_the_next_apply() {
    let mut host = Host::new("removed");
    let (relative, agent) = host.agent("a");
    let policy = host.policy(&format!("agents:\n  - name: a\n    cgroup: {relative}\n"));
    host.start(&policy, &[]);
    std::fs::remove_dir(&agent).expect("removing the empty agent cgroup");
    assert!(
        host.clawctl(&["status"]).status.success(),
        "claw-agent stopped answering"
    );
    let applied = host.clawctl(&["policy", "apply", policy.to_str().unwrap()]);
    assert!(applied.status.success(), "{applied:?}");
    assert!(agent.exists(), "the apply did not recreate the cgroup");
    assert_eq!(probe(&["connect", "127.0.0.1:9"], Some(&agent)), EPERM);
}

/// A tmpfs of `size` mounted on `dir` (made here), unmounted when dropped.
struct SmallFilesystem(CString);

impl SmallFilesystem {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let target = CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        let options = CString::new(format!("size={size}")).unwrap();
        // SAFETY: mounting a fresh tmpfs on a directory this test made.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
        Self(target)
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        // SAFETY: unmounting the tmpfs this test mounted.
        unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Writes zeros to `path` until the filesystem is full.
fn fill(path: &Path) {
    let mut filler = std::fs::File::create(path).unwrap();
    let block = [0u8; 4096];
    loop {
        if let Err(err) = filler.write_all(&block) {
            assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
            return;
        }
    }
}

/// Denied connects to `count` distinct ports from `first`; all must be refused.
fn denials(agent: &Path, first: u16, count: u64) {
    let (code, out) = probe_output(
        &[
            "connect-storm",
            &format!("127.0.0.1:{first}"),
            &count.to_string(),
            &count.to_string(),
            "60",
        ],
        Some(agent),
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, format!("denied {count} other 0\n"));
}

#[test]
fn a_full_audit_disk_loses_nothing_uncounted_and_the_chain_holds() {
    let mut host = Host::new("diskfull");
    let logs = SmallFilesystem::mount(&host.dir.path().join("logs"), "1m");
    host.audit_log = host.dir.path().join("logs/audit.log");
    let (relative, agent) = host.agent("a");
    let policy = host.policy(&format!("agents:\n  - name: a\n    cgroup: {relative}\n"));
    host.start(
        &policy,
        &[
            "--identical-events-per-second",
            "0",
            "--agent-events-per-second",
            "0",
        ],
    );
    let filler = host.dir.path().join("logs/filler");
    fill(&filler);

    const WHILE_FULL: u64 = 300;
    const AFTER: u64 = 50;
    // Followers get an event once the audit writer has handled it (written, or counted).
    let mut follower = host.clawctl_child(&["deny-log", "--follow", "--json", "--op", "connect"]);
    let (handled, handled_rx) = std::sync::mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if line.contains("127.0.0.1:9/tcp") && handled.send(()).is_err() {
                return;
            }
        }
    });
    denials(&agent, 20000, WHILE_FULL);
    assert_eq!(probe(&["connect", "127.0.0.1:9"], Some(&agent)), EPERM);
    handled_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the last denial made while the disk was full never reached a follower");
    follower.kill().unwrap();
    follower.wait().unwrap();
    let status: serde_json::Value =
        serde_json::from_slice(&host.clawctl(&["status", "--json"]).stdout).unwrap();
    assert!(
        status["counters"]["events_lost"]["audit"].as_u64() > Some(WHILE_FULL),
        "the denials made while the disk was full are not counted: {status}"
    );

    std::fs::remove_file(&filler).unwrap();
    denials(&agent, 21000, AFTER);
    // The log holds every event claw-agent numbered, or counts it: its lines plus its counts
    // of lost events cover the numbers from 0 to the last one written, with no gap.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut recorded, mut lost) = audit_accounts(&host.audit_log, "a");
    while recorded < AFTER && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        (recorded, lost) = audit_accounts(&host.audit_log, "a");
    }
    let log = std::fs::read_to_string(&host.audit_log).unwrap();
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let events = records
        .iter()
        .filter(|r| r["event"]["seq"].is_u64())
        .count() as u64;
    let last_seq = records
        .iter()
        .filter_map(|r| r["event"]["seq"].as_u64())
        .max()
        .unwrap();
    assert_eq!(
        events + lost,
        last_seq + 1,
        "{events} events written + {lost} counted lost, but claw-agent numbered {}",
        last_seq + 1
    );
    assert!(
        lost > WHILE_FULL && recorded == AFTER,
        "{lost} counted lost (want the {WHILE_FULL} made while full among them), {recorded} denials recorded (want the {AFTER} made after)"
    );
    let verify = std::process::Command::new(common::sibling("clawctl"))
        .args(["audit", "verify"])
        .arg(&host.audit_log)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "the chain broke: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    assert!(host.clawctl(&["status"]).status.success());
    host.stop();
    drop(logs);
}
