//! claw-agent's life: policy -> kernel, kernel events -> subscribers, until told to stop.
//!
//! Order matters: the policy is parsed and compiled and the programs are loaded (proving the
//! kernel can enforce) before anything is created on the machine; the maps are filled before the
//! programs are attached; the control socket appears only once enforcement is in place, so a
//! client that can reach the daemon knows the policy is enforced.

use std::{
    future::Future,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{unix::AsyncFd, Interest},
    net::UnixListener,
    signal::unix::{signal, SignalKind},
    sync::{broadcast, mpsc},
};

use crate::{
    cgroupfs,
    compile::{self, Compiled},
    describe::{self, RuleLine},
    enforcer::{Coverage, Enforcer},
    event::{self, AgentIdentity, Event, Identities},
    policy::{self, Policy},
    protocol::{AgentStatus, Status},
    resolve,
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
    /// Run without BPF LSM: network rules enforced, file and exec rules not.
    pub degraded: bool,
    /// Cap on how long a DNS answer for a hostname rule is trusted.
    pub max_ttl: Duration,
}

/// A policy read, checked and compiled, with its hostnames resolved: ready to install.
pub struct Prepared {
    pub policy: Policy,
    pub compiled: Compiled,
    /// When the earliest hostname answer expires (None without hostname rules).
    pub expires: Option<Instant>,
}

/// Longest claw-agent trusts a DNS answer before resolving again, whatever its TTL.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(300);

/// Reads, compiles and resolves a policy file. Every error names the file and, where it can,
/// the line and column. Blocks while resolving: call it off the async runtime.
pub fn prepare(path: &Path, max_ttl: Duration) -> Result<Prepared, String> {
    let policy = policy::load(path).map_err(|err| err.to_string())?;
    compile_resolved(policy, max_ttl)
}

/// Compiles `policy` with its hostnames resolved now.
pub fn compile_resolved(policy: Policy, max_ttl: Duration) -> Result<Prepared, String> {
    let file = policy.file.display().to_string();
    let mut compiled = compile::compile(&policy).map_err(|err| format!("{file}: {err}"))?;
    let mut expires: Option<Instant> = None;
    if compiled.agents.iter().any(|a| !a.hostname_rules.is_empty()) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| format!("starting the resolver: {err}"))?;
        for (agent, source) in compiled.agents.iter_mut().zip(&policy.agents) {
            let resolved = runtime
                .block_on(resolve::resolve(&agent.hostname_rules, max_ttl))
                .map_err(|err| format!("{file}: agent `{}`: {err}", agent.name))?;
            expires = match (expires, resolved.expires) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            // Address rules again, so that ports inherited across both are merged in one pass.
            let mut rules = resolved.rules;
            rules.extend(source.rules.connect.iter().cloned());
            agent.net_rules = compile::net_rules(&rules)
                .map_err(|err| format!("{file}: agent `{}`: {err}", agent.name))?;
        }
    }
    Ok(Prepared {
        policy,
        compiled,
        expires,
    })
}

pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let (path, max_ttl) = (config.policy.clone(), config.max_ttl);
    let prepared = tokio::task::spawn_blocking(move || prepare(&path, max_ttl))
        .await?
        .map_err(anyhow::Error::msg)?;
    let coverage = if config.degraded {
        Coverage::NetworkOnly
    } else {
        Coverage::Full
    };
    let cgroup_root = match config.cgroup_root {
        Some(root) => root,
        None => cgroupfs::find_cgroup2_root()?,
    };
    let mut enforcer =
        Enforcer::load(&config.vmlinux_btf, &config.lsm_list, coverage, cgroup_root)?;
    let identities = Arc::new(RwLock::new(Identities::new()));
    enforcer.apply(&prepared.compiled)?;
    record_identities(&enforcer, &identities);
    enforcer.attach_programs()?;
    if coverage == Coverage::NetworkOnly {
        tracing::warn!(
            "DEGRADED: no BPF LSM — network rules are enforced; file and exec rules are NOT"
        );
    }
    tracing::info!(
        policy = %config.policy.display(),
        agents = prepared.compiled.agents.len(),
        "policy enforced"
    );

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
        match coverage {
            Coverage::Full => "full",
            Coverage::NetworkOnly => "degraded",
        },
        identities.clone(),
        events.clone(),
        undecodable.clone(),
    ));

    let (control, requests) = mpsc::channel(16);
    let owner = Owner {
        enforcer,
        lines: describe::rule_lines(&prepared.policy),
        policy: prepared.policy,
        expires: prepared.expires,
        max_ttl: config.max_ttl,
        generation: 1,
        identities,
        undecodable,
    };
    tokio::spawn(owner.serve(requests));
    tokio::spawn(reload_on_sighup(config.policy.clone(), control.clone()));
    tokio::spawn(tick(control.clone()));

    let listener = bind(&config.socket)?;
    tracing::info!(socket = %config.socket.display(), "listening");
    server::run(listener, Handles { events, control }, shutdown).await;
    let _ = std::fs::remove_file(&config.socket);
    Ok(())
}

/// Asks the owner each second whether hostname answers have expired.
async fn tick(control: mpsc::Sender<Control>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticks.tick().await;
        if control.send(Control::Refresh).await.is_err() {
            return;
        }
    }
}

