//! Exec rules in the kernel: programs, scripts and their interpreters, the ld.so trick, and
//! mapping files executable, while the libraries allowed programs need keep working.

use std::time::Duration;

use anyhow::{ensure, Context as _};
use claw_tests::harness::{expect, probe, Follower};

use super::{auditor, runtime, tools, Runner, EPERM};

const LOADER: &str = "/usr/lib64/ld-linux-x86-64.so.2";

pub fn run(runner: &mut Runner) {
    let agent = tools();
    let inside = Some(agent.as_path());
    runner.check(
        "exec_of_allowed_dynamic_program_works",
        expect(&["exec", "/usr/bin/true"], inside, 0),
    );
    runner.check(
        "exec_outside_exec_rules_is_eperm",
        (|| {
            expect(&["exec", "/workspace/true"], inside, EPERM)?;
            expect(&["exec", "/workspace/true"], None, 0)
        })(),
    );
    runner.check(
        "shebang_script_whose_interpreter_is_not_allowed_is_eperm",
        (|| {
            expect(&["exec", "/workspace/bin/busybox-script.sh"], inside, EPERM)?;
            expect(&["exec", "/workspace/bin/true-script.sh"], inside, 0)?;
            expect(&["exec", "/workspace/bin/busybox-script.sh"], None, 0)
        })(),
    );
    runner.check(
        "ld_so_trick_cannot_run_a_forbidden_program",
        (|| {
            // The loader itself may run (it is an exec rule) and may load allowed programs...
            expect(&["exec", LOADER, "/usr/bin/true"], inside, 0)?;
            // ...but it cannot map a program no exec rule names.
            let (_, code) = probe(&["exec", LOADER, "/workspace/true"], inside)?;
            ensure!(code != 0, "ld.so ran /workspace/true inside the agent");
            expect(&["exec", LOADER, "/workspace/true"], None, 0)
        })(),
    );
    runner.check(
        "mapping_a_file_executable_needs_a_library_or_exec_rule",
        (|| {
            expect(&["mmap-exec", "/workspace/true"], inside, EPERM)?;
            expect(&["mprotect-exec", "/workspace/true"], inside, EPERM)?;
            expect(
                &["mmap-exec", "/usr/lib/x86_64-linux-gnu/libc.so.6"],
                inside,
                0,
            )?;
            expect(&["mmap-exec", "/workspace/true"], None, 0)
        })(),
    );
    runner.check(
        "memory_written_then_made_executable_needs_jit",
        written_code(inside),
    );
    runner.check(
        "audit_mode_reports_and_allows",
        (|| {
            let auditor = auditor();
            expect(&["exec", "/workspace/true"], Some(&auditor), 0)?;
            expect(&["open", "/etc/secret"], Some(&auditor), 0)
        })(),
    );
}

const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";
const ENOMEM: i32 = 12;

/// Code written into memory does not run in a `jit: false` agent: a private mapping of an allowed
/// library, written (its page copied) and then made executable, is refused, as is one writable
/// and executable at once (mapped so, or mprotect'ed so); so is growing the heap with READ_IMPLIES_EXEC (brk answers by
/// not moving). A written mapping never made executable, and an unwritten one made executable,
/// still work; a `jit: true` agent and processes outside agents may do both; each refusal is an
/// event naming the agent.
fn written_code(inside: Option<&std::path::Path>) -> anyhow::Result<()> {
    let follower = Follower::start(&["--json", "--agent", "tools"])?;
    expect(&["written-exec", LIBC], inside, EPERM)?;
    expect(&["rwx-map", LIBC], inside, EPERM)?;
    expect(&["rw-then-rwx", LIBC], inside, EPERM)?;
    expect(&["rwx-map", LIBC], None, 0)?;
    expect(&["written-only", LIBC], inside, 0)?;
    expect(&["mprotect-exec", LIBC], inside, 0)?;
    expect(&["executable-heap"], inside, ENOMEM)?;
    expect(&["written-exec", LIBC], None, 0)?;
    expect(&["executable-heap"], None, 0)?;
    expect(&["executable-heap"], Some(&runtime()), 0)?;
    for op in ["mprotect", "mmap"] {
        let line = follower
            .line_within(Duration::from_secs(20), |line| {
                line.contains(&format!("\"op\":\"{op}\"")) && line.contains("<anonymous memory>")
            })
            .with_context(|| format!("no {op} deny event for written memory"))?;
        ensure!(line.contains("\"deny\""), "{line}");
    }
    Ok(())
}
