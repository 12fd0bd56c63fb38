//! What the cases share: the daemon under test, followers of its deny log, processes started
//! inside a cgroup from their first instruction, and result reporting.

use std::{
    fs::File,
    io::{BufRead as _, BufReader},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

pub const CLAW_AGENT: &str = "/usr/bin/claw-agent";
pub const CLAWCTL: &str = "/usr/bin/clawctl";
pub const VMTEST: &str = "/usr/bin/claw-vmtest";
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Where the cases and the demo have claw-agent log.
pub const DAEMON_LOG: &str = "/tmp/claw-agent.log";

/// The ABI in `claw-agent --check`'s Landlock check (`ABI 6`, `ABI 2: too old ...`); 0 for none.
pub fn landlock_abi_of(check: &serde_json::Value) -> u32 {
    check["detail"]
        .as_str()
        .and_then(|d| d.strip_prefix("ABI "))
        .and_then(|d| d.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Prints one result line in the form the harness parses.
pub fn report(name: &str, result: &anyhow::Result<()>) -> bool {
    match result {
        Ok(()) => {
            println!("CLAW-RESULT PASS {name}");
            true
        }
        Err(err) => {
            let detail = format!("{err:#}").replace('\n', " | ");
            println!("CLAW-RESULT FAIL {name} {detail}");
            false
        }
    }
}

/// A running claw-agent, stopped with SIGTERM when dropped.
pub struct Daemon {
    child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(policy: &Path, log: &Path, extra_args: &[&str]) -> anyhow::Result<Self> {
        let child = Command::new(CLAW_AGENT)
            .arg("--policy")
            .arg(policy)
            .args(extra_args)
            .stderr(File::create(log)?)
            .spawn()
            .context("starting claw-agent")?;
        Ok(Self {
            child,
            log: log.to_owned(),
        })
    }

    /// Waits until `clawctl status` succeeds, i.e. the policy is enforced.
    pub fn wait_enforcing(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "claw-agent exited with {status}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            let ok = Command::new(CLAWCTL)
                .arg("status")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?
                .success();
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("claw-agent not enforcing after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// SIGTERM, then the exit status.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        self.kill(libc::SIGTERM)
    }

    /// `signal`, then the exit status.
    pub fn kill(&mut self, signal: i32) -> anyhow::Result<ExitStatus> {
        self.signal(signal);
        Ok(self.child.wait()?)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.stop();
        }
    }
}

/// `clawctl deny-log --follow [ARGS]`, its lines collected as they arrive.
pub struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
    notices: mpsc::Receiver<String>,
}

impl Follower {
    /// Starts the follower and waits until the daemon confirms the subscription.
    pub fn start(extra_args: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(CLAWCTL)
            .args(["deny-log", "--follow"])
            .args(extra_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting clawctl deny-log")?;
        let lines = line_channel(child.stdout.take().context("stdout")?);
        let notices = line_channel(child.stderr.take().context("stderr")?);
        match notices.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line.contains("following denials") => {}
            Ok(line) => bail!("clawctl deny-log said: {line}"),
            Err(_) => bail!("clawctl deny-log did not confirm its subscription"),
        }
        Ok(Self {
            child,
            lines,
            notices,
        })
    }

    /// The first line matching `wanted` that arrives within `timeout`.
    pub fn line_within(&self, timeout: Duration, wanted: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .ok()?;
            if wanted(&line) {
                return Some(line);
            }
        }
    }

    /// What clawctl said on stderr since it subscribed (reconnections, losses).
    pub fn notices(&self) -> Vec<String> {
        self.notices.try_iter().collect()
    }

    /// Discards lines already received.
    pub fn drain(&self) {
        while self.lines.try_recv().is_ok() {}
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn line_channel(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// A command that joins `cgroup` before exec, so the program runs there from its first
/// instruction.
pub fn in_cgroup(mut command: Command, cgroup: &Path) -> anyhow::Result<(Command, File)> {
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.procs"))
        .with_context(|| format!("opening {}/cgroup.procs", cgroup.display()))?;
    let fd = procs.as_raw_fd();
    // SAFETY: write(2) is async-signal-safe; the fd stays open because the caller keeps `procs`
    // until the child is spawned. "0" moves the writing (child) process.
    unsafe {
        command.pre_exec(move || {
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok((command, procs))
}

/// [`in_cgroup`] when `cgroup` is given; `command` as it is otherwise.
pub fn in_cgroup_if(
    command: Command,
    cgroup: Option<&Path>,
) -> anyhow::Result<(Command, Option<File>)> {
    Ok(match cgroup {
        Some(cgroup) => {
            let (command, procs) = in_cgroup(command, cgroup)?;
            (command, Some(procs))
        }
        None => (command, None),
    })
}

/// Runs `claw-vmtest probe ARGS` inside `cgroup` (if given); returns (pid, errno or 0).
pub fn probe(args: &[&str], cgroup: Option<&Path>) -> anyhow::Result<(u32, i32)> {
    let mut command = Command::new(VMTEST);
    command
        .arg("probe")
        .args(args)
        .stderr(Stdio::null())
        .stdout(Stdio::null());
    let (mut command, _procs) = in_cgroup_if(command, cgroup)?;
    let mut child = command.spawn().context("starting the probe")?;
    let pid = child.id();
    let status = child.wait()?;
    let code = status
        .code()
        .with_context(|| format!("the probe was killed: {status}"))?;
    Ok((pid, code))
}

/// Runs a probe (in `cgroup`, if given): its exit code and what it printed.
pub fn probe_output(args: &[&str], cgroup: Option<&Path>) -> anyhow::Result<(i32, String)> {
    let mut command = Command::new(VMTEST);
    command.arg("probe").args(args).stderr(Stdio::null());
    let (mut command, _procs) = in_cgroup_if(command, cgroup)?;
    let output = command.output().context("starting the probe")?;
    let code = output
        .status
        .code()
        .with_context(|| format!("the probe was killed: {}", output.status))?;
    Ok((code, String::from_utf8_lossy(&output.stdout).into_owned()))
}

/// The probe's exit code must be `want` (0, or an errno).
pub fn expect(args: &[&str], cgroup: Option<&Path>, want: i32) -> anyhow::Result<()> {
    let (_, code) = probe(args, cgroup)?;
    if code != want {
        let place = cgroup.map_or("outside agents".to_owned(), |c| {
            format!("in {}", c.display())
        });
        bail!(
            "probe {} {place}: exit {code} ({}), want {want} ({}); claw-agent's last words: {}",
            args.join(" "),
            describe(code),
            describe(want),
            daemon_log_tail(2)
        );
    }
    Ok(())
}

/// The last `lines` lines of the running daemon's log, to explain a failed case.
pub fn daemon_log_tail(lines: usize) -> String {
    let log = std::fs::read_to_string(DAEMON_LOG).unwrap_or_default();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

fn describe(code: i32) -> String {
    if code == 0 {
        "success".to_owned()
    } else {
        std::io::Error::from_raw_os_error(code).to_string()
    }
}

/// A cgroup the test creates and removes (also when the test fails).
pub struct ScratchCgroup(pub PathBuf);

impl ScratchCgroup {
    pub fn create(name: &str) -> anyhow::Result<Self> {
        let path = Path::new(CGROUP_ROOT).join(name);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for ScratchCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// What an audit log says of `agent`'s denials: (deny events, denials in `lost` counts — the
/// kernel's, per agent — and in the writer's own lost records). Reads every rotated file.
pub fn audit_accounts(audit_log: &Path, agent: &str) -> (u64, u64) {
    let (mut denied, mut lost) = (0u64, 0u64);
    let of_agent = format!("\"agent\":\"{agent}\"");
    for file in claw_agent::events::audit::files_of(audit_log) {
        for line in std::fs::read_to_string(&file).unwrap_or_default().lines() {
            if line.contains("\"kind\":\"deny\"") && line.contains(&of_agent) {
                denied += 1;
            } else if line.contains("\"kind\":\"lost\"") && line.contains(&of_agent)
                || line.contains("\"event\":{\"lost\":")
            {
                let record: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
                let event = &record["event"];
                lost += event["details"]["lost"]
                    .as_u64()
                    .or(event["lost"].as_u64())
                    .unwrap_or(0);
            }
        }
    }
    (denied, lost)
}

/// A BPF filesystem of the test's own, mounted on a directory it created: what claw-agent pins
/// there (programs kept attached, maps) goes when it is unmounted, also when the test fails.
pub struct PrivateBpffs(pub PathBuf);

impl PrivateBpffs {
    pub fn mount(dir: &Path) -> anyhow::Result<Self> {
        claw_agent::kernel::pins::mount_bpffs(dir)?;
        Ok(Self(dir.to_path_buf()))
    }

    /// Where claw-agent is told to pin (`--bpffs`).
    pub fn pins(&self) -> PathBuf {
        self.0.join("claw")
    }
}

impl Drop for PrivateBpffs {
    fn drop(&mut self) {
        if let Ok(target) = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()) {
            // SAFETY: umount2(2) of the mount this value made.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}
