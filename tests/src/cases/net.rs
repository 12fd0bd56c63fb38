//! Network rules (cgroup sock_addr programs): TCP connect and UDP sendto, IPv4, IPv6 and
//! IPv4-mapped IPv6, against CIDR and port rules.

use std::time::Duration;

use anyhow::{ensure, Context as _};
use claw_tests::harness::{expect, Follower};

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
    runner.check("listening_needs_a_listen_rule", listening(inside));
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

/// A UDP socket made outside the agent (the agent cgroup's bind programs never see it) and handed
/// to a process of tools: binding it to a port no listen rule holds is refused all the same.
fn passed_in_socket(inside: Option<&std::path::Path>) -> anyhow::Result<()> {
    // SAFETY: socket(2) without CLOEXEC, so that the probe inherits it; closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    let result = expect(
        &["bind-fd", &fd.to_string(), "127.0.0.1:5353"],
        inside,
        EPERM,
    );
    // SAFETY: the descriptor made above.
    unsafe { libc::close(fd) };
    result
}

/// tools may listen on 127.0.0.1:7300/tcp and bind 127.0.0.1:7301/udp. Binding another port (or a
/// wider address) is refused at bind; binding port 0 works, but listening on the port it got is
/// refused at listen; outside agents the kernel lets all of it through; each refusal is an event.
fn listening(inside: Option<&std::path::Path>) -> anyhow::Result<()> {
    let follower = Follower::start(&["--json", "--agent", "tools"])?;
    expect(&["listen", "127.0.0.1:7300"], inside, 0)?;
    expect(&["udp-bind", "127.0.0.1:7301"], inside, 0)?;
    expect(&["udp-bind", "127.0.0.1:0"], inside, 0)?;
    expect(&["connect", "127.0.0.1:8080"], inside, ECONNREFUSED)?;
    expect(&["listen", "0.0.0.0:4444"], inside, EPERM)?;
    expect(&["listen", "0.0.0.0:7300"], inside, EPERM)?;
    expect(&["listen", "[::]:7300"], inside, EPERM)?;
    expect(&["listen", "127.0.0.1:7301"], inside, EPERM)?;
    expect(&["udp-bind", "127.0.0.1:7300"], inside, EPERM)?;
    expect(&["listen", "127.0.0.1:0"], inside, EPERM)?;
    expect(&["listen", "0.0.0.0:4444"], None, 0)?;
    expect(&["listen", "127.0.0.1:0"], None, 0)?;
    passed_in_socket(inside)?;
    for (op, destination) in [("bind", Some("0.0.0.0:4444/tcp")), ("listen", None)] {
        let line = follower
            .line_within(Duration::from_secs(20), |line| {
                let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                    return false;
                };
                event["op"] == op && destination.is_none_or(|d| event["destination"] == d)
            })
            .with_context(|| format!("no {op} deny event for agent tools"))?;
        let event: serde_json::Value = serde_json::from_str(&line)?;
        ensure!(event["kind"] == "deny", "{line}");
        if op == "listen" {
            let address = event["destination"].as_str().unwrap_or_default();
            ensure!(
                address.starts_with("127.0.0.1:") && !address.starts_with("127.0.0.1:0/"),
                "the listen event names {address}, not the ephemeral port bound"
            );
        }
    }
    Ok(())
}
