//! Network rules (cgroup sock_addr programs): TCP connect and UDP sendto, IPv4, IPv6 and
//! IPv4-mapped IPv6, against CIDR and port rules.

use claw_tests::harness::expect;

use super::{tools, Runner, ECONNREFUSED, EPERM};

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
}
