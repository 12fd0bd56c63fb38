//! Credential stores: no wider rule reaches into them, a rule naming one does; other processes'
//! environments stay closed; programs are not started with preload variables.

use std::{
    os::unix::process::ExitStatusExt as _,
    process::{Command, Stdio},
};

use anyhow::{ensure, Context as _};
use claw_tests::harness::{expect, in_cgroup, in_cgroup_if, CLAWCTL, VMTEST};

use super::{
    calls::story_with, limited, named, runtime, tools, Runner, ALLOWED_FILE, EPERM, POLICY_PATH,
};

const EACCES: i32 = 13;

const FILES: [&str; 5] = [
    "/root/.ssh/id_ed25519",
    "/root/.aws/credentials",
    "/root/.aws/config",
    "/run/secrets/token",
    "/etc/claw-not-a-secret",
];

fn fixtures() -> anyhow::Result<()> {
    for file in FILES {
        if let Some(dir) = std::path::Path::new(file).parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(file, "secret\n")?;
    }
    Ok(())
}

/// `claw-vmtest probe open ALLOWED_FILE` started in `cgroup` (None: outside agents) with the
/// variable `name=value`.
fn started_with(
    name: &str,
    value: &str,
    cgroup: Option<&std::path::Path>,
) -> anyhow::Result<std::process::ExitStatus> {
    let mut command = Command::new(VMTEST);
    command
        .args(["probe", "open", ALLOWED_FILE])
        .env(name, value)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let (mut command, _procs) = in_cgroup_if(command, cgroup)?;
    Ok(command.status()?)
}

