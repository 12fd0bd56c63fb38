//! The install test, inside a Debian bookworm guest with systemd as PID 1 (`cargo xtask
//! vm-systemd`): claw's package installed with apt, the unit started, reloaded, killed and
//! purged (`claw-vmtest systemd`); and, booted with an `lsm=` list without `bpf` as Ubuntu's
//! kernels are, the preflight's advice, the refusal to start without `--degraded`, and the
//! Landlock layer (`claw-vmtest systemd-nobpf`). Results go to the console as the other suites'.

use std::{
    io::Read as _,
    path::Path,
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, ensure, Context as _};

use claw_tests::harness::{landlock_abi_of, report};

const PACKAGE: &str = "/root/claw_0.1.0_amd64.deb";
const POLICY: &str = "/etc/claw/policy.yaml";
const CONFIG: &str = "/etc/claw/claw-agent.yaml";
const AUDIT_LOG: &str = "/var/log/claw/audit.log";
const DROP_IN: &str = "/etc/systemd/system/claw-agent.service.d/degraded.conf";

/// The agents: `tools` for `clawctl run`, `svc` a supervised process that tries a secret and a
/// permitted file and writes down what happened. `extra` goes into both agents' read rules.
fn policy(extra_read: &str) -> String {
    let rules = format!(
        "    files:\n      read: [/srv/ok/, /etc/ld.so.cache, /proc/{extra_read}]\n      write: [/srv/out/, /dev/null]\n    exec: [/usr/bin/cat, /usr/bin/dash, /usr/bin/sleep]\n    libraries: [/usr/lib/x86_64-linux-gnu/]\n"
    );
    format!(
        "agents:\n  - name: tools\n    cgroup: claw/tools\n{rules}  - name: svc\n    cgroup: claw/svc\n{rules}    run:\n      command: [/usr/bin/dash, -c, \"cat /srv/secret > /dev/null 2>&1; echo $? > /srv/out/svc-secret; cat /srv/ok/file > /srv/out/svc-ok; exec /usr/bin/sleep 100000\"]\n"
    )
}

/// `sh -c script`: (exit code, stdout, stderr).
fn sh(script: &str) -> (i32, String, String) {
    match Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        Err(err) => (-1, String::new(), err.to_string()),
    }
}

/// `sh -c script`, which must succeed; its stdout.
fn ok(script: &str) -> anyhow::Result<String> {
    let (code, out, err) = sh(script);
    ensure!(code == 0, "`{script}` exited {code}: {out}{err}");
    Ok(out)
}

