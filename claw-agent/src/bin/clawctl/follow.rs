//! Following the daemon's event stream (deny-log, events): reconnecting and resuming across
//! daemon restarts, filtering, and the human line of an event.

use std::{
    io::Write as _,
    path::Path,
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context as _};
use claw_agent::{
    control::{
        client::{self, Connection, EventView, ReplyView},
        protocol::{Reply, Request},
    },
    events::event::{Event, Kind},
};

/// Narrowing a followed stream.
#[derive(clap::Args)]
pub struct Only {
    /// Only these agents' events.
    #[arg(long, value_name = "AGENT", value_delimiter = ',')]
    pub agent: Vec<String>,
    /// Only these operations (open, exec, connect, oom-kill, ...).
    #[arg(long, value_name = "OP", value_delimiter = ',')]
    pub op: Vec<String>,
    /// First replay, from the audit log, the events since this long ago (`10m`, `2h`) or this
    /// time (`2026-11-22T10:00:00Z`).
    #[arg(long, value_name = "WHEN", value_parser = parse_since)]
    pub since: Option<SystemTime>,
}

pub fn parse_since(text: &str) -> Result<SystemTime, String> {
    if let Ok(ago) = humantime::parse_duration(text) {
        return SystemTime::now()
            .checked_sub(ago)
            .ok_or_else(|| format!("`{text}` reaches before 1970"));
    }
    humantime::parse_rfc3339_weak(text).map_err(|_| {
        format!("`{text}` is neither a duration (10m, 2h, 1d) nor a time (2026-11-22T10:00:00Z)")
    })
}

impl Only {
    pub fn admits(&self, event: &EventView) -> bool {
        (self.agent.is_empty() || self.agent.iter().any(|agent| *agent == event.agent))
            // `*`: counts over all of an agent's operations (throttled, lost) concern every op.
            && (self.op.is_empty() || event.op == "*" || self.op.iter().any(|op| *op == event.op))
    }
}

/// How often a follower tries to reach a daemon that went away.
const RECONNECT_EVERY: Duration = Duration::from_millis(500);

/// What a follower does with an event: print it, or print it and stop there.
#[derive(PartialEq, Eq)]
pub enum Continue {
    Print,
    PrintAndStop,
}

/// Prints the events `wanted` picks, as they come. When claw-agent restarts, reconnects and
/// resumes after the last event seen (the daemon replays the gap from its audit log, or says
/// how many events it cannot replay).
pub fn follow(
    socket: &Path,
    what: &str,
    json: bool,
    since: Option<SystemTime>,
    wanted: impl Fn(&EventView) -> Option<Continue>,
) -> anyhow::Result<()> {
    let mut request = Request::Follow {
        after: None,
        since: since.map(|t| humantime::format_rfc3339_nanos(t).to_string()),
    };
    let started = since.unwrap_or_else(SystemTime::now);
    let mut connection = Connection::open(socket, &request)?;
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let mut last_seq = None;
    loop {
        while let Some(line) = connection.next_line().unwrap_or(None) {
            let reply: ReplyView = serde_json::from_str(&line).with_context(|| {
                format!("claw-agent sent an unreadable reply: {}", line.trim_end())
            })?;
            match reply.reply.as_ref() {
                "subscribed" => {
                    eprintln!("clawctl: following {what} from {}", socket.display())
                }
                "event" => {
                    let raw = reply.event.context("an event reply without its event")?;
                    let view: EventView = serde_json::from_str(raw.get())?;
                    last_seq = Some(view.seq);
                    if let Some(next) = wanted(&view) {
                        if json {
                            stdout.write_all(raw.get().as_bytes())?;
                            writeln!(stdout)?;
                        } else {
                            // An event this clawctl cannot read (a newer daemon's kind) is
                            // still shown, as its JSON, rather than ending the follow.
                            match serde_json::from_str::<Event>(raw.get()) {
                                Ok(event) => writeln!(stdout, "{}", human_line(&event))?,
                                Err(_) => writeln!(stdout, "{}", raw.get())?,
                            }
                        }
                        if next == Continue::PrintAndStop {
                            stdout.flush()?;
                            return Ok(());
                        }
                    }
                }
                "lost" => {
                    eprintln!(
                        "clawctl: LOST {} events: this client fell behind claw-agent, or they are not in its audit log",
                        reply.count.unwrap_or(0)
                    )
                }
                "error" => {
                    let reply: Reply = serde_json::from_str(&line)?;
                    return Err(client::unexpected(Some(reply)).into());
                }
                other => bail!("unexpected reply while following: {other}"),
            }
            if !connection.has_buffered() {
                stdout.flush()?;
            }
        }
        eprintln!("clawctl: claw-agent closed the connection; reconnecting");
        // After the last event seen; or, having seen none, since this follower began (a new
        // daemon publishes what waited in the kernel before its socket opens).
        request = Request::Follow {
            after: last_seq,
            since: match last_seq {
                Some(_) => None,
                None => Some(humantime::format_rfc3339_nanos(started).to_string()),
            },
        };
        connection = loop {
            match Connection::open(socket, &request) {
                Ok(connection) => break connection,
                Err(_) => std::thread::sleep(RECONNECT_EVERY),
            }
        };
    }
}

fn human_line(e: &Event) -> String {
    let who = match &e.call {
        Some(call) => format!("{} call={call}", e.agent),
        None => e.agent.clone(),
    };
    let count = |key: &str| {
        e.details
            .as_ref()
            .and_then(|d| d.get(key)?.as_u64())
            .unwrap_or(0)
    };
    match e.kind.as_str() {
        "throttled" => {
            let reason = e
                .details
                .as_ref()
                .and_then(|d| d.get("reason")?.as_str())
                .unwrap_or("");
            let what = match reason {
                "agent-budget" => "of its events over its budget".to_owned(),
                _ => format!(
                    "identical {} {}",
                    e.op,
                    e.object().unwrap_or("(objects not recorded)")
                ),
            };
            return format!(
                "{}  {}  THROTTLED  +{} more {what} ({}) in the last second",
                e.time,
                e.agent,
                count("suppressed"),
                e.decision
            );
        }
        "lost" => {
            return format!(
                "{}  {}  LOST {} events (ring buffer full)",
                e.time,
                e.agent,
                count("lost")
            )
        }
        _ => {}
    }
    if let Some(details) = &e.details {
        return format!(
            "{}  {}  pid={} comm={}  {} {}  {details}",
            e.time,
            who,
            e.pid,
            e.comm,
            e.kind.as_str().to_uppercase(),
            e.op
        );
    }
    let object = e
        .path
        .as_deref()
        .or(e.destination.as_deref())
        .unwrap_or("-");
    let access = e
        .access
        .as_deref()
        .map(|a| format!(" ({a})"))
        .unwrap_or_default();
    let verdict = if e.kind == Kind::Audit {
        "AUDIT (allowed)".to_owned()
    } else if e.kind == Kind::Granted {
        "GRANTED (allowed by clawctl allow)".to_owned()
    } else {
        e.decision.to_string()
    };
    format!(
        "{}  {}  pid={} comm={}  {} {}{access}  {verdict}  (event {})",
        e.time, who, e.pid, e.comm, e.op, object, e.seq
    )
}
