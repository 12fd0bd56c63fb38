//! `clawctl explain`: the security model of the running system — each rule, the kernel hook
//! and map that enforce it, live proof that it is in place, and what is denied by default.

use anyhow::bail;
use claw_agent::{
    control::{client, protocol::ProgramStatus},
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
    let program = |hook: &str| status.programs.iter().find(|p| p.hook == hook);
    let rule_view = |line: &RuleLine| {
        let (programs, map) = catalogue::mechanism(&line.kind);
        let programs: Vec<&ProgramStatus> =
            programs.iter().filter_map(|p| program(&p.hook())).collect();
        (map, programs)
    };
    if json {
        let agents: Vec<_> = agents
            .iter()
            .map(|a| {
                let rules: Vec<_> = lines
                    .iter()
                    .filter(|l| l.agent == a.name && l.kind != "cgroup" && l.kind != "mode")
                    .map(|l| {
                        let (map, programs) = rule_view(l);
                        json!({ "rule": format!("{} {}", l.kind, l.value), "map": map, "enforced_by": programs })
                    })
                    .collect();
                json!({
                    "agent": a.name, "cgroup": a.cgroup, "cgroup_id": a.cgroup_id, "mode": a.mode,
                    "rules": rules, "denied_by_default": catalogue::denied_by_default(),
                })
            })
            .collect();
        let out = json!({
            "policy": status.policy, "generation": status.generation, "coverage": status.coverage,
            "enforcing": status.enforcing, "agents": agents, "counters": status.counters,
        });
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
        for line in lines
            .iter()
            .filter(|l| l.agent == a.name && l.kind != "cgroup" && l.kind != "mode")
        {
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
