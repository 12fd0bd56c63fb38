//! `clawctl agents`: each agent's cgroup, limits, usage and processes.

use claw_agent::{control::client, policy::compile::Sockets};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    json: bool,
}

pub fn run(sockets: &Sockets, Args { json }: Args) -> anyhow::Result<()> {
    agents(&sockets.control, json)
}

fn agents(socket: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let status = client::status(socket)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status.agents)?);
        return Ok(());
    }
    let size = |bytes: Option<u64>| {
        bytes.map_or("-".to_owned(), |b| {
            format!("{:.1} MiB", b as f64 / 1048576.0)
        })
    };
    for a in &status.agents {
        println!(
            "{}  cgroup {} (id {})  mode {}{}",
            a.name,
            a.cgroup,
            a.cgroup_id,
            a.mode,
            if a.gpu { "  gpu" } else { "" }
        );
        let limits: Vec<String> = a
            .limits
            .iter()
            .map(|l| {
                format!(
                    "{} {}{}",
                    l.name,
                    l.value,
                    if l.enforced {
                        ""
                    } else {
                        " (NOT ENFORCED: no controller)"
                    }
                )
            })
            .collect();
        println!(
            "  limits: {}",
            if limits.is_empty() {
                "none".to_owned()
            } else {
                limits.join(", ")
            }
        );
        let u = &a.usage;
        println!(
            "  using: memory {}, tasks {}, cpu {} s, OOM kills {}",
            size(u.memory_bytes),
            u.tasks.map_or("-".to_owned(), |t| t.to_string()),
            u.cpu_usec
                .map_or("-".to_owned(), |c| format!("{:.1}", c as f64 / 1e6)),
            u.oom_kills.map_or("-".to_owned(), |k| k.to_string()),
        );
        println!("  processes: {:?}", u.processes);
        if let Some(restarts) = a.restarts {
            println!("  supervised process restarts: {restarts}");
        }
    }
    Ok(())
}
