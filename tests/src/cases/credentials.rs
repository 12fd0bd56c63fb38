//! Credential stores: no wider rule reaches into them, a rule naming one does; other processes'
//! environments stay closed.

use super::{limited, named, Runner, EPERM};

const EACCES: i32 = 13;
use claw_tests::harness::expect;

const FILES: [&str; 5] = [
    "/root/.ssh/id_ed25519",
    "/root/.aws/credentials",
    "/root/.aws/config",
    "/run/secrets/token",
    "/etc/claw-not-a-secret",
];

fn fixtures() -> anyhow::Result<()> {
    for file in FILES {
        if let Some(dir) = std::path::Path::new(file).parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(file, "secret\n")?;
    }
    Ok(())
}

pub fn run(runner: &mut Runner) {
    // Agent `broad` reads and writes [/], and names /root/.aws/credentials.
    let broad = named("broad");
    let inside = Some(broad.as_path());
    runner.check(
        "credential_stores_are_closed_under_a_wider_rule",
        (|| {
            fixtures()?;
            expect(&["open", "/root/.ssh/id_ed25519"], inside, EPERM)?;
            expect(
                &["open", "/root/.ssh/authorized_keys", "create"],
                inside,
                EPERM,
            )?;
            expect(&["open", "/run/secrets/token"], inside, EPERM)?;
            expect(&["open", "/etc/claw-not-a-secret"], inside, 0)?;
            expect(&["open", "/root/.ssh/id_ed25519"], None, 0)
        })(),
    );
    runner.check(
        "a_rule_naming_a_credential_opens_that_one_only",
        (|| {
            expect(&["open", "/root/.aws/credentials"], inside, 0)?;
            expect(&["open", "/root/.aws/config"], inside, EPERM)
        })(),
    );
    runner.check(
        "other_processes_environments_are_closed",
        (|| {
            // Agent `limited` reads [/proc/]: its own environment, not another process's (the
            // ptrace hook refuses the read access; /proc reports any such refusal as EACCES).
            let limited = limited();
            expect(&["open", "/proc/self/environ"], Some(&limited), 0)?;
            expect(&["open", "/proc/1/environ"], Some(&limited), EACCES)?;
            expect(&["open", "/proc/1/environ"], None, 0)
        })(),
    );
}
