//! DNS integrity on this host (cgroup sock_addr programs load here; `--degraded`): an agent's DNS
//! reaches the resolver claw-agent runs for it, whatever server it was sent to, and only what it
//! resolved there opens. The node's resolver is a stand-in on 127.0.0.77:53 (`--resolv-conf`).

mod common;

use common::{probe, probe_output, Host, EPERM};

/// Connected, or failed past the kernel program: no route, refused, timed out.
/// (255: the probe's connect timed out, an error without errno.)
const ENETUNREACH_OR_ALLOWED: [i32; 6] = [0, 101, 110, 111, 113, 255];

#[test]
fn an_agents_dns_goes_to_its_resolver_and_only_its_answers_open() {
    let upstream = claw_tests::upstream::Upstream::start("127.0.0.77:53").unwrap();
    upstream.set("svc.claw.test", [192, 0, 2, 10].into(), 60);
    upstream.set("other.claw.test", [192, 0, 2, 11].into(), 60);
    let mut host = Host::new("host-dns");
    let (relative, agent) = host.agent("dns");
    let resolv_conf = host.policy("nameserver 127.0.0.77\n");
    let resolv_conf = {
        let path = resolv_conf.with_file_name("resolv.conf");
        std::fs::rename(&resolv_conf, &path).unwrap();
        path
    };
    let policy = host.policy(&format!(
        "agents:\n  - name: dns\n    cgroup: {relative}\n    connect:\n      - svc.claw.test:443/tcp\n"
    ));
    host.start(&policy, &["--resolv-conf", resolv_conf.to_str().unwrap()]);
    let inside = Some(agent.as_path());
    assert_eq!(
        probe(&["connect", "192.0.2.10:443"], inside),
        EPERM,
        "before resolving"
    );
    let (code, out) = probe_output(&["dns-query", "127.0.0.77:53", "svc.claw.test"], inside);
    assert_eq!(
        (code, out.trim()),
        (0, "from=127.0.0.77:53 rcode=0 answers=192.0.2.10")
    );
    let (code, out) = probe_output(&["dns-query", "192.0.2.53:53", "svc.claw.test"], inside);
    assert_eq!(
        (code, out.trim()),
        (0, "from=192.0.2.53:53 rcode=0 answers=192.0.2.10"),
        "a query to another server"
    );
    let (code, out) = probe_output(&["dns-query-tcp", "192.0.2.53:53", "svc.claw.test"], inside);
    assert_eq!(
        (code, out.trim()),
        (0, "from=192.0.2.53:53 rcode=0 answers=192.0.2.10"),
        "over TCP"
    );
    let (code, out) = probe_output(&["dns-query", "127.0.0.77:53", "other.claw.test"], inside);
    assert_eq!(
        (code, out.trim()),
        (0, "from=127.0.0.77:53 rcode=5 answers=")
    );
    assert!(!upstream.was_asked("other.claw.test"));
    let opened = probe(&["connect", "192.0.2.10:443"], inside);
    assert!(
        ENETUNREACH_OR_ALLOWED.contains(&opened),
        "a resolved address: exit {opened}"
    );
    assert_eq!(
        probe(&["connect", "192.0.2.10:80"], inside),
        EPERM,
        "another port"
    );
    assert_eq!(
        probe(&["connect", "192.0.2.11:443"], inside),
        EPERM,
        "never answered"
    );
}
