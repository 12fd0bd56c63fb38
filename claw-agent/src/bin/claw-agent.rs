//! claw-agent: enforces a claw policy in the kernel and serves its events on a Unix socket.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{CommandFactory as _, Parser};
use claw_agent::{
    daemon,
    export::config,
    kernel::{handover::ReportLimits, pins::Pins, preflight},
    policy::compile::Sockets,
};
use tokio::signal::unix::{signal, SignalKind};

/// Enforce a claw policy in the kernel (BPF LSM) and stream its denials.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The policy file (YAML).
    #[arg(long, value_name = "FILE", required_unless_present_any = ["uninstall", "check", "man", "completions"])]
    policy: Option<PathBuf>,
    /// Check this machine and exit: kernel BTF, BPF LSM (built, active, and the boot parameter
    /// that activates it), BPF trampolines, cgroup v2, Landlock, bpffs; the coverage claw would
    /// run with and what enforces each kind of rule. Nothing is pinned, attached or mounted.
    /// Exit code 0: full enforcement is possible; 1: it is not.
    #[arg(long, conflicts_with_all = ["policy", "uninstall"])]
    check: bool,
    /// With --check: the report as JSON.
    #[arg(long, requires = "check")]
    json: bool,
    /// Write claw-agent's man page (section 8) into DIR and exit; for packaging.
    #[arg(long, value_name = "DIR", hide = true, exclusive = true)]
    man: Option<PathBuf>,
    /// Print claw-agent's shell completions and exit; for packaging.
    #[arg(long, value_name = "SHELL", hide = true, exclusive = true)]
    completions: Option<clap_complete::Shell>,
    /// Remove everything claw pinned (the programs detach, the maps go) and exit: enforcement
    /// ends. Stop claw-agent first; a stopped or killed claw-agent leaves enforcement in place.
    #[arg(long, conflicts_with = "policy")]
    uninstall: bool,
    /// Where claw's programs, links and maps are pinned, on a BPF filesystem (mounted at
    /// /sys/fs/bpf if nothing is).
    #[arg(long, value_name = "DIR", default_value = claw_agent::defaults::PIN_DIR)]
    bpffs: PathBuf,
    /// claw-agent's configuration (YAML): SIEM forwarders, the metrics endpoint.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where to serve clawctl (root, outside agents: the control socket).
    #[arg(long, value_name = "PATH", default_value = claw_agent::defaults::CONTROL_SOCKET)]
    socket: PathBuf,
    /// Where to answer processes inside agents about their own events (`clawctl why N`).
    /// Agents may connect to it and to nothing else in its directory.
    /// [default: agent.sock beside --socket]
    #[arg(long, value_name = "PATH")]
    agent_socket: Option<PathBuf>,
    /// The cgroup v2 mount under which agents' cgroups live [default: found in mountinfo].
    #[arg(long, value_name = "DIR")]
    cgroup_root: Option<PathBuf>,
    /// The running kernel's BTF, for struct offsets.
    #[arg(long, value_name = "FILE", default_value = claw_agent::defaults::VMLINUX_BTF, hide = true)]
    vmlinux_btf: PathBuf,
    /// The kernel's list of active LSMs.
    #[arg(long, value_name = "FILE", default_value = claw_agent::defaults::LSM_LIST, hide = true)]
    lsm_list: PathBuf,
    /// Run without BPF LSM (accept less than full coverage): network rules are enforced for
    /// every process of an agent; file and exec rules only for the processes claw starts, by
    /// Landlock (coverage `landlock`) — or, without Landlock or with `--landlock off`, not at
    /// all (coverage `degraded`). Status, explain and every event say which.
    #[arg(long)]
    degraded: bool,
    /// Landlock for the processes claw starts (`run:`, `clawctl run`): `auto` where BPF LSM is
    /// not used (with --degraded), `stack` also on top of BPF LSM (a second, independent layer),
    /// `off` never.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = daemon::LandlockLayer::Auto)]
    landlock: daemon::LandlockLayer,
    /// Longest a DNS answer for a hostname rule is trusted, in seconds, whatever its TTL.
    #[arg(long, value_name = "SECONDS", default_value_t = claw_agent::defaults::MAX_DNS_TTL.as_secs())]
    max_dns_ttl: u64,
    /// Where the agents' resolvers find the node's nameservers (`nameserver` lines, port 53).
    #[arg(long, value_name = "PATH", default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// Run agents whose limits the cgroup hierarchy cannot enforce (status reports each such
    /// limit as not enforced), instead of refusing the policy.
    #[arg(long)]
    allow_missing_limits: bool,
    /// The hash-chained audit log of every event (verify with `clawctl audit verify`).
    #[arg(long, value_name = "FILE", default_value = claw_agent::defaults::AUDIT_LOG)]
    audit_log: PathBuf,
    /// Size at which the audit log rotates, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    audit_max_mib: u64,
    /// Reports per second of one agent's identical denials (same operation, same object); the
    /// rest are counted in the kernel and summarised each second. 0: no limit.
    #[arg(long, value_name = "N", default_value_t = 10)]
    identical_events_per_second: u64,
    /// Reports per second of one agent, whatever they are; the rest are counted in the kernel
    /// and summarised, so one agent cannot crowd out the others' events. 0: no limit.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    agent_events_per_second: u64,
    /// Size of the kernel's event ring buffer, in MiB (a power of two): how many events can wait
    /// while claw-agent is busy before they are counted as lost.
    #[arg(long, value_name = "MIB", default_value_t = 4, value_parser = ring_buffer_mib)]
    ring_buffer_mib: u32,
}

