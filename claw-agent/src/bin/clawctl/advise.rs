//! `clawctl advise`: the narrowest rules that would have allowed recent denials, as a diff of
//! the enforced policy file; and the drafting both it and `allow --persist` use.

use std::{
    path::Path,
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context as _};
use claw_agent::{
    control::{
        client::{self, Connection},
        protocol::{Reply, Request},
    },
    policy::compile::Sockets,
};

use crate::follow::parse_since;

#[derive(clap::Args)]
pub struct Args {
    /// Only this agent's denials.
    #[arg(long)]
    agent: Option<String>,
    /// Only this tool call's denials.
    #[arg(long, value_name = "ID")]
    call: Option<String>,
    /// Denials since this long ago (`10m`, `2h`) or this time [default: 1h].
    #[arg(long, value_name = "WHEN", value_parser = parse_since)]
    since: Option<SystemTime>,
    /// Write the drafted rules into the policy file and apply it.
    #[arg(long)]
    apply: bool,
}

pub fn run(sockets: &Sockets, args: Args) -> anyhow::Result<()> {
    let Args {
        agent,
        call,
        since,
        apply,
    } = args;
    let since = since.unwrap_or_else(|| SystemTime::now() - Duration::from_secs(3600));
    let request = Request::Advise {
        since: humantime::format_rfc3339_nanos(since).to_string(),
        agent,
        call,
    };
    draft(&sockets.control, &request, apply)
}

/// Prints the rules the daemon drafted as a diff of the policy file; with `apply`, writes it
/// (unless the file changed meanwhile) and applies it.
pub fn draft(socket: &Path, request: &Request, apply: bool) -> anyhow::Result<()> {
    let (policy, rules, notes, current, proposed) =
        match Connection::open(socket, request)?.next_reply()? {
            Some(Reply::Draft {
                policy,
                rules,
                notes,
                current,
                proposed,
            }) => (policy, rules, notes, current, proposed),
            other => return Err(client::unexpected(other).into()),
        };
    for note in &notes {
        eprintln!("clawctl: not drafted: {note}");
    }
    if rules.is_empty() {
        println!("no rules to draft: no denial a rule could allow");
        return Ok(());
    }
    let diff = similar::TextDiff::from_lines(&current, &proposed);
    print!(
        "{}",
        diff.unified_diff().header(
            &format!("{policy} (enforced)"),
            &format!("{policy} (drafted)")
        )
    );
    if !apply {
        eprintln!(
            "clawctl: {} rule(s) drafted; nothing changed — run again with --apply to write and apply them",
            rules.len()
        );
        return Ok(());
    }
    let now = std::fs::read_to_string(&policy).with_context(|| format!("reading {policy}"))?;
    if now != current {
        bail!("{policy} changed since the draft was made — run again");
    }
    std::fs::write(&policy, &proposed).with_context(|| format!("writing {policy}"))?;
    if let Err(err) = client::apply(socket, Path::new(&policy)) {
        std::fs::write(&policy, &current).with_context(|| format!("restoring {policy}"))?;
        return Err(anyhow::Error::from(err).context(format!("not applied; {policy} restored")));
    }
    println!("applied {policy} with {} new rule(s)", rules.len());
    Ok(())
}
