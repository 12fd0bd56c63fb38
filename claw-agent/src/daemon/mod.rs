//! claw-agent's life: policy -> kernel, kernel events -> subscribers, until told to stop.
//!
//! Order matters: the policy is parsed and compiled and the programs are loaded (proving the
//! kernel can enforce) before anything is created on the machine; the maps are filled before the
//! programs are attached; the control socket appears only once enforcement is in place, so a
//! client that can reach the daemon knows the policy is enforced.
//!
//! Wiring only: `run` starts the parts, `owner` is the one task holding the kernel objects,
//! `install` puts a compiled policy in place, `calls` and `grants` serve tool calls and grants.
//! It may use every other folder; nothing uses it but the binaries.

use std::{
    collections::HashMap,
    future::Future,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    net::UnixListener,
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use crate::{
    control::server::{self, Control, Handles},
    dns::Resolvers,
    events::{audit, bus::Bus, identities::Identities, ingest, watch},
    export::{audit_log, config, forward, metrics},
    kernel::{
        cgroupfs,
        enforcer::{Coverage, Enforcer},
        handover::ReportLimits,
        load::LoadOptions,
    },
    policy::{
        compile::{self},
        prepare::prepare,
    },
};

mod calls;
mod grants;
mod install;
mod notify;
mod owner;

use install::{agent_views, install_policy, record_identities};
use owner::Owner;

pub struct Config {
    pub policy: PathBuf,
    /// The control socket and the agent socket.
    pub sockets: compile::Sockets,
    /// The cgroup v2 mount; found in /proc/self/mountinfo when not given.
    pub cgroup_root: Option<PathBuf>,
    pub vmlinux_btf: PathBuf,
    pub lsm_list: PathBuf,
    /// Run without BPF LSM: network rules enforced; file and exec rules by Landlock for the
    /// processes claw starts (if `landlock` allows and the kernel has it), else not.
    pub degraded: bool,
    pub landlock: LandlockLayer,
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

/// When the processes claw starts are confined by Landlock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LandlockLayer {
    /// Where BPF LSM is not used (`--degraded`), if the kernel has Landlock.
    Auto,
    /// Also on top of BPF LSM: a second, independent layer.
    Stack,
    Off,
}

/// The coverage to run with, and whether the processes claw starts get a Landlock layer.
fn choose_coverage(
    degraded: bool,
    layer: LandlockLayer,
    landlock_abi: Result<u32, String>,
) -> anyhow::Result<(Coverage, bool)> {
    // Below MIN_ABI, Landlock leaves truncation unchecked: not a file layer claw relies on.
    let landlock_abi = landlock_abi.and_then(|abi| {
        if abi >= crate::policy::landlock::MIN_ABI {
            Ok(abi)
        } else {
            Err(format!(
                "ABI {abi}; claw needs {} (truncation checked, Linux 6.2)",
                crate::policy::landlock::MIN_ABI
            ))
        }
    });
    match (degraded, layer, landlock_abi) {
        (_, LandlockLayer::Stack, Err(why)) => {
            anyhow::bail!("--landlock stack: this kernel's Landlock is not usable ({why}) — run without it, or enable Landlock (lsm= on the kernel command line)")
        }
        (false, LandlockLayer::Stack, Ok(_)) => Ok((Coverage::Full, true)),
        (false, _, _) => Ok((Coverage::Full, false)),
        (true, LandlockLayer::Off, _) => Ok((Coverage::NetworkOnly, false)),
        (true, _, Ok(_)) => Ok((Coverage::Landlock, true)),
        (true, LandlockLayer::Auto, Err(why)) => {
            tracing::warn!(
                "Landlock is not usable ({why}): the processes claw starts are not file-confined"
            );
            Ok((Coverage::NetworkOnly, false))
        }
    }
}

pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // Watched from the start: SIGHUP's default action would end a daemon still loading.
    let hangups = signal(SignalKind::hangup());
    // The directories first: the rules name the sockets as the kernel resolves their paths.
    for socket in [&config.sockets.control, &config.sockets.agent] {
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the socket directory {}", dir.display()))?;
        }
    }
    let sockets = config.sockets.clone();
    let started = std::time::Instant::now();
    let prepared = prepare(&config.policy, &sockets).map_err(anyhow::Error::msg)?;
    let prepared_in = started.elapsed();
    let (coverage, landlock) = choose_coverage(
        config.degraded,
        config.landlock,
        crate::kernel::preflight::landlock_abi(),
    )?;
    let mut enforcer = load(&config, coverage)?;
    let loaded_in = started.elapsed() - prepared_in;
    let bus = Arc::new(Bus::new(audit::next_event_seq(&config.audit_log)));
    // Started before anything can publish (the resolvers may, once they run): the log must have
    // every event.
    audit_log::start(&config.audit_log, config.audit_max_bytes, &bus)?;
    let mut resolvers = Resolvers::new(
        enforcer.take_resolved_addresses()?,
        bus.clone(),
        coverage,
        config.max_ttl,
        config.resolv_conf.clone(),
    );
    let identities = Arc::new(RwLock::new(Identities::new()));
    // Held to the end: audit goes back to how it was found when claw-agent stops.
    let _audit = if landlock {
        landlock_denials(identities.clone(), bus.clone(), coverage)
    } else {
        None
    };
    let unenforced = install_policy(
        &mut enforcer,
        &mut resolvers,
        &prepared.compiled,
        &HashMap::new(),
        config.allow_missing_limits,
    )
    .map_err(anyhow::Error::msg)?;
    let installed_in = started.elapsed() - prepared_in - loaded_in;
    record_identities(&enforcer, &prepared.policy, &identities);
    enforcer.attach_programs()?;
    // Loading parsed the kernel's BTF and the object (tens of MiB, freed since): hand the freed
    // heap back, so that the daemon's resident size is what it uses.
    // SAFETY: malloc_trim(3) only releases free memory.
    unsafe { libc::malloc_trim(0) };
    crate::kernel::release_object_pages();
    if coverage == Coverage::Landlock {
        tracing::warn!(
            "DEGRADED to Landlock: no BPF LSM — connect and bind rules are enforced for every process of an agent; file and exec rules only for the processes claw starts (run:, clawctl run), by Landlock; nor what every agent is denied by LSM hooks"
        );
    }
    if coverage == Coverage::NetworkOnly {
        tracing::warn!(
            "DEGRADED: no BPF LSM — connect and bind rules are enforced; file and exec rules are NOT, nor listening on a port bound as 0, nor what every agent is denied by LSM hooks"
        );
    }
    tracing::info!(
        policy = %config.policy.display(),
        agents = prepared.compiled.agents.len(),
        prepare_ms = prepared_in.as_millis(), load_ms = loaded_in.as_millis(),
        install_ms = installed_in.as_millis(), total_ms = started.elapsed().as_millis(),
        "policy enforced"
    );

    let backlog = metrics::backlog_histogram();
    tokio::spawn(ingest::run(
        enforcer.take_events()?,
        config.audit_log.clone(),
        config.report_limits,
        coverage,
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
    watch::oom_kills(root.clone(), view.clone(), bus.clone(), coverage);
    watch::pids_limits(root, view.clone(), bus.clone(), coverage);
    let socket_view = view.clone();

    let (control, requests) = mpsc::channel(16);
    let owner = Owner {
        enforcer,
        supervisors: HashMap::new(),
        bus: bus.clone(),
        coverage,
        view,
        compiled: prepared.compiled,
        allow_missing_limits: config.allow_missing_limits,
        unenforced,
        policy: prepared.policy,
        resolvers,
        max_ttl: config.max_ttl,
        generation: 1,
        identities,
        calls: HashMap::new(),
        ending: Vec::new(),
        audit_log: config.audit_log.clone(),
        sockets: sockets.clone(),
        landlock,
    };
    tokio::spawn(owner.serve(requests));
    tokio::spawn(reload_on_sighup(
        hangups,
        config.policy.clone(),
        control.clone(),
    ));
    tokio::spawn(notify::watchdog(control.clone()));
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
    let handles = Handles {
        bus,
        control,
        audit_log: config.audit_log.clone(),
        agents: socket_view,
    };
    serve_sockets(&sockets, handles, shutdown).await
}

/// Landlock's denials as events, where the kernel reports them (Landlock ABI 7, Linux 6.15+);
/// elsewhere the log says they are not reported. The guard turns audit back off if claw-agent
/// turned it on.
fn landlock_denials(
    identities: Arc<RwLock<Identities>>,
    bus: Arc<Bus>,
    coverage: Coverage,
) -> Option<crate::events::landlock::AuditEnabled> {
    let abi = crate::kernel::preflight::landlock_abi().unwrap_or(0);
    if abi < 7 {
        tracing::warn!("this kernel's Landlock (ABI {abi}) does not report denials (ABI 7, Linux 6.15, does): Landlock's refusals are NOT claw events");
        return None;
    }
    let reported = crate::events::landlock::enable_audit().and_then(|guard| {
        crate::events::landlock::follow(identities, bus, coverage)?;
        Ok(guard)
    });
    match reported {
        Ok(guard) => Some(guard),
        Err(err) => {
            tracing::warn!(
                "reading Landlock's audit records: {err}; Landlock's refusals are NOT claw events"
            );
            None
        }
    }
}

/// Loads the programs (verified, not attached) for `coverage`, on the cgroup v2 mount given or
/// found.
fn load(config: &Config, coverage: Coverage) -> anyhow::Result<Enforcer> {
    cgroupfs::check_host_namespace(Path::new(cgroupfs::OWN_CGROUP_NAMESPACE))?;
    let cgroup_root = match &config.cgroup_root {
        Some(root) => root.clone(),
        None => cgroupfs::find_cgroup2_root()?,
    };
    Ok(Enforcer::load(LoadOptions {
        vmlinux_btf: config.vmlinux_btf.clone(),
        lsm_list: config.lsm_list.clone(),
        coverage,
        cgroup_root,
        report_limits: config.report_limits,
        ring_buffer_bytes: config.ring_buffer_bytes,
        pins: config.pins.clone(),
    })?)
}

/// Opens the two sockets — only now, enforcement being in place — and serves them until
/// `shutdown`; then stops the supervised processes and removes the sockets.
async fn serve_sockets(
    sockets: &compile::Sockets,
    handles: Handles,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let listeners = server::Listeners {
        control: bind(&sockets.control, 0o600)?,
        agents: bind(&sockets.agent, 0o666)?,
    };
    tracing::info!(
        socket = %sockets.control.display(),
        agent_socket = %sockets.agent.display(),
        "listening"
    );
    let control = handles.control.clone();
    let (reply, answer) = tokio::sync::oneshot::channel();
    if control.send(Control::Status(reply)).await.is_ok() {
        if let Ok(status) = answer.await {
            notify::ready(&notify::status_line(&status));
        }
    }
    server::run(listeners, handles, shutdown).await;
    notify::stopping();
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
async fn reload_on_sighup(
    hangups: std::io::Result<tokio::signal::unix::Signal>,
    policy: PathBuf,
    control: mpsc::Sender<Control>,
) {
    let Ok(mut hangups) = hangups else {
        tracing::error!("cannot watch SIGHUP; use `clawctl policy apply` to reload");
        return;
    };
    while hangups.recv().await.is_some() {
        notify::reloading();
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
            Ok(Ok((_, generation))) => {
                tracing::info!(generation, "SIGHUP: policy re-applied");
                notify::reloaded(&format!(
                    "enforcing {} (re-applied: generation {generation})",
                    policy.display()
                ));
            }
            Ok(Err(message)) => {
                tracing::error!("SIGHUP: policy rejected, previous one stays: {message}");
                notify::reloaded(&format!(
                    "reload rejected, the previous policy stays enforced: {message}"
                ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_follows_the_operators_choice_and_the_kernels_landlock() {
        let choose = |degraded, layer, abi: Result<u32, &str>| {
            choose_coverage(degraded, layer, abi.map_err(str::to_owned)).map_err(|e| e.to_string())
        };
        use LandlockLayer::*;
        assert_eq!(choose(false, Auto, Ok(7)), Ok((Coverage::Full, false)));
        assert_eq!(choose(false, Stack, Ok(7)), Ok((Coverage::Full, true)));
        assert_eq!(choose(true, Auto, Ok(6)), Ok((Coverage::Landlock, true)));
        assert_eq!(choose(true, Off, Ok(7)), Ok((Coverage::NetworkOnly, false)));
        // Too old (no truncation check) or absent: network only, or a refused stack.
        assert_eq!(
            choose(true, Auto, Ok(2)),
            Ok((Coverage::NetworkOnly, false))
        );
        assert_eq!(
            choose(true, Auto, Err("not built")),
            Ok((Coverage::NetworkOnly, false))
        );
        let refused = choose(false, Stack, Ok(2)).unwrap_err();
        assert!(
            refused.contains("--landlock stack") && refused.contains("ABI 2"),
            "{refused}"
        );
    }
}
