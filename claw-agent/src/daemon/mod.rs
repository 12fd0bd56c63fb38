//! claw-agent's life: policy -> kernel, kernel events -> subscribers, until told to stop.
//!
//! Order matters: the policy is parsed and compiled and the programs are loaded (proving the
//! kernel can enforce) before anything is created on the machine; the maps are filled before the
//! programs are attached; the control socket appears only once enforcement is in place, so a
//! client that can reach the daemon knows the policy is enforced.

use std::{
    collections::HashMap,
    future::Future,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{atomic::Ordering, Arc, RwLock},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{
    net::UnixListener,
    signal::unix::{signal, SignalKind},
    sync::{broadcast, mpsc},
};

use crate::{
    control::grant,
    control::protocol::{AgentStatus, LimitStatus, Status, Usage},
    control::server::{self, Control, Handles},
    dns::resolve,
    dns::{self, Resolvers},
    events::audit,
    events::bus::{Bus, Stage},
    events::event::{self, AgentIdentity, CallIdentity, Event, Identities},
    events::ingest,
    events::watch,
    export::config,
    export::forward,
    export::metrics,
    kernel::cgroupfs,
    kernel::handover::ReportLimits,
    kernel::{
        enforcer::{Coverage, Enforcer, InstalledAgent},
        load::LoadOptions,
    },
    policy::call,
    policy::compile::{self, Compiled, CompiledAgent},
    policy::describe::{self, RuleLine},
    policy::limits,
    policy::reason,
    policy::RunSpec,
    policy::{self, Policy},
    supervise,
};

pub struct Config {
    pub policy: PathBuf,
    /// The control socket and the agent socket.
    pub sockets: compile::Sockets,
    /// The cgroup v2 mount; found in /proc/self/mountinfo when not given.
    pub cgroup_root: Option<PathBuf>,
    pub vmlinux_btf: PathBuf,
    pub lsm_list: PathBuf,
    /// Run without BPF LSM: network rules enforced, file and exec rules not.
    pub degraded: bool,
    /// Cap on how long a DNS answer for a hostname rule is trusted.
    pub max_ttl: Duration,
    /// Where the agents' resolvers find the node's nameservers.
    pub resolv_conf: PathBuf,
    /// Run agents whose limits the cgroup hierarchy cannot enforce (they are reported as not
    /// enforced) instead of refusing the policy.
    pub allow_missing_limits: bool,
    /// The hash-chained audit log, and the size at which it rotates.
    pub audit_log: PathBuf,
    pub audit_max_bytes: u64,
    /// Report rates the programs enforce before counting instead of sending.
    pub report_limits: ReportLimits,
    /// Where the kernel objects are pinned, to outlive the daemon.
    pub pins: PathBuf,
    /// Size of the kernel's event ring buffer (a power of two, at least a page).
    pub ring_buffer_bytes: u32,
    /// The daemon's configuration file's contents: forwarders, metrics.
    pub settings: config::Config,
}

/// Writes every event to the audit log, in batches of what has arrived; events this writer fell
/// behind on, or could not write (a full disk), are recorded as a count once it can write again.
/// The bus learns the sequence number after the last event handled (for followers and the
/// kernel reader's pacing).
async fn write_audit_log(
    mut writer: audit::Writer,
    mut events: broadcast::Receiver<Arc<Event>>,
    bus: Arc<Bus>,
) {
    /// Records written with one write(2) at most.
    const BATCH: usize = 1024;
    let mut sync = tokio::time::interval(Duration::from_secs(1));
    let entry = |received: Result<Arc<Event>, broadcast::error::RecvError>| match received {
        Ok(event) => Some(audit::Entry::Event(event)),
        Err(broadcast::error::RecvError::Lagged(lost)) => {
            bus.count_lost(Stage::Audit, lost);
            Some(audit::Entry::Lost { lost })
        }
        Err(broadcast::error::RecvError::Closed) => None,
    };
    // Events not written, waiting to be recorded as a count.
    let mut unwritten = 0;
    let record_unwritten = |writer: &mut audit::Writer, unwritten: &mut u64| {
        if *unwritten > 0
            && writer
                .append(audit::Entry::Lost { lost: *unwritten })
                .is_ok()
        {
            tracing::warn!("audit log: writable again; {unwritten} events were not written");
            *unwritten = 0;
        }
    };
    loop {
        let first = tokio::select! {
            received = events.recv() => received,
            _ = sync.tick() => {
                record_unwritten(&mut writer, &mut unwritten);
                if let Err(err) = writer.sync() {
                    tracing::error!("audit log: {err}");
                }
                continue;
            }
        };
        let Some(first) = entry(first) else {
            let _ = writer.sync();
            return;
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match events.try_recv() {
                Ok(event) => batch.extend(entry(Ok(event))),
                Err(broadcast::error::TryRecvError::Lagged(lost)) => {
                    batch.extend(entry(Err(broadcast::error::RecvError::Lagged(lost))))
                }
                Err(_) => break,
            }
        }
        let handled = batch.iter().rev().find_map(|e| match e {
            audit::Entry::Event(event) => Some(event.seq + 1),
            audit::Entry::Lost { .. } => None,
        });
        record_unwritten(&mut writer, &mut unwritten);
        if let Err(err) = writer.append_all(batch) {
            bus.count_lost(Stage::Audit, err.events);
            if unwritten == 0 {
                tracing::error!("audit log: {err}; events are being LOST (counted)");
            }
            unwritten += err.events;
        }
        // Only once handled: a follower replaying up to here reads them from the file.
        if let Some(handled) = handled {
            bus.mark_written(handled);
        }
    }
}

fn agent_views(compiled: &Compiled) -> Vec<watch::AgentView> {
    compiled
        .agents
        .iter()
        .map(|a| watch::AgentView {
            name: a.name.clone(),
            cgroup: a.cgroup.clone(),
            memory_max: a.limits.memory_max.map(|b| b.0),
            pids_max: a.limits.pids_max,
        })
        .collect()
}

/// Limits, by agent, that the policy sets and the cgroup hierarchy cannot enforce.
pub type Unenforced = HashMap<String, Vec<&'static str>>;

/// Installs a compiled policy: its limits are checked first (one the hierarchy cannot enforce
/// refuses the policy, before anything changes, unless `allow_missing`), then the kernel's rules
/// are applied, then the cgroups' limits written (unset limits back to "max").
fn install_policy(
    enforcer: &mut Enforcer,
    resolvers: &mut Resolvers,
    compiled: &Compiled,
    narrowed_calls: &HashMap<u64, CompiledAgent>,
    allow_missing: bool,
) -> Result<Unenforced, String> {
    let root = enforcer.cgroup_root().to_path_buf();
    let available = limits::available_controllers(&root)
        .map_err(|err| format!("reading {}/cgroup.controllers: {err}", root.display()))?;
    let mut unenforced = Unenforced::new();
    for agent in &compiled.agents {
        for limit in agent.limits.set() {
            let controller = limits::controller(limit);
            if available.iter().any(|c| c == controller) {
                continue;
            }
            if !allow_missing {
                return Err(format!(
                    "agent `{}`: {limit} cannot be enforced: the cgroup v2 hierarchy at {} has no `{controller}` controller (it offers: {}) — run claw on a unified cgroup v2 hierarchy with that controller, or start claw-agent with --allow-missing-limits to run the agent without the limit",
                    agent.name,
                    root.display(),
                    available.join(" ")
                ));
            }
            tracing::warn!(agent = %agent.name, limit, controller, "limit NOT enforced: no such controller");
            unenforced
                .entry(agent.name.clone())
                .or_default()
                .push(limit);
        }
    }
    let names: Vec<&str> = compiled.agents.iter().map(|a| a.name.as_str()).collect();
    let ports = resolvers
        .ports(&names)
        .map_err(|err| format!("starting the agents' resolvers: {err}"))?;
    enforcer
        .apply(compiled, narrowed_calls, &ports)
        .map_err(|err| err.to_string())?;
    resolvers.commit(
        &compiled
            .agents
            .iter()
            .zip(enforcer.installed())
            .map(|(agent, installed)| dns::Agent {
                name: &agent.name,
                cgroup: &agent.cgroup,
                cgroup_id: installed.cgroup_id,
                hostname_rules: &agent.hostname_rules,
            })
            .collect::<Vec<_>>(),
        &compiled.guarded,
    );
    let usable: Vec<&str> = ["memory", "pids", "cpu"]
        .into_iter()
        .filter(|c| available.iter().any(|a| a == c))
        .collect();
    for agent in &compiled.agents {
        cgroupfs::enable_controllers(&root, &agent.cgroup, &usable)
            .map_err(|err| err.to_string())?;
        for (limit, file, value) in agent.limits.files() {
            if usable.contains(&limits::controller(limit)) {
                cgroupfs::write_file(&root, &agent.cgroup, file, &value)
                    .map_err(|err| format!("agent `{}`: {err}", agent.name))?;
            }
        }
    }
    Ok(unenforced)
}

/// A policy read, checked and compiled: ready to install.
pub struct Prepared {
    pub policy: Policy,
    pub compiled: Compiled,
}

/// Reads and compiles a policy file. Every error names the file and, where it can, the line and
/// column. An agent's hostname rules are kept by its resolver (dns.rs), not resolved here.
pub fn prepare(path: &Path, sockets: &compile::Sockets) -> Result<Prepared, String> {
    let policy = policy::load(path).map_err(|err| err.to_string())?;
    let guards = compile::Guards::of_this_machine(sockets);
    let compiled = compile::compile_guarding(&policy, &guards)
        .map_err(|err| format!("{}: {err}", policy.file.display()))?;
    Ok(Prepared { policy, compiled })
}

/// Compiles `policy` with its hostnames resolved now, into address rules: for tool calls with
/// narrowed rules, which the agents' resolvers do not answer for. Blocks while resolving: call
/// it off the async runtime.
pub fn compile_resolved(
    policy: Policy,
    max_ttl: Duration,
    sockets: &compile::Sockets,
) -> Result<Compiled, String> {
    let file = policy.file.display().to_string();
    let guards = compile::Guards::of_this_machine(sockets);
    let mut compiled =
        compile::compile_guarding(&policy, &guards).map_err(|err| format!("{file}: {err}"))?;
    if compiled.agents.iter().any(|a| !a.hostname_rules.is_empty()) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| format!("starting the resolver: {err}"))?;
        for (agent, source) in compiled.agents.iter_mut().zip(&policy.agents) {
            let resolved = runtime
                .block_on(resolve::resolve(&agent.hostname_rules, max_ttl))
                .map_err(|err| format!("{file}: agent `{}`: {err}", agent.name))?;
            // Address rules again, so that ports inherited across both are merged in one pass.
            // An answer in a guarded network opens nothing (a name may be made to resolve to
            // the metadata service): only a rule naming the address does.
            let mut rules: Vec<_> = resolved
                .rules
                .into_iter()
                .filter(|rule| match rule.host {
                    crate::policy::rules::Host::Network { address, .. } => {
                        !compile::is_guarded(&address, &guards.networks)
                    }
                    crate::policy::rules::Host::Name(_) => false,
                })
                .collect();
            rules.extend(source.rules.connect.iter().cloned());
            agent.net_rules = compile::net_rules(&rules, &guards.networks)
                .map_err(|err| format!("{file}: agent `{}`: {err}", agent.name))?;
        }
    }
    Ok(compiled)
}

pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // The directories first: the rules name the sockets as the kernel resolves their paths.
    for socket in [&config.sockets.control, &config.sockets.agent] {
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the socket directory {}", dir.display()))?;
        }
    }
    let sockets = config.sockets.clone();
    let prepared = prepare(&config.policy, &sockets).map_err(anyhow::Error::msg)?;
    let coverage = if config.degraded {
        Coverage::NetworkOnly
    } else {
        Coverage::Full
    };
    let cgroup_root = match config.cgroup_root {
        Some(root) => root,
        None => cgroupfs::find_cgroup2_root()?,
    };
    let mut enforcer = Enforcer::load(LoadOptions {
        vmlinux_btf: config.vmlinux_btf.clone(),
        lsm_list: config.lsm_list.clone(),
        coverage,
        cgroup_root,
        report_limits: config.report_limits,
        ring_buffer_bytes: config.ring_buffer_bytes,
        pins: config.pins.clone(),
    })?;
    let coverage_name = match coverage {
        Coverage::Full => "full",
        Coverage::NetworkOnly => "degraded",
    };
    let bus = Arc::new(Bus::new(audit::next_event_seq(&config.audit_log)));
    let audit_writer = audit::Writer::open(&config.audit_log, config.audit_max_bytes)?;
    // A thread of its own: hashing and writing every record must not wait behind the tasks
    // that serve followers, or it falls behind in a storm.
    let audit_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    // Subscribed here, before anything can publish (the resolvers may, once they run): the log
    // must have every event.
    let (audit_events, _) = bus.subscribe();
    let audit = write_audit_log(audit_writer, audit_events, bus.clone());
    std::thread::Builder::new()
        .name("audit-log".to_owned())
        .spawn(move || audit_runtime.block_on(audit))?;
    let mut resolvers = Resolvers::new(
        enforcer.take_resolved_addresses()?,
        bus.clone(),
        coverage_name,
        config.max_ttl,
        config.resolv_conf.clone(),
    );
    let identities = Arc::new(RwLock::new(Identities::new()));
    let unenforced = install_policy(
        &mut enforcer,
        &mut resolvers,
        &prepared.compiled,
        &HashMap::new(),
        config.allow_missing_limits,
    )
    .map_err(anyhow::Error::msg)?;
    record_identities(&enforcer, &prepared.policy, &identities);
    enforcer.attach_programs()?;
    // Loading parsed the kernel's BTF and the object (tens of MiB, freed since): hand the freed
    // heap back, so that the daemon's resident size is what it uses.
    // SAFETY: malloc_trim(3) only releases free memory.
    unsafe { libc::malloc_trim(0) };
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

    let backlog = metrics::backlog_histogram();
    tokio::spawn(ingest::run(
        enforcer.take_events()?,
        config.audit_log.clone(),
        config.report_limits,
        coverage_name,
        identities.clone(),
        bus.clone(),
        backlog.clone(),
    ));
    let mut forwarders = Vec::new();
    for settings in &config.settings.forward {
        forwarders.push(forward::start(settings, bus.clone())?);
        tracing::info!(forwarder = %settings.name.0, target = %settings.address, "forwarding events");
    }
    let view: watch::Agents = Arc::new(RwLock::new(agent_views(&prepared.compiled)));
    let root = enforcer.cgroup_root().to_path_buf();
    watch::oom_kills(root.clone(), view.clone(), bus.clone(), coverage_name);
    watch::pids_limits(root, view.clone(), bus.clone(), coverage_name);
    let socket_view = view.clone();

    let (control, requests) = mpsc::channel(16);
    let owner = Owner {
        enforcer,
        supervisors: HashMap::new(),
        bus: bus.clone(),
        coverage_name,
        view,
        compiled: prepared.compiled,
        allow_missing_limits: config.allow_missing_limits,
        unenforced,
        lines: describe::rule_lines(&prepared.policy),
        policy: prepared.policy,
        resolvers,
        max_ttl: config.max_ttl,
        generation: 1,
        identities,
        calls: HashMap::new(),
        ending: Vec::new(),
        audit_log: config.audit_log.clone(),
        sockets: sockets.clone(),
    };
    tokio::spawn(owner.serve(requests));
    tokio::spawn(reload_on_sighup(config.policy.clone(), control.clone()));
    tokio::spawn(tick(control.clone()));

    if let Some(settings) = &config.settings.metrics {
        metrics::serve(
            settings.listen,
            metrics::Sources {
                bus: bus.clone(),
                forwarders,
                backlog,
                control: control.clone(),
            },
        )
        .await?;
    }
    let listeners = server::Listeners {
        control: bind(&sockets.control, 0o600)?,
        agents: bind(&sockets.agent, 0o666)?,
    };
    tracing::info!(
        socket = %sockets.control.display(),
        agent_socket = %sockets.agent.display(),
        "listening"
    );
    server::run(
        listeners,
        Handles {
            bus,
            control: control.clone(),
            audit_log: config.audit_log.clone(),
            agents: socket_view,
        },
        shutdown,
    )
    .await;
    let (done, stopped) = tokio::sync::oneshot::channel();
    if control.send(Control::Shutdown(done)).await.is_ok() {
        let _ = stopped.await;
    }
    let _ = std::fs::remove_file(&sockets.control);
    let _ = std::fs::remove_file(&sockets.agent);
    Ok(())
}

