//! `claw-vmtest bench-events CLAW_AGENT CLAWCTL` (run by `cargo xtask bench events`, on the host:
//! its cgroup connect programs load here). Connect denials at full speed, counted twice in one
//! run: by a minimal raw ring-buffer consumer over claw's own programs (the ceiling), and end to
//! end through claw-agent (running policies/openclaw.yaml plus the storm's agent) into a
//! `clawctl deny-log --follow --json` subscriber and the audit log.
//! Then a paced run for latency (kernel deny -> line printed by clawctl). Prints one table.

use std::{
    io::{BufRead as _, BufReader},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context as _};
use aya::maps::{LpmTrie, MapData};
use claw_agent::{
    kernel::{
        enforcer::{Coverage, Enforcer},
        handover::ReportLimits,
        insert_batched,
        load::LoadOptions,
    },
    policy::prepare::prepare,
};
use claw_common::{NetRuleKey, NetRuleValue, PathRuleKey};
use claw_tests::harness::{audit_accounts, in_cgroup, PrivateBpffs};
use serde_json::Value;

/// How long each full-speed storm lasts.
const STORM: Duration = Duration::from_secs(5);
/// Denials per second of the paced run that measures latency.
const PACED_RATE: u64 = 2000;
const PACED: Duration = Duration::from_secs(3);

const TARGET_RATIO: f64 = 0.75;
const TARGET_P99_MS: f64 = 10.0;
const TARGET_RSS_MIB: f64 = 30.0;
/// Of an unthrottled storm's denials, the share written to the audit log (not only counted).
const TARGET_AUDITED: f64 = 0.95;

pub fn run(args: &[String]) -> ExitCode {
    let [claw_agent, clawctl] = args else {
        eprintln!("usage: claw-vmtest bench-events CLAW_AGENT CLAWCTL");
        return ExitCode::from(2);
    };
    match bench(Path::new(claw_agent), Path::new(clawctl)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench-events: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The scale run: agents, and file paths and destinations of each.
const SCALE_AGENTS: usize = 100;
const SCALE_FILE_RULES: usize = 5_000;
const SCALE_CONNECT_RULES: usize = 5_000;
const TARGET_SCALE_SECONDS: f64 = 2.0;

/// The bench's cgroups, removed at the end whatever happens.
struct Cgroups {
    root: PathBuf,
    base: String,
}

impl Cgroups {
    fn path(&self, agent: &str) -> PathBuf {
        self.root.join(&self.base).join(agent)
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        // Only the agents' cgroups the bench's policies name, one level below its own. A
        // process that was just killed may still be leaving one (EBUSY): tried again for a
        // while, so that a failed run leaves nothing behind either.
        let base = self.root.join(&self.base);
        for _ in 0..50 {
            for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = std::fs::remove_dir(entry.path());
                }
            }
            match std::fs::remove_dir(&base) {
                Err(err) if err.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => return,
            }
        }
        eprintln!("bench-events: {} could not be removed", base.display());
    }
}

/// A child process killed (by pid) when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid, not yet reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// The daemon's policy: the shipped policies/openclaw.yaml (its include beside it), its agents'
/// cgroups under the bench's, without `limits:` (this host's cgroup v2 has no memory
/// controller), and the storm's agent added.
fn openclaw_policy(dir: &Path, cgroups: &Cgroups, agent: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir.join("base"))?;
    std::fs::write(
        dir.join("base/runtime.yaml"),
        include_str!("../../policies/base/runtime.yaml"),
    )?;
    let shipped = include_str!("../../policies/openclaw.yaml");
    let mut text: String = shipped
        .lines()
        .filter(|l| !l.trim_start().starts_with("limits:"))
        .map(|l| l.replace("cgroup: claw/", &format!("cgroup: {}/", cgroups.base)) + "\n")
        .collect();
    // Last in the agents list, which the file's top-level `common:` follows.
    let storm_agent = format!(
        "\n  - name: {agent}\n    cgroup: {}/{agent}\n",
        cgroups.base
    );
    let end_of_agents = text.find("\ncommon:").unwrap_or(text.len());
    text.insert_str(end_of_agents, &storm_agent);
    let path = dir.join("openclaw.yaml");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn policy(dir: &Path, cgroups: &Cgroups, agent: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{agent}.yaml"));
    std::fs::write(
        &path,
        format!(
            "agents:\n  - name: {agent}\n    cgroup: {}/{agent}\n",
            cgroups.base
        ),
    )?;
    Ok(path)
}

