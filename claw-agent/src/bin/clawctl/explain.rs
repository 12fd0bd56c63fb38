//! `clawctl explain`: the security model of the running system — each rule, the kernel hook
//! and map that enforce it, live proof that it is in place, and what is denied by default.

use anyhow::bail;
use claw_agent::{
    control::{
        client,
        protocol::{AgentStatus, ProgramStatus, Status},
    },
    kernel::catalogue,
    policy::{compile::Sockets, describe::RuleLine},
};
use serde_json::json;

use crate::status::coverage_note;

#[derive(clap::Args)]
pub struct Args {
    /// Only this agent.
    agent: Option<String>,
    #[arg(long)]
    json: bool,
}

pub fn run(sockets: &Sockets, Args { agent, json }: Args) -> anyhow::Result<()> {
    explain(&sockets.control, agent.as_deref(), json)
}

/// The map a kind of rule consults and the programs, as status shows them, that enforce it: both
/// from the kernel catalogue's rows.
fn enforced_by<'a>(status: &'a Status, kind: &str) -> (&'static str, Vec<&'a ProgramStatus>) {
    let (programs, map) = catalogue::mechanism(kind);
    let shown = programs
        .iter()
        .filter_map(|p| status.programs.iter().find(|s| s.hook == p.hook()))
        .collect();
    (map, shown)
}

/// The rule lines explain shows: every line but an agent's cgroup and mode.
fn shown(line: &RuleLine, agent: &str) -> bool {
    line.agent == agent && line.kind != "cgroup" && line.kind != "mode"
}

/// `explain --json`: each agent's rules with what enforces them, and what is denied by default.
fn json_model(status: &Status, lines: &[RuleLine], agents: &[&AgentStatus]) -> serde_json::Value {
    let agents: Vec<_> = agents
        .iter()
        .map(|a| {
            let rules: Vec<_> = lines
                .iter()
                .filter(|l| shown(l, &a.name))
                .map(|l| {
                    let (map, programs) = enforced_by(status, &l.kind);
                    json!({ "rule": format!("{} {}", l.kind, l.value), "map": map, "enforced_by": programs })
                })
                .collect();
            json!({
                "agent": a.name, "cgroup": a.cgroup, "cgroup_id": a.cgroup_id, "mode": a.mode,
                "rules": rules, "denied_by_default": catalogue::denied_by_default(),
            })
        })
        .collect();
    json!({
        "policy": status.policy, "generation": status.generation, "coverage": status.coverage,
        "enforcing": status.enforcing, "agents": agents, "counters": status.counters,
    })
}
/// `lsm/file_open#5 lsm/mmap_file#7`, with runs of path_* hooks folded: `lsm/path_*#9-#18`.
fn hook_list(programs: &[&ProgramStatus]) -> String {
    let id = |p: &ProgramStatus| p.id.map_or("-".to_owned(), |id| id.to_string());
    let (paths, others): (Vec<&ProgramStatus>, Vec<&ProgramStatus>) = programs
        .iter()
        .partition(|p| p.hook.starts_with("lsm/path_"));
    let mut parts: Vec<String> = others
        .iter()
        .map(|p| format!("{}#{}", p.hook, id(p)))
        .collect();
    match paths.as_slice() {
        [] => {}
        [one] => parts.push(format!("{}#{}", one.hook, id(one))),
        [first, .., last] => parts.push(format!(
            "lsm/path_* ({} hooks)#{}-#{}",
            paths.len(),
            id(first),
            id(last)
        )),
    }
    parts.join(" ")
}