/// Waits up to `timeout` for `check` to hold.
fn within(timeout: Duration, what: &str, check: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !check() {
        if Instant::now() > deadline {
            bail!("{what}: not within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn journal() -> String {
    sh("journalctl --no-pager -o cat").1
}

fn status_json() -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_str(&ok("clawctl status --json")?)?)
}

fn fixtures() -> anyhow::Result<()> {
    for dir in ["/srv/ok", "/srv/out"] {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write("/srv/ok/file", "readable\n")?;
    std::fs::write("/srv/secret", "not for agents\n")?;
    std::fs::write("/srv/forbidden", "not for agents\n")?;
    Ok(())
}

fn install() -> anyhow::Result<()> {
    ok(&format!("apt-get install -y {PACKAGE}"))?;
    for path in ["/usr/sbin/claw-agent", "/usr/bin/clawctl", POLICY, CONFIG] {
        ensure!(Path::new(path).exists(), "{path} not installed");
    }
    ok("systemctl cat claw-agent.service >/dev/null")?;
    std::fs::write(POLICY, policy(""))?;
    // Events also to the node's syslog socket: the journal.
    std::fs::write(
        CONFIG,
        "forward:\n  - name: journal\n    address: unix:///dev/log\n",
    )?;
    Ok(())
}

/// `systemctl start` returns once READY=1 came; at no moment before is the unit active while
/// claw-agent does not enforce.
fn ready_only_once_enforcing() -> anyhow::Result<()> {
    let mut start = Command::new("systemctl")
        .args(["start", "claw-agent"])
        .stderr(Stdio::piped())
        .spawn()?;
    let mut seen = Vec::new();
    let started = loop {
        if let Some(status) = start.try_wait()? {
            break status;
        }
        let state = sh("systemctl is-active claw-agent").1.trim().to_owned();
        if state == "active" {
            let (code, out, err) = sh("clawctl status");
            ensure!(
                code == 0,
                "active before enforcing: clawctl status exited {code}: {out}{err}"
            );
        }
        seen.push(state);
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    if let Some(mut stderr) = start.stderr.take() {
        stderr.read_to_string(&mut err)?;
    }
    ensure!(
        started.success(),
        "systemctl start failed: {err}\n{}",
        journal()
    );
    ensure!(
        seen.iter().any(|s| s == "activating"),
        "never seen activating: {seen:?}"
    );
    ensure!(ok("systemctl is-active claw-agent")?.trim() == "active");
    ok("clawctl status >/dev/null")?;
    let text = ok("systemctl show -p StatusText --value claw-agent")?;
    ensure!(text.starts_with("enforcing"), "status text: {text}");
    Ok(())
}

/// A refused open: in the audit log (`clawctl deny-log` replays it) and in the journal.
fn denial_in_deny_log_and_journal() -> anyhow::Result<()> {
    let (code, out, err) = sh("clawctl run --agent tools -- /usr/bin/cat /srv/secret");
    ensure!(code != 0, "read /srv/secret: {out}{err}");
    within(
        Duration::from_secs(20),
        "the denial in the audit log",
        || {
            std::fs::read_to_string(AUDIT_LOG)
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains("\"kind\":\"deny\"") && l.contains("\"path\":\"/srv/secret\""))
        },
    )?;
    within(Duration::from_secs(30), "the denial in the journal", || {
        journal()
            .lines()
            .any(|l| l.contains("/srv/secret") && l.contains("deny"))
    })
}

fn generation() -> anyhow::Result<u64> {
    status_json()?["generation"]
        .as_u64()
        .context("no generation")
}

/// `systemctl reload` applies a changed policy; a broken one fails the reload and changes
/// nothing.
fn reload_applies_changed_policy() -> anyhow::Result<()> {
    let before = generation()?;
    std::fs::write(POLICY, policy(", /srv/secret"))?;
    ok("systemctl reload claw-agent")?;
    ensure!(generation()? == before + 1, "generation did not move");
    let read = ok("clawctl run --agent tools -- /usr/bin/cat /srv/secret")?;
    ensure!(read == "not for agents\n", "{read}");
    std::fs::write(POLICY, "agents:\n  - name: tools\n    cgroupz: x\n")?;
    let (code, _, _) = sh("systemctl reload claw-agent");
    ensure!(code != 0, "a broken policy reloaded");
    ensure!(
        generation()? == before + 1,
        "a broken policy changed the generation"
    );
    std::fs::write(POLICY, policy(", /srv/secret"))?;
    Ok(())
}

/// `systemctl kill -s KILL`: systemd restarts claw-agent; a loop opening a forbidden file inside
/// the agent never gets through meanwhile, and the successor logs the refusals made while no
/// claw-agent ran (the pinned programs kept refusing and recording).
fn killed_and_restarted_without_a_window() -> anyhow::Result<()> {
    let _ = std::fs::remove_file("/srv/out/stop");
    let mut looping = Command::new("clawctl")
        .args(["run", "--agent", "tools", "--", "/usr/bin/dash", "-c"])
        .arg("while [ ! -e /srv/out/stop ]; do if /usr/bin/cat /srv/forbidden >/dev/null 2>&1; then echo OPENED; fi; /usr/bin/sleep 0.2; done; echo DONE")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let outcome = kill_and_restart(&mut looping);
    if outcome.is_err() {
        let _ = looping.kill();
    }
    outcome
}

/// Kills claw-agent while `looping` runs; Ok once the loop ended without opening the file and
/// the successor logged refusals made while no claw-agent ran.
fn kill_and_restart(looping: &mut std::process::Child) -> anyhow::Result<()> {
    within(
        Duration::from_secs(30),
        "the loop's first refusal logged",
        || {
            std::fs::read_to_string(AUDIT_LOG)
                .unwrap_or_default()
                .contains("\"path\":\"/srv/forbidden\"")
        },
    )?;
    let killed_at = SystemTime::now();
    ok("systemctl kill -s KILL claw-agent")?;
    let restarted = within(Duration::from_secs(240), "restarted and enforcing", || {
        sh("systemctl show -p NRestarts --value claw-agent")
            .1
            .trim()
            != "0"
            && sh("systemctl is-active claw-agent").1.trim() == "active"
            && sh("clawctl status").0 == 0
    });
    if let Err(err) = restarted {
        let state = sh("systemctl status --no-pager claw-agent; journalctl -u claw-agent --no-pager -o cat -n 20").1;
        bail!("{err}: {state}");
    }
    let ready_at = SystemTime::now();
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write("/srv/out/stop", "")?;
    let mut out = String::new();
    looping
        .stdout
        .take()
        .context("loop output")?
        .read_to_string(&mut out)?;
    looping.wait()?;
    ensure!(out.contains("DONE"), "the loop did not finish: {out}");
    ensure!(
        !out.contains("OPENED"),
        "the forbidden file was opened: {out}"
    );
    // The refusals whose records were made between the kill and the successor's readiness.
    let in_gap = std::fs::read_to_string(AUDIT_LOG)?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|entry| entry["event"].clone())
        .filter(|e| e["kind"] == "deny" && e["path"] == "/srv/forbidden")
        .filter_map(|e| humantime::parse_rfc3339(e["time"].as_str()?).ok())
        .filter(|time| *time > killed_at && *time < ready_at)
        .count();
    ensure!(
        in_gap > 0,
        "no refusal made while claw-agent was down was logged by its successor"
    );
    Ok(())
}

/// A drop-in running claw-agent with `flags` besides the unit's own, as an operator writes it.
fn drop_in(flags: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(Path::new(DROP_IN).parent().context("drop-in directory")?)?;
    std::fs::write(
        DROP_IN,
        format!("[Service]\nExecStart=\nExecStart=/usr/sbin/claw-agent {flags} --policy {POLICY} --config {CONFIG}\n"),
    )?;
    Ok(())
}

/// The processes claw starts, as `/proc/self/status` shows them: (NoNewPrivs, CapEff).
fn started_process_status() -> anyhow::Result<(String, String)> {
    let status = ok("clawctl run --agent tools -- /usr/bin/cat /proc/self/status")?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .with_context(|| format!("no {name} in {status}"))
    };
    Ok((field("NoNewPrivs:")?, field("CapEff:")?))
}