/// `--check`: the preflight's report; success only where full enforcement is possible.
fn check(vmlinux_btf: &Path, lsm_list: &Path, json: bool) -> ExitCode {
    let facts = preflight::Facts::of_this_machine(vmlinux_btf, lsm_list);
    let report = preflight::Report::of(&facts);
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(err) => {
                eprintln!("claw-agent: {err}");
                return ExitCode::from(2);
            }
        }
    } else {
        print!("{}", report.render());
    }
    if report.full {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn ring_buffer_mib(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(mib) if mib.is_power_of_two() && mib <= 1024 => Ok(mib),
        _ => Err(format!(
            "`{text}` is not a power of two from 1 to 1024 (the kernel sizes ring buffers in powers of two)"
        )),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // glibc gives each thread that contends for the heap an arena of its own (up to 8 per core),
    // each keeping what it freed: the daemon's threads (readers, resolvers, sockets) held a third
    // of its resident size in them. Two arenas are plenty for its allocation rate.
    // SAFETY: mallopt(3) only tunes the allocator.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: not in the journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    if let Some(dir) = &args.man {
        let man = clap_mangen::Man::new(Args::command()).section("8");
        return match man.generate_to(dir) {
            Ok(_) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!(
                    "claw-agent: writing the man page into {}: {err}",
                    dir.display()
                );
                ExitCode::FAILURE
            }
        };
    }
    if let Some(shell) = args.completions {
        clap_complete::generate(
            shell,
            &mut Args::command(),
            "claw-agent",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    if args.check {
        return check(&args.vmlinux_btf, &args.lsm_list, args.json);
    }
    let Some(policy) = args.policy else {
        return uninstall(&args.bpffs, &args.socket);
    };
    let settings = match &args.config {
        Some(file) => match config::load(file) {
            Ok(settings) => settings,
            Err(err) => {
                eprintln!("claw-agent: {err}");
                return ExitCode::FAILURE;
            }
        },
        None => config::Config::default(),
    };
    let config = daemon::Config {
        policy,
        pins: args.bpffs,
        sockets: Sockets::beside(args.socket, args.agent_socket),
        cgroup_root: args.cgroup_root,
        vmlinux_btf: args.vmlinux_btf,
        lsm_list: args.lsm_list,
        degraded: args.degraded,
        landlock: args.landlock,
        max_ttl: std::time::Duration::from_secs(args.max_dns_ttl),
        resolv_conf: args.resolv_conf,
        allow_missing_limits: args.allow_missing_limits,
        audit_log: args.audit_log,
        audit_max_bytes: args.audit_max_mib << 20,
        report_limits: ReportLimits {
            identical_per_second: args.identical_events_per_second,
            agent_per_second: args.agent_events_per_second,
        },
        ring_buffer_bytes: args.ring_buffer_mib << 20,
        settings,
    };
    match daemon::run(config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("claw-agent: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn uninstall(pins: &Path, socket: &Path) -> ExitCode {
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        eprintln!(
            "claw-agent: a claw-agent is running (it answers on {}): stop it first — it holds its programs attached while it runs",
            socket.display()
        );
        return ExitCode::FAILURE;
    }
    match Pins::remove_all(pins) {
        Ok(links) => {
            eprintln!(
                "claw-agent: removed {links} links and the maps under {}: claw enforces nothing now",
                pins.display()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("claw-agent: uninstalling: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop claw-agent with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
}
