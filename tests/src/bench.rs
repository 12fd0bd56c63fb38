//! `claw-vmtest bench` (run by `cargo xtask bench`, in the VM): the kernel time claw's programs
//! take per run, side by side in one run with a minimal yardstick program, for an unmanaged
//! process and for an agent with 10 and with 10,000 rules; and open() latency under claw against
//! the same prefixes as a Landlock ruleset. It prints `CLAW-BENCH` lines: a table of ratios.

use std::{
    collections::HashMap,
    path::Path,
    process::{Command, ExitCode, Stdio},
    time::Duration,
};

use anyhow::{ensure, Context as _};
use aya::{
    maps::{HashMap as BpfHashMap, LpmTrie},
    programs::Lsm,
    EbpfLoader,
};
use claw_agent::{kernel::btf::Btf, policy::compile::FileRule};
use claw_common::{access, mode, AgentEntry, PathRuleKey};
use claw_tests::harness::{
    in_cgroup, Daemon, ScratchCgroup, CGROUP_ROOT, CLAWCTL, DAEMON_LOG, VMTEST,
};

const FILE: &str = "/workspace/hello.txt";
const OPENS: &str = "20000";
const PREFIXES: [&str; 10] = [
    "/usr/",
    "/lib/",
    "/workspace/",
    "/etc/ssl/",
    "/opt/a/",
    "/opt/b/",
    "/opt/c/",
    "/srv/a/",
    "/srv/b/",
    "/srv/c/",
];

pub fn run() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            println!("CLAW-BENCH-ERROR {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn line(text: &str) {
    println!("CLAW-BENCH {text}");
}

/// Two agents, one with the 10 prefixes and one with 9,990 more: measured in the same run, with
/// no policy change between them.
fn policy() -> String {
    let ten: String = PREFIXES
        .iter()
        .map(|p| format!("        - {p}\n"))
        .collect();
    let many: String = (0..9990)
        .map(|i| format!("        - /data/d{i:05}/\n"))
        .collect();
    format!(
        "agents:\n  - name: ten\n    cgroup: claw/ten\n    exec: [/usr/bin/claw-vmtest]\n    files:\n      read:\n{ten}\
         \x20 - name: many\n    cgroup: claw/many\n    exec: [/usr/bin/claw-vmtest]\n    files:\n      read:\n{ten}{many}"
    )
}

/// The median of each program's per-round averages.
fn medians(rounds: &[Vec<(String, f64, u64)>]) -> Vec<(String, f64, u64)> {
    let mut by_name: std::collections::BTreeMap<String, (Vec<f64>, u64)> = Default::default();
    for round in rounds {
        for (name, ns, runs) in round {
            let entry = by_name.entry(name.clone()).or_default();
            entry.0.push(*ns);
            entry.1 += runs;
        }
    }
    by_name
        .into_iter()
        .map(|(name, (mut values, runs))| {
            values.sort_by(f64::total_cmp);
            (name, values[values.len() / 2], runs)
        })
        .collect()
}

/// (run time, run count) of every loaded program, by id.
fn stats() -> anyhow::Result<HashMap<u32, (Duration, u64)>> {
    let mut out = HashMap::new();
    for info in aya::programs::loaded_programs() {
        let info = info?;
        out.insert(info.id(), (info.run_time(), info.run_count()));
    }
    Ok(out)
}