/// `--landlock stack`: BPF LSM and, on the processes claw starts, Landlock as a second layer
/// (not contained: BPF LSM's hooks stand behind it); what the policy allows stays allowed.
fn landlock_stacks_on_bpf_lsm() -> anyhow::Result<()> {
    let (no_new_privs, _) = started_process_status()?;
    ensure!(no_new_privs == "0", "no_new_privs without a Landlock layer");
    drop_in("--landlock stack")?;
    if landlock_abi()? < claw_agent::policy::landlock::MIN_ABI {
        // Too old a Landlock for claw's file layer (Debian's 6.1 has ABI 2): stacking it is
        // refused, not silently skipped; without the flag claw-agent runs as before.
        let (code, _, _) = sh("systemctl daemon-reload && systemctl restart claw-agent");
        ensure!(
            code != 0,
            "--landlock stack started on a Landlock too old for it"
        );
        let log = sh("journalctl -u claw-agent --no-pager -o cat -n 20").1;
        ensure!(
            log.contains("--landlock stack"),
            "the refusal does not say why: {log}"
        );
        std::fs::remove_file(DROP_IN)?;
        ok("systemctl daemon-reload && systemctl reset-failed claw-agent && systemctl start claw-agent")?;
        return Ok(());
    }
    ok("systemctl daemon-reload && systemctl restart claw-agent")?;
    let status = status_json()?;
    ensure!(
        status["coverage"] == "full" && status["landlock"] == true,
        "{status}"
    );
    let (no_new_privs, capabilities) = started_process_status()?;
    ensure!(
        no_new_privs == "1",
        "no Landlock layer on a started process"
    );
    ensure!(capabilities != "0000000000000000", "stacked, yet contained");
    let read = ok("clawctl run --agent tools -- /usr/bin/cat /srv/ok/file")?;
    ensure!(read == "readable\n", "{read}");
    let (code, out, err) = sh("clawctl run --agent tools -- /usr/bin/cat /srv/forbidden");
    ensure!(code != 0, "read /srv/forbidden: {out}{err}");
    std::fs::remove_file(DROP_IN)?;
    ok("systemctl daemon-reload")?;
    Ok(())
}

