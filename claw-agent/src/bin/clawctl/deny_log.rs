//! `clawctl deny-log --follow`: denials (and audit-mode would-be denials) as they happen.

use claw_agent::policy::compile::Sockets;

use crate::follow::{follow, Continue, Only};

#[derive(clap::Args)]
pub struct Args {
    /// Keep printing new events until interrupted (the only mode until the audit log exists).
    #[arg(long, required = true)]
    follow: bool,
    /// One JSON object per line: time, agent, cgroup, pid, comm, op, path, decision, ...
    #[arg(long)]
    json: bool,
    /// Also show events of these kinds: oom (OOM kills), pids_max (refused forks),
    /// lifecycle (supervised processes), policy (applies). Throttled summaries and lost
    /// counts are always shown.
    #[arg(long, value_name = "KIND", value_delimiter = ',')]
    include: Vec<String>,
    #[command(flatten)]
    only: Only,
}

pub fn run(sockets: &Sockets, args: Args) -> anyhow::Result<()> {
    let Args {
        follow: _,
        json,
        include,
        only,
    } = args;
    follow(&sockets.control, "denials", json, only.since, |e| {
        ((["deny", "audit", "throttled", "lost"].contains(&e.kind.as_ref())
            || include.iter().any(|kind| *kind == e.kind))
            && only.admits(e))
        .then_some(Continue::Print)
    })
}
