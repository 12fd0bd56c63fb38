//! claw-agent's life: policy -> kernel, kernel events -> subscribers, until told to stop.
//!
//! Order matters: the policy is parsed and the programs are loaded (proving the kernel can
//! enforce) before anything is created on the machine; the maps are filled before the programs
//! are attached; the control socket appears only once enforcement is in place, so a client that
//! can reach the daemon knows the policy is enforced.

use std::{
    future::Future,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{unix::AsyncFd, Interest},
    net::UnixListener,
    sync::{broadcast, mpsc},
};

use crate::{
    cgroupfs, compile,
    enforcer::{AgentCgroup, Enforcer},
    event::{self, AgentIdentity, Event},
    policy,
    protocol::{AgentStatus, Status},
    server::{self, Control, Handles},
};

/// Events buffered for each follower before the slowest is told it lost some.
const FOLLOWER_BUFFER: usize = 4096;

pub struct Config {
    pub policy: PathBuf,
    pub socket: PathBuf,
    /// The cgroup v2 mount; found in /proc/self/mountinfo when not given.
    pub cgroup_root: Option<PathBuf>,
    pub vmlinux_btf: PathBuf,
    pub lsm_list: PathBuf,
}

pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let policy = policy::load(&config.policy)?;
    let compiled = compile::compile(&policy);
    let mut enforcer = Enforcer::load(&config.vmlinux_btf, &config.lsm_list)?;

    let cgroup_root = match config.cgroup_root {
        Some(root) => root,
        None => cgroupfs::find_cgroup2_root()?,
    };
    let mut cgroups = Vec::new();
    let mut agent_status = Vec::new();
    for agent in &compiled.agents {
        let cgroup_id = cgroupfs::ensure(&cgroup_root, &agent.cgroup)?;
        cgroups.push(AgentCgroup {
            agent_id: agent.id,
            cgroup_id,
        });
        agent_status.push(AgentStatus {
            name: agent.name.clone(),
            cgroup: format!("/{}", agent.cgroup),
            cgroup_id,
            file_rules: agent.file_rules.len(),
        });
    }
    enforcer.install(&compiled, &cgroups)?;
    enforcer.attach()?;
    tracing::info!(
        policy = %config.policy.display(),
        agents = compiled.agents.len(),
        "policy enforced"
    );

    let identities: Vec<AgentIdentity> = compiled
        .agents
        .iter()
        .map(|a| AgentIdentity {
            id: a.id,
            name: a.name.clone(),
            cgroup: a.cgroup.clone(),
        })
        .collect();
    let (events, _) = broadcast::channel(FOLLOWER_BUFFER);
    let undecodable = Arc::new(AtomicU64::new(0));
    let ring = enforcer.take_events()?;
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for as long as it lives,
    // and it lives inside the AsyncFd.
    let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(std::io::Error::from)
        .context("watching the event ring buffer")?;
    tokio::spawn(read_events(
        ring,
        identities,
        events.clone(),
        undecodable.clone(),
    ));

    let (control, requests) = mpsc::channel(16);
    let owner = Owner {
        enforcer,
        policy: config.policy.display().to_string(),
        agents: agent_status,
        undecodable,
    };
    tokio::spawn(owner.serve(requests));

    let listener = bind(&config.socket)?;
    tracing::info!(socket = %config.socket.display(), "listening");
    server::run(listener, Handles { events, control }, shutdown).await;
    let _ = std::fs::remove_file(&config.socket);
    Ok(())
}

/// The control socket is root's only (0600): it reveals what every agent tried.
fn bind(socket: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the socket directory {}", dir.display()))?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            return Err(err)
                .with_context(|| format!("removing the stale socket {}", socket.display()))
        }
    }
    let listener = UnixListener::bind(socket)
        .with_context(|| format!("binding the control socket {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {} to root", socket.display()))?;
    Ok(listener)
}

/// The one task that holds the kernel objects; others ask it through `Control`.
struct Owner {
    enforcer: Enforcer,
    policy: String,
    agents: Vec<AgentStatus>,
    undecodable: Arc<AtomicU64>,
}

impl Owner {
    async fn serve(self, mut requests: mpsc::Receiver<Control>) {
        while let Some(request) = requests.recv().await {
            match request {
                Control::Status(reply) => {
                    let _ = reply.send(self.status());
                }
            }
        }
    }

    fn status(&self) -> Status {
        let mut counters = self.enforcer.counters().unwrap_or_else(|err| {
            tracing::warn!("reading the kernel counters: {err}");
            Default::default()
        });
        counters.events_undecodable = self.undecodable.load(Ordering::Relaxed);
        Status {
            enforcing: self.enforcer.is_enforcing(),
            policy: self.policy.clone(),
            agents: self.agents.clone(),
            programs: self.enforcer.programs(),
            counters,
        }
    }
}

async fn read_events(
    mut ring: AsyncFd<RingBuf<MapData>>,
    agents: Vec<AgentIdentity>,
    events: broadcast::Sender<Event>,
    undecodable: Arc<AtomicU64>,
) {
    loop {
        let mut ready = match ring.readable_mut().await {
            Ok(ready) => ready,
            Err(err) => {
                tracing::error!("waiting on the event ring buffer: {err}");
                return;
            }
        };
        let offset = event::boot_to_wall_offset();
        let buffer = ready.get_inner_mut();
        while let Some(item) = buffer.next() {
            match event::decode(&item, &agents, offset) {
                Ok(event) => {
                    // The daemon's log is the record of last resort while nobody follows.
                    tracing::info!(
                        agent = %event.agent, pid = event.pid, comm = %event.comm,
                        op = %event.op, path = %event.path, "deny"
                    );
                    let _ = events.send(event);
                }
                Err(err) => {
                    undecodable.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("dropping a kernel record: {err}");
                }
            }
        }
        ready.clear_ready();
    }
}
