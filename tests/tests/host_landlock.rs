//! The Landlock layer on this host (its kernel refuses BPF LSM and has Landlock): claw-agent
//! --degraded runs with coverage `landlock`; a tool call, a plain `clawctl run` and a supervised
//! process are refused reads, writes and execs outside their agent's rules and allowed inside.
//! Landlock restricts only the processes claw starts, which exit with the test: nothing outside
//! them is touched.

mod common;

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::{Duration, Instant},
};

use common::Host;

/// `clawctl ARGS`: (exit code, stdout, stderr).
fn clawctl(host: &Host, args: &[&str]) -> (i32, String, String) {
    let output = host.clawctl(args);
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn wait_for(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The first deny event in the audit log that `matches`, waiting for it up to 30 s.
fn denial(host: &Host, matches: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(&host.audit_log).unwrap_or_default();
        let found = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|entry| entry["event"].clone())
            .find(|e| e["kind"] == "deny" && matches(e));
        if let Some(event) = found {
            return event;
        }
        assert!(
            Instant::now() < deadline,
            "no such denial in the audit log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn landlock_confines_the_processes_claw_starts() {
    let mut host = Host::new("landlock");
    let (tools, _) = host.agent("tools");
    let (svc, _) = host.agent("svc");
    let (user_svc, _) = host.agent("usersvc");
    // Apart from the daemon's socket directory, where no agent may write.
    let files = tempfile::tempdir().unwrap();
    let dir = files.path().to_path_buf();
    let d = dir.display().to_string();
    for sub in ["in", "out", "other"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("in/ok"), "readable\n").unwrap();
    std::fs::write(dir.join("secret"), "not for agents\n").unwrap();
    // The user-run service's files: only Landlock, not the file modes, stands in its way.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.join("out"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let common = format!(
        "    files: {{read: [{d}/in/, /etc/ld.so.cache, /proc/], write: [{d}/out/, /dev/null]}}\n    exec: [/usr/bin/cat, /usr/bin/touch, /usr/bin/sh]\n    libraries: [/usr/lib/]\n"
    );
    let script = format!(
        "cat {d}/secret > /dev/null 2>&1; echo $? > {d}/out/svc-secret; cat {d}/in/ok > {d}/out/svc-ok; touch {d}/other/svc 2> /dev/null; echo $? > {d}/out/svc-write"
    );
    // As a user (run.user): contained before root is given up, confined after.
    let user_script = format!(
        "cat {d}/secret > /dev/null 2>&1; echo $? > {d}/out/user-secret; cat {d}/in/ok > {d}/out/user-ok"
    );
    let policy = host.policy(&format!(
        "agents:\n  - name: tools\n    cgroup: {tools}\n{common}  - name: svc\n    cgroup: {svc}\n{common}    run:\n      command: [/usr/bin/sh, -c, \"{script}\"]\n      restart: never\n  - name: usersvc\n    cgroup: {user_svc}\n{common}    run:\n      command: [/usr/bin/sh, -c, \"{user_script}\"]\n      user: nobody\n      restart: never\n"
    ));
    host.start(&policy, &["--landlock", "auto"]);

    let status: serde_json::Value =
        serde_json::from_slice(&host.clawctl(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["coverage"], "landlock", "{status}");

    // A tool call: inside its rules, and outside.
    let call = |args: &[&str]| {
        let mut all = vec!["run", "--agent", "tools", "--call-id", "c1", "--"];
        all.extend_from_slice(args);
        clawctl(&host, &all)
    };
    let (code, out, err) = call(&["/usr/bin/cat", &format!("{d}/in/ok")]);
    assert_eq!((code, out.as_str()), (0, "readable\n"), "{err}");
    let (code, out, err) = call(&["/usr/bin/cat", &format!("{d}/secret")]);
    assert_eq!(code, 1, "read outside the rules: {out}{err}");
    assert!(err.contains("Permission denied"), "{err}");
    let (code, _, err) = call(&["/usr/bin/touch", &format!("{d}/out/made")]);
    assert_eq!(code, 0, "{err}");
    assert!(dir.join("out/made").exists());
    let (code, _, err) = call(&["/usr/bin/touch", &format!("{d}/other/made")]);
    assert_eq!(code, 1, "write outside the rules: {err}");
    assert!(!dir.join("other/made").exists());
    // A program no exec rule names does not start.
    let (code, _, err) = call(&["/usr/bin/ls", &d]);
    assert_ne!(code, 0, "exec outside the rules: {err}");
    assert!(err.contains("Permission denied"), "{err}");

    // Root in a tool call holds no capabilities and sees its own cgroup as the root of its
    // cgroup namespace: no clone3 or cgroup.procs write takes it out of its agent.
    let (code, status, err) = call(&["/usr/bin/cat", "/proc/self/status"]);
    assert_eq!(code, 0, "{err}");
    for capabilities in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        let line = status
            .lines()
            .find(|l| l.starts_with(capabilities))
            .unwrap();
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"), "{status}");
    let (code, cgroup, err) = call(&["/usr/bin/cat", "/proc/self/cgroup"]);
    assert_eq!(code, 0, "{err}");
    let v2 = cgroup.lines().find(|l| l.starts_with("0::")).unwrap();
    assert_eq!(v2, "0::/", "{cgroup}");
    // ...and no cgroup file system in its mount namespace to move itself with.
    let (code, mounts, err) = call(&["/usr/bin/cat", "/proc/self/mountinfo"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !mounts.lines().any(|l| l.contains(" - cgroup")),
        "cgroup file systems in reach: {mounts}"
    );

    // A client that would not apply the Landlock layer gets no call.
    let mut old = UnixStream::connect(&host.socket).unwrap();
    old.write_all(b"{\"request\":\"call\",\"agent\":\"tools\",\"call\":\"old\",\"command\":[\"/usr/bin/cat\"]}\n")
        .unwrap();
    let mut reply = String::new();
    BufReader::new(old).read_line(&mut reply).unwrap();
    assert!(
        reply.contains("does not apply claw's Landlock layer"),
        "{reply}"
    );

    // A plain `clawctl run`, in the agent's own cgroup.
    let (code, _, err) = clawctl(
        &host,
        &[
            "run",
            "--agent",
            "tools",
            "--",
            "/usr/bin/cat",
            &format!("{d}/secret"),
        ],
    );
    assert_eq!(code, 1, "plain run, read outside the rules: {err}");

    // The supervised process.
    assert_eq!(wait_for(&dir.join("out/svc-ok")), "readable\n");
    assert_eq!(wait_for(&dir.join("out/svc-secret")), "1\n");
    assert_eq!(wait_for(&dir.join("out/svc-write")), "1\n");
    assert!(!dir.join("other/svc").exists());
    assert_eq!(wait_for(&dir.join("out/user-ok")), "readable\n");
    assert_eq!(wait_for(&dir.join("out/user-secret")), "1\n");

    // The refusals are claw events with their agent (and call), from Landlock's audit records.
    let secret = format!("{d}/secret");
    let tool_call = denial(&host, |e| {
        e["agent"] == "tools" && e["call"] == "c1" && e["path"] == secret.as_str()
    });
    assert_eq!(tool_call["op"], "open", "{tool_call}");
    assert_eq!(tool_call["access"], "read", "{tool_call}");
    assert_eq!(tool_call["coverage"], "landlock", "{tool_call}");
    assert_eq!(
        tool_call["details"]["enforced_by"], "landlock",
        "{tool_call}"
    );
    // Landlock names the directory a file could not be made in.
    let other = format!("{d}/other");
    let made = denial(&host, |e| {
        e["agent"] == "tools" && e["path"] == other.as_str()
    });
    assert_eq!(made["op"], "mknod", "{made}");
    assert_eq!(made["access"], "write", "{made}");
    let plain = denial(&host, |e| {
        e["agent"] == "tools" && e["call"].is_null() && e["path"] == secret.as_str()
    });
    assert_eq!(plain["cgroup"], format!("/{tools}"), "{plain}");
    denial(&host, |e| {
        e["agent"] == "svc" && e["path"] == secret.as_str()
    });

    // The tracepoints' reports of the same opens decide nothing: they do not claim it went
    // through.
    let log = std::fs::read_to_string(&host.audit_log).unwrap();
    let reported = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|entry| entry["event"].clone())
        .find(|e| e["kind"] == "audit" && e["path"] == secret.as_str())
        .expect("a tracepoint report of the open");
    assert_eq!(reported["decision"], "-", "{reported}");

    // Outside claw's processes nothing changed.
    assert_eq!(
        std::fs::read_to_string(dir.join("secret")).unwrap(),
        "not for agents\n"
    );
    std::fs::write(dir.join("other/by-the-test"), "").unwrap();
}