/// Has the owner do its housekeeping each second.
async fn tick(control: mpsc::Sender<Control>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticks.tick().await;
        if control.send(Control::Tick).await.is_err() {
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

/// Binds `socket` with `mode`. The control socket is root's only (0600): it reveals what every
/// agent tried. The agent socket is everyone's (0666): what an asker learns there is decided by
/// its cgroup, and the kernel lets agents connect to it and nothing else beside it.
fn bind(socket: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            return Err(err)
                .with_context(|| format!("removing the stale socket {}", socket.display()))
        }
    }
    let listener = UnixListener::bind(socket)
        .with_context(|| format!("binding the socket {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {} to {mode:o}", socket.display()))?;
    Ok(listener)
}

fn record_identities(enforcer: &Enforcer, policy: &Policy, identities: &RwLock<Identities>) {
    let mut identities = identities.write().unwrap_or_else(|p| p.into_inner());
    identities.set_summaries(policy.agents.iter().map(reason::Summary::of));
    for agent in enforcer.installed() {
        identities.insert(
            agent.ruleset,
            AgentIdentity {
                name: agent.name.clone(),
                cgroup: agent.cgroup.clone(),
                cgroup_id: agent.cgroup_id,
            },
        );
    }
}

/// The one task that holds the kernel objects; others ask it through `Control`.
struct Owner {
    enforcer: Enforcer,
    supervisors: HashMap<String, supervise::Supervisor>,
    bus: Arc<Bus>,
    coverage_name: &'static str,
    /// What the cgroup watchers know of the agents.
    view: watch::Agents,
    compiled: Compiled,
    allow_missing_limits: bool,
    unenforced: Unenforced,
    /// The enforced policy, as read (its hostnames are resolved again when their answers expire).
    policy: Policy,
    resolvers: Resolvers,
    /// Longest a hostname answer is trusted (the agents' resolvers, narrowed calls' rules).
    max_ttl: Duration,
    lines: Vec<RuleLine>,
    generation: u64,
    identities: Arc<RwLock<Identities>>,
    /// Tool calls running, by cgroup id.
    calls: HashMap<u64, LiveCall>,
    /// Calls ended whose processes had not gone yet: removed on a later tick.
    ending: Vec<u64>,
    /// Where denials are looked up for `clawctl allow`.
    audit_log: PathBuf,
    /// claw-agent's sockets, which every policy keeps agents out of but for the agent socket.
    sockets: compile::Sockets,
}

