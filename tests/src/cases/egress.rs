//! Egress beyond the connect rules: redirects to a local proxy, done in the kernel (so tools
//! that ignore proxy settings go through it too), and networks no wide rule reaches.

use std::{
    net::TcpListener,
    time::{Duration, Instant},
};

use anyhow::ensure;
use claw_tests::harness::{expect, probe};

use super::{named, tools, Runner, ECONNREFUSED, EPERM};

pub fn run(runner: &mut Runner) {
    let agent = tools();
    let inside = Some(agent.as_path());
    runner.check(
        "a_redirected_connect_lands_on_the_proxy",
        (|| {
            let proxy = TcpListener::bind("127.0.0.1:3128")?;
            proxy.set_nonblocking(true)?;
            expect(&["connect", "10.9.9.9:443"], inside, 0)?;
            let deadline = Instant::now() + Duration::from_secs(10);
            let peer = loop {
                match proxy.accept() {
                    Ok((_, peer)) => break peer,
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                        ensure!(Instant::now() < deadline, "nothing reached the proxy");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(err) => return Err(err.into()),
                }
            };
            ensure!(peer.ip().is_loopback(), "the proxy's peer: {peer}");
            // Other ports of that address are neither redirected nor allowed; outside the agent
            // nothing is redirected.
            expect(&["connect", "10.9.9.9:444"], inside, EPERM)?;
            let (_, outside) = probe(&["connect", "10.9.9.9:443"], None)?;
            ensure!(
                outside != 0 && outside != EPERM,
                "outside the agent: exit {outside}"
            );
            Ok(())
        })(),
    );
    runner.check(
        "wide_connect_rules_do_not_reach_metadata_link_local_or_the_node",
        (|| {
            // Agent `broad` may connect to port 80 anywhere (0.0.0.0/0 and [::]/0), and to
            // 127.0.0.1 on port 7100 only: naming loopback lends it no port of the wide rule.
            let broad = named("broad");
            let inside = Some(broad.as_path());
            expect(&["connect", "169.254.169.254:80"], inside, EPERM)?;
            expect(&["connect", "[fe80::1]:80"], inside, EPERM)?;
            expect(&["connect", "127.0.0.1:80"], inside, EPERM)?;
            expect(&["connect", "127.0.0.1:7100"], inside, ECONNREFUSED)?;
            expect(&["connect", "[::1]:80"], inside, EPERM)?;
            expect(&["connect", "127.0.0.1:80"], None, ECONNREFUSED)?;
            let (_, elsewhere) = probe(&["connect", "10.255.255.1:80"], inside)?;
            ensure!(
                elsewhere != EPERM,
                "a connect the wide rule allows was refused"
            );
            Ok(())
        })(),
    );
}
