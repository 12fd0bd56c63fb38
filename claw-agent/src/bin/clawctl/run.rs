//! `clawctl run`: a command inside an agent's cgroup from its first instruction, or as a tool
//! call in a cgroup of its own.

use std::path::Path;

use anyhow::bail;
use claw_agent::{
    control::{
        client::{self, Connection},
        protocol::{Reply, Request},
    },
    policy::{call::Narrowing, compile::Sockets},
    supervise::spawn,
};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    agent: String,
    /// Run it as this tool call, in a cgroup of its own under the agent's (every event of
    /// the call names it; the call's processes are killed when the command ends).
    #[arg(long, value_name = "ID")]
    call_id: Option<String>,
    /// For this call only: reads limited to these paths (within what the agent may read).
    #[arg(long, value_name = "PATH", requires = "call_id")]
    allow_read: Vec<String>,
    /// For this call only: writes limited to these paths (within the agent's).
    #[arg(long, value_name = "PATH", requires = "call_id")]
    allow_write: Vec<String>,
    /// For this call only: connects limited to these destinations (within the agent's).
    #[arg(long, value_name = "HOST:PORT", requires = "call_id")]
    allow_connect: Vec<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// The command's exit status.
pub fn run(sockets: &Sockets, args: Args) -> anyhow::Result<i32> {
    let Args {
        agent,
        call_id,
        allow_read,
        allow_write,
        allow_connect,
        command,
    } = args;
    let socket = sockets.control.as_path();
    if let Some(call) = call_id {
        let narrowing = Narrowing {
            read: allow_read,
            write: allow_write,
            connect: allow_connect,
        };
        return run_call(socket, &agent, call, narrowing, command);
    }
    let status = client::status(socket)?;
    let Some(found) = status.agents.iter().find(|a| a.name == agent) else {
        let names: Vec<&str> = status.agents.iter().map(|a| a.name.as_str()).collect();
        bail!(
            "no agent `{agent}` in the enforced policy (agents: {})",
            names.join(", ")
        );
    };
    let cgroup = Path::new(&status.cgroup_root).join(found.cgroup.trim_start_matches('/'));
    let landlock = client::landlock(socket, &agent)?;
    // The tool call gets this environment: an orchestrator passes what a tool needs explicitly.
    let env: Vec<(String, String)> = std::env::vars().collect();
    let spec = spawn::Spec {
        command,
        env,
        workdir: std::env::current_dir().ok(),
        user: None,
        stdio: [None, None, None],
        landlock,
    };
    let child = spawn::spawn(&cgroup, &spec)?;
    Ok(spawn::wait(&child)?)
}

/// A tool call: the daemon makes its cgroup; the command runs there; the call ends when the
/// command does (or this process dies: the daemon sees the connection close).
fn run_call(
    socket: &Path,
    agent: &str,
    call: String,
    narrowing: Narrowing,
    command: Vec<String>,
) -> anyhow::Result<i32> {
    let request = Request::Call {
        agent: agent.to_owned(),
        call,
        narrowing,
        command: command.clone(),
        landlock: true,
    };
    let mut connection = Connection::open(socket, &request)?;
    let (cgroup, landlock) = match connection.next_reply()? {
        Some(Reply::CallStarted {
            cgroup, landlock, ..
        }) => (cgroup, landlock),
        other => return Err(client::unexpected(other).into()),
    };
    let spec = spawn::Spec {
        command,
        env: std::env::vars().collect(),
        workdir: std::env::current_dir().ok(),
        user: None,
        stdio: [None, None, None],
        landlock,
    };
    // Whatever happens to the command, the call is ended: by the message below, or by the
    // connection closing when this process exits.
    let status = spawn::spawn(Path::new(&cgroup), &spec)
        .map_err(anyhow::Error::from)
        .and_then(|child| Ok(spawn::wait(&child)?));
    connection.send(&Request::CallEnd {
        status: *status.as_ref().unwrap_or(&127),
    })?;
    match connection.next_reply()? {
        Some(Reply::CallEnded { .. }) => status,
        other => Err(anyhow::Error::from(client::unexpected(other))
            .context("claw-agent did not confirm the end of the call")),
    }
}
