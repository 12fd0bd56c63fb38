//! clawctl: operates claw through claw-agent's control socket. It never loads BPF itself.
//! One file per subcommand; this one parses the command line and maps failures to exit codes.

mod advise;
mod agents;
mod allow;
mod audit;
mod deny_log;
mod events;
mod exit;
mod explain;
mod follow;
mod policy;
mod run;
mod status;
mod why;

use std::{path::PathBuf, process::ExitCode};

use clap::{CommandFactory as _, Parser, Subcommand};
use claw_agent::policy::compile::Sockets;

/// Operate claw: see what is enforced and how, change the policy, follow what is denied.
#[derive(Parser)]
#[command(name = "clawctl", version, after_help = exit::CODES)]
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
    /// Exit 0 if the policy is enforced; otherwise say why and exit 3.
    Status(status::Args),
    /// Print denials (and audit-mode would-be denials) as the kernel makes them.
    DenyLog(deny_log::Args),
    /// Every event, of every kind: deny, audit, throttled, lost, oom, pids_max, lifecycle,
    /// policy.
    Events(events::Args),
    /// Run a command inside an agent's cgroup from its first instruction (how an orchestrator
    /// runs a tool call); stdin, stdout and stderr are this terminal's; exits with the command's
    /// status (128 + signal if a signal ended it).
    Run(run::Args),
    /// Let the object of one denial through, for exactly the agent (or tool call) it was denied
    /// to: once, for a while, or both. Nothing else is widened.
    Allow(allow::Args),
    /// Why a denial happened, in words an orchestrator can hand to its model: the rule it ran
    /// into, and how an operator could allow it.
    Why(why::Args),
    /// Draft the narrowest rules that would have allowed recent denials (exact paths and
    /// destinations, nothing wider), as a diff of the enforced policy file.
    Advise(advise::Args),
    /// The audit log.
    Audit(audit::Args),
    /// Each agent: its cgroup, limits and what it uses now, its processes.
    Agents(agents::Args),
    /// Check, apply or compare policy files.
    Policy(policy::Args),
    /// The security model of the running system: every rule, the kernel mechanism that enforces
    /// it, and live proof that it is in place.
    Explain(explain::Args),
    /// Print clawctl's shell completions (`clawctl completions bash > ~/.local/share/bash-completion/completions/clawctl`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write clawctl's man pages (one per subcommand) into DIR; for packaging.
    #[command(hide = true)]
    Man { dir: PathBuf },
}

fn main() -> ExitCode {
    // Like other command-line tools, end quietly when the reader of stdout goes away
    // (`clawctl deny-log --follow | head`) instead of failing on a broken pipe.
    // SAFETY: setting a signal disposition before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let args = Args::parse();
    let sockets = Sockets::beside(args.socket, args.agent_socket);
    let result = match args.command {
        Command::Status(args) => status::run(&sockets, args),
        Command::DenyLog(args) => deny_log::run(&sockets, args),
        Command::Events(args) => events::run(&sockets, args),
        Command::Run(args) => match run::run(&sockets, args) {
            Ok(code) => return ExitCode::from(u8::try_from(code).unwrap_or(255)),
            Err(err) => Err(err),
        },
        Command::Allow(args) => allow::run(&sockets, args),
        Command::Why(args) => why::run(&sockets, args),
        Command::Advise(args) => advise::run(&sockets, args),
        Command::Audit(args) => audit::run(args),
        Command::Agents(args) => agents::run(&sockets, args),
        Command::Policy(args) => policy::run(&sockets, args),
        Command::Explain(args) => explain::run(&sockets, args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Args::command(),
                "clawctl",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man { dir } => clap_mangen::generate_to(Args::command(), dir).map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("clawctl: {err:#}");
            exit::code_of(&err)
        }
    }
}
