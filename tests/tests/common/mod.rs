//! What the host tests share: claw-agent --degraded (the host kernel refuses BPF LSM; its cgroup
//! network programs load) on cgroups the test creates under the cgroup v2 root, and removes with
//! the daemon stopped, whatever happens.
// Each test file compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use claw_tests::harness::{in_cgroup, PrivateBpffs};

pub const PROBE: &str = env!("CARGO_BIN_EXE_claw-vmtest");
pub const EPERM: i32 = 1;

/// claw-agent and clawctl, built beside the probe: `cargo xtask test` builds the workspace's
/// binaries before it runs the tests (plain `cargo test` does not rebuild another package's
/// binaries: run `cargo build --bins` first).
pub fn sibling(name: &str) -> PathBuf {
    let path = Path::new(PROBE).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask test`, or `cargo build --bins` before `cargo test`",
        path.display()
    );
    path
}

/// The test's cgroups, files and daemon.
pub struct Host {
    /// First, so that it is unmounted (the pins go) before the directory holding it is removed.
    pub bpffs: PrivateBpffs,
    pub root: PathBuf,
    /// The test's own cgroup, relative to the root; agents' cgroups go below it.
    pub base: String,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub audit_log: PathBuf,
    daemon: Option<Child>,
    agents: Vec<PathBuf>,
}

impl Host {
    pub fn new(tag: &str) -> Self {
        let root = claw_agent::kernel::cgroupfs::find_cgroup2_root().expect("a cgroup v2 mount");
        let dir = tempfile::tempdir().unwrap();
        let bpffs = PrivateBpffs::mount(&dir.path().join("bpffs")).unwrap();
        Self {
            bpffs,
            base: format!("claw-{tag}-{}", std::process::id()),
            socket: dir.path().join("claw.sock"),
            audit_log: dir.path().join("audit.log"),
            root,
            dir,
            daemon: None,
            agents: Vec::new(),
        }
    }

    /// An agent's cgroup: (relative to the root, for the policy; absolute, to run in).
    pub fn agent(&mut self, name: &str) -> (String, PathBuf) {
        let relative = format!("{}/{name}", self.base);
        let absolute = self.root.join(&relative);
        self.agents.push(absolute.clone());
        (relative, absolute)
    }

    pub fn policy(&self, yaml: &str) -> PathBuf {
        let path = self.dir.path().join("policy.yaml");
        std::fs::write(&path, yaml).unwrap();
        path
    }

    /// claw-agent --degraded with this host's socket, cgroup root and audit log; network rules
    /// only (`--landlock off`) unless `extra` says otherwise.
    pub fn daemon_command(&self, policy: &Path, extra: &[&str]) -> Command {
        let mut command = Command::new(sibling("claw-agent"));
        if !extra.contains(&"--landlock") {
            command.args(["--landlock", "off"]);
        }
        command
            .args(["--degraded", "--policy"])
            .arg(policy)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--cgroup-root")
            .arg(&self.root)
            .arg("--audit-log")
            .arg(&self.audit_log)
            .arg("--bpffs")
            .arg(self.bpffs.pins())
            .args(extra)
            .stderr(Stdio::null());
        command
    }

    /// Starts claw-agent and waits until it enforces.
    pub fn start(&mut self, policy: &Path, extra: &[&str]) {
        assert!(self.daemon.is_none(), "a daemon is already running");
        self.daemon = Some(self.daemon_command(policy, extra).spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.clawctl(&["status"]).status.success() {
            assert!(Instant::now() < deadline, "claw-agent did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM to the daemon, then its exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal_and_wait(libc::SIGTERM)
    }

    /// `signal` to the daemon, then its exit status.
    pub fn signal_and_wait(&mut self, signal: i32) -> ExitStatus {
        let mut daemon = self.daemon.take().expect("a running daemon");
        // SAFETY: kill(2) on our own child's pid, not yet reaped.
        unsafe { libc::kill(daemon.id() as i32, signal) };
        daemon.wait().unwrap()
    }

    /// SIGHUP: the daemon re-applies its policy file.
    pub fn reload(&self) {
        let daemon = self.daemon.as_ref().expect("a running daemon");
        // SAFETY: kill(2) on our own child's pid, not yet reaped.
        unsafe { libc::kill(daemon.id() as i32, libc::SIGHUP) };
    }

    /// `claw-agent --uninstall` on this host's pins.
    pub fn uninstall(&self) -> Output {
        Command::new(sibling("claw-agent"))
            .arg("--uninstall")
            .arg("--bpffs")
            .arg(self.bpffs.pins())
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .unwrap()
    }

    pub fn clawctl(&self, args: &[&str]) -> Output {
        Command::new(sibling("clawctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// `clawctl ARGS` running in the background, its stdout piped.
    pub fn clawctl_child(&self, args: &[&str]) -> Child {
        Command::new(sibling("clawctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            self.stop();
        }
        for agent in self.agents.iter().rev() {
            let _ = std::fs::remove_dir(agent);
        }
        let _ = std::fs::remove_dir(self.root.join(&self.base));
    }
}

/// `claw-vmtest probe ARGS` inside `cgroup` (if given): (exit code, stdout).
pub fn probe_output(args: &[&str], cgroup: Option<&Path>) -> (i32, String) {
    let mut command = Command::new(PROBE);
    command.arg("probe").args(args).stderr(Stdio::null());
    let (mut command, _procs) = match cgroup {
        Some(cgroup) => {
            let (command, procs) = in_cgroup(command, cgroup).unwrap();
            (command, Some(procs))
        }
        None => (command, None),
    };
    let output = command.output().unwrap();
    (
        output.status.code().expect("probe exit code"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

pub fn probe(args: &[&str], cgroup: Option<&Path>) -> i32 {
    probe_output(args, cgroup).0
}
