//! `clawctl events`: every event as it happens, or one tool call's story.

use std::{
    path::Path,
    time::{Duration, SystemTime},
};

use claw_agent::policy::compile::Sockets;

use crate::follow::{follow, Continue, Only};

#[derive(clap::Args)]
pub struct Args {
    /// Keep printing new events until interrupted (needed unless --call is given).
    #[arg(long, required_unless_present = "call")]
    follow: bool,
    /// One tool call's story, from the audit log: its start, every event of its processes,
    /// its end (waited for if it is still running). Looks back --since (default 1d).
    #[arg(long, value_name = "ID")]
    call: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    only: Only,
}

pub fn run(sockets: &Sockets, args: Args) -> anyhow::Result<()> {
    let Args {
        follow: keep_following,
        call,
        json,
        only,
    } = args;
    match call {
        Some(call) => call_story(&sockets.control, &call, keep_following, json, &only),
        None => follow(&sockets.control, "events", json, only.since, |e| {
            only.admits(e).then_some(Continue::Print)
        }),
    }
}

/// One call's events: replayed from `--since` (default a day back), until its end event.
fn call_story(
    socket: &Path,
    call: &str,
    follow: bool,
    json: bool,
    only: &Only,
) -> anyhow::Result<()> {
    let since = only
        .since
        .or_else(|| SystemTime::now().checked_sub(Duration::from_secs(24 * 3600)));
    crate::follow::follow(socket, "the call's events", json, since, |e| {
        if e.call.as_deref() != Some(call) || !only.admits(e) {
            return None;
        }
        Some(if e.kind == "call" && e.op == "end" && !follow {
            Continue::PrintAndStop
        } else {
            Continue::Print
        })
    })
}
