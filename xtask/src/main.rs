//! claw's developer tasks. `cargo xtask --help` lists them.

mod kernels;
mod run;
mod setup;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "claw's developer tasks")]
struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing claw needs (idempotent; seconds when all is there).
    Setup,
    /// Boot each kernel of the matrix in qemu and run the in-kernel tests there.
    VmTest {
        /// Only kernels whose version contains this (e.g. 6.12).
        #[arg(long)]
        kernel: Option<String>,
    },
    /// Run every test: unit and host tests, then the VM tests on every kernel.
    Test,
    /// Show claw at work: the daemon, a denied open, and `clawctl deny-log --follow` (in a VM).
    Demo,
}

fn main() -> ExitCode {
    let result = match Args::parse().task {
        Task::Setup => setup::run(),
        Task::VmTest { kernel } => setup::ensure().and_then(|()| vm::test(kernel.as_deref())),
        Task::Test => setup::ensure().and_then(|()| test()),
        Task::Demo => setup::ensure().and_then(|()| vm::demo()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Unit and host tests first (fast, and they fail early), then the VM matrix.
fn test() -> anyhow::Result<()> {
    run::cargo(&["test", "--workspace"])?;
    vm::test(None)
}