/// The probe's connect storm in `cgroup`: (denials, how long it ran).
fn storm(cgroup: &Path, seconds: Duration, rate: u64) -> anyhow::Result<(u64, Duration)> {
    let mut command = Command::new(std::env::current_exe()?);
    command.args([
        "probe",
        "connect-storm",
        "127.0.0.1:20000",
        "30000",
        "1000000000",
        &seconds.as_secs().to_string(),
        &rate.to_string(),
    ]);
    let (mut command, _procs) = in_cgroup(command, cgroup)?;
    let started = Instant::now();
    let output = command.output()?;
    let elapsed = started.elapsed();
    let printed = String::from_utf8_lossy(&output.stdout);
    let denied = printed
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("the probe printed `{printed}`"))?;
    Ok((denied, elapsed))
}

/// Phase 1: claw's programs with a consumer that only counts ring-buffer records.
fn raw_rate(dir: &Path, cgroups: &Cgroups, bpffs: &Path) -> anyhow::Result<(f64, u64)> {
    let prepared =
        prepare(&policy(dir, cgroups, "raw")?, &Default::default()).map_err(anyhow::Error::msg)?;
    let unlimited = ReportLimits {
        identical_per_second: 0,
        agent_per_second: 0,
    };
    let mut enforcer = Enforcer::load(LoadOptions {
        vmlinux_btf: claw_agent::defaults::VMLINUX_BTF.into(),
        lsm_list: claw_agent::defaults::LSM_LIST.into(),
        coverage: Coverage::NetworkOnly,
        cgroup_root: cgroups.root.clone(),
        report_limits: unlimited,
        ring_buffer_bytes: 4 << 20,
        pins: bpffs.join("raw"),
    })?;
    enforcer.apply(&prepared.compiled, &Default::default(), &Default::default())?;
    enforcer.attach_programs()?;
    let mut kernel = enforcer.take_events()?;
    let stop = Arc::new(AtomicBool::new(false));
    let counting = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut records = 0u64;
            let mut last = Instant::now();
            let fd = kernel.ring.as_raw_fd();
            loop {
                while kernel.ring.next().is_some() {
                    records += 1;
                    last = Instant::now();
                }
                if stop.load(Ordering::Relaxed) {
                    return (records, last);
                }
                let mut poll = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: poll(2) on one pollfd we own.
                unsafe { libc::poll(&mut poll, 1, 50) };
            }
        })
    };
    let started = Instant::now();
    let (denied, _) = storm(&cgroups.path("raw"), STORM, 0)?;
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (records, last) = counting.join().expect("the counting thread");
    let lost = enforcer.counters()?.events_lost_kernel;
    let rate = records as f64 / last.duration_since(started).as_secs_f64();
    eprintln!("bench-events: raw: {denied} denials, {records} records counted, {lost} lost");
    Ok((rate, lost))
}

struct Delivered {
    denials: u64,
    lost: u64,
    /// Kernel deny -> line read from clawctl, in milliseconds.
    latencies: Vec<f64>,
    last: SystemTime,
}

