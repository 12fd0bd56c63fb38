//! claw-vmtest: runs inside the test VM (see `cargo xtask vm-test`), as root, on a kernel with BPF
//! LSM. It drives the real claw-agent and clawctl binaries and checks what the kernel does.
//!
//! `claw-vmtest test` runs every case and prints `CLAW-RESULT PASS|FAIL name detail` lines;
//! `claw-vmtest demo` shows claw at work; `claw-vmtest open PATH` is the probe the cases run
//! inside an agent's cgroup: it opens PATH and exits with 0 or the errno.

mod cases;
mod demo;
mod harness;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("test") => cases::run_all(),
        Some("demo") => demo::run(),
        Some("open") if args.len() == 3 => probe_open(&args[2]),
        _ => {
            eprintln!("usage: claw-vmtest test | demo | open PATH");
            ExitCode::from(2)
        }
    }
}

fn probe_open(path: &str) -> ExitCode {
    match std::fs::File::open(path) {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("open {path}: {err}");
            let errno = err.raw_os_error().unwrap_or(255);
            ExitCode::from(u8::try_from(errno).unwrap_or(255))
        }
    }
}
