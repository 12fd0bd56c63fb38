//! DNS integrity: an agent's DNS goes to the resolver claw-agent runs for it, whatever server it
//! was sent to; only names its connect rules name are answered, and only the addresses answered
//! open, for the rules' ports, until the answer expires. The node's resolver here is
//! claw_tests::upstream on 127.0.0.1:53.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use claw_tests::{
    harness::{daemon_log_tail, expect, probe, probe_output, Follower},
    upstream::Upstream,
};

use super::{
    calls::{code, run_call},
    tools, Runner, ENETUNREACH, EPERM,
};

/// What `probe dns-query` printed, checked to begin with `want`.
fn query(args: &[&str], cgroup: Option<&std::path::Path>, want: &str) -> anyhow::Result<()> {
    let (code, out) = probe_output(args, cgroup)?;
    ensure!(
        code == 0,
        "probe {}: exit {code}; claw-agent's last words: {}",
        args.join(" "),
        daemon_log_tail(3)
    );
    ensure!(
        out.trim() == want,
        "probe {}: printed `{}`, want `{want}`",
        args.join(" "),
        out.trim()
    );
    Ok(())
}

pub fn run(runner: &mut Runner, upstream: &Upstream) {
    let agent = tools();
    let inside = Some(agent.as_path());
    upstream.set("svc.claw.test", [10, 77, 0, 1].into(), 1);
    upstream.set("meta.claw.test", [169, 254, 169, 254].into(), 60);
    upstream.set("other.claw.test", [10, 77, 0, 9].into(), 60);
    upstream.set("a.wild.claw.test", [10, 77, 0, 21].into(), 60);
    upstream.set("wild.claw.test", [10, 77, 0, 22].into(), 60);
    upstream.set("lo.wild.claw.test", [127, 0, 0, 1].into(), 60);
    // No network in the VM but loopback: an allowed connect elsewhere fails for want of a route
    // (ENETUNREACH), a denied one in the kernel program (EPERM).
    runner.check(
        "an_agent_reaches_only_addresses_it_resolved_through_claw",
        (|| {
            expect(&["connect", "10.77.0.1:8081"], inside, EPERM)?;
            query(
                &["dns-query", "127.0.0.1:53", "svc.claw.test"],
                inside,
                "from=127.0.0.1:53 rcode=0 answers=10.77.0.1",
            )?;
            expect(&["connect", "10.77.0.1:8081"], inside, ENETUNREACH)?;
            expect(&["connect", "10.77.0.1:8082"], inside, EPERM)?;
            expect(&["connect", "10.77.0.2:8081"], inside, EPERM)?;
            expect(
                &["connect", "10.77.0.1:8081"],
                Some(&super::auditor()),
                ENETUNREACH,
            )
        })(),
    );
    runner.check(
        "a_resolved_address_closes_when_its_answer_expires",
        (|| {
            // TTL 1 s, held at least dns::MIN_TTL (5 s).
            let deadline = Instant::now() + Duration::from_secs(30);
            while probe(&["connect", "10.77.0.1:8081"], inside)?.1 != EPERM {
                if Instant::now() > deadline {
                    bail!("10.77.0.1:8081 still open 30 s after an answer with a TTL of 1 s");
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            Ok(())
        })(),
    );
    runner.check(
        "dns_sent_to_any_server_goes_to_the_agents_resolver",
        (|| {
            query(
                &["dns-query", "10.9.9.53:53", "svc.claw.test"],
                inside,
                "from=10.9.9.53:53 rcode=0 answers=10.77.0.1",
            )?;
            query(
                &["dns-query-tcp", "10.9.9.53:53", "svc.claw.test"],
                inside,
                "from=10.9.9.53:53 rcode=0 answers=10.77.0.1",
            )?;
            expect(&["connect", "10.77.0.1:8081"], inside, ENETUNREACH)?;
            // Outside agents nothing is redirected: no route to that server.
            expect(
                &["dns-query", "10.9.9.53:53", "svc.claw.test"],
                None,
                ENETUNREACH,
            )
        })(),
    );
    runner.check(
        "a_name_no_rule_names_is_refused_reported_and_never_asked",
        (|| {
            let follower = Follower::start(&["--json", "--agent", "tools", "--op", "dns"])?;
            query(
                &["dns-query", "127.0.0.1:53", "other.claw.test"],
                inside,
                "from=127.0.0.1:53 rcode=5 answers=",
            )?;
            query(
                &["dns-query-tcp", "10.9.9.53:53", "other.claw.test"],
                inside,
                "from=10.9.9.53:53 rcode=5 answers=",
            )?;
            ensure!(
                !upstream.was_asked("other.claw.test"),
                "the node's resolver was asked a name the agent may not resolve"
            );
            let line = follower
                .line_within(Duration::from_secs(10), |l| l.contains("other.claw.test"))
                .ok_or_else(|| anyhow::anyhow!("no deny event for the refused query"))?;
            let event: serde_json::Value = serde_json::from_str(&line)?;
            ensure!(
                event["kind"] == "deny"
                    && event["op"] == "dns"
                    && event["name"] == "other.claw.test"
                    && event["agent"] == "tools"
                    && event["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("meta.claw.test, svc.claw.test")),
                "event: {line}"
            );
            expect(&["connect", "10.77.0.9:80"], inside, EPERM)
        })(),
    );
    runner.check(
        "a_pattern_rule_answers_the_names_below_its_domain_only",
        (|| {
            query(
                &["dns-query", "127.0.0.1:53", "a.wild.claw.test"],
                inside,
                "from=127.0.0.1:53 rcode=0 answers=10.77.0.21",
            )?;
            expect(&["connect", "10.77.0.21:80"], inside, ENETUNREACH)?;
            expect(&["connect", "10.77.0.21:81"], inside, EPERM)?;
            // `*.wild.claw.test` is every name below wild.claw.test, not wild.claw.test itself.
            query(
                &["dns-query", "127.0.0.1:53", "wild.claw.test"],
                inside,
                "from=127.0.0.1:53 rcode=5 answers=",
            )?;
            ensure!(
                !upstream.was_asked("wild.claw.test"),
                "the node's resolver was asked a name no rule covers"
            );
            expect(&["connect", "10.77.0.22:80"], inside, EPERM)?;
            // A name made to resolve to loopback, which `tools` reaches on its named ports
            // only, does not open loopback's port 80.
            query(
                &["dns-query", "127.0.0.1:53", "lo.wild.claw.test"],
                inside,
                "from=127.0.0.1:53 rcode=0 answers=127.0.0.1",
            )?;
            expect(&["connect", "127.0.0.1:80"], inside, EPERM)
        })(),
    );
    runner.check(
        "a_name_answered_with_the_metadata_address_stays_closed",
        (|| {
            query(
                &["dns-query", "127.0.0.1:53", "meta.claw.test"],
                inside,
                "from=127.0.0.1:53 rcode=0 answers=169.254.169.254",
            )?;
            expect(&["connect", "169.254.169.254:80"], inside, EPERM)?;
            // Nor for a tool call whose narrowed rules name it (resolved when the call starts).
            let output = run_call(
                "vm-dns-meta",
                &["--allow-connect", "meta.claw.test:80/tcp"],
                &["connect", "169.254.169.254:80"],
            )?;
            ensure!(code(&output) == EPERM, "{output:?}");
            Ok(())
        })(),
    );
}
