//! The in-kernel test cases. One daemon enforces POLICY for the whole run; cases that change the
//! policy put it back.

mod advise;
mod basics;
mod calls;
mod confine;
mod credentials;
mod devices;
mod dns;
mod egress;
mod exec;
mod files;
mod grants;
mod limits;
mod net;
mod policy;
mod run;
mod subtree;
mod supervise;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use claw_tests::{
    harness::{report, Daemon, CGROUP_ROOT, DAEMON_LOG},
    upstream::Upstream,
};

pub const POLICY: &str = "\
agents:
  - name: tools
    cgroup: claw/tools
    files:
      read: [/usr/, /lib/, /workspace/]
      write: [/workspace/]
    exec:
      - /usr/bin/claw-vmtest
      - /usr/bin/clawctl
      - /usr/bin/true
      - /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
      - /workspace/bin/
    libraries: [/usr/lib/x86_64-linux-gnu/]
    connect:
      - 127.0.0.1:8080/tcp
      - \"[::1]:8080/tcp\"
      - 127.0.0.1:5353/udp
      - svc.claw.test:8081/tcp
      - meta.claw.test:80/tcp
      - \"*.wild.claw.test:80/tcp\"
      - 127.0.0.1:7000-7010/tcp
    listen: [127.0.0.1:7300/tcp, 127.0.0.1:7301/udp]
    redirect:
      - { to: 10.9.9.9:443/tcp, via: \"127.0.0.1:3128\" }
  - name: limited
    cgroup: claw/limited
    limits: { memory_max: 64M, memory_high: 48M, pids_max: 16, cpu_max: \"1\" }
    exec: [/usr/bin/claw-vmtest]
    files:
      read: [/proc/]
  - name: gpu
    cgroup: claw/gpu
    devices: { gpu: true }
    exec: [/usr/bin/claw-vmtest]
  - name: devuser
    cgroup: claw/devuser
    exec: [/usr/bin/claw-vmtest]
    files:
      read: [/dev/]
      write: [/dev/]
  - name: svclong
    cgroup: claw/svclong
    exec: [/usr/bin/claw-vmtest]
    run: { command: [/usr/bin/claw-vmtest, probe, sleep, \"600\"] }
  - name: runtime
    cgroup: claw/runtime
    jit: true
    allow_env: [NODE_OPTIONS]
    exec: [/usr/bin/claw-vmtest]
  - name: broad
    cgroup: claw/broad
    files:
      read: [/, /root/.aws/credentials]
      write: [/]
    connect: [0.0.0.0/0:80/tcp, \"[::]/0:80/tcp\", 127.0.0.1:7100/tcp]
    exec: [/usr/bin/claw-vmtest, /usr/bin/clawctl]
  - name: auditor
    cgroup: claw/auditor
    mode: audit
    files:
      read: [/usr/]
    exec: [/usr/bin/claw-vmtest]
";
pub const POLICY_PATH: &str = "/tmp/claw-test-policy.yaml";
pub const ALLOWED_FILE: &str = "/workspace/hello.txt";
pub const DENIED_FILE: &str = "/etc/secret";
/// claw-agent's agent socket, beside the control socket.
pub const AGENT_SOCKET: &str = "/run/claw/agent.sock";
pub const EPERM: i32 = 1;
pub const ECONNREFUSED: i32 = 111;
pub const ENETUNREACH: i32 = 101;

pub fn tools() -> PathBuf {
    Path::new(CGROUP_ROOT).join("claw/tools")
}

pub fn limited() -> PathBuf {
    Path::new(CGROUP_ROOT).join("claw/limited")
}

pub fn named(agent: &str) -> PathBuf {
    Path::new(CGROUP_ROOT).join("claw").join(agent)
}

pub fn runtime() -> PathBuf {
    Path::new(CGROUP_ROOT).join("claw/runtime")
}

pub fn auditor() -> PathBuf {
    Path::new(CGROUP_ROOT).join("claw/auditor")
}

/// Runs cases, printing a result line for each.
pub struct Runner {
    all_passed: bool,
}

impl Runner {
    pub fn check(&mut self, name: &str, result: anyhow::Result<()>) {
        self.all_passed &= report(name, &result);
    }
}

pub fn run_all() -> ExitCode {
    let mut runner = Runner { all_passed: true };
    runner.check("fixtures", fixtures());
    let upstream = match Upstream::start("127.0.0.1:53") {
        Ok(upstream) => upstream,
        Err(err) => {
            runner.check("node_resolver_stand_in_starts", Err(err));
            return ExitCode::FAILURE;
        }
    };
    basics::before_daemon(&mut runner);

    // Hostname answers are trusted for as short as claw-agent allows, so that expiry is seen
    // quickly.
    let daemon = Daemon::start(
        Path::new(POLICY_PATH),
        Path::new(DAEMON_LOG),
        &["--max-dns-ttl", "1"],
    )
    .and_then(|mut d| d.wait_enforcing(Duration::from_secs(120)).map(|()| d));
    let mut daemon = match daemon {
        Ok(daemon) => daemon,
        Err(err) => {
            runner.check("daemon_enforces_policy", Err(err));
            return ExitCode::FAILURE;
        }
    };
    runner.check("daemon_enforces_policy", Ok(()));
    basics::run(&mut runner);
    files::run(&mut runner);
    exec::run(&mut runner);
    net::run(&mut runner);
    dns::run(&mut runner, &upstream);
    egress::run(&mut runner);
    confine::run(&mut runner);
    subtree::run(&mut runner);
    credentials::run(&mut runner);
    limits::run(&mut runner);
    devices::run(&mut runner);
    run::run(&mut runner);
    calls::run(&mut runner);
    grants::run(&mut runner);
    advise::run(&mut runner);
    supervise::run(&mut runner);
    policy::run(&mut runner, &mut daemon);
    basics::after(&mut runner, &mut daemon);
    for cgroup in [
        tools(),
        limited(),
        named("gpu"),
        named("devuser"),
        named("svclong"),
        runtime(),
        named("broad"),
        auditor(),
        Path::new(CGROUP_ROOT).join("claw"),
    ] {
        let _ = std::fs::remove_dir(cgroup);
    }
    if runner.all_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

const HOSTS: &str = "/etc/hosts";

fn fixtures() -> anyhow::Result<()> {
    std::fs::write(POLICY_PATH, POLICY)?;
    std::fs::write(HOSTS, "127.0.0.1 localhost\n")?;
    std::fs::write("/etc/resolv.conf", "nameserver 127.0.0.1\n")?;
    std::fs::create_dir_all("/workspace/bin")?;
    std::fs::write(ALLOWED_FILE, "hello\n")?;
    std::fs::write(DENIED_FILE, "s3cr3t\n")?;
    // A dynamically linked program the policy does not let the agent run.
    std::fs::copy("/usr/bin/true", "/workspace/true")?;
    // Scripts the policy lets the agent run, whose interpreter it does or does not.
    write_script(
        "/workspace/bin/busybox-script.sh",
        "#!/usr/bin/busybox sh\nexit 0\n",
    )?;
    write_script("/workspace/bin/true-script.sh", "#!/usr/bin/true\n")?;
    Ok(())
}

fn write_script(path: &str, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}
