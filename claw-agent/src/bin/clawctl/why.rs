//! `clawctl why`: a denial in words an orchestrator can hand to its model.

use anyhow::bail;
use claw_agent::{
    control::{
        client::{self, ClientError, Connection},
        protocol::{Reply, Request},
    },
    events::event::Kind,
    policy::compile::Sockets,
};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// The denial's number (`event N` in deny-log, `seq` in its JSON).
    event: u64,
    #[arg(long)]
    json: bool,
}

pub fn run(sockets: &Sockets, Args { event, json }: Args) -> anyhow::Result<()> {
    why(sockets, event, json)
}

/// Denial `seq`, from the control socket, or where this process may not connect to it (inside
/// an agent, or not root) from the agent socket, which answers about the asker's own events.
fn why(sockets: &Sockets, seq: u64, json: bool) -> anyhow::Result<()> {
    let request = Request::Event { seq };
    let mut connection = match Connection::open(&sockets.control, &request) {
        Err(err) if is_permission_denied(&err) => Connection::open(&sockets.agent, &request)?,
        connection => connection?,
    };
    let event = match connection.next_reply()? {
        Some(Reply::Event { event }) => event,
        other => return Err(client::unexpected(other).into()),
    };
    if event.kind != Kind::Deny && event.kind != Kind::Audit {
        bail!("event {seq} is a `{}` event, not a denial", event.kind);
    }
    let whom = match &event.call {
        Some(call) => format!("tool call `{call}` of agent `{}`", event.agent),
        None => format!("agent `{}`", event.agent),
    };
    let what = format!(
        "{} {}{}",
        event.op,
        event.object().unwrap_or("-"),
        event
            .access
            .as_deref()
            .map(|a| format!(" ({a})"))
            .unwrap_or_default()
    );
    let reason = event
        .reason
        .clone()
        .unwrap_or_else(|| "no rule of its policy allows it".to_owned());
    let allow = [
        format!("clawctl allow {seq} --once"),
        format!("clawctl allow {seq} --for 10m"),
        format!("clawctl allow {seq} --persist"),
    ];
    if json {
        let out = json!({
            "event": seq, "agent": event.agent, "call": event.call, "operation": event.op,
            "object": event.object(), "access": event.access, "decision": event.decision,
            "reason": reason, "operator_can_allow_with": allow,
        });
        println!("{out}");
    } else {
        println!(
            "event {seq}: {what} was {} for {whom}",
            if event.kind == Kind::Audit {
                "reported (audit mode)"
            } else {
                "denied"
            }
        );
        println!("why: {reason}");
        println!(
            "an operator can allow exactly this with: {}",
            allow.join(" | ")
        );
    }
    Ok(())
}

fn is_permission_denied(err: &ClientError) -> bool {
    matches!(err, ClientError::NotPermitted { .. })
}