/// A tool call the daemon started and its client has not ended.
struct LiveCall {
    agent: String,
    call: String,
    /// Relative to the cgroup v2 mount.
    cgroup: String,
    narrowing: Option<call::Parsed>,
    started: Instant,
}

/// Longest the daemon waits, when a call ends, for its killed processes to go before it leaves
/// the removal of the cgroup to later ticks.
const CALL_END_WAIT: Duration = Duration::from_secs(1);

impl Owner {
    /// Starts, restarts or stops supervised processes to match the installed policy.
    async fn reconcile(&mut self) {
        let wanted: HashMap<String, (String, RunSpec)> = self
            .compiled
            .agents
            .iter()
            .filter_map(|a| Some((a.name.clone(), (a.cgroup.clone(), a.run.clone()?))))
            .collect();
        let stale: Vec<String> = self
            .supervisors
            .iter()
            .filter(|(name, s)| wanted.get(*name).is_none_or(|(_, spec)| *spec != s.spec))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(supervisor) = self.supervisors.remove(&name) {
                supervisor.stop().await;
            }
        }
        for (name, (cgroup, spec)) in wanted {
            if self.supervisors.contains_key(&name) {
                continue;
            }
            let agent = supervise::Agent {
                name: name.clone(),
                cgroup: format!("/{cgroup}"),
                cgroup_dir: self.enforcer.cgroup_root().join(&cgroup),
                coverage: self.coverage_name,
            };
            let supervisor = supervise::start(agent, spec, self.bus.clone());
            self.supervisors.insert(name, supervisor);
        }
    }

    async fn serve(mut self, mut requests: mpsc::Receiver<Control>) {
        self.reconcile().await;
        while let Some(request) = requests.recv().await {
            match request {
                Control::Status(reply) => {
                    let _ = reply.send(self.status());
                }
                Control::Rules(reply) => {
                    let _ =
                        reply.send((self.policy.file.display().to_string(), self.lines.clone()));
                }
                Control::Tick => self.tick(),
                Control::Shutdown(done) => {
                    for (_, supervisor) in self.supervisors.drain() {
                        supervisor.stop().await;
                    }
                    let _ = done.send(());
                }
                Control::Apply { policy, reply } => {
                    let _ = reply.send(self.apply(policy).await);
                }
                Control::StartCall {
                    agent,
                    call,
                    narrowing,
                    command,
                    reply,
                } => {
                    let _ = reply.send(self.start_call(agent, call, narrowing, command).await);
                }
                Control::Allow {
                    event,
                    lifetime,
                    call_only,
                    reply,
                } => {
                    let _ = reply.send(self.allow(event, lifetime, call_only).await);
                }
                Control::EndCall {
                    cgroup_id,
                    status,
                    reply,
                } => {
                    self.end_call(cgroup_id, status, "ended").await;
                    let _ = reply.send(());
                }
            }
        }
    }

    /// Applies the policy at `path` and publishes a `policy` event saying how it went.
    async fn apply(&mut self, path: PathBuf) -> Result<(String, u64), String> {
        let result = self.try_apply(path.clone()).await;
        let mut event = Event::about("policy", "-", "-", "apply", self.coverage_name);
        event.decision = if result.is_ok() {
            "applied"
        } else {
            "rejected"
        }
        .to_owned();
        event.path = Some(path.display().to_string());
        event.details = Some(match &result {
            Ok((_, generation)) => serde_json::json!({ "generation": generation }),
            Err(message) => serde_json::json!({ "error": message, "generation": self.generation }),
        });
        self.bus.publish(event);
        result
    }

    async fn try_apply(&mut self, path: PathBuf) -> Result<(String, u64), String> {
        let prepared = prepare(&path, &self.sockets)?;
        let narrowed = self.narrowed_calls(&prepared.policy).await;
        self.install(prepared, &narrowed)?;
        self.end_orphaned_calls().await;
        self.reconcile().await;
        self.generation += 1;
        tracing::info!(policy = %self.policy.file.display(), generation = self.generation, "policy applied");
        Ok((self.policy.file.display().to_string(), self.generation))
    }

    fn install(
        &mut self,
        prepared: Prepared,
        narrowed: &HashMap<u64, CompiledAgent>,
    ) -> Result<(), String> {
        self.unenforced = install_policy(
            &mut self.enforcer,
            &mut self.resolvers,
            &prepared.compiled,
            narrowed,
            self.allow_missing_limits,
        )
        .map_err(|err| {
            format!(
                "{}: not applied, the previous policy stays: {err}",
                prepared.policy.file.display()
            )
        })?;
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = agent_views(&prepared.compiled);
        self.compiled = prepared.compiled;
        record_identities(&self.enforcer, &prepared.policy, &self.identities);
        self.lines = describe::rule_lines(&prepared.policy);
        self.policy = prepared.policy;
        Ok(())
    }

    /// Each second: ended calls' cgroups removed, spent grants pruned.
    fn tick(&mut self) {
        self.remove_ended_calls();
        if let Err(err) = self.enforcer.prune_grants(event::boot_time_ns()) {
            tracing::warn!("removing spent grants: {err}");
        }
    }

    /// Grants the object of logged denial `seq` to its agent (or, `call_only`, its live call).
    async fn allow(
        &mut self,
        seq: u64,
        lifetime: grant::Lifetime,
        call_only: bool,
    ) -> Result<String, String> {
        let denial = server::find_logged(self.audit_log.clone(), seq)
            .await
            .ok_or_else(|| {
                format!("no event {seq} in the audit log — give the `seq` of a denial (clawctl deny-log --json shows it)")
            })?;
        let (cgroup_id, whom) = if call_only {
            let call = denial
                .call
                .as_deref()
                .ok_or_else(|| format!("event {seq} is not from a tool call — leave out --call-only to grant it to agent `{}`", denial.agent))?;
            let live = self
                .calls
                .iter()
                .find(|(_, c)| c.call == call && c.agent == denial.agent)
                .ok_or_else(|| format!("tool call `{call}` has ended — grant it to agent `{}` (leave out --call-only)", denial.agent))?;
            (
                *live.0,
                format!("tool call `{call}` of agent `{}`", denial.agent),
            )
        } else {
            let agent = self
                .enforcer
                .installed()
                .iter()
                .find(|a| a.name == denial.agent)
                .ok_or_else(|| format!("agent `{}` is not in the enforced policy", denial.agent))?;
            (agent.cgroup_id, format!("agent `{}`", denial.agent))
        };
        let guards = compile::Guards::of_this_machine(&self.sockets);
        if let Some(directory) = denial
            .path
            .as_deref()
            .and_then(|p| guards.socket_directory_of(p))
        {
            return Err(format!(
                "event {seq}: no grant may let an agent into {}, where claw-agent's sockets are",
                directory.0
            ));
        }
        let (key, entry) = grant::entry(&denial, cgroup_id, lifetime, event::boot_time_ns())?;
        self.enforcer
            .grant(key, entry)
            .map_err(|err| err.to_string())?;
        let object = denial.object().unwrap_or("-").to_owned();
        let how = match (lifetime.uses, lifetime.seconds) {
            (Some(uses), Some(s)) => format!("{uses} use(s) within {s} s"),
            (None, Some(s)) => format!("for {s} s"),
            (Some(uses), None) => format!("{uses} use(s)"),
            (None, None) => "until revoked".to_owned(),
        };
        let message = format!(
            "{} {object}{} granted to {whom}: {how}",
            denial.op,
            denial
                .access
                .as_deref()
                .map(|a| format!(" ({a})"))
                .unwrap_or_default()
        );
        let mut event = Event::about(
            "grant",
            &denial.agent,
            &denial.cgroup,
            "allow",
            self.coverage_name,
        );
        event.call = call_only.then(|| denial.call.clone()).flatten();
        event.path = denial.path.clone();
        event.destination = denial.destination.clone();
        event.access = denial.access.clone();
        event.decision = "allow".to_owned();
        event.details = Some(serde_json::json!({
            "event": seq,
            "uses": lifetime.uses,
            "seconds": lifetime.seconds,
        }));
        self.bus.publish(event);
        tracing::info!("{message}");
        Ok(message)
    }

    /// Starts tool call `call_id` of `agent`: its cgroup under the agent's, held to the agent's
    /// rules or to `narrowing` of them, before the client puts a process there.
    async fn start_call(
        &mut self,
        agent: String,
        call_id: String,
        narrowing: call::Narrowing,
        command: Vec<String>,
    ) -> Result<(String, u64), String> {
        call::check_id(&call_id)?;
        let Some(source) = self.policy.agents.iter().find(|a| a.name.0 == agent) else {
            let names: Vec<&str> = self
                .policy
                .agents
                .iter()
                .map(|a| a.name.0.as_str())
                .collect();
            return Err(format!(
                "no agent `{agent}` in the enforced policy (agents: {})",
                names.join(", ")
            ));
        };
        let parsed = if narrowing.is_empty() {
            None
        } else {
            let parsed = call::parse(&narrowing, source)?;
            call::check_guards(
                source,
                &parsed,
                &compile::Guards::of_this_machine(&self.sockets),
            )?;
            Some(parsed)
        };
        let own = match &parsed {
            Some(parsed) => Some(
                self.compile_narrowed(&agent, parsed, &self.policy.clone())
                    .await?,
            ),
            None => None,
        };
        let installed = self
            .enforcer
            .start_call(&agent, &call_id, own.as_ref())
            .map_err(|err| err.to_string())?;
        let entry = installed.entry;
        self.identities
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .call_started(
                entry.cgroup_id,
                CallIdentity {
                    agent: agent.clone(),
                    call: call_id.clone(),
                    cgroup: entry.cgroup.clone(),
                },
            );
        let mut event = Event::about("call", &agent, &entry.cgroup, "start", self.coverage_name);
        event.call = Some(call_id.clone());
        event.details = Some(serde_json::json!({
            "command": command,
            "narrowing": narrowing,
            "cgroup_id": entry.cgroup_id,
        }));
        self.bus.publish(event);
        tracing::info!(
            agent,
            call = call_id,
            cgroup = entry.cgroup,
            "tool call started"
        );
        let path = self.enforcer.cgroup_root().join(&entry.cgroup);
        self.calls.insert(
            entry.cgroup_id,
            LiveCall {
                agent,
                call: call_id,
                cgroup: entry.cgroup,
                narrowing: parsed,
                started: Instant::now(),
            },
        );
        Ok((path.display().to_string(), entry.cgroup_id))
    }

    /// The narrowed rules of one call of `agent` in `policy`, compiled (hostnames resolved).
    async fn compile_narrowed(
        &self,
        agent: &str,
        narrowing: &call::Parsed,
        policy: &Policy,
    ) -> Result<CompiledAgent, String> {
        let source = policy
            .agents
            .iter()
            .find(|a| a.name.0 == agent)
            .ok_or_else(|| format!("no agent `{agent}` in the policy"))?;
        let narrowed = Policy {
            file: policy.file.clone(),
            agents: vec![call::narrow(source, narrowing)],
        };
        let max_ttl = self.max_ttl;
        let sockets = self.sockets.clone();
        let mut compiled =
            tokio::task::spawn_blocking(move || compile_resolved(narrowed, max_ttl, &sockets))
                .await
                .map_err(|err| format!("compiling the call's rules failed: {err}"))??;
        Ok(compiled.agents.remove(0))
    }

    /// Every narrowed call's rules compiled against `policy`; a call whose rules cannot be
    /// compiled is left out, so it is held to no rules at all until it ends.
    async fn narrowed_calls(&self, policy: &Policy) -> HashMap<u64, CompiledAgent> {
        let mut compiled = HashMap::new();
        let guards = compile::Guards::of_this_machine(&self.sockets);
        for (cgroup_id, live) in &self.calls {
            let Some(narrowing) = &live.narrowing else {
                continue;
            };
            let agent = policy.agents.iter().find(|a| a.name.0 == live.agent);
            if let Some(Err(err)) = agent.map(|a| call::check_guards(a, narrowing, &guards)) {
                tracing::warn!(call = live.call, "the call is denied everything: {err}");
                continue;
            }
            match self.compile_narrowed(&live.agent, narrowing, policy).await {
                Ok(rules) => {
                    compiled.insert(*cgroup_id, rules);
                }
                Err(err) => {
                    tracing::warn!(call = live.call, "the call is denied everything: {err}")
                }
            }
        }
        compiled
    }

    /// Ends the calls whose agent the enforced policy no longer has, or has moved to another
    /// cgroup (the call's cgroup would be under none of the agent's programs).
    async fn end_orphaned_calls(&mut self) {
        let orphans: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| {
                !self.policy.agents.iter().any(|a| {
                    a.name.0 == c.agent && c.cgroup.starts_with(&format!("{}/", a.cgroup.0))
                })
            })
            .map(|(id, _)| *id)
            .collect();
        for cgroup_id in orphans {
            self.end_call(cgroup_id, None, "its agent left the policy")
                .await;
        }
    }

    /// Ends a call: kills what is left of it, removes its cgroup (or, if its processes take
    /// longer to go, leaves that to later ticks — its rules hold meanwhile) and reports the end.
    async fn end_call(&mut self, cgroup_id: u64, status: Option<i32>, reason: &str) {
        let Some(live) = self.calls.remove(&cgroup_id) else {
            return;
        };
        if let Err(err) = self.enforcer.kill_call(cgroup_id) {
            tracing::warn!(call = live.call, "killing the call's processes: {err}");
        }
        let deadline = Instant::now() + CALL_END_WAIT;
        let removed = loop {
            match self.enforcer.remove_call(cgroup_id) {
                Ok(true) => break true,
                Ok(false) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Ok(false) => break false,
                Err(err) => {
                    tracing::warn!(call = live.call, "removing the call: {err}");
                    break false;
                }
            }
        };
        if !removed {
            self.ending.push(cgroup_id);
        }
        self.identities
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .call_ended(cgroup_id);
        let mut event = Event::about("call", &live.agent, &live.cgroup, "end", self.coverage_name);
        event.call = Some(live.call.clone());
        event.details = Some(serde_json::json!({
            "status": status,
            "reason": if status.is_some() { reason } else if reason == "ended" { "its client went away" } else { reason },
            "duration_ms": live.started.elapsed().as_millis() as u64,
            "cgroup_removed": removed,
        }));
        self.bus.publish(event);
    }

    /// Removes the cgroups of ended calls whose processes have gone since.
    fn remove_ended_calls(&mut self) {
        let enforcer = &mut self.enforcer;
        self.ending.retain(|cgroup_id| {
            let _ = enforcer.kill_call(*cgroup_id);
            !matches!(enforcer.remove_call(*cgroup_id), Ok(true))
        });
    }

    fn agent_status(&self, installed: &InstalledAgent) -> AgentStatus {
        let root = self.enforcer.cgroup_root();
        let compiled = self
            .compiled
            .agents
            .iter()
            .find(|c| c.name == installed.name);
        let unenforced = self.unenforced.get(&installed.name);
        let limits = compiled
            .map(|c| {
                let set = c.limits.set();
                c.limits
                    .files()
                    .into_iter()
                    .filter(|(name, ..)| set.contains(name))
                    .map(|(name, _, value)| LimitStatus {
                        name: name.to_owned(),
                        value,
                        enforced: !unenforced.is_some_and(|u| u.contains(&name)),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let number = |file: &str| {
            cgroupfs::read_file(root, &installed.cgroup, file).and_then(|v| v.parse().ok())
        };
        let keyed = |file: &str, key: &str| {
            cgroupfs::read_file(root, &installed.cgroup, file).and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            })
        };
        let usage = Usage {
            memory_bytes: number("memory.current"),
            tasks: number("pids.current"),
            cpu_usec: keyed("cpu.stat", "usage_usec"),
            oom_kills: keyed("memory.events", "oom_kill"),
            processes: cgroupfs::read_file(root, &installed.cgroup, "cgroup.procs")
                .map(|t| t.lines().filter_map(|l| l.parse().ok()).collect())
                .unwrap_or_default(),
        };
        AgentStatus {
            name: installed.name.clone(),
            cgroup: format!("/{}", installed.cgroup),
            cgroup_id: installed.cgroup_id,
            mode: installed.mode.as_str().to_owned(),
            file_rules: installed.file_rules.len(),
            net_rules: installed.net_rules.len(),
            gpu: compiled.is_some_and(|c| c.gpu),
            restarts: self
                .supervisors
                .get(&installed.name)
                .map(|s| s.restarts.load(Ordering::Relaxed)),
            limits,
            usage,
        }
    }

    fn status(&self) -> Status {
        let mut counters = self.enforcer.counters().unwrap_or_else(|err| {
            tracing::warn!("reading the kernel counters: {err}");
            Default::default()
        });
        counters.events_undecodable = self.bus.lost(Stage::Decode);
        counters.events_lost = Stage::ALL
            .iter()
            .map(|stage| (stage.name().to_owned(), self.bus.lost(*stage)))
            .collect();
        Status {
            enforcing: self.enforcer.is_enforcing(),
            coverage: match self.enforcer.coverage() {
                Coverage::Full => "full".to_owned(),
                Coverage::NetworkOnly => "degraded".to_owned(),
            },
            policy: self.policy.file.display().to_string(),
            cgroup_root: self.enforcer.cgroup_root().display().to_string(),
            generation: self.generation,
            agents: self
                .enforcer
                .installed()
                .iter()
                .map(|a| self.agent_status(a))
                .collect(),
            programs: self.enforcer.programs(),
            counters,
        }
    }
}
