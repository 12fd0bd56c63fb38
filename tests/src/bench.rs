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
    in_cgroup_if, Daemon, ScratchCgroup, CGROUP_ROOT, CLAWCTL, DAEMON_LOG, VMTEST,
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
         \x20 - name: many\n    cgroup: claw/many\n    exec: [/usr/bin/claw-vmtest]\n    files:\n      read:\n{ten}{many}\
         {TOOLS_AGENT}"
    )
}

/// The exec workloads' agent: policies/openclaw.yaml's `tools` with the runtime fragment's
/// common rules, its programs those of this VM (busybox for the shell and its tools, the
/// dynamically linked /usr/bin/true, the loader).
const TOOLS_AGENT: &str = "
  - name: tools
    cgroup: claw/tools
    files:
      read: [/workspace/, /etc/ssl/certs/, /etc/gitconfig, /usr/share/git-core/, /etc/ld.so.cache,
             /etc/nsswitch.conf, /etc/hosts, /etc/resolv.conf, /etc/localtime, /usr/share/zoneinfo/,
             /usr/lib/locale/, /dev/null, /dev/zero, /dev/urandom]
      write: [/workspace/, /tmp/, /dev/null]
    exec: [/usr/bin/busybox, /usr/bin/true, /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2,
           /usr/bin/claw-vmtest]
    libraries: [/usr/lib/x86_64-linux-gnu/]
    connect: [127.0.0.1:11434/tcp, 10.0.0.0/8:443/tcp]
";

/// The same rules as a Landlock ruleset (probe exec-landlock).
const TOOLS_LANDLOCK: &str = "read:/workspace/,/etc/ssl/certs/,/etc/gitconfig,/usr/share/git-core/,\
/etc/ld.so.cache,/etc/nsswitch.conf,/etc/hosts,/etc/resolv.conf,/etc/localtime,/usr/share/zoneinfo/,\
/usr/lib/locale/,/dev/null,/dev/zero,/dev/urandom;write:/workspace/,/tmp/,/dev/null;\
exec:/usr/bin/busybox,/usr/bin/true,/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2;\
libraries:/usr/lib/x86_64-linux-gnu/";

/// Whole workloads, as a shell runs them: (name, script for busybox sh, interleaved rounds — a
/// run of the loop takes half a minute under TCG).
const WORKLOADS: [(&str, &str, usize); 2] = [
    (
        "shell loop, 1,000 execs of /usr/bin/true",
        "i=0; while [ $i -lt 1000 ]; do /usr/bin/true; i=$((i+1)); done",
        3,
    ),
    (
        "tool call: cat|grep|sed, wc over 20 files x5",
        "for round in 1 2 3 4 5; do for f in /workspace/bench/*.txt; do \
         /usr/bin/cat $f | /usr/bin/grep needle | /usr/bin/sed s/needle/pin/ > /workspace/bench-out.txt; \
         /usr/bin/wc -l < /workspace/bench-out.txt > /dev/null; done; done",
        7,
    ),
];
const TARGET_EXEC_VS_NONE: f64 = 1.15;
const TARGET_EXEC_VS_LANDLOCK: f64 = 1.05;

/// The distinct denials of the `tools` agent in the audit log: "comm op object".
fn tools_denials() -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    for file in claw_agent::events::audit::files_of(Path::new(claw_agent::defaults::AUDIT_LOG)) {
        for event in claw_agent::events::audit::events_of(&file) {
            if event.kind.as_str() == "deny" && event.agent == "tools" {
                // One line for every process's own /proc entry: /proc/PID/... as /proc/PID/...
                let object: String = match event.object().unwrap_or("-").split_once("/proc/") {
                    Some(("", rest)) => match rest.split_once('/') {
                        Some((pid, tail)) if pid.bytes().all(|b| b.is_ascii_digit()) => {
                            format!("/proc/PID/{tail}")
                        }
                        _ => format!("/proc/{rest}"),
                    },
                    _ => event.object().unwrap_or("-").to_owned(),
                };
                seen.insert(format!("{} {} {object}", event.comm, event.op));
            }
        }
    }
    seen.into_iter().collect()
}

/// What claw's programs have denied since they were loaded (status counters).
fn denied() -> anyhow::Result<u64> {
    let status: serde_json::Value = serde_json::from_slice(
        &Command::new(CLAWCTL)
            .args(["status", "--json"])
            .output()?
            .stdout,
    )?;
    status["counters"]["denied"]
        .as_u64()
        .context("status --json without counters.denied")
}