fn explain(socket: &std::path::Path, only: Option<&str>, json: bool) -> anyhow::Result<()> {
    let status = client::status(socket)?;
    let (_, lines) = client::rules(socket)?;
    let agents: Vec<_> = status
        .agents
        .iter()
        .filter(|a| only.is_none_or(|o| o == a.name))
        .collect();
    if agents.is_empty() {
        bail!(
            "no agent named `{}` in the enforced policy — `clawctl status` lists them",
            only.unwrap_or_default()
        );
    }
    let rule_view = |line: &RuleLine| enforced_by(&status, &line.kind);
    // The Landlock layer of each agent, where the processes claw starts run under one.
    let mut landlock = std::collections::BTreeMap::new();
    if status.landlock {
        for a in &agents {
            landlock.insert(a.name.clone(), client::landlock(socket, &a.name)?);
        }
    }
    if json {
        let mut out = json_model(&status, &lines, &agents);
        out["landlock"] = json!(landlock);
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "claw security model — policy {} (generation {}), {}, coverage {}",
        status.policy,
        status.generation,
        if status.enforcing {
            "ENFORCING"
        } else {
            "NOT ENFORCING"
        },
        coverage_note(&status)
    );
    println!("Each process in an agent's cgroup is held by the kernel to the rules below; nothing else is allowed.\n");
    for a in agents {
        println!(
            "agent {}  cgroup {} (cgroup id {})  mode {}",
            a.name, a.cgroup, a.cgroup_id, a.mode
        );
        println!(
            "  {:<36} {:<58} LIVE PROOF (runs of the first hook)",
            "RULE", "ENFORCED BY: kernel hook#program id [map]"
        );
        for line in lines.iter().filter(|l| shown(l, &a.name)) {
            let (map, programs) = rule_view(line);
            let live = match programs.first() {
                Some(p) if programs.iter().all(|p| p.attached) => {
                    format!("attached, {} runs", p.run_count)
                }
                Some(_) => "NOT ATTACHED".to_owned(),
                None => "-".to_owned(),
            };
            println!(
                "  {:<36} {:<58} {live}",
                format!("{} {}", line.kind, line.value),
                format!("{} [{map}]", hook_list(&programs)),
            );
        }
        match landlock.get(&a.name) {
            Some(Some(plan)) => {
                println!("  Landlock layer (the processes claw starts: run:, clawctl run), {} grants:", plan.grants.len());
                for note in &plan.notes {
                    println!("    - {note}");
                }
            }
            Some(None) => println!("  Landlock layer: none (audit mode: Landlock cannot only report) — the processes claw starts are NOT file-confined"),
            None => {}
        }
        println!("  denied by default:");
        for denied in catalogue::denied_by_default() {
            println!("    - {denied}");
        }
        println!();
    }
    let c = &status.counters;
    println!(
        "decisions so far: {} allowed, {} denied, {} audited; events lost: {}; verify: `clawctl deny-log --follow`, `bpftool prog show id N`",
        c.allowed, c.denied, c.audited, c.events_lost_kernel
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use claw_agent::{
        control::protocol::{Counters, Usage},
        kernel::enforcer::Coverage,
        policy::{describe, parse},
    };

    use super::*;

    /// A status as a full-coverage daemon reports it: one row per catalogue program.
    fn status() -> Status {
        let programs = catalogue::PROGRAMS
            .iter()
            .filter(|p| !matches!(p.attach, catalogue::Attach::Tracepoint { .. }))
            .enumerate()
            .map(|(id, p)| ProgramStatus {
                program: p.name.to_owned(),
                hook: p.hook(),
                attached: true,
                id: Some(id as u32),
                enforces: p.enforces.to_owned(),
                run_count: 1,
            })
            .collect();
        let agent = AgentStatus {
            name: "t".to_owned(),
            cgroup: "/claw/t".to_owned(),
            cgroup_id: 7,
            mode: "enforce".to_owned(),
            file_rules: 0,
            net_rules: 0,
            gpu: true,
            restarts: None,
            limits: vec![],
            usage: Usage::default(),
        };
        Status {
            enforcing: true,
            coverage: Coverage::Full,
            landlock: false,
            policy: "p.yaml".to_owned(),
            cgroup_root: "/sys/fs/cgroup".to_owned(),
            generation: 1,
            agents: vec![agent],
            programs,
            counters: Counters::default(),
        }
    }

    /// explain's mechanism column and its denied-by-default list come from the catalogue rows
    /// the daemon attaches: every rule kind is shown with exactly its catalogue programs, and
    /// every enforcing row's default denials are listed.
    #[test]
    fn explain_shows_the_catalogue() {
        let policy = parse(
            "p.yaml",
            "agents:\n  - name: t\n    cgroup: claw/t\n    devices: { gpu: true }\n    allow_env: [LD_PRELOAD]\n    files: { read: [/r/], write: [/w/] }\n    exec: [/usr/bin/git]\n    libraries: [/usr/lib/]\n    connect: [10.0.0.1:443/tcp, example.com:443/tcp]\n    listen: [127.0.0.1:8080/tcp]\n    redirect:\n      - { to: 10.1.0.0/16:80/tcp, via: \"127.0.0.1:3128\" }\n",
        )
        .unwrap();
        let lines = describe::rule_lines(&policy);
        let status = status();
        let agents: Vec<&AgentStatus> = status.agents.iter().collect();
        let model = json_model(&status, &lines, &agents);
        let rules = model["agents"][0]["rules"].as_array().unwrap();
        for kind in [
            "read",
            "write",
            "exec",
            "libraries",
            "connect",
            "connect-name",
            "listen",
            "redirect",
            "allow_env",
            "devices",
        ] {
            let line = lines.iter().find(|l| l.kind == kind).expect(kind);
            let shown = rules
                .iter()
                .find(|r| r["rule"] == format!("{} {}", line.kind, line.value))
                .expect(kind);
            let hooks: Vec<&str> = shown["enforced_by"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["hook"].as_str().unwrap())
                .collect();
            let (programs, map) = catalogue::mechanism(kind);
            let catalogued: Vec<String> = programs.iter().map(|p| p.hook()).collect();
            assert!(!hooks.is_empty(), "{kind}");
            assert_eq!(hooks, catalogued, "{kind}");
            assert_eq!(shown["map"], map, "{kind}");
        }
        let denied: Vec<&str> = model["agents"][0]["denied_by_default"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        assert_eq!(denied, catalogue::denied_by_default());
        for program in catalogue::PROGRAMS {
            for denial in program.denied_by_default {
                assert!(denied.contains(denial), "{}: {denial}", program.name);
            }
        }
    }
}
