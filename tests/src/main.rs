//! claw-vmtest: runs inside the test VM (see `cargo xtask vm-test`), as root, on a kernel with BPF
//! LSM. It drives the real claw-agent and clawctl binaries and checks what the kernel does.
//!
//! `claw-vmtest test` runs every case and prints `CLAW-RESULT PASS|FAIL name detail` lines;
//! `claw-vmtest systemd` and `systemd-nobpf` are the install test, in a Debian guest with systemd;
//! `claw-vmtest demo` shows claw at work; `claw-vmtest probe OP ...` is what the cases run inside
//! an agent's cgroup: one operation, exiting with 0 or its errno.

mod bench;
mod bench_events;
mod cases;
mod demo;
mod install;
mod probe;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("test") => cases::run_all(),
        Some("demo") => demo::run(),
        Some("probe") => probe::run(&args[2..]),
        Some("bench") => bench::run(),
        Some("bench-events") => bench_events::run(&args[2..]),
        Some("systemd") => install::run(false),
        Some("systemd-nobpf") => install::run(true),
        _ => {
            eprintln!("usage: claw-vmtest test | demo | bench | bench-events CLAW_AGENT CLAWCTL | systemd | systemd-nobpf | probe OP ARGS...");
            ExitCode::from(2)
        }
    }
}