/// Seconds one run of `script` takes: busybox sh started through the probe (with `rules` as a
/// Landlock ruleset, or `none`), in `cgroup` if given.
fn time_workload(script: &str, rules: &str, cgroup: Option<&Path>) -> anyhow::Result<f64> {
    let mut command = Command::new(VMTEST);
    command
        .args([
            "probe",
            "exec-landlock",
            rules,
            "/usr/bin/busybox",
            "sh",
            "-c",
            script,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let (mut command, _procs) = in_cgroup_if(command, cgroup)?;
    let started = std::time::Instant::now();
    let status = command.status()?;
    let seconds = started.elapsed().as_secs_f64();
    ensure!(status.success(), "workload `{script}` failed: {status:?}");
    Ok(seconds)
}

/// The exec workloads, no claw rules (a process outside every agent) vs the `tools` agent vs
/// Landlock with the same rules, interleaved in each round; and what claw's programs cost per
/// exec in the agent.
fn exec_workloads(ids: &[(String, u32)], tools: &Path) -> anyhow::Result<()> {
    // "none" and Landlock run in a cgroup beside the agent's, not an agent: every run pays the
    // same for being in a child cgroup (its controllers charge each page and fork) and for
    // being moved there, so that the ratios are claw's rules alone.
    let outside = ScratchCgroup::create("claw/bench-outside")?;
    let outside = Some(outside.0.as_path());
    std::fs::create_dir_all("/workspace/bench")?;
    for file in 0..20 {
        let text: String = (0..200)
            .map(|line| {
                if line % 7 == 0 {
                    format!("line {line} with the needle in it\n")
                } else {
                    format!("line {line} of file {file}\n")
                }
            })
            .collect();
        std::fs::write(format!("/workspace/bench/f{file:02}.txt"), text)?;
    }
    line("");
    line(
        "exec workloads (busybox sh; wall time, medians of interleaved rounds in rotating order, ratios within each round)",
    );
    line(&format!(
        "{:<46} {:>9} {:>9} {:>9}  {:>10}  {:>10}",
        "workload", "none s", "claw s", "landlock s", "claw/none", "claw/landlock"
    ));
    for (name, script, rounds) in WORKLOADS {
        let (mut none, mut claw, mut landlock) = (vec![], vec![], vec![]);
        let (mut vs_none, mut vs_landlock) = (vec![], vec![]);
        let mut programs = vec![];
        let denied_before = denied()?;
        for round in 0..rounds {
            // Each round runs the three in another order, so that a place in the round (the
            // first after the previous workload, say) favours none of them.
            let (mut n, mut c, mut l) = (0.0, 0.0, 0.0);
            for setup in (0..3).map(|i| (i + round) % 3) {
                match setup {
                    0 => n = time_workload(script, "none", outside)?,
                    1 => programs.push(measure(ids, || {
                        c = time_workload(script, "none", Some(tools))?;
                        Ok(())
                    })?),
                    _ => l = time_workload(script, TOOLS_LANDLOCK, outside)?,
                }
            }
            vs_none.push(c / n);
            vs_landlock.push(c / l);
            none.push(n);
            claw.push(c);
            landlock.push(l);
        }
        let denied_in_runs = denied()? - denied_before;
        let median = |values: &mut Vec<f64>| {
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        let (r_none, r_landlock) = (median(&mut vs_none), median(&mut vs_landlock));
        let verdict = |ratio: f64, target: f64| if ratio <= target { "met" } else { "NOT met" };
        line(&format!(
            "{name:<46} {:>9.2} {:>9.2} {:>9.2}  {r_none:>10.2}  {r_landlock:>10.2}  ({rounds} rounds)",
            median(&mut none),
            median(&mut claw),
            median(&mut landlock),
        ));
        line(&format!(
            "{:<46} claw/none target <= {TARGET_EXEC_VS_NONE}: {}; claw/landlock target <= {TARGET_EXEC_VS_LANDLOCK}: {}",
            "",
            verdict(r_none, TARGET_EXEC_VS_NONE),
            verdict(r_landlock, TARGET_EXEC_VS_LANDLOCK)
        ));
        // Per exec, in the agent: each program's kernel time, over the execs the rounds made.
        let programs = medians(&programs);
        let execs = programs
            .iter()
            .find(|p| p.0 == "lsm/bprm_check_security")
            .map_or(0, |p| p.2)
            / rounds as u64;
        if execs > 0 {
            let per_exec = |p: &(String, f64, u64)| p.1 * p.2 as f64 / rounds as f64 / execs as f64;
            let mut costly: Vec<&(String, f64, u64)> = programs.iter().collect();
            costly.sort_by(|a, b| per_exec(b).total_cmp(&per_exec(a)));
            let total: f64 = programs.iter().map(per_exec).sum();
            line(&format!(
                "{:<46} {execs} execs per run, {denied_in_runs} denied; claw's programs {:.1} us per exec ({:.1}% of the run): {}",
                "",
                total / 1000.0,
                total * execs as f64 / 1e9 / median(&mut claw) * 100.0,
                costly
                    .iter()
                    .take(4)
                    .map(|p| format!("{} {:.1}", p.0, per_exec(p) / 1000.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let denials = tools_denials();
    if !denials.is_empty() {
        line(&format!(
            "{:<46} denied to the agent: {}",
            "",
            denials.join("; ")
        ));
    }
    Ok(())
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
    let (mut command, _procs) = in_cgroup_if(command, cgroup)?;
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

/// A ratio taken within each round: the median of the rounds, and their lowest and highest.
struct Ratio {
    median: f64,
    lowest: f64,
    highest: f64,
}

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} [rounds {:.2}-{:.2}]",
            self.median, self.lowest, self.highest
        )
    }
}

fn bench() -> anyhow::Result<()> {
    std::fs::create_dir_all("/workspace")?;
    std::fs::write(FILE, "hello\n")?;
    std::fs::write("/tmp/bench.yaml", policy())?;
    let _stats =
        aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF run-time stats")?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    line(&format!("kernel {}", kernel.trim()));

    // The yardstick, on a cgroup of its own, attached for the whole run.
    const YARD: &str = "claw-bench-yardstick";
    let yard = ScratchCgroup::create(YARD)?;
    // The same tree below the yardstick's cgroup as below the agent's (dropped first).
    let _yard_pod = ScratchCgroup::create(&format!("{YARD}/pod"))?;
    let yard_container = ScratchCgroup::create(&format!("{YARD}/pod/container"))?;
    let yard_level = YARD.split('/').count() as u64;
    let f_path = u64::from(
        Btf::from_file(Path::new(claw_agent::defaults::VMLINUX_BTF))?
            .member_offset("file", "f_path")?,
    );
    let mut ebpf = EbpfLoader::new()
        .override_global("FILE_F_PATH", &f_path, true)
        .override_global("AGENT_LEVEL", &yard_level, true)
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
    let (mut yard_runs, mut yard_deep_runs, mut unmanaged, mut ten_runs, mut many_runs) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut deep_runs = vec![];
    for _ in 0..ROUNDS {
        yard_runs.push(measure(&yardstick, || open_loop(Some(&yard.0)))?);
        yard_deep_runs.push(measure(&yardstick, || open_loop(Some(&yard_container.0)))?);
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
    // The median decides; the rounds' lowest and highest are printed beside it, so that a run
    // shows how far its rounds disagree (the machine's noise) next to the margin to a target.
    let paired = |numerators: &[Vec<(String, f64, u64)>],
                  denominators: &[Vec<(String, f64, u64)>]| {
        let mut ratios: Vec<f64> = numerators
            .iter()
            .zip(denominators)
            .map(|(n, d)| file_open_in(n) / file_open_in(d))
            .collect();
        ratios.sort_by(f64::total_cmp);
        Ratio {
            median: ratios[ratios.len() / 2],
            lowest: ratios[0],
            highest: ratios[ratios.len() - 1],
        }
    };
    let unmanaged_ratio = paired(&unmanaged, &yard_runs);
    let ten_ratio = paired(&ten_runs, &yard_runs);
    let many_ratio = paired(&many_runs, &ten_runs);
    let deep_ratio = paired(&deep_runs, &ten_runs);
    let yard_deep_ratio = paired(&yard_deep_runs, &yard_runs);
    let (yard_runs, yard_deep_runs, unmanaged, ten_runs, many_runs, deep_runs) = (
        medians(&yard_runs),
        medians(&yard_deep_runs),
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
        "{:<46} {:>8.0}  {} of yardstick (one hash lookup, a miss)",
        "claw file_open, unmanaged process",
        file_open(&unmanaged),
        unmanaged_ratio
    ));
    line(&format!(
        "{:<46} {:>8.0}  {} of yardstick (target <= 1.25: {})",
        "claw file_open, agent, 10 rules",
        file_open(&ten_runs),
        ten_ratio,
        verdict(ten_ratio.median, 1.25)
    ));
    line(&format!(
        "{:<46} {:>8.0}  {} of 10 rules (target <= 1.10: {})",
        "claw file_open, agent, 10,000 rules",
        file_open(&many_runs),
        many_ratio,
        verdict(many_ratio.median, 1.10)
    ));
    line(&format!(
        "{:<46} {:>8.0}  {} of the agent's own (target <= 1.10: {})",
        "claw file_open, agent's cgroup 2 levels below",
        file_open(&deep_runs),
        deep_ratio,
        verdict(deep_ratio.median, 1.10)
    ));
    line(&format!(
        "{:<46} {:>8.0}  {} of its own (the least the ancestor lookup adds)",
        "yardstick file_open, its cgroup 2 levels below",
        yard_deep_runs.first().map_or(f64::NAN, |r| r.1),
        yard_deep_ratio
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
    exec_workloads(&ids, &Path::new(CGROUP_ROOT).join("claw/tools"))?;
    drop(container);
    drop(pod);
    daemon.stop()?;
    let tools = Path::new(CGROUP_ROOT).join("claw/tools");
    for cgroup in [ten, many, tools, Path::new(CGROUP_ROOT).join("claw")] {
        let _ = std::fs::remove_dir(cgroup);
    }
    Ok(())
}
