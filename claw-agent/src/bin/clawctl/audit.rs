//! `clawctl audit verify`: the audit log's hash chain, checked.

use std::path::{Path, PathBuf};

use anyhow::bail;
use claw_agent::events::audit;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Check the hash chain; report the first edited, removed or missing record and exit 1.
    Verify {
        /// Log files, oldest first [default: claw-agent's log and its rotations].
        files: Vec<PathBuf>,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Command::Verify { files } = args.command;
    verify_audit(files)
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