/// `apt purge`: enforcement ended, nothing of claw left.
fn purge_removes_everything() -> anyhow::Result<()> {
    ok("apt-get purge -y claw")?;
    for path in [
        "/usr/sbin/claw-agent",
        "/usr/bin/clawctl",
        "/etc/claw",
        "/var/log/claw",
        "/var/lib/claw",
        "/run/claw",
        "/sys/fs/bpf/claw",
        "/usr/lib/systemd/system/claw-agent.service",
    ] {
        ensure!(!Path::new(path).exists(), "{path} is left");
    }
    let (code, _, _) = sh("systemctl cat claw-agent.service");
    ensure!(code != 0, "the unit is still known");
    Ok(())
}

/// The kernel's Landlock ABI as `--check` reports it (0: none).
fn landlock_abi() -> anyhow::Result<u32> {
    let report: serde_json::Value = serde_json::from_str(&sh("claw-agent --check --json").1)?;
    let landlock = report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == "Landlock"))
        .cloned()
        .with_context(|| format!("no Landlock check: {report}"))?;
    Ok(landlock_abi_of(&landlock))
}

/// What `--check` says on a node whose kernel leaves `bpf` out of its LSMs; the Landlock ABI.
fn check_explains_bpf_lsm() -> anyhow::Result<u32> {
    let (code, out, err) = sh("claw-agent --check --json");
    ensure!(code == 1, "--check exit {code}: {err}");
    let report: serde_json::Value = serde_json::from_str(&out)?;
    let verdict = |name: &str| {
        report["checks"]
            .as_array()
            .and_then(|checks| checks.iter().find(|c| c["name"] == name))
            .cloned()
            .with_context(|| format!("no check {name}: {report}"))
    };
    let active = verdict("BPF LSM active")?;
    ensure!(active["verdict"] == "fail", "{active}");
    let fix = active["fix"].as_str().unwrap_or_default();
    // The active list as booted (the kernel adds its integrity modules), plus bpf.
    ensure!(
        fix.contains("lsm=lockdown,capability,landlock,yama,apparmor,") && fix.contains(",bpf`"),
        "fix: {fix}"
    );
    let abi = landlock_abi_of(&verdict("Landlock")?);
    let expected = if abi >= claw_agent::policy::landlock::MIN_ABI {
        "landlock"
    } else {
        "degraded"
    };
    ensure!(report["coverage"] == expected, "{report}");
    Ok(abi)
}

/// Without BPF LSM the unit fails to start (no silent weakening); a drop-in with --degraded, the
/// operator's acceptance, starts it with the coverage stated.
fn refuses_then_starts_degraded(expected: &str) -> anyhow::Result<()> {
    let (code, _, _) = sh("systemctl start claw-agent");
    ensure!(code != 0, "claw-agent started without BPF LSM");
    let log = sh("journalctl -u claw-agent --no-pager -o cat").1;
    ensure!(
        log.contains("--degraded"),
        "the refusal does not say how: {log}"
    );
    ok("systemctl stop claw-agent; systemctl reset-failed claw-agent || true")?;
    drop_in("--degraded")?;
    ok("systemctl daemon-reload && systemctl start claw-agent")?;
    let status = status_json()?;
    ensure!(status["coverage"] == expected, "{status}");
    Ok(())
}

