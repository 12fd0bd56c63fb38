//! `clawctl status`: whether the policy is enforced, by which programs, with which counts.

use claw_agent::{
    control::{client, protocol::Status},
    kernel::enforcer::Coverage,
    policy::compile::Sockets,
};

#[derive(clap::Args)]
pub struct Args {
    /// Print the daemon's status as JSON.
    #[arg(long)]
    json: bool,
}

use crate::exit;

pub fn run(sockets: &Sockets, Args { json }: Args) -> anyhow::Result<()> {
    let socket = sockets.control.as_path();
    let status = client::status(socket)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print_status(&status);
    }
    if !status.enforcing {
        let detached: Vec<_> = status
            .programs
            .iter()
            .filter(|p| !p.attached)
            .map(|p| p.hook.as_str())
            .collect();
        return Err(exit::NotEnforcing(format!(
            "policy not enforced: not attached: {}",
            detached.join(", ")
        ))
        .into());
    }
    Ok(())
}

pub fn coverage_note(status: &Status) -> &'static str {
    match (status.coverage, status.landlock) {
        (Coverage::NetworkOnly, _) => "DEGRADED (no BPF LSM): connect and bind rules enforced; file and exec rules NOT enforced, nor listening on a port bound as 0, nor what every agent is denied by LSM hooks",
        (Coverage::Landlock, _) => "landlock (no BPF LSM): connect and bind rules enforced for every process of an agent; file and exec rules by Landlock, for the processes claw starts only (run:, clawctl run); NOT for other processes in an agent's cgroup, nor executable memory, nor what every agent is denied by LSM hooks",
        (Coverage::Full, true) => "full, with Landlock stacked on the processes claw starts",
        (Coverage::Full, false) => "full",
    }
}

fn print_status(status: &Status) {
    let state = if status.enforcing {
        "enforcing"
    } else {
        "NOT ENFORCING"
    };
    println!(
        "{state}  policy {} (generation {})  coverage {}",
        status.policy,
        status.generation,
        coverage_note(status)
    );
    println!("programs:");
    for p in &status.programs {
        let attached = if p.attached { "attached" } else { "DETACHED" };
        let id = p.id.map_or("-".to_owned(), |id| id.to_string());
        println!("  {:<20} {:<28} id {:<6} {attached}", p.program, p.hook, id);
    }
    println!("agents:");
    for a in &status.agents {
        println!(
            "  {:<16} cgroup {} (id {})  {}  {} file rules, {} network rules",
            a.name, a.cgroup, a.cgroup_id, a.mode, a.file_rules, a.net_rules
        );
    }
    let c = &status.counters;
    println!(
        "decisions: {} allowed, {} denied, {} audited; lost: {} events (kernel ring buffer full), {} undecodable; {} unresolvable paths",
        c.allowed, c.denied, c.audited, c.events_lost_kernel, c.events_undecodable, c.path_errors
    );
}
