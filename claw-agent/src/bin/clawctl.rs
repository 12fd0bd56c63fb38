//! clawctl: operates claw through claw-agent's control socket. It never loads BPF itself.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use claw_agent::{
    control::client::{self, Connection, EventView, ReplyView},
    control::grant::Lifetime,
    control::protocol::{ProgramStatus, Reply, Request, Status},
    events::audit,
    events::event::Event,
    kernel::catalogue,
    policy::call::Narrowing,
    policy::compile::Sockets,
    policy::describe::{self, RuleLine},
    policy::prepare::prepare,
    supervise::spawn,
};
use serde_json::json;

/// Operate claw: see what is enforced and how, change the policy, follow what is denied.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// claw-agent's control socket.
    #[arg(long, global = true, value_name = "PATH", default_value = claw_agent::defaults::CONTROL_SOCKET)]
    socket: PathBuf,
    /// claw-agent's agent socket: where `why` asks from inside an agent (about its own events).
    /// [default: agent.sock beside --socket]
    #[arg(long, global = true, value_name = "PATH")]
    agent_socket: Option<PathBuf>,
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
    /// Print denials (and audit-mode would-be denials) as the kernel makes them.
    DenyLog {
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
    },
    /// Every event, of every kind: deny, audit, throttled, lost, oom, pids_max, lifecycle,
    /// policy.
    Events {
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
    },
    /// Run a command inside an agent's cgroup from its first instruction (how an orchestrator
    /// runs a tool call); stdin, stdout and stderr are this terminal's; exits with the command's
    /// status (128 + signal if a signal ended it).
    Run {
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
    },
    /// Let the object of one denial through, for exactly the agent (or tool call) it was denied
    /// to: once, for a while, or both. Nothing else is widened.
    Allow {
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
    },
    /// Why a denial happened, in words an orchestrator can hand to its model: the rule it ran
    /// into, and how an operator could allow it.
    Why {
        /// The denial's number (`event N` in deny-log, `seq` in its JSON).
        event: u64,
        #[arg(long)]
        json: bool,
    },
    /// Draft the narrowest rules that would have allowed recent denials (exact paths and
    /// destinations, nothing wider), as a diff of the enforced policy file.
    Advise {
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
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Each agent: its cgroup, limits and what it uses now, its processes.
    Agents {
        #[arg(long)]
        json: bool,
    },
    /// Check, apply or compare policy files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The security model of the running system: every rule, the kernel mechanism that enforces
    /// it, and live proof that it is in place.
    Explain {
        /// Only this agent.
        agent: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// Narrowing a followed stream.
#[derive(clap::Args)]
struct Only {
    /// Only these agents' events.
    #[arg(long, value_name = "AGENT", value_delimiter = ',')]
    agent: Vec<String>,
    /// Only these operations (open, exec, connect, oom-kill, ...).
    #[arg(long, value_name = "OP", value_delimiter = ',')]
    op: Vec<String>,
    /// First replay, from the audit log, the events since this long ago (`10m`, `2h`) or this
    /// time (`2026-11-22T10:00:00Z`).
    #[arg(long, value_name = "WHEN", value_parser = parse_since)]
    since: Option<SystemTime>,
}

fn parse_since(text: &str) -> Result<SystemTime, String> {
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
    fn admits(&self, event: &EventView) -> bool {
        (self.agent.is_empty() || self.agent.iter().any(|agent| *agent == event.agent))
            // `*`: counts over all of an agent's operations (throttled, lost) concern every op.
            && (self.op.is_empty() || event.op == "*" || self.op.iter().any(|op| *op == event.op))
    }
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain; report the first edited, removed or missing record and exit 1.
    Verify {
        /// Log files, oldest first [default: claw-agent's log and its rotations].
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy and print what it would enforce; exit 1 with its errors.
    Check { file: PathBuf },
    /// Make a policy the enforced one, atomically; a rejected policy changes nothing.
    Apply { file: PathBuf },
    /// Rule lines a policy file would add to and remove from the enforced policy.
    Diff { file: PathBuf },
}

fn main() -> ExitCode {
    // Like other command-line tools, end quietly when the reader of stdout goes away
    // (`clawctl deny-log --follow | head`) instead of failing on a broken pipe.
    // SAFETY: setting a signal disposition before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let args = Args::parse();
    let socket = args.socket.as_path();
    let sockets = Sockets::beside(args.socket.clone(), args.agent_socket.clone());
    let result = match args.command {
        Command::Status { json } => status(socket, json),
        Command::DenyLog {
            follow: _,
            json,
            include,
            only,
        } => follow(socket, "denials", json, only.since, |e| {
            ((["deny", "audit", "throttled", "lost"].contains(&e.kind.as_ref())
                || include.iter().any(|kind| *kind == e.kind))
                && only.admits(e))
            .then_some(Continue::Print)
        }),
        Command::Events {
            follow,
            call,
            json,
            only,
        } => match call {
            Some(call) => call_story(socket, &call, follow, json, &only),
            None => self::follow(socket, "events", json, only.since, |e| {
                only.admits(e).then_some(Continue::Print)
            }),
        },
        Command::Policy { command } => match command {
            PolicyCommand::Check { file } => check(&file, &sockets),
            PolicyCommand::Apply { file } => apply(socket, &file),
            PolicyCommand::Diff { file } => diff(&sockets, &file),
        },
        Command::Explain { agent, json } => explain(socket, agent.as_deref(), json),
        Command::Agents { json } => agents(socket, json),
        Command::Allow {
            event,
            persist: true,
            apply,
            ..
        } => draft(socket, &Request::Persist { event }, apply),
        Command::Allow {
            event,
            once,
            duration,
            call_only,
            ..
        } => allow(socket, event, once, duration, call_only),
        Command::Why { event, json } => why(&sockets, event, json),
        Command::Advise {
            agent,
            call,
            since,
            apply,
        } => {
            let since = since.unwrap_or_else(|| SystemTime::now() - Duration::from_secs(3600));
            let request = Request::Advise {
                since: humantime::format_rfc3339_nanos(since).to_string(),
                agent,
                call,
            };
            draft(socket, &request, apply)
        }
        Command::Audit {
            command: AuditCommand::Verify { files },
        } => verify_audit(files),
        Command::Run {
            agent,
            call_id,
            allow_read,
            allow_write,
            allow_connect,
            command,
        } => match run(
            socket,
            &agent,
            call_id.map(|id| {
                (
                    id,
                    Narrowing {
                        read: allow_read,
                        write: allow_write,
                        connect: allow_connect,
                    },
                )
            }),
            command,
        ) {
            Ok(code) => return ExitCode::from(u8::try_from(code).unwrap_or(255)),
            Err(err) => Err(err),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("clawctl: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn status(socket: &Path, json: bool) -> anyhow::Result<()> {
    let status = client::status(socket)?;
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

fn run(
    socket: &Path,
    agent: &str,
    call: Option<(String, Narrowing)>,
    command: Vec<String>,
) -> anyhow::Result<i32> {
    if let Some((call, narrowing)) = call {
        return run_call(socket, agent, call, narrowing, command);
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
    // The tool call gets this environment: an orchestrator passes what a tool needs explicitly.
    let env: Vec<(String, String)> = std::env::vars().collect();
    let spec = spawn::Spec {
        command,
        env,
        workdir: std::env::current_dir().ok(),
        user: None,
        stdio: [None, None, None],
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
    };
    let mut connection = Connection::open(socket, &request)?;
    let cgroup = match connection.next_reply()? {
        Some(Reply::CallStarted { cgroup, .. }) => cgroup,
        Some(Reply::Error { message }) => bail!("claw-agent: {message}"),
        Some(other) => bail!("unexpected reply from claw-agent: {other:?}"),
        None => bail!("claw-agent closed the connection without starting the call"),
    };
    let spec = spawn::Spec {
        command,
        env: std::env::vars().collect(),
        workdir: std::env::current_dir().ok(),
        user: None,
        stdio: [None, None, None],
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
        Some(Reply::Error { message }) => bail!("claw-agent: {message}"),
        other => bail!("claw-agent did not confirm the end of the call: {other:?}"),
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
    self::follow(socket, "the call's events", json, since, |e| {
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

fn allow(
    socket: &Path,
    event: u64,
    once: bool,
    duration: Option<Duration>,
    call_only: bool,
) -> anyhow::Result<()> {
    let lifetime = Lifetime::new(once, duration).map_err(anyhow::Error::msg)?;
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
        Some(Reply::Error { message }) => bail!("claw-agent: {message}"),
        other => bail!("unexpected reply from claw-agent: {other:?}"),
    }
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
        Some(Reply::Error { message }) => bail!("claw-agent: {message}"),
        other => bail!("unexpected reply from claw-agent: {other:?}"),
    };
    if event.kind != "deny" && event.kind != "audit" {
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
            if event.kind == "audit" {
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

fn is_permission_denied(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
}

/// Prints the rules the daemon drafted as a diff of the policy file; with `apply`, writes it
/// (unless the file changed meanwhile) and applies it.
fn draft(socket: &Path, request: &Request, apply: bool) -> anyhow::Result<()> {
    let (policy, rules, notes, current, proposed) =
        match Connection::open(socket, request)?.next_reply()? {
            Some(Reply::Draft {
                policy,
                rules,
                notes,
                current,
                proposed,
            }) => (policy, rules, notes, current, proposed),
            Some(Reply::Error { message }) => bail!("claw-agent: {message}"),
            other => bail!("unexpected reply from claw-agent: {other:?}"),
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
        return Err(err.context(format!("not applied; {policy} restored")));
    }
    println!("applied {policy} with {} new rule(s)", rules.len());
    Ok(())
}

fn verify_audit(files: Vec<PathBuf>) -> anyhow::Result<()> {
    let files = if files.is_empty() {
        audit::files_of(Path::new(claw_agent::defaults::AUDIT_LOG))
    } else {
        files
    };
    if files.is_empty() {
        bail!(
            "no audit log at {} — pass the files to verify",
            claw_agent::defaults::AUDIT_LOG
        );
    }
    match audit::verify(&files)? {
        audit::Verdict::Intact { records } => {
            println!("intact: {records} records in {} file(s)", files.len());
            Ok(())
        }
        audit::Verdict::Broken { file, line, what } => {
            bail!("BROKEN at {}:{line}: {what}", file.display())
        }
    }
}

fn agents(socket: &Path, json: bool) -> anyhow::Result<()> {
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

fn coverage_note(status: &Status) -> &'static str {
    if status.coverage == "degraded" {
        "DEGRADED (no BPF LSM): network rules enforced, file and exec rules NOT enforced"
    } else {
        "full"
    }
}

fn print_status(status: &Status) {
    let state = if status.enforcing {
        "enforcing"
    } else {
        "NOT ENFORCING"
    };
    println!(
        "{state}  policy {} (generation {})  coverage {}",
        status.policy,
        status.generation,
        coverage_note(status)
    );
    println!("programs:");
    for p in &status.programs {
        let attached = if p.attached { "attached" } else { "DETACHED" };
        let id = p.id.map_or("-".to_owned(), |id| id.to_string());
        println!("  {:<20} {:<28} id {:<6} {attached}", p.program, p.hook, id);
    }
    println!("agents:");
    for a in &status.agents {
        println!(
            "  {:<16} cgroup {} (id {})  {}  {} file rules, {} network rules",
            a.name, a.cgroup, a.cgroup_id, a.mode, a.file_rules, a.net_rules
        );
    }
    let c = &status.counters;
    println!(
        "decisions: {} allowed, {} denied, {} audited; lost: {} events (kernel ring buffer full), {} undecodable; {} unresolvable paths",
        c.allowed, c.denied, c.audited, c.events_lost_kernel, c.events_undecodable, c.path_errors
    );
}

/// How often a follower tries to reach a daemon that went away.
const RECONNECT_EVERY: Duration = Duration::from_millis(500);

/// What a follower does with an event: print it, or print it and stop there.
#[derive(PartialEq, Eq)]
enum Continue {
    Print,
    PrintAndStop,
}

/// Prints the events `wanted` picks, as they come. When claw-agent restarts, reconnects and
/// resumes after the last event seen (the daemon replays the gap from its audit log, or says
/// how many events it cannot replay).
fn follow(
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
                            let event: Event = serde_json::from_str(raw.get())?;
                            writeln!(stdout, "{}", human_line(&event))?;
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
                "error" => bail!("claw-agent: {}", reply.message.unwrap_or_default()),
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
            e.kind.to_uppercase(),
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
    let verdict = if e.kind == "audit" {
        "AUDIT (allowed)".to_owned()
    } else if e.kind == "granted" {
        "GRANTED (allowed by clawctl allow)".to_owned()
    } else {
        e.decision.clone()
    };
    format!(
        "{}  {}  pid={} comm={}  {} {}{access}  {verdict}  (event {})",
        e.time, who, e.pid, e.comm, e.op, object, e.seq
    )
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

/// `lsm/file_open#5 lsm/mmap_file#7`, with runs of path_* hooks folded: `lsm/path_*#9-#18`.
fn hook_list(programs: &[&ProgramStatus]) -> String {
    let id = |p: &ProgramStatus| p.id.map_or("-".to_owned(), |id| id.to_string());
    let (paths, others): (Vec<&ProgramStatus>, Vec<&ProgramStatus>) = programs
        .iter()
        .partition(|p| p.hook.starts_with("lsm/path_"));
    let mut parts: Vec<String> = others
        .iter()
        .map(|p| format!("{}#{}", p.hook, id(p)))
        .collect();
    match paths.as_slice() {
        [] => {}
        [one] => parts.push(format!("{}#{}", one.hook, id(one))),
        [first, .., last] => parts.push(format!(
            "lsm/path_* ({} hooks)#{}-#{}",
            paths.len(),
            id(first),
            id(last)
        )),
    }
    parts.join(" ")
}

fn explain(socket: &Path, only: Option<&str>, json: bool) -> anyhow::Result<()> {
    let status = client::status(socket)?;
    let (_, lines) = client::rules(socket)?;
    let agents: Vec<_> = status
        .agents
        .iter()
        .filter(|a| only.is_none_or(|o| o == a.name))
        .collect();
    if agents.is_empty() {
        bail!(
            "no agent named `{}` in the enforced policy — `clawctl status` lists them",
            only.unwrap_or_default()
        );
    }
    let program = |hook: &str| status.programs.iter().find(|p| p.hook == hook);
    let rule_view = |line: &RuleLine| {
        let (programs, map) = catalogue::mechanism(&line.kind);
        let programs: Vec<&ProgramStatus> =
            programs.iter().filter_map(|p| program(&p.hook())).collect();
        (map, programs)
    };
    if json {
        let agents: Vec<_> = agents
            .iter()
            .map(|a| {
                let rules: Vec<_> = lines
                    .iter()
                    .filter(|l| l.agent == a.name && l.kind != "cgroup" && l.kind != "mode")
                    .map(|l| {
                        let (map, programs) = rule_view(l);
                        json!({ "rule": format!("{} {}", l.kind, l.value), "map": map, "enforced_by": programs })
                    })
                    .collect();
                json!({
                    "agent": a.name, "cgroup": a.cgroup, "cgroup_id": a.cgroup_id, "mode": a.mode,
                    "rules": rules, "denied_by_default": catalogue::denied_by_default(),
                })
            })
            .collect();
        let out = json!({
            "policy": status.policy, "generation": status.generation, "coverage": status.coverage,
            "enforcing": status.enforcing, "agents": agents, "counters": status.counters,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "claw security model — policy {} (generation {}), {}, coverage {}",
        status.policy,
        status.generation,
        if status.enforcing {
            "ENFORCING"
        } else {
            "NOT ENFORCING"
        },
        coverage_note(&status)
    );
    println!("Each process in an agent's cgroup is held by the kernel to the rules below; nothing else is allowed.\n");
    for a in agents {
        println!(
            "agent {}  cgroup {} (cgroup id {})  mode {}",
            a.name, a.cgroup, a.cgroup_id, a.mode
        );
        println!(
            "  {:<36} {:<58} LIVE PROOF (runs of the first hook)",
            "RULE", "ENFORCED BY: kernel hook#program id [map]"
        );
        for line in lines
            .iter()
            .filter(|l| l.agent == a.name && l.kind != "cgroup" && l.kind != "mode")
        {
            let (map, programs) = rule_view(line);
            let live = match programs.first() {
                Some(p) if programs.iter().all(|p| p.attached) => {
                    format!("attached, {} runs", p.run_count)
                }
                Some(_) => "NOT ATTACHED".to_owned(),
                None => "-".to_owned(),
            };
            println!(
                "  {:<36} {:<58} {live}",
                format!("{} {}", line.kind, line.value),
                format!("{} [{map}]", hook_list(&programs)),
            );
        }
        println!("  denied by default:");
        for denied in catalogue::denied_by_default() {
            println!("    - {denied}");
        }
        println!();
    }
    let c = &status.counters;
    println!(
        "decisions so far: {} allowed, {} denied, {} audited; events lost: {}; verify: `clawctl deny-log --follow`, `bpftool prog show id N`",
        c.allowed, c.denied, c.audited, c.events_lost_kernel
    );
    Ok(())
}