/// Reads clawctl's JSON lines until `expected` denials are accounted for or it goes quiet.
fn collect(lines: &std::sync::mpsc::Receiver<(SystemTime, String)>, expected: u64) -> Delivered {
    let mut delivered = Delivered {
        denials: 0,
        lost: 0,
        latencies: Vec::new(),
        last: SystemTime::now(),
    };
    while delivered.denials + delivered.lost < expected {
        let Ok((now, line)) = lines.recv_timeout(Duration::from_secs(10)) else {
            break;
        };
        // Picked out of the text, not parsed: the bench's reader shares the CPUs it measures.
        if line.contains("\"kind\":\"deny\"") {
            delivered.denials += 1;
            delivered.last = now;
            let at = line
                .split_once("\"time\":\"")
                .and_then(|(_, rest)| humantime::parse_rfc3339(rest.split('"').next()?).ok());
            if let Some(at) = at {
                let latency = now.duration_since(at).unwrap_or_default();
                delivered.latencies.push(latency.as_secs_f64() * 1000.0);
            }
        } else if line.contains("\"kind\":\"lost\"") {
            let event: Value = serde_json::from_str(&line).unwrap_or_default();
            delivered.lost += event["details"]["lost"].as_u64().unwrap_or(0);
        }
    }
    delivered
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The daemon's resident size now and at its peak, in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Where the daemon's resident memory is: Rss summed by mapping (smaps), largest first, in MiB
/// — anonymous memory by its kind ([heap], [stack], other anonymous), files by name.
fn rss_by_mapping(pid: u32) -> Vec<(String, f64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut sums: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
    let mut current = String::new();
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: address range, perms, offset, device, inode, then its name.
            current = fields.nth(4).unwrap_or("[anonymous]").to_owned();
        } else if first == "Rss:" {
            let kib: f64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
            *sums.entry(current.clone()).or_default() += kib / 1024.0;
        }
    }
    let mut sorted: Vec<(String, f64)> = sums.into_iter().collect();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
    sorted
}

/// claw-agent --degraded on `policy` with the bench's socket, cgroup root, audit log and pins.
fn daemon_command(
    claw_agent: &Path,
    policy: &Path,
    dir: &Path,
    bpffs: &PrivateBpffs,
    root: &Path,
) -> Command {
    let mut command = Command::new(claw_agent);
    command
        .args(["--degraded", "--policy"])
        .arg(policy)
        .arg("--socket")
        .arg(dir.join("claw.sock"))
        .arg("--cgroup-root")
        .arg(root)
        .arg("--audit-log")
        .arg(dir.join("audit.log"))
        .arg("--bpffs")
        .arg(bpffs.pins())
        .stderr(Stdio::null());
    command
}

