//! `clawctl advise` and `clawctl allow --persist`: denials drafted into the narrowest rules, as a
//! diff of the policy file, applied only when asked.

use std::process::Command;

use anyhow::ensure;
use claw_tests::harness::{expect, CLAWCTL};

use super::{
    calls::{code, denial_in_story, run_call},
    tools, Runner, EPERM, POLICY, POLICY_PATH,
};

const ADVISED: &str = "/etc/advise-me";
const SIBLING: &str = "/etc/advise-sibling";

fn clawctl(args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let output = Command::new(CLAWCTL).args(args).output()?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

fn restore_policy() -> anyhow::Result<()> {
    std::fs::write(POLICY_PATH, POLICY)?;
    let (ok, _, stderr) = clawctl(&["policy", "apply", POLICY_PATH])?;
    ensure!(ok, "restoring the test policy: {stderr}");
    Ok(())
}

pub fn run(runner: &mut Runner) {
    let agent = tools();
    let inside = Some(agent.as_path());
    runner.check(
        "advise_drafts_exactly_the_denied_objects_and_applies_only_when_asked",
        (|| {
            std::fs::write(ADVISED, "advised\n")?;
            std::fs::write(SIBLING, "sibling\n")?;
            let output = run_call("vm-advise", &[], &["open", ADVISED])?;
            ensure!(code(&output) == EPERM, "{output:?}");
            let args = ["advise", "--call", "vm-advise", "--since", "10m"];
            let (ok, diff, stderr) = clawctl(&args)?;
            ensure!(ok, "{stderr}");
            ensure!(
                diff.lines()
                    .any(|l| l.starts_with('+') && l.contains(ADVISED))
                    && !diff.contains(SIBLING),
                "the draft: {diff}"
            );
            expect(&["open", ADVISED], inside, EPERM)?;
            let result = (|| {
                let (ok, out, stderr) = clawctl(&[&args[..], &["--apply"]].concat())?;
                ensure!(ok, "{out}{stderr}");
                expect(&["open", ADVISED], inside, 0)?;
                expect(&["open", SIBLING], inside, EPERM)?;
                expect(&["open", ADVISED, "w"], inside, EPERM)
            })();
            restore_policy()?;
            result?;
            expect(&["open", ADVISED], inside, EPERM)
        })(),
    );
    runner.check(
        "allow_persist_shows_the_rule_as_a_diff_and_changes_nothing_unasked",
        (|| {
            let output = run_call("vm-persist", &[], &["open", SIBLING])?;
            ensure!(code(&output) == EPERM, "{output:?}");
            let seq = denial_in_story("vm-persist", SIBLING)?;
            let (ok, diff, stderr) = clawctl(&["allow", &seq.to_string(), "--persist"])?;
            ensure!(ok, "{stderr}");
            ensure!(
                diff.lines()
                    .any(|l| l.starts_with('+') && l.contains(SIBLING)),
                "{diff}"
            );
            ensure!(
                std::fs::read_to_string(POLICY_PATH)? == POLICY,
                "the policy file changed"
            );
            expect(&["open", SIBLING], inside, EPERM)
        })(),
    );
}
