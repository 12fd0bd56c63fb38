//! Network rules (cgroup sock_addr programs): TCP connect and UDP sendto, IPv4, IPv6 and
//! IPv4-mapped IPv6, against CIDR and port rules.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::{tools, Runner, ECONNREFUSED, EPERM, HOSTS};
use claw_tests::harness::{expect, probe};

pub fn run(runner: &mut Runner) {
    let agent = tools();
    let inside = Some(agent.as_path());
    // Nothing listens in the VM: an allowed connect is refused by the peer (ECONNREFUSED), a
    // denied one by the kernel (EPERM).
    runner.check(
        "tcp_connect_outside_connect_rules_is_eperm",
        (|| {
            expect(&["connect", "127.0.0.1:8080"], inside, ECONNREFUSED)?;
            expect(&["connect", "127.0.0.1:9090"], inside, EPERM)?;
            expect(&["connect", "127.0.0.1:9090"], None, ECONNREFUSED)
        })(),
    );
    runner.check(
        "port_ranges",
        (|| {
            expect(&["connect", "127.0.0.1:7000"], inside, ECONNREFUSED)?;
            expect(&["connect", "127.0.0.1:7010"], inside, ECONNREFUSED)?;
            expect(&["connect", "127.0.0.1:7011"], inside, EPERM)?;
            expect(&["connect", "127.0.0.1:6999"], inside, EPERM)
        })(),
    );
    runner.check(
        "ipv6_connect_rules",
        (|| {
            expect(&["connect", "[::1]:8080"], inside, ECONNREFUSED)?;
            expect(&["connect", "[::1]:9090"], inside, EPERM)?;
            expect(&["connect", "[::1]:9090"], None, ECONNREFUSED)
        })(),
    );
    runner.check(
        "ipv4_mapped_ipv6_connect_meets_the_ipv4_rules",
        (|| {
            expect(
                &["connect", "[::ffff:127.0.0.1]:8080"],
                inside,
                ECONNREFUSED,
            )?;
            expect(&["connect", "[::ffff:127.0.0.1]:9090"], inside, EPERM)
        })(),
    );
    runner.check(
        "udp_sendto_without_connect_is_checked",
        (|| {
            expect(&["sendto", "127.0.0.1:5353"], inside, 0)?;
            expect(&["sendto", "127.0.0.1:5354"], inside, EPERM)?;
            expect(&["sendto", "[::ffff:127.0.0.1]:5354"], inside, EPERM)?;
            expect(&["sendto", "127.0.0.1:5354"], None, 0)
        })(),
    );
    runner.check(
        "hostname_rule_follows_the_name_when_it_moves",
        (|| {
            expect(&["connect", "127.0.0.1:8081"], inside, ECONNREFUSED)?;
            expect(&["connect", "127.0.0.2:8081"], inside, EPERM)?;
            std::fs::write(HOSTS, "127.0.0.1 localhost\n127.0.0.2 svc.claw.test\n")?;
            let deadline = Instant::now() + Duration::from_secs(15);
            while probe(&["connect", "127.0.0.2:8081"], inside)?.1 != ECONNREFUSED {
                if Instant::now() > deadline {
                    bail!("the new address of svc.claw.test was not allowed within 15 s");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            expect(&["connect", "127.0.0.1:8081"], inside, EPERM)
        })(),
    );
}