pub fn run(runner: &mut Runner) {
    runner.check(
        "a_program_started_with_a_preload_variable_is_refused",
        (|| {
            let tools = tools();
            for (name, value) in [
                ("LD_PRELOAD", "/workspace/none.so"),
                ("LD_AUDIT", "/workspace/none.so"),
                ("NODE_OPTIONS", "--require=/workspace/x.js"),
            ] {
                let status = started_with(name, value, Some(&tools))?;
                ensure!(status.signal() == Some(9), "{name} in tools: {status}");
            }
            let status = started_with("NOT_A_PRELOAD", "1", Some(&tools))?;
            ensure!(status.success(), "a harmless variable: {status}");
            let status = started_with("LD_PRELOAD", "/workspace/none.so", None)?;
            ensure!(status.signal().is_none(), "outside agents: {status}");
            // Agent `runtime` has allow_env: [NODE_OPTIONS] (and no read rule for the file).
            let status = started_with("NODE_OPTIONS", "--max-old-space-size=64", Some(&runtime()))?;
            ensure!(
                status.signal().is_none(),
                "NODE_OPTIONS where allowed: {status}"
            );
            let status = started_with("LD_PRELOAD", "/workspace/none.so", Some(&runtime()))?;
            ensure!(
                status.signal() == Some(9),
                "LD_PRELOAD where only NODE_OPTIONS is allowed: {status}"
            );
            // The denial names the variable, the call and why.
            let output = Command::new(CLAWCTL)
                .args([
                    "run",
                    "--agent",
                    "tools",
                    "--call-id",
                    "vm-preload",
                    "--",
                    VMTEST,
                    "probe",
                    "open",
                    ALLOWED_FILE,
                ])
                .env("LD_PRELOAD", "/workspace/none.so")
                .output()?;
            ensure!(output.status.code() == Some(128 + 9), "{output:?}");
            let events = story_with("vm-preload", |e| e["op"] == "preload")?;
            let denial = events
                .iter()
                .find(|e| e["op"] == "preload")
                .with_context(|| format!("no preload denial in {events:?}"))?;
            ensure!(
                denial["path"] == "LD_PRELOAD=/workspace/none.so"
                    && denial["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("allow_env")),
                "{denial}"
            );
            Ok(())
        })(),
    );
    // Agent `broad` reads and writes [/], and names /root/.aws/credentials.
    let broad = named("broad");
    let inside = Some(broad.as_path());
    runner.check(
        "credential_stores_are_closed_under_a_wider_rule",
        (|| {
            fixtures()?;
            expect(&["open", "/root/.ssh/id_ed25519"], inside, EPERM)?;
            expect(
                &["open", "/root/.ssh/authorized_keys", "create"],
                inside,
                EPERM,
            )?;
            expect(&["open", "/run/secrets/token"], inside, EPERM)?;
            expect(&["open", "/etc/claw-not-a-secret"], inside, 0)?;
            expect(&["open", "/root/.ssh/id_ed25519"], None, 0)
        })(),
    );
    runner.check(
        "guards_hold_under_every_name_of_a_store",
        other_names(&broad),
    );
    runner.check(
        "a_rule_naming_a_credential_opens_that_one_only",
        (|| {
            expect(&["open", "/root/.aws/credentials"], inside, 0)?;
            expect(&["open", "/root/.aws/config"], inside, EPERM)
        })(),
    );
    runner.check(
        "other_processes_environments_are_closed",
        (|| {
            // Agent `limited` reads [/proc/]: its own environment, not another process's (the
            // ptrace hook refuses the read access; /proc reports any such refusal as EACCES).
            let limited = limited();
            expect(&["open", "/proc/self/environ"], Some(&limited), 0)?;
            expect(&["open", "/proc/1/environ"], Some(&limited), EACCES)?;
            expect(&["open", "/proc/1/environ"], None, 0)
        })(),
    );
}

/// A user whose home is reached through a symbolic link, and /etc bind-mounted elsewhere, both
/// made before the policy is applied: their stores are guarded under the names the kernel
/// resolves. And a guarded file replaced by rename while an agent holds it (O_PATH) and reopened
/// through /proc/self/fd keeps its guard (d_path calls it `/etc/shadow (deleted)`). `broad`
/// reads [/].
fn other_names(broad: &std::path::Path) -> anyhow::Result<()> {
    let inside = Some(broad);
    // The VM's root has no passwd and shadow of its own.
    let passwd = std::fs::read_to_string("/etc/passwd").ok();
    if !std::path::Path::new("/etc/shadow").exists() {
        std::fs::write("/etc/shadow", "root:*:20000:0:99999:7:::\n")?;
    }
    std::fs::create_dir_all("/var/claw-homes/alice/.ssh")?;
    std::fs::write("/var/claw-homes/alice/.ssh/id_ed25519", "secret\n")?;
    let _ = std::os::unix::fs::symlink("var/claw-homes", "/claw-homes");
    std::fs::write(
        "/etc/passwd",
        format!(
            "{}alice:x:1500:1500::/claw-homes/alice:/bin/sh\n",
            passwd.as_deref().unwrap_or_default()
        ),
    )?;
    std::fs::create_dir_all("/srv/etc-alias")?;
    let result = (|| {
        expect(&["bind-mount", "/etc", "/srv/etc-alias"], None, 0)?;
        apply()?;
        expect(
            &["open", "/claw-homes/alice/.ssh/id_ed25519"],
            inside,
            EPERM,
        )?;
        expect(
            &["open", "/var/claw-homes/alice/.ssh/id_ed25519"],
            inside,
            EPERM,
        )?;
        expect(&["open", "/srv/etc-alias/shadow"], inside, EPERM)?;
        expect(&["open", "/srv/etc-alias/claw-not-a-secret"], inside, 0)?;
        expect(&["open", "/srv/etc-alias/shadow"], None, 0)?;
        replaced_while_held(broad)
    })();
    let _ = claw_tests::harness::probe(&["umount", "/srv/etc-alias"], None);
    match passwd {
        Some(passwd) => std::fs::write("/etc/passwd", passwd)?,
        None => std::fs::remove_file("/etc/passwd")?,
    }
    apply()?;
    result
}

fn apply() -> anyhow::Result<()> {
    let out = Command::new(CLAWCTL)
        .args(["policy", "apply", POLICY_PATH])
        .output()?;
    ensure!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// /etc/shadow replaced the way passwd(1) does (a new file renamed over it) while a process of
/// `broad` holds the old one: reopening the held file is refused, and reported.
fn replaced_while_held(broad: &std::path::Path) -> anyhow::Result<()> {
    let marker = "/tmp/claw-held";
    let _ = std::fs::remove_file(marker);
    let follower = claw_tests::harness::Follower::start(&["--json", "--agent", "broad"])?;
    let mut command = Command::new(VMTEST);
    command.args(["probe", "hold-then-reopen", "/etc/shadow", marker]);
    let (mut command, _procs) = in_cgroup(command, broad)?;
    let mut child = command.spawn()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::path::Path::new(marker).exists() {
        if std::time::Instant::now() > deadline || child.try_wait()?.is_some() {
            let _ = child.kill();
            anyhow::bail!("the probe never held /etc/shadow");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::fs::copy("/etc/shadow", "/etc/shadow.claw-new")?;
    std::fs::rename("/etc/shadow.claw-new", "/etc/shadow")?;
    std::fs::remove_file(marker)?;
    let status = child.wait()?;
    ensure!(
        status.code() == Some(EPERM),
        "reopening the replaced /etc/shadow: {status}"
    );
    follower
        .line_within(std::time::Duration::from_secs(20), |line| {
            line.contains("\"deny\"") && line.contains("\"/etc/shadow\"")
        })
        .context("no deny event for the replaced /etc/shadow")?;
    Ok(())
}