/// SIGHUP re-applies the policy file claw-agent was started with.
async fn reload_on_sighup(policy: PathBuf, control: mpsc::Sender<Control>) {
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot watch SIGHUP; use `clawctl policy apply` to reload");
        return;
    };
    while hangups.recv().await.is_some() {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if control
            .send(Control::Apply {
                policy: policy.clone(),
                reply,
            })
            .await
            .is_err()
        {
            return;
        }
        match answer.await {
            Ok(Ok((_, generation))) => tracing::info!(generation, "SIGHUP: policy re-applied"),
            Ok(Err(message)) => {
                tracing::error!("SIGHUP: policy rejected, previous one stays: {message}")
            }
            Err(_) => return,
        }
    }
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

fn record_identities(enforcer: &Enforcer, identities: &RwLock<Identities>) {
    let mut identities = identities.write().unwrap_or_else(|p| p.into_inner());
    for agent in enforcer.installed() {
        identities.insert(
            agent.ruleset,
            AgentIdentity {
                name: agent.name.clone(),
                cgroup: agent.cgroup.clone(),
            },
        );
    }
}

/// The one task that holds the kernel objects; others ask it through `Control`.
struct Owner {
    enforcer: Enforcer,
    /// The enforced policy, as read (its hostnames are resolved again when their answers expire).
    policy: Policy,
    expires: Option<Instant>,
    max_ttl: Duration,
    lines: Vec<RuleLine>,
    generation: u64,
    identities: Arc<RwLock<Identities>>,
    undecodable: Arc<AtomicU64>,
}

impl Owner {
    async fn serve(mut self, mut requests: mpsc::Receiver<Control>) {
        while let Some(request) = requests.recv().await {
            match request {
                Control::Status(reply) => {
                    let _ = reply.send(self.status());
                }
                Control::Rules(reply) => {
                    let _ =
                        reply.send((self.policy.file.display().to_string(), self.lines.clone()));
                }
                Control::Refresh => self.refresh().await,
                Control::Apply { policy, reply } => {
                    let _ = reply.send(self.apply(policy).await);
                }
            }
        }
    }

    async fn apply(&mut self, path: PathBuf) -> Result<(String, u64), String> {
        let max_ttl = self.max_ttl;
        let prepared = tokio::task::spawn_blocking(move || prepare(&path, max_ttl))
            .await
            .map_err(|err| format!("preparing the policy failed: {err}"))??;
        self.install(prepared)?;
        self.generation += 1;
        tracing::info!(policy = %self.policy.file.display(), generation = self.generation, "policy applied");
        Ok((self.policy.file.display().to_string(), self.generation))
    }

    fn install(&mut self, prepared: Prepared) -> Result<(), String> {
        self.enforcer.apply(&prepared.compiled).map_err(|err| {
            format!(
                "{}: not applied, the previous policy stays: {err}",
                prepared.policy.file.display()
            )
        })?;
        record_identities(&self.enforcer, &self.identities);
        self.lines = describe::rule_lines(&prepared.policy);
        self.policy = prepared.policy;
        self.expires = prepared.expires;
        Ok(())
    }

    /// Resolves hostname rules again once their answers expired; re-installs if addresses moved.
    async fn refresh(&mut self) {
        if self.expires.is_none_or(|at| at > Instant::now()) {
            return;
        }
        let (policy, max_ttl) = (self.policy.clone(), self.max_ttl);
        let prepared =
            match tokio::task::spawn_blocking(move || compile_resolved(policy, max_ttl)).await {
                Ok(Ok(prepared)) => prepared,
                Ok(Err(message)) => {
                    // Keep the addresses in force; try again after a while.
                    tracing::warn!(
                        "re-resolving hostnames failed, keeping the previous addresses: {message}"
                    );
                    self.expires = Some(Instant::now() + Duration::from_secs(5));
                    return;
                }
                Err(err) => {
                    tracing::error!("re-resolving hostnames: {err}");
                    return;
                }
            };
        let unchanged = prepared
            .compiled
            .agents
            .iter()
            .zip(self.enforcer.installed())
            .all(|(new, old)| new.net_rules == old.net_rules);
        if unchanged {
            self.expires = prepared.expires;
            return;
        }
        match self.install(prepared) {
            Ok(()) => tracing::info!("hostname addresses changed: network rules re-installed"),
            Err(message) => tracing::error!("{message}"),
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
            coverage: match self.enforcer.coverage() {
                Coverage::Full => "full".to_owned(),
                Coverage::NetworkOnly => "degraded".to_owned(),
            },
            policy: self.policy.file.display().to_string(),
            generation: self.generation,
            agents: self
                .enforcer
                .installed()
                .iter()
                .map(|a| AgentStatus {
                    name: a.name.clone(),
                    cgroup: format!("/{}", a.cgroup),
                    cgroup_id: a.cgroup_id,
                    mode: a.mode.as_str().to_owned(),
                    file_rules: a.file_rules.len(),
                    net_rules: a.net_rules.len(),
                })
                .collect(),
            programs: self.enforcer.programs(),
            counters,
        }
    }
}

async fn read_events(
    mut ring: AsyncFd<RingBuf<MapData>>,
    coverage: &'static str,
    identities: Arc<RwLock<Identities>>,
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
        let identities = identities.read().unwrap_or_else(|p| p.into_inner());
        let buffer = ready.get_inner_mut();
        while let Some(item) = buffer.next() {
            match event::decode(&item, &identities, offset, coverage) {
                Ok(event) => {
                    // The daemon's log is the record of last resort while nobody follows.
                    tracing::info!(
                        kind = %event.kind, agent = %event.agent, pid = event.pid,
                        comm = %event.comm, op = %event.op,
                        object = event.path.as_deref().or(event.destination.as_deref()).unwrap_or(""),
                        "{}", event.decision
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