/// Average nanoseconds per run of each program in `ids` while `work` runs.
fn measure(
    ids: &[(String, u32)],
    work: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<(String, f64, u64)>> {
    let before = stats()?;
    work()?;
    let after = stats()?;
    Ok(ids
        .iter()
        .filter_map(|(name, id)| {
            let (t0, c0) = before.get(id)?;
            let (t1, c1) = after.get(id)?;
            let runs = c1 - c0;
            (runs > 0).then(|| {
                (
                    name.clone(),
                    (*t1 - *t0).as_nanos() as f64 / runs as f64,
                    runs,
                )
            })
        })
        .collect())
}

/// Runs the timing probe; returns its average ns per open.
fn time_opens(args: &[&str], cgroup: Option<&Path>) -> anyhow::Result<f64> {
    let mut command = Command::new(VMTEST);
    command
        .arg("probe")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let (mut command, _procs) = match cgroup {
        Some(cgroup) => {
            let (command, procs) = in_cgroup(command, cgroup)?;
            (command, Some(procs))
        }
        None => (command, None),
    };
    let out = command.output()?;
    ensure!(
        out.status.success(),
        "probe {} failed: {:?}",
        args.join(" "),
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("probe printed {text}"))
}

const ROUNDS: usize = 7;

fn bench() -> anyhow::Result<()> {
    std::fs::create_dir_all("/workspace")?;
    std::fs::write(FILE, "hello\n")?;
    std::fs::write("/tmp/bench.yaml", policy())?;
    let _stats =
        aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF run-time stats")?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    line(&format!("kernel {}", kernel.trim()));

    // The yardstick, on a cgroup of its own, attached for the whole run.
    let yard = ScratchCgroup::create("claw-bench-yardstick")?;
    let f_path = u64::from(
        Btf::from_file(Path::new(claw_agent::defaults::VMLINUX_BTF))?
            .member_offset("file", "f_path")?,
    );
    let mut ebpf = EbpfLoader::new()
        .override_global("FILE_F_PATH", &f_path, true)
        .load(claw_agent::kernel::baseline::OBJECT)?;
    let cgroup_id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&yard.0)?);
    let mut agents: BpfHashMap<_, u64, AgentEntry> =
        BpfHashMap::try_from(ebpf.map_mut("BASELINE_AGENTS").context("map")?)?;
    agents.insert(
        cgroup_id,
        AgentEntry {
            ruleset: 1,
            mode: mode::ENFORCE,
            flags: 0,
            resolver_port: 0,
            _pad: 0,
            agent_cgroup_id: cgroup_id,
            cgroup_id,
        },
        0,
    )?;
    let mut rules: LpmTrie<_, PathRuleKey, u32> =
        LpmTrie::try_from(ebpf.map_mut("BASELINE_RULES").context("map")?)?;
    let rule = FileRule {
        prefix: b"/workspace/".to_vec(),
        access: access::READ,
    };
    rules.insert(&rule.key(1), access::READ, 0)?;
    let program: &mut Lsm = ebpf
        .program_mut("baseline_file_open")
        .context("program")?
        .try_into()?;
    program.load("file_open", &aya::Btf::from_sys_fs()?)?;
    program.attach()?;
    let yardstick = vec![("yardstick".to_owned(), program.info()?.id())];

    let mut daemon = Daemon::start(Path::new("/tmp/bench.yaml"), Path::new(DAEMON_LOG), &[])?;
    daemon.wait_enforcing(Duration::from_secs(300))?;
    let status: serde_json::Value = serde_json::from_slice(
        &Command::new(CLAWCTL)
            .args(["status", "--json"])
            .output()?
            .stdout,
    )?;
    let ids: Vec<(String, u32)> = status["programs"]
        .as_array()
        .context("programs")?
        .iter()
        .filter_map(|p| Some((p["hook"].as_str()?.to_owned(), p["id"].as_u64()? as u32)))
        .collect();
    let ten = Path::new(CGROUP_ROOT).join("claw/ten");
    let many = Path::new(CGROUP_ROOT).join("claw/many");
    // A container-like tree below the agent: held by the agent's rules, found through the
    // ancestor levels in use.
    let pod = ScratchCgroup::create("claw/ten/bench-pod")?;
    let container = ScratchCgroup::create("claw/ten/bench-pod/container")?;
    let open_loop =
        |cgroup: Option<&Path>| time_opens(&["time-open", FILE, OPENS], cgroup).map(drop);

    // Rounds interleave the scenarios, so that drift in the machine touches them all alike.
    let (mut yard_runs, mut unmanaged, mut ten_runs, mut many_runs, mut deep_runs) =
        (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        yard_runs.push(measure(&yardstick, || open_loop(Some(&yard.0)))?);
        unmanaged.push(measure(&ids, || open_loop(None))?);
        ten_runs.push(measure(&ids, || open_loop(Some(&ten)))?);
        many_runs.push(measure(&ids, || open_loop(Some(&many)))?);
        deep_runs.push(measure(&ids, || open_loop(Some(&container.0)))?);
    }
    drop(ebpf);
    // Ratios are taken within each round (measured back to back), then their median: drift of
    // the emulated machine between rounds cancels out.
    let file_open_in = |runs: &[(String, f64, u64)]| {
        runs.iter()
            .find(|r| r.0 == "lsm/file_open" || r.0 == "yardstick")
            .map_or(f64::NAN, |r| r.1)
    };
    let paired = |numerators: &[Vec<(String, f64, u64)>],
                  denominators: &[Vec<(String, f64, u64)>]| {
        let mut ratios: Vec<f64> = numerators
            .iter()
            .zip(denominators)
            .map(|(n, d)| file_open_in(n) / file_open_in(d))
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios[ratios.len() / 2]
    };
    let unmanaged_ratio = paired(&unmanaged, &yard_runs);
    let ten_ratio = paired(&ten_runs, &yard_runs);
    let many_ratio = paired(&many_runs, &ten_runs);
    let deep_ratio = paired(&deep_runs, &ten_runs);
    let (yard_runs, unmanaged, ten_runs, many_runs, deep_runs) = (
        medians(&yard_runs),
        medians(&unmanaged),
        medians(&ten_runs),
        medians(&many_runs),
        medians(&deep_runs),
    );
    let verdict = |ratio: f64, target: f64| if ratio <= target { "met" } else { "NOT met" };
    let baseline = yard_runs
        .first()
        .map(|r| r.1)
        .context("the yardstick did not run")?;
    let file_open = |runs: &[(String, f64, u64)]| {
        runs.iter()
            .find(|r| r.0 == "lsm/file_open")
            .map(|r| r.1)
            .unwrap_or(f64::NAN)
    };
    line("");
    line(&format!("kernel time per run (bpf_stats run_time_ns / run_cnt); medians of {ROUNDS} interleaved rounds of {OPENS} opens (ratios within each round)"));
    line(&format!(
        "{:<46} {:>8}  ratio",
        "program, scenario", "ns/run"
    ));
    line(&format!(
        "{:<46} {:>8.0}  1.00",
        "yardstick file_open, agent, 1 rule", baseline
    ));
    line(&format!(
        "{:<46} {:>8.0}  {:.2} of yardstick (one hash lookup, a miss)",
        "claw file_open, unmanaged process",
        file_open(&unmanaged),
        unmanaged_ratio
    ));
    line(&format!(
        "{:<46} {:>8.0}  {:.2} of yardstick (target <= 1.25: {})",
        "claw file_open, agent, 10 rules",
        file_open(&ten_runs),
        ten_ratio,
        verdict(ten_ratio, 1.25)
    ));
    line(&format!(
        "{:<46} {:>8.0}  {:.2} of 10 rules (target <= 1.10: {})",
        "claw file_open, agent, 10,000 rules",
        file_open(&many_runs),
        many_ratio,
        verdict(many_ratio, 1.10)
    ));
    line(&format!(
        "{:<46} {:>8.0}  {:.2} of the agent's own (target <= 1.10: {})",
        "claw file_open, agent's cgroup 2 levels below",
        file_open(&deep_runs),
        deep_ratio,
        verdict(deep_ratio, 1.10)
    ));
    for (scenario, runs) in [
        ("agent, 10 rules", &ten_runs),
        ("agent, 10,000 rules", &many_runs),
    ] {
        for (name, ns, count) in runs.iter().filter(|r| r.0 != "lsm/file_open") {
            line(&format!(
                "{:<46} {:>8.0}  ({count} runs in the window, any caller)",
                format!("claw {name}, {scenario}"),
                ns
            ));
        }
    }

    // open() latency seen by the process: claw's 10 prefixes against the same as Landlock rules.
    let none = time_opens(&["time-open", FILE, OPENS], None)?;
    let claw = time_opens(&["time-open", FILE, OPENS], Some(&ten))?;
    let mut landlock_args = vec!["time-open-landlock", FILE, OPENS];
    landlock_args.extend(PREFIXES.iter().map(|p| p.trim_end_matches('/')));
    let landlock = time_opens(&landlock_args, None)?;
    line("");
    line("open() latency in the process (ns per open of a file under an allowed prefix)");
    line(&format!("{:<46} {:>8.0}", "no restriction", none));
    line(&format!(
        "{:<46} {:>8.0}  1.00",
        "Landlock, the same 10 prefixes", landlock
    ));
    line(&format!(
        "{:<46} {:>8.0}  {:.2} of Landlock",
        "claw, 10 prefixes",
        claw,
        claw / landlock
    ));
    drop(container);
    drop(pod);
    daemon.stop()?;
    for cgroup in [ten, many, Path::new(CGROUP_ROOT).join("claw")] {
        let _ = std::fs::remove_dir(cgroup);
    }
    Ok(())
}