/// Waits until claw-agent answers on its socket, which it opens once it enforces.
fn wait_answering(clawctl: &Path, socket: &Path, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !Command::new(clawctl)
        .arg("--socket")
        .arg(socket)
        .arg("status")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success()
    {
        if Instant::now() > deadline {
            bail!("claw-agent did not start within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A number the daemon logged as `name=N` in the first line containing `message`.
fn logged_number(log: &str, message: &str, name: &str) -> Option<u64> {
    // The log is coloured: escape sequences (ESC [ ... m) go first.
    let mut plain = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            plain.push(c);
        }
    }
    let line = plain.lines().find(|l| l.contains(message))?;
    let field = format!(" {name}=");
    let after = &line[line.find(&field)? + field.len()..];
    after
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The scale run's figures, in seconds: start to answering (enforcing), a live re-apply of the
/// same policy, one with one agent's rules changed; and the start's parts as claw-agent logged
/// them.
struct Scale {
    start: f64,
    apply_same: f64,
    apply_one_changed: f64,
    start_parts: [(&'static str, f64); 3],
    /// The same entries into two bare LPM tries, side by side, in the fewest syscalls.
    kernel_floor: f64,
}

/// The scale policy: SCALE_AGENTS agents with SCALE_FILE_RULES paths and SCALE_CONNECT_RULES
/// destinations each; with `changed`, the first agent's last destination is another.
fn scale_policy(base: &str, changed: bool) -> String {
    use std::fmt::Write as _;
    let mut text = String::from("agents:\n");
    for agent in 0..SCALE_AGENTS {
        let _ = write!(
            text,
            "  - name: a{agent}\n    cgroup: {base}/a{agent}\n    files:\n      read:\n"
        );
        for rule in 0..SCALE_FILE_RULES {
            let _ = writeln!(text, "        - /data/a{agent}/f{rule}");
        }
        text.push_str("    connect:\n");
        for rule in 0..SCALE_CONNECT_RULES {
            let last = if changed && agent == 0 && rule == SCALE_CONNECT_RULES - 1 {
                251
            } else {
                rule % 250
            };
            let _ = writeln!(
                text,
                "      - 127.{}.{}.{last}:443/tcp",
                agent + 1,
                rule / 250
            );
        }
    }
    text
}

/// Start and live re-apply of the scale policy.
fn scale(claw_agent: &Path, clawctl: &Path, root: &Path) -> anyhow::Result<Scale> {
    let cgroups = Cgroups {
        root: root.to_path_buf(),
        base: format!("claw-bench-scale-{}", std::process::id()),
    };
    let dir = tempfile::tempdir()?;
    let bpffs = PrivateBpffs::mount(&dir.path().join("bpffs"))?;
    let policy = dir.path().join("scale.yaml");
    std::fs::write(&policy, scale_policy(&cgroups.base, false))?;
    let changed = dir.path().join("scale-changed.yaml");
    std::fs::write(&changed, scale_policy(&cgroups.base, true))?;
    let kernel_floor = kernel_floor(&policy)?;
    let socket = dir.path().join("claw.sock");
    let log_path = dir.path().join("claw-agent.log");
    let started = Instant::now();
    let daemon = Guard(
        daemon_command(claw_agent, &policy, dir.path(), &bpffs, root)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path)?)
            .spawn()
            .context("starting claw-agent")?,
    );
    wait_answering(clawctl, &socket, Duration::from_secs(120))?;
    let start = started.elapsed().as_secs_f64();
    let apply = |path: &Path| -> anyhow::Result<f64> {
        let started = Instant::now();
        let applied = Command::new(clawctl)
            .arg("--socket")
            .arg(&socket)
            .args(["policy", "apply"])
            .arg(path)
            .output()?;
        anyhow::ensure!(
            applied.status.success(),
            "clawctl policy apply failed: {}",
            String::from_utf8_lossy(&applied.stderr)
        );
        Ok(started.elapsed().as_secs_f64())
    };
    let apply_same = apply(&policy)?;
    let apply_one_changed = apply(&changed)?;
    drop(daemon);
    let uninstalled = Command::new(claw_agent)
        .arg("--uninstall")
        .arg("--bpffs")
        .arg(bpffs.pins())
        .arg("--socket")
        .arg(&socket)
        .output()?;
    anyhow::ensure!(
        uninstalled.status.success(),
        "claw-agent --uninstall failed"
    );
    let log = std::fs::read_to_string(&log_path)?;
    let part = |name| {
        logged_number(&log, "policy enforced", name).map_or(f64::NAN, |ms| ms as f64 / 1000.0)
    };
    Ok(Scale {
        start,
        apply_same,
        apply_one_changed,
        start_parts: [
            ("read and compile", part("prepare_ms")),
            ("load programs", part("load_ms")),
            ("rules into the kernel's maps", part("install_ms")),
        ],
        kernel_floor,
    })
}

/// What the kernel alone takes for the scale policy's rule entries: compiled by claw (not
/// timed), then put into two bare LPM tries of claw's key and value types — paths on one thread,
/// destinations on another, as claw fills its maps — with the fewest syscalls. No program is
/// attached to them.
fn kernel_floor(policy: &Path) -> anyhow::Result<f64> {
    const BPF_F_NO_PREALLOC: u32 = 1;
    let prepared = prepare(policy, &Default::default()).map_err(anyhow::Error::msg)?;
    let agents = prepared.compiled.agents.iter().zip(1u32..);
    let paths: Vec<_> = agents
        .clone()
        .flat_map(|(agent, ruleset)| {
            agent
                .file_rules
                .iter()
                .map(move |r| (r.key(ruleset), r.access))
        })
        .collect();
    let destinations: Vec<_> = agents
        .flat_map(|(agent, ruleset)| {
            agent
                .net_rules
                .iter()
                .map(move |r| (r.key(ruleset), r.value()))
        })
        .collect();
    let path_trie = LpmTrie::<MapData, PathRuleKey, u32>::create(1 << 21, BPF_F_NO_PREALLOC)?;
    let net_trie =
        LpmTrie::<MapData, NetRuleKey, NetRuleValue>::create(1 << 21, BPF_F_NO_PREALLOC)?;
    let started = Instant::now();
    std::thread::scope(|scope| {
        let paths = scope.spawn(|| insert_batched(&path_trie, paths.into_iter()));
        insert_batched(&net_trie, destinations.into_iter())?;
        paths
            .join()
            .map_err(|_| anyhow::anyhow!("the path thread panicked"))??;
        anyhow::Ok(())
    })?;
    Ok(started.elapsed().as_secs_f64())
}

fn bench(claw_agent: &Path, clawctl: &Path) -> anyhow::Result<()> {
    let root = claw_agent::kernel::cgroupfs::find_cgroup2_root()?;
    let cgroups = Cgroups {
        root,
        base: format!("claw-bench-{}", std::process::id()),
    };
    let dir = tempfile::tempdir()?;
    let bpffs = PrivateBpffs::mount(&dir.path().join("bpffs"))?;
    let (raw, raw_lost) = raw_rate(dir.path(), &cgroups, &bpffs.0)?;

    let socket = dir.path().join("claw.sock");
    let audit_log = dir.path().join("audit.log");
    let daemon = Guard(
        daemon_command(
            claw_agent,
            &openclaw_policy(dir.path(), &cgroups, "piped")?,
            dir.path(),
            &bpffs,
            &cgroups.root,
        )
        .args([
            "--identical-events-per-second",
            "0",
            "--agent-events-per-second",
            "0",
        ])
        .spawn()
        .context("starting claw-agent")?,
    );
    wait_answering(clawctl, &socket, Duration::from_secs(30))?;
    let mut follower = Guard(
        Command::new(clawctl)
            .arg("--socket")
            .arg(&socket)
            .args(["deny-log", "--follow", "--json", "--agent", "piped"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?,
    );
    let stdout = follower.0.stdout.take().context("clawctl's stdout")?;
    let stderr = follower.0.stderr.take().context("clawctl's stderr")?;
    let (sender, lines) = std::sync::mpsc::channel();
    let notices = sender.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // Stamped as it is read: the latency ends when clawctl's line arrives.
            if sender.send((SystemTime::now(), line)).is_err() {
                return;
            }
        }
    });
    // A follower that fell behind is told on stderr ("clawctl: LOST N events ..."): counted.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let lost = line
                .strip_prefix("clawctl: LOST ")
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok());
            if let Some(lost) = lost {
                let marker = format!("{{\"kind\":\"lost\",\"details\":{{\"lost\":{lost}}}}}");
                if notices.send((SystemTime::now(), marker)).is_err() {
                    return;
                }
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));

    let started = SystemTime::now();
    let (denied, _) = storm(&cgroups.path("piped"), STORM, 0)?;
    let full = collect(&lines, denied);
    let piped = full.denials as f64
        / full
            .last
            .duration_since(started)
            .unwrap_or_default()
            .as_secs_f64();
    // The audit log is the record that must account for every denial: each is there, or in a
    // count of the kernel's (lost, per agent) or of the writer's (lost, audit).
    let (audited, audit_lost) = audit_accounts(&audit_log, "piped");
    let unaccounted = denied.saturating_sub(audited + audit_lost);
    // Let the daemon finish the storm's backlog (audit log included) before timing latency.
    let mut audit_size = 0;
    while std::fs::metadata(&audit_log).map_or(0, |m| m.len()) != audit_size {
        audit_size = std::fs::metadata(&audit_log).map_or(0, |m| m.len());
        std::thread::sleep(Duration::from_secs(1));
    }
    while lines.try_recv().is_ok() {}

    let (paced_denied, _) = storm(&cgroups.path("piped"), PACED, PACED_RATE)?;
    let paced = collect(&lines, paced_denied);
    let mut latencies = paced.latencies.clone();
    latencies.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    let (rss, peak) = rss_mib(daemon.0.id());
    let where_rss = rss_by_mapping(daemon.0.id());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();

    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!();
    println!(
        "claw events bench — host kernel {}, {} s storms of distinct denied connects, throttling off",
        kernel.trim(),
        STORM.as_secs()
    );
    println!("  raw ring-buffer consumer (counts only)      {raw:>10.0} denials/s  ({raw_lost} lost in the kernel)");
    println!(
        "  claw-agent -> clawctl deny-log --json       {piped:>10.0} denials/s  ratio {:.2} (target >= {TARGET_RATIO}: {})",
        piped / raw,
        verdict(piped / raw >= TARGET_RATIO)
    );
    println!(
        "  subscriber received                         {:>10} of {denied} denials (+{} in lost counts)",
        full.denials, full.lost
    );
    let audited_share = audited as f64 / denied as f64;
    println!(
        "  audit log holds                             {audited:>10} of {denied} denials (+{audit_lost} in lost counts): {:.1}% written (target >= {:.0}%: {})",
        audited_share * 100.0,
        TARGET_AUDITED * 100.0,
        verdict(audited_share >= TARGET_AUDITED)
    );
    println!(
        "  unaccounted loss (audit log)                {unaccounted:>10} (target 0: {})",
        verdict(unaccounted == 0)
    );
    println!(
        "  latency deny -> clawctl line, {PACED_RATE}/s paced   p50 {p50:.2} ms, p99 {p99:.2} ms (target p99 <= {TARGET_P99_MS} ms: {})",
        verdict(p99 <= TARGET_P99_MS)
    );
    println!(
        "  claw-agent RSS after the runs               {rss:>10.1} MiB (target <= {TARGET_RSS_MIB}: {}); peak {peak:.1} MiB",
        verdict(rss <= TARGET_RSS_MIB)
    );
    println!(
        "    of which: {}",
        where_rss
            .iter()
            .take(6)
            .map(|(name, mib)| format!("{name} {mib:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    drop(follower);
    drop(daemon);

    let scale = scale(claw_agent, clawctl, &cgroups.root)?;
    let rules = SCALE_FILE_RULES + SCALE_CONNECT_RULES;
    println!(
        "  {SCALE_AGENTS} agents x {rules} rules, release: start to enforcing {:>7.2} s (target <= {TARGET_SCALE_SECONDS} s: {})",
        scale.start,
        verdict(scale.start <= TARGET_SCALE_SECONDS)
    );
    println!(
        "    of which: {}",
        scale
            .start_parts
            .iter()
            .map(|(name, seconds)| format!("{name} {seconds:.2} s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let [.., (_, into_maps)] = scale.start_parts;
    println!(
        "    the kernel alone, the same entries into two bare LPM tries side by side: {:.2} s (claw's {:.2} of it)",
        scale.kernel_floor,
        into_maps / scale.kernel_floor
    );
    println!(
        "  live re-apply of the same policy            {:>10.2} s (target <= {TARGET_SCALE_SECONDS} s: {})",
        scale.apply_same,
        verdict(scale.apply_same <= TARGET_SCALE_SECONDS)
    );
    println!(
        "  live re-apply, one agent's rules changed    {:>10.2} s (target <= {TARGET_SCALE_SECONDS} s: {})",
        scale.apply_one_changed,
        verdict(scale.apply_one_changed <= TARGET_SCALE_SECONDS)
    );
    Ok(())
}
