//! `clawctl allow`: exactly the object of one denial, for its agent or tool call — once, for a
//! while, or (`--persist`) as a rule drafted into the policy file.

use std::{path::Path, time::Duration};

use claw_agent::{
    control::{
        client::{self, Connection},
        grant::Lifetime,
        protocol::{Reply, Request},
    },
    policy::compile::Sockets,
};

use crate::{advise::draft, exit};

#[derive(clap::Args)]
pub struct Args {
    /// The denial's number (`event N` in deny-log, `seq` in its JSON).
    event: u64,
    /// One retry (within an hour, or within --for).
    #[arg(long)]
    once: bool,
    /// For this long (`10m`, `2h`): any number of times, or with --once one time.
    #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Only for the tool call the denial came from (while it runs).
    #[arg(long, conflicts_with = "persist")]
    call_only: bool,
    /// Instead: print the rule for it as a diff of the enforced policy file; with --apply,
    /// write it there and apply it.
    #[arg(long, conflicts_with_all = ["once", "duration"])]
    persist: bool,
    /// With --persist: write the diff and apply the policy.
    #[arg(long, requires = "persist")]
    apply: bool,
}

pub fn run(sockets: &Sockets, args: Args) -> anyhow::Result<()> {
    let socket = sockets.control.as_path();
    if args.persist {
        return draft(socket, &Request::Persist { event: args.event }, args.apply);
    }
    allow(socket, args.event, args.once, args.duration, args.call_only)
}

fn allow(
    socket: &Path,
    event: u64,
    once: bool,
    duration: Option<Duration>,
    call_only: bool,
) -> anyhow::Result<()> {
    let lifetime = Lifetime::new(once, duration).map_err(|err| exit::Usage(err.to_string()))?;
    let request = Request::Allow {
        event,
        lifetime,
        call_only,
    };
    match Connection::open(socket, &request)?.next_reply()? {
        Some(Reply::Allowed { message }) => {
            println!("{message}");
            Ok(())
        }
        other => Err(client::unexpected(other).into()),
    }
}
