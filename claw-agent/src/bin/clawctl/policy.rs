//! `clawctl policy check|apply|diff|schema`: validate a policy file, make it the enforced one,
//! compare it with the enforced one, or print the files' JSON Schemas.

use std::path::{Path, PathBuf};

use claw_agent::{
    control::client,
    kernel::catalogue,
    policy::{compile::Sockets, describe, prepare::prepare},
};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Validate a policy and print what it would enforce; exit 1 with its errors.
    Check { file: PathBuf },
    /// Make a policy the enforced one, atomically; a rejected policy changes nothing.
    Apply { file: PathBuf },
    /// Rule lines a policy file would add to and remove from the enforced policy.
    Diff { file: PathBuf },
    /// Print the JSON Schema of the policy file (or, with --config, of claw-agent's
    /// configuration file), for editors: `# yaml-language-server: $schema=FILE` in a policy.
    Schema {
        #[arg(long)]
        config: bool,
    },
}

pub fn run(sockets: &Sockets, args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Check { file } => check(&file, sockets),
        Command::Apply { file } => apply(&sockets.control, &file),
        Command::Diff { file } => diff(sockets, &file),
        Command::Schema { config } => {
            let schema = if config {
                claw_agent::export::config::schema()
            } else {
                claw_agent::policy::schema::policy()
            };
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(())
        }
    }
}

fn check(file: &Path, sockets: &Sockets) -> anyhow::Result<()> {
    let prepared = prepare(file, sockets).map_err(anyhow::Error::msg)?;
    println!("{}: valid — it would enforce:", file.display());
    for (agent, compiled) in prepared.policy.agents.iter().zip(&prepared.compiled.agents) {
        println!(
            "agent {} (cgroup {}, {}): {} file rule entries, {} network rule entries",
            agent.name.0,
            agent.cgroup.0,
            agent.mode.as_str(),
            compiled.file_rules.len(),
            compiled.net_rules.len()
        );
        for line in describe::rule_lines(&prepared.policy)
            .iter()
            .filter(|l| l.agent == agent.name.0 && l.kind != "cgroup" && l.kind != "mode")
        {
            let (programs, map) = catalogue::mechanism(&line.kind);
            let hooks: Vec<String> = programs.iter().map(|p| p.hook()).collect();
            println!(
                "  {:<10} {:<40} {} via {}",
                line.kind,
                line.value,
                hooks.join(", "),
                map
            );
        }
        println!(
            "  everything else: denied{}",
            if agent.mode.as_str() == "audit" {
                " (audit mode: reported, allowed)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

fn apply(socket: &Path, file: &Path) -> anyhow::Result<()> {
    let (policy, generation) = client::apply(socket, file)?;
    println!("applied {policy} (generation {generation})");
    Ok(())
}

fn diff(sockets: &Sockets, file: &Path) -> anyhow::Result<()> {
    let prepared = prepare(file, sockets).map_err(anyhow::Error::msg)?;
    let (enforced, old) = client::rules(&sockets.control)?;
    let new = describe::rule_lines(&prepared.policy);
    let (added, removed) = describe::diff(&old, &new);
    println!("--- {enforced} (enforced)\n+++ {}", file.display());
    for line in &removed {
        println!("- {line}");
    }
    for line in &added {
        println!("+ {line}");
    }
    if added.is_empty() && removed.is_empty() {
        println!("(no changes)");
    }
    Ok(())
}
