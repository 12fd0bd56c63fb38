//! Processes claw-agent runs in an agent's cgroup (`run:` in the policy): started inside the
//! cgroup from their first instruction, their output captured into claw-agent's log, restarted
//! with exponential back-off, given up after a crash loop, stopped with SIGTERM then SIGKILL.
//!
//! `spawn` starts a process in a cgroup with clone3 (clawctl's tool calls use it too). It may use
//! `events` (lifecycle events), `policy` (the `run:` spec) and `kernel` (coverage).

pub mod landlock;
pub mod spawn;

use std::{
    io::{BufRead as _, BufReader},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::sync::watch;

use crate::{
    events::{
        bus::Bus,
        event::{Event, Kind},
    },
    kernel::enforcer::Coverage,
    policy::{
        landlock::Plan,
        run::{Restart, RunSpec},
    },
};

/// A run this long resets the crash-loop count.
const STABLE: Duration = Duration::from_secs(60);
/// Time between SIGTERM and SIGKILL on stop.
const GRACE: Duration = Duration::from_secs(5);

/// A running supervisor: stop it by dropping `stop` (or sending true), then await `task`.
pub struct Supervisor {
    pub spec: RunSpec,
    /// The Landlock layer its process starts under (a change restarts it).
    pub landlock: Option<Plan>,
    pub restarts: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Supervisor {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

pub struct Agent {
    pub name: String,
    /// Relative to the cgroup root, as events show it (with a leading `/`).
    pub cgroup: String,
    pub cgroup_dir: PathBuf,
    pub coverage: Coverage,
    /// The Landlock layer its process starts under, if any.
    pub landlock: Option<Plan>,
}

fn lifecycle(agent: &Agent, pid: u32, op: &str, details: serde_json::Value) -> Event {
    let mut event = Event::about(
        Kind::Lifecycle,
        &agent.name,
        &agent.cgroup,
        op,
        agent.coverage,
    );
    event.pid = pid;
    event.details = Some(details);
    event
}

pub fn start(agent: Agent, spec: RunSpec, events: Arc<Bus>) -> Supervisor {
    let (stop, stopped) = watch::channel(false);
    let restarts = Arc::new(AtomicU64::new(0));
    let landlock = agent.landlock.clone();
    let task = tokio::spawn(supervise(
        agent,
        spec.clone(),
        events,
        stopped,
        restarts.clone(),
    ));
    Supervisor {
        spec,
        landlock,
        restarts,
        stop,
        task,
    }
}

/// Copies lines of the child's `stream` into claw-agent's log.
fn capture(agent: String, stream: &'static str, fd: OwnedFd) {
    std::thread::spawn(move || {
        for line in BufReader::new(std::fs::File::from(fd))
            .lines()
            .map_while(Result::ok)
        {
            tracing::info!(agent = %agent, stream, "{line}");
        }
    });
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) into a two-element array; both fds are owned from here on.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn launch(agent: &Agent, spec: &RunSpec) -> Result<spawn::Child, String> {
    let user = match &spec.user {
        Some(name) => Some(
            spawn::lookup_user(
                &std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
                name,
            )
            .ok_or_else(|| format!("user `{name}` is not in /etc/passwd"))?,
        ),
        None => None,
    };
    let mut env = spawn::default_env();
    env.retain(|(k, _)| !spec.env.contains_key(k));
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let (out_read, out_write) = pipe().map_err(|e| e.to_string())?;
    let (err_read, err_write) = pipe().map_err(|e| e.to_string())?;
    let child = spawn::spawn(
        &agent.cgroup_dir,
        &spawn::Spec {
            command: spec.command.clone(),
            env,
            workdir: spec.workdir.clone(),
            user,
            stdio: [
                None,
                Some(out_write.as_raw_fd()),
                Some(err_write.as_raw_fd()),
            ],
            landlock: agent.landlock.clone(),
        },
    )
    .map_err(|e| e.to_string())?;
    capture(agent.name.clone(), "stdout", out_read);
    capture(agent.name.clone(), "stderr", err_read);
    Ok(child)
}

/// Ends what an earlier claw-agent started in the agent's cgroup (it died without stopping it:
/// its programs stay attached, its processes run on): one instance of the agent's process, the
/// one this supervisor starts.
async fn end_leftovers(agent: &Agent, events: &Bus) {
    let procs = agent.cgroup_dir.join("cgroup.procs");
    let pids = |procs: &Path| -> Vec<i32> {
        std::fs::read_to_string(procs)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    let leftovers = pids(&procs);
    if leftovers.is_empty() {
        return;
    }
    for pid in &leftovers {
        // SAFETY: kill(2) by pid, of processes in the cgroup this daemon owns.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    for _ in 0..100 {
        if pids(&procs).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::warn!(agent = %agent.name, ?leftovers, "ended processes an earlier claw-agent left in the agent's cgroup");
    events.publish(lifecycle(
        agent,
        0,
        "ended-leftovers",
        json!({ "pids": leftovers }),
    ));
}

/// Resolves once a stop was asked for (or the supervisor's owner is gone).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn supervise(
    agent: Agent,
    spec: RunSpec,
    events: Arc<Bus>,
    mut stopped: watch::Receiver<bool>,
    restarts: Arc<AtomicU64>,
) {
    end_leftovers(&agent, &events).await;
    let mut in_a_row = 0u32;
    let mut delay = Duration::from_millis(spec.restart_delay_ms);
    loop {
        // Building a Landlock ruleset reads the file system: off the async workers' hands.
        let child = match tokio::task::block_in_place(|| launch(&agent, &spec)) {
            Ok(child) => child,
            Err(message) => {
                tracing::error!(agent = %agent.name, "cannot start {:?}: {message}", spec.command);
                events.publish(lifecycle(
                    &agent,
                    0,
                    "gave-up",
                    json!({ "reason": message }),
                ));
                return;
            }
        };
        let pid = child.pid;
        let started = Instant::now();
        events.publish(lifecycle(
            &agent,
            pid,
            "started",
            json!({
                "command": spec.command,
                "landlock": child.landlock.as_ref().map(|(abi, skipped)| json!({ "abi": abi, "skipped": skipped })),
            }),
        ));
        let child = Arc::new(child);
        let waiter = {
            let child = child.clone();
            tokio::task::spawn_blocking(move || spawn::wait(&child))
        };
        tokio::pin!(waiter);
        let status = tokio::select! {
            status = &mut waiter => status,
            () = stop_requested(&mut stopped) => {
                // SAFETY: signalling our own child, not yet reaped.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                match tokio::time::timeout(GRACE, &mut waiter).await {
                    Ok(status) => status,
                    Err(_) => {
                        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                        waiter.await
                    }
                }
            }
        };
        let code = status.ok().and_then(Result::ok).unwrap_or(-1);
        let details = if code > 128 {
            json!({ "signal": code - 128 })
        } else {
            json!({ "status": code })
        };
        events.publish(lifecycle(&agent, pid, "exited", details));
        let stopping = *stopped.borrow();
        if stopping {
            return;
        }
        let again = match spec.restart {
            Restart::Always => true,
            Restart::OnFailure => code != 0,
            Restart::Never => false,
        };
        if !again {
            return;
        }
        if started.elapsed() >= STABLE {
            in_a_row = 0;
            delay = Duration::from_millis(spec.restart_delay_ms);
        }
        if in_a_row >= spec.max_restarts {
            tracing::error!(agent = %agent.name, "crash loop: gave up after {in_a_row} restarts");
            events.publish(lifecycle(
                &agent,
                pid,
                "gave-up",
                json!({ "restarts": in_a_row }),
            ));
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop_requested(&mut stopped) => return,
        }
        in_a_row += 1;
        restarts.fetch_add(1, Ordering::Relaxed);
        events.publish(lifecycle(
            &agent,
            pid,
            "restarted",
            json!({ "restart": in_a_row, "delay_ms": delay.as_millis() as u64 }),
        ));
        delay = (delay * 2).min(Duration::from_millis(spec.restart_delay_max_ms));
    }
}