/// The Landlock layer: a tool call, a plain `clawctl run` and the supervised process are refused
/// a file outside their rules and allowed inside.
fn landlock_layer_confines(abi: u32) -> anyhow::Result<()> {
    let (code, out, err) = sh("clawctl run --agent tools --call-id c1 -- /usr/bin/cat /srv/secret");
    ensure!(
        code != 0 && err.contains("Permission denied"),
        "tool call read: {code} {out}{err}"
    );
    let read = ok("clawctl run --agent tools --call-id c2 -- /usr/bin/cat /srv/ok/file")?;
    ensure!(read == "readable\n", "{read}");
    let (code, out, err) = sh("clawctl run --agent tools -- /usr/bin/cat /srv/secret");
    ensure!(code != 0, "plain run read: {out}{err}");
    within(
        Duration::from_secs(60),
        "the supervised process's report",
        || std::fs::read_to_string("/srv/out/svc-ok").is_ok_and(|t| t == "readable\n"),
    )?;
    let secret = std::fs::read_to_string("/srv/out/svc-secret")?;
    ensure!(
        secret.trim() != "0",
        "the supervised process read the secret"
    );
    let log = sh("journalctl -u claw-agent --no-pager -o cat").1;
    if abi < 7 {
        ensure!(
            log.contains("does not report denials"),
            "the log does not say Landlock's refusals go unreported: {log}"
        );
    }
    Ok(())
}

/// Where Landlock is too old for claw's file layer, status says network only, and why.
fn old_landlock_is_stated() -> anyhow::Result<()> {
    let status = status_json()?;
    ensure!(status["coverage"] == "degraded", "{status}");
    let log = sh("journalctl -u claw-agent --no-pager -o cat").1;
    ensure!(log.contains("not file-confined"), "{log}");
    Ok(())
}

pub fn run(nobpf: bool) -> ExitCode {
    println!(
        "CLAW-KERNEL {} {}",
        sh("uname -r").1.trim(),
        sh("uname -v").1.trim()
    );
    let mut all = true;
    let mut check = |name: &str, result: anyhow::Result<()>| {
        all &= report(name, &result);
        result.is_ok()
    };
    let ready = check("fixtures", fixtures()) && check("package_installs_with_apt", install());
    if ready && !nobpf {
        if check(
            "unit_active_only_once_enforcing",
            ready_only_once_enforcing(),
        ) {
            check(
                "denial_in_deny_log_and_journal",
                denial_in_deny_log_and_journal(),
            );
            check(
                "systemctl_reload_applies_changed_policy",
                reload_applies_changed_policy(),
            );
            check(
                "kill_restarts_with_enforcement_held_and_gap_logged",
                killed_and_restarted_without_a_window(),
            );
            check("landlock_stacks_on_bpf_lsm", landlock_stacks_on_bpf_lsm());
        }
        check("purge_removes_everything", purge_removes_everything());
    } else if ready {
        match check_explains_bpf_lsm() {
            Ok(abi) => {
                check("check_names_lsm_boot_parameter", Ok(()));
                let usable = abi >= claw_agent::policy::landlock::MIN_ABI;
                let expected = if usable { "landlock" } else { "degraded" };
                if check(
                    "unit_refuses_without_degraded_then_starts_with_coverage_stated",
                    refuses_then_starts_degraded(expected),
                ) {
                    if usable {
                        check(
                            "landlock_layer_confines_calls_and_run",
                            landlock_layer_confines(abi),
                        );
                    } else {
                        check("landlock_too_old_stated", old_landlock_is_stated());
                    }
                }
            }
            Err(err) => {
                check("check_names_lsm_boot_parameter", Err(err));
            }
        }
    }
    let code = i32::from(!all);
    println!("CLAW-DONE rc={code}");
    // SAFETY: sync(2) then reboot(2) to power off: the suite is over.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    ExitCode::from(code as u8)
}
