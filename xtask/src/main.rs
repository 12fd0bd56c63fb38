//! claw's developer tasks. `cargo xtask --help` lists them.

mod apt;
mod collector;
mod imports;
mod kernels;
mod links;
mod package;
mod record;
mod run;
mod setup;
mod vm;
mod vm_systemd;

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
    /// The install test: a Debian bookworm root with systemd booted on each kernel (and once
    /// with an `lsm=` list without bpf), claw's package installed, started, reloaded, killed
    /// and purged there.
    VmSystemd {
        /// Only kernels whose version contains this (e.g. 6.12).
        #[arg(long)]
        kernel: Option<String>,
    },
    /// Run every test: unit and host tests, then the VM tests and the install test on every
    /// kernel.
    Test,
    /// Show claw at work: the daemon, a denied open, and `clawctl deny-log --follow` (in a VM).
    Demo,
    /// Benchmarks, each printing a table of ratios measured side by side in one run.
    Bench {
        /// `kernel`: time per program run and open() latency, claw beside a yardstick and
        /// Landlock, in the VM on every kernel of the matrix. `events`: denials per second end
        /// to end beside a raw ring-buffer consumer, latency, loss and RSS, on this host.
        #[arg(value_enum, default_value = "kernel")]
        suite: Suite,
        /// Put the table into docs/benchmarks.md, with the date (the last 3 runs are kept).
        #[arg(long)]
        record: bool,
    },
    /// Build the Debian package target/debian/claw_VERSION_amd64.deb (static binaries, systemd
    /// unit, /etc/claw, man pages, completions); `dpkg -i` or `apt install ./` it on a node.
    Package,
    /// rustfmt check; no import circles between the top-level modules of claw-agent, claw-ebpf
    /// and xtask; relative links and #anchors in README.md, policies/README.md and docs/**/*.md
    /// resolve; clippy with -D warnings: userspace crates, and claw-ebpf for its target.
    Lint,
    /// Run each cargo-fuzz target (policy, event_decode, control) for a bounded time from the
    /// corpus kept in fuzz/corpus; fails on any crash (kept in fuzz/artifacts).
    Fuzz {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

fn main() -> ExitCode {
    let result = match Args::parse().task {
        Task::Setup => setup::run(),
        Task::VmTest { kernel } => setup::ensure().and_then(|()| vm::test(kernel.as_deref())),
        Task::VmSystemd { kernel } => {
            setup::ensure().and_then(|()| vm_systemd::test(kernel.as_deref()))
        }
        Task::Test => setup::ensure().and_then(|()| test()),
        Task::Demo => setup::ensure().and_then(|()| vm::demo()),
        Task::Lint => setup::ensure().and_then(|()| lint()),
        Task::Package => setup::ensure().and_then(|()| package::build().map(drop)),
        Task::Fuzz { seconds } => setup::ensure().and_then(|()| fuzz(seconds)),
        Task::Bench { suite, record } => setup::ensure().and_then(|()| {
            let (name, table) = match suite {
                Suite::Kernel => ("kernel", vm::bench()?),
                Suite::Events => ("events", bench_events()?),
            };
            if record {
                record::record(name, &table)?;
            }
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Suite {
    Kernel,
    Events,
}

/// The events bench runs on this host (its cgroup network programs load here), on release
/// builds of claw-agent, clawctl and the bench driver.
/// Returns the table it printed.
fn bench_events() -> anyhow::Result<Vec<String>> {
    run::cargo(&["build", "--release", "-p", "claw-agent", "-p", "claw-tests"])?;
    let release = run::workspace_root().join("target/release");
    let printed = run::output(
        std::process::Command::new(release.join("claw-vmtest"))
            .arg("bench-events")
            .arg(release.join("claw-agent"))
            .arg(release.join("clawctl"))
            .stderr(std::process::Stdio::inherit()),
    )?;
    print!("{printed}");
    Ok(printed
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .map(str::to_owned)
        .collect())
}

/// Fuzz targets, from cargo-fuzz's layout in fuzz/.
const FUZZ_TARGETS: &[&str] = &["policy", "event_decode", "control"];

/// Fuzz time per target within `cargo xtask test`.
const TEST_FUZZ_SECONDS: u64 = 20;

/// Runs every fuzz target for `seconds`. New inputs go to a scratch directory, so the kept
/// corpus changes only when someone adds to it on purpose.
fn fuzz(seconds: u64) -> anyhow::Result<()> {
    let fuzz_dir = run::workspace_root().join("fuzz");
    for target in FUZZ_TARGETS {
        let scratch = std::env::temp_dir().join(format!("claw-fuzz-{target}"));
        std::fs::create_dir_all(&scratch)?;
        eprintln!("fuzz: {target} for {seconds} s");
        run::status(
            std::process::Command::new("rustup")
                .args(["run", "nightly", "cargo", "fuzz", "run", target])
                .arg(&scratch)
                .arg(fuzz_dir.join("corpus").join(target))
                .arg("--")
                .arg(format!("-max_total_time={seconds}"))
                .env_remove("RUSTC")
                .env_remove("RUSTC_WORKSPACE_WRAPPER")
                .current_dir(&fuzz_dir),
        )?;
    }
    Ok(())
}

/// Unit and host tests first (fast, and they fail early), a bounded fuzzing run, then the VM
/// matrix. Plain `cargo test` covers the default members, which leave out claw-ebpf (it cannot
/// build for the host).
fn test() -> anyhow::Result<()> {
    // The host tests run claw-agent and clawctl as built beside them: build those first, or the
    // tests would run whatever an earlier build left there.
    run::cargo(&["build", "--bins"])?;
    // host_package checks the package as this tree builds it.
    package::build()?;
    run::status(
        std::process::Command::new(env!("CARGO"))
            .arg("test")
            .env(collector::ROOT_ENV, collector::root())
            .current_dir(run::workspace_root()),
    )?;
    fuzz(TEST_FUZZ_SECONDS)?;
    // Both suites run before either fails.
    let cases = vm::test(None);
    let install = vm_systemd::test(None);
    cases.and(install)
}

fn lint() -> anyhow::Result<()> {
    run::cargo(&["fmt", "--all", "--", "--check"])?;
    // Both run before either fails, so that one lint shows every structural problem.
    let root = run::workspace_root();
    match (imports::check(&root), links::check(&root)) {
        (Ok(()), Ok(())) => {}
        (Err(err), Ok(())) | (Ok(()), Err(err)) => return Err(err),
        (Err(imports), Err(links)) => anyhow::bail!("{imports:#}\n{links:#}"),
    }
    run::cargo(&[
        "clippy",
        "-p",
        "claw-common",
        "-p",
        "claw-agent",
        "-p",
        "claw-tests",
        "-p",
        "xtask",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The kernel programs: nightly, for the BPF target, as build.rs builds them.
    run::status(
        std::process::Command::new("rustup")
            .args(["run", "nightly", "cargo", "clippy", "--release"])
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .args(["--", "-D", "warnings"])
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .current_dir(run::workspace_root().join("claw-ebpf")),
    )
}
