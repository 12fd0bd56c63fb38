//! clawctl: asks a running claw-agent over its control socket. It never loads BPF itself.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use claw_agent::{
    event::Event,
    protocol::{Reply, Request, Status, DEFAULT_SOCKET},
};

/// Operate claw: see what is enforced, follow what is denied.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// claw-agent's control socket.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Exit 0 if the policy is enforced; otherwise say why and exit 1.
    Status {
        /// Print the daemon's status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print denials as the kernel makes them.
    DenyLog {
        /// Keep printing new denials until interrupted (the only mode until the audit log exists).
        #[arg(long, required = true)]
        follow: bool,
        /// One JSON object per line: time, agent, cgroup, pid, comm, op, path, decision.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::Status { json } => status(&args.socket, json),
        Command::DenyLog { follow: _, json } => deny_log(&args.socket, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("clawctl: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn connect(socket: &Path, request: &Request) -> anyhow::Result<BufReader<UnixStream>> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach claw-agent at {} — is it running? (start it with `claw-agent --policy FILE`, or pass --socket)",
            socket.display()
        )
    })?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line).context("sending the request")?;
    Ok(BufReader::new(stream))
}

fn next_reply(reader: &mut BufReader<UnixStream>) -> anyhow::Result<Option<Reply>> {
    let mut line = String::new();
    if reader
        .read_line(&mut line)
        .context("reading from claw-agent")?
        == 0
    {
        return Ok(None);
    }
    let reply = serde_json::from_str(&line)
        .with_context(|| format!("claw-agent sent an unreadable reply: {}", line.trim_end()))?;
    Ok(Some(reply))
}

fn status(socket: &Path, json: bool) -> anyhow::Result<()> {
    let mut reader = connect(socket, &Request::Status {})?;
    let status = match next_reply(&mut reader)? {
        Some(Reply::Status(status)) => status,
        Some(Reply::Error { message }) => bail!("claw-agent: {message}"),
        other => bail!("unexpected reply from claw-agent: {other:?}"),
    };
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
        bail!("policy not enforced: not attached: {}", detached.join(", "));
    }
    Ok(())
}

fn print_status(status: &Status) {
    let state = if status.enforcing {
        "enforcing"
    } else {
        "NOT ENFORCING"
    };
    println!("{state}  policy {}", status.policy);
    println!("programs:");
    for p in &status.programs {
        let attached = if p.attached { "attached" } else { "DETACHED" };
        println!("  {:<12} {:<16} {attached}", p.program, p.hook);
    }
    println!("agents:");
    for a in &status.agents {
        println!(
            "  {:<16} cgroup {} (id {})  {} file rules",
            a.name, a.cgroup, a.cgroup_id, a.file_rules
        );
    }
    let c = &status.counters;
    println!(
        "decisions: {} allowed, {} denied; lost: {} events (kernel ring buffer full), {} undecodable; {} unresolvable paths denied",
        c.allowed, c.denied, c.events_lost_kernel, c.events_undecodable, c.path_errors
    );
}

fn deny_log(socket: &Path, json: bool) -> anyhow::Result<()> {
    let mut reader = connect(socket, &Request::Follow {})?;
    let mut stdout = std::io::stdout().lock();
    while let Some(reply) = next_reply(&mut reader)? {
        match reply {
            Reply::Subscribed => eprintln!("clawctl: following denials from {}", socket.display()),
            Reply::Event { event } if event.kind == "deny" => {
                if json {
                    serde_json::to_writer(&mut stdout, &event)?;
                    writeln!(stdout)?;
                } else {
                    writeln!(stdout, "{}", human_line(&event))?;
                }
                stdout.flush()?;
            }
            Reply::Event { .. } => {}
            Reply::Lost { count } => {
                eprintln!("clawctl: LOST {count} events: this client fell behind claw-agent")
            }
            Reply::Error { message } => bail!("claw-agent: {message}"),
            Reply::Status(_) => bail!("unexpected status reply while following"),
        }
    }
    bail!("claw-agent closed the connection (did it stop?)")
}

fn human_line(e: &Event) -> String {
    format!(
        "{}  {}  pid={} comm={}  {} {}  {}",
        e.time, e.agent, e.pid, e.comm, e.op, e.path, e.decision
    )
}
