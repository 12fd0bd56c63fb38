//! The compiler's unit tests: every rule's meaning in the kernel's maps.

use std::collections::BTreeMap;

use claw_common::{access, LISTEN_RULE, MAX_PORT_RANGES, PROTO_TCP, PROTO_UDP};

use super::{files::*, net::*, *};
use crate::policy::parse;
use crate::policy::rules::{PortRange, RulePath};

/// Without credential stores to guard (those have tests of their own).
fn compiled(text: &str) -> Compiled {
    compile_guarding(&parse("p.yaml", text).unwrap(), &Guards::default()).unwrap()
}

fn agent(rules: &str) -> CompiledAgent {
    compiled(&format!(
        "agents:\n  - name: t\n    cgroup: claw/t\n{rules}"
    ))
    .agents
    .remove(0)
}

/// The agent's file rules but the pidfd entry every agent has (its own test below).
fn prefixes(agent: &CompiledAgent) -> Vec<(String, u32)> {
    agent
        .file_rules
        .iter()
        .filter(|r| r.prefix != PIDFD_FILE)
        .map(|r| {
            (
                String::from_utf8(r.prefix.clone())
                    .unwrap()
                    .replace('\0', "$"),
                r.access,
            )
        })
        .collect()
}

#[test]
fn directory_rules_cover_below_and_the_directory_itself() {
    let a = agent("    files:\n      read: [/workspace/]\n");
    assert_eq!(
        prefixes(&a),
        [
            ("/workspace$".into(), access::READ),
            ("/workspace/".into(), access::READ)
        ]
    );
}

#[test]
fn file_rules_are_exact_and_root_is_one_prefix() {
    let a = agent("    files:\n      read: [/etc/hosts, /]\n");
    assert_eq!(
        prefixes(&a),
        [
            ("/".into(), access::READ),
            ("/etc/hosts$".into(), access::READ)
        ]
    );
}

#[test]
fn access_bits_combine_per_prefix() {
    let a = agent(
        "    files:\n      read: [/w/]\n      write: [/w/]\n    exec: [/usr/bin/git]\n    libraries: [/usr/lib/]\n",
    );
    let bits: BTreeMap<_, _> = prefixes(&a).into_iter().collect();
    assert_eq!(bits["/w/"], access::READ | WRITING);
    assert_eq!(
        bits["/usr/bin/git$"],
        access::READ | access::EXEC | access::MAP
    );
    assert_eq!(bits["/usr/lib/"], access::READ | access::MAP);
}

#[test]
fn nested_rules_keep_the_grants_of_covering_directories() {
    let a = agent("    files:\n      read: [/w/, /]\n      write: [/w/out/, /w/out/log]\n");
    let bits: BTreeMap<_, _> = prefixes(&a).into_iter().collect();
    assert_eq!(bits["/w/out/"], access::READ | WRITING);
    assert_eq!(bits["/w/out/log$"], access::READ | WRITING);
    assert_eq!(bits["/w/"], access::READ);
    // `/w/out` (the directory itself) is under `/w/` but not under `/w/out/`.
    assert_eq!(bits["/w/out$"], access::READ | WRITING);
}

fn with_sockets(rules: &str) -> Result<BTreeMap<String, u32>, CompileError> {
    let policy = parse(
        "p.yaml",
        &format!("agents:\n  - name: t\n    cgroup: claw/t\n{rules}"),
    )
    .unwrap();
    let guards = Guards {
        socket_directories: vec![RulePath("/run/claw/".to_owned())],
        agent_socket: Some(RulePath("/run/claw/agent.sock".to_owned())),
        ..Guards::default()
    };
    let mut compiled = compile_guarding(&policy, &guards)?;
    Ok(prefixes(&compiled.agents.remove(0)).into_iter().collect())
}

#[test]
fn agents_connect_to_the_agent_socket_and_write_nowhere_beside_it() {
    let bits = with_sockets("    files:\n      read: [/]\n      write: [/]\n").unwrap();
    assert_eq!(bits["/"], access::READ | WRITING);
    for own in ["/run/claw/", "/run/claw$"] {
        assert_eq!(bits[own], access::READ, "{own}");
    }
    // Renaming /run would move the sockets.
    assert_eq!(bits["/run$"] & access::WRITE, 0);
    assert_eq!(
        bits["/run/claw/agent.sock$"],
        access::READ | access::CONNECT
    );
    let bits = with_sockets("    files:\n      read: [/run/]\n      write: [/]\n").unwrap();
    assert_eq!(bits["/run$"] & access::WRITE, 0);
    assert_eq!(bits["/run/"], access::READ | WRITING);
    assert_eq!(bits["/run/claw/"], access::READ);
    let bits = with_sockets("    files:\n      write: [/run]\n").unwrap();
    assert_eq!(bits["/run$"] & access::WRITE, 0);

    let bits = with_sockets("    files:\n      write: [/workspace/]\n").unwrap();
    assert_eq!(bits["/run/claw/agent.sock$"], access::CONNECT);
    assert!(!bits.contains_key("/run/claw/"), "{bits:?}");

    for inside in ["/run/claw/", "/run/claw/claw.sock", "/run/claw"] {
        let err = with_sockets(&format!("    files:\n      write: [{inside}]\n")).unwrap_err();
        assert!(
            err.message.contains("claw-agent's sockets") && err.message.contains(inside),
            "{err}"
        );
    }
}

#[test]
fn wide_write_rules_stop_short_of_the_cgroup_and_bpf_trees() {
    let a = agent("    files:\n      read: [/, /sys/fs/bpf/claw/]\n      write: [/]\n");
    let bits: BTreeMap<_, _> = prefixes(&a).into_iter().collect();
    assert_eq!(bits["/"], access::READ | WRITING);
    assert_eq!(bits["/sys/fs/bpf/claw/"], access::READ);
    for tree in [
        "/sys/fs/cgroup/",
        "/sys/fs/cgroup$",
        "/sys/fs/bpf/",
        "/sys/fs/bpf$",
    ] {
        assert_eq!(bits[tree], access::READ, "{tree}");
    }
    let narrow = agent("    files:\n      write: [/workspace/]\n");
    assert_eq!(
        prefixes(&narrow).len(),
        2,
        "no entries for trees nothing covers"
    );
}

#[test]
fn write_rules_inside_the_cgroup_and_bpf_trees_are_refused_at_the_rule() {
    for path in [
        "/sys/fs/cgroup/claw/t/cgroup.procs",
        "/sys/fs/bpf/",
        "/sys/fs/cgroup",
    ] {
        let text = format!(
            "agents:\n  - name: t\n    cgroup: claw/t\n    files:\n      write: [/tmp/, {path}]\n"
        );
        let err = parse("p.yaml", &text).unwrap_err().to_string();
        assert!(
            err.contains("p.yaml:5:") && err.contains("agents may never write there"),
            "{err}"
        );
    }
    assert!(parse(
        "p.yaml",
        "agents:\n  - name: t\n    cgroup: claw/t\n    files:\n      read: [/sys/fs/cgroup/]\n"
    )
    .is_ok());
}

fn guarded(rules: &str) -> Vec<(String, u32)> {
    let policy = parse(
        "p.yaml",
        &format!("agents:\n  - name: t\n    cgroup: claw/t\n{rules}"),
    )
    .unwrap();
    let passwd = "root:x:0:0:root:/root:/bin/bash\nu:x:1000:1000::/home/u:/bin/sh\n";
    let guards = Guards {
        credentials: crate::policy::rules::credential_paths(passwd),
        networks: Vec::new(),
        ..Guards::default()
    };
    let mut compiled = compile_guarding(&policy, &guards).unwrap();
    prefixes(&compiled.agents.remove(0))
}

#[test]
fn wide_rules_do_not_reach_into_credential_stores() {
    let got = guarded("    files:\n      read: [/home/]\n");
    for store in [
        "/home/u/.ssh/",
        "/home/u/.aws/",
        "/home/u/.docker/config.json$",
    ] {
        assert!(got.contains(&(store.to_owned(), 0)), "{store} in {got:?}");
    }
    // The home directory cannot be renamed away from its stores (read stays).
    assert!(
        got.contains(&("/home/u$".to_owned(), access::READ)),
        "{got:?}"
    );
    // Other homes and machine-wide stores are not under the rule: nothing to carve there.
    assert!(!got
        .iter()
        .any(|(p, _)| p.starts_with("/root/") || p.starts_with("/run/")));
    let everything = guarded("    files:\n      read: [/]\n      write: [/]\n");
    for store in [
        "/root/.ssh/",
        "/run/secrets/",
        "/var/run/secrets/",
        "/etc/shadow$",
    ] {
        assert!(everything.contains(&(store.to_owned(), 0)), "{store}");
    }
}

#[test]
fn a_rule_naming_a_store_lifts_its_guard_and_rules_inside_grant_what_they_name() {
    let got =
        guarded("    files:\n      read: [/home/, /home/u/.kube/, /home/u/.ssh/known_hosts]\n");
    assert!(
        got.contains(&("/home/u/.kube/".to_owned(), access::READ)),
        "{got:?}"
    );
    assert!(got.contains(&("/home/u/.ssh/".to_owned(), 0)), "{got:?}");
    assert!(got.contains(&("/home/u/.ssh/known_hosts$".to_owned(), access::READ)));
}

#[test]
fn mode_and_policy_order_are_kept() {
    let c = compiled(
        "agents:\n  - name: a\n    cgroup: claw/a\n    mode: audit\n  - name: b\n    cgroup: claw/b\n",
    );
    assert_eq!(c.agents[0].mode, Mode::Audit);
    assert_eq!(c.agents[1].name, "b");
    assert!(prefixes(&c.agents[1]).is_empty() && c.agents[1].net_rules.is_empty());
}

#[test]
fn file_key_carries_ruleset_then_path_and_counts_bits() {
    let rule = FileRule {
        prefix: b"/usr/".to_vec(),
        access: access::READ,
    };
    let key = rule.key(0x0102_0304);
    let prefix_len = key.prefix_len();
    assert_eq!(prefix_len, 32 + 5 * 8);
    let data = key.data();
    assert_eq!(data.ruleset, [1, 2, 3, 4]);
    assert_eq!(&data.path[..5], b"/usr/");
    assert!(data.path[5..].iter().all(|&b| b == 0));
}

type NetView = (u8, String, Vec<(u16, u16)>);

fn net(agent: &CompiledAgent) -> Vec<NetView> {
    agent
        .net_rules
        .iter()
        .map(|r| {
            (
                r.protocol,
                crate::policy::rules::network_text(&r.address, r.prefix_len),
                r.ports.iter().map(|p| (p.first, p.last)).collect(),
            )
        })
        .collect()
}

#[test]
fn connect_rules_become_per_protocol_entries() {
    let a = agent("    connect:\n      - 127.0.0.1:11434/tcp\n      - \"[2001:db8::]/32:443\"\n");
    assert_eq!(
        net(&a),
        [
            (PROTO_TCP, "127.0.0.1/32".into(), vec![(11434, 11434)]),
            (PROTO_TCP, "[2001:db8::]/32".into(), vec![(443, 443)]),
            (PROTO_UDP, "[2001:db8::]/32".into(), vec![(443, 443)]),
        ]
    );
}

/// Listen rules sit beside connect rules in the one trie, their protocol marked: a connect rule
/// never opens a port to listen on, nor the reverse; guarded networks do not apply (an agent's
/// own loopback address is what it binds).
#[test]
fn listen_rules_are_entries_of_their_own() {
    let a = agent(
        "    connect: [127.0.0.1:11434/tcp]\n    listen: [127.0.0.1:11434/tcp, \"0.0.0.0/0:8000-8010/udp\", 10.0.0.5:8005/udp]\n",
    );
    assert_eq!(
        net(&a),
        [
            (PROTO_TCP, "127.0.0.1/32".into(), vec![(11434, 11434)]),
            (
                LISTEN_RULE | PROTO_TCP,
                "127.0.0.1/32".into(),
                vec![(11434, 11434)]
            ),
            (
                LISTEN_RULE | PROTO_UDP,
                "0.0.0.0/0".into(),
                vec![(8000, 8010)]
            ),
            (
                LISTEN_RULE | PROTO_UDP,
                "10.0.0.5/32".into(),
                vec![(8000, 8010)]
            ),
        ]
    );
}

/// pidfd_open(2) works in every agent (on 6.9+ its file goes through the open hook).
#[test]
fn every_agent_may_open_pidfds() {
    let a = agent("");
    let pidfd = a.file_rules.iter().find(|r| r.prefix == PIDFD_FILE);
    assert_eq!(pidfd.map(|r| r.access), Some(access::READ | access::WRITE));
}

#[test]
fn longer_prefixes_inherit_the_ports_of_covering_ones() {
    let a = agent("    connect:\n      - 10.0.0.0/8:443/tcp\n      - 10.1.0.0/16:80/tcp\n      - 11.0.0.0/8:22/tcp\n");
    assert_eq!(
        net(&a),
        [
            (PROTO_TCP, "10.0.0.0/8".into(), vec![(443, 443)]),
            (PROTO_TCP, "10.1.0.0/16".into(), vec![(80, 80), (443, 443)]),
            (PROTO_TCP, "11.0.0.0/8".into(), vec![(22, 22)]),
        ]
    );
}

#[test]
fn port_ranges_merge() {
    let a = agent("    connect:\n      - 10.0.0.1:80-90/udp\n      - 10.0.0.1:91/udp\n      - 10.0.0.1:85-100/udp\n      - 10.0.0.1:200/udp\n");
    assert_eq!(
        net(&a),
        [(PROTO_UDP, "10.0.0.1/32".into(), vec![(80, 100), (200, 200)])]
    );
}

#[test]
fn too_many_port_ranges_is_an_error_naming_the_network() {
    let rules: String = (0..=MAX_PORT_RANGES)
        .map(|i| format!("      - 10.0.0.1:{}/tcp\n", 1000 + 2 * i))
        .collect();
    let policy = parse(
        "p.yaml",
        &format!("agents:\n  - name: t\n    cgroup: claw/t\n    connect:\n{rules}"),
    )
    .unwrap();
    let err = compile_guarding(&policy, &Guards::default()).unwrap_err();
    assert_eq!(err.agent, "t");
    assert!(err.message.contains("10.0.0.1/32"), "{err}");
    assert!(err.message.contains("at most 16"), "{err}");
}

#[test]
fn wide_connect_rules_do_not_reach_metadata_link_local_or_the_node() {
    let policy = parse(
        "p.yaml",
        "agents:\n  - name: t\n    cgroup: claw/t\n    connect: [0.0.0.0/0:80/tcp, 10.0.0.9:22/tcp, 169.254.169.254/32:80/udp]\n",
    )
    .unwrap();
    let node = crate::policy::rules::Host::ipv4(std::net::Ipv4Addr::new(10, 0, 0, 9), 32);
    let crate::policy::rules::Host::Network {
        address,
        prefix_len,
    } = node
    else {
        unreachable!()
    };
    let mut networks = crate::policy::rules::guarded_networks();
    networks.push((address, prefix_len));
    let guards = Guards {
        credentials: Vec::new(),
        networks,
        ..Guards::default()
    };
    let agent = compile_guarding(&policy, &guards).unwrap().agents.remove(0);
    let view = net(&agent);
    // Link-local (metadata included) is closed to the wide TCP rule; UDP names the metadata
    // address itself, and no UDP rule covers link-local.
    assert!(
        view.contains(&(PROTO_TCP, "169.254.0.0/16".to_owned(), vec![])),
        "{view:?}"
    );
    assert!(!view
        .iter()
        .any(|(p, n, _)| *p == PROTO_UDP && n == "169.254.0.0/16"));
    assert!(view.contains(&(PROTO_UDP, "169.254.169.254/32".to_owned(), vec![(80, 80)])));
    // The node's own address: the rule naming it allows what it names, not the wide rule's
    // port too.
    assert!(view.contains(&(PROTO_TCP, "10.0.0.9/32".to_owned(), vec![(22, 22)])));
    // No IPv6 rule: nothing to carve there.
    assert!(!view.iter().any(|(_, n, _)| n.starts_with('[')));
}

#[test]
fn inside_a_guarded_network_only_rules_inside_it_lend_their_ports() {
    let policy = parse(
        "p.yaml",
        "agents:\n  - name: t\n    cgroup: claw/t\n    connect: [0.0.0.0/0:80/tcp, 169.254.0.0/16:8000/tcp, 169.254.1.0/24:9000/tcp, 127.0.0.1:8080/tcp]\n",
    )
    .unwrap();
    let guards = Guards {
        networks: crate::policy::rules::guarded_networks(),
        ..Guards::default()
    };
    let agent = compile_guarding(&policy, &guards).unwrap().agents.remove(0);
    let view = net(&agent);
    for (network, ports) in [
        ("0.0.0.0/0", vec![(80, 80)]),
        ("169.254.0.0/16", vec![(8000, 8000)]),
        ("169.254.1.0/24", vec![(8000, 8000), (9000, 9000)]),
        ("127.0.0.1/32", vec![(8080, 8080)]),
    ] {
        assert!(
            view.contains(&(PROTO_TCP, network.to_owned(), ports.clone())),
            "{network} {ports:?} in {view:?}"
        );
    }
}

#[test]
fn redirects_send_tcp_connects_of_a_network_to_the_proxy() {
    let agent =
        agent("    redirect:\n      - { to: 0.0.0.0/0:443/tcp, via: \"127.0.0.1:3128\" }\n");
    let [entry] = agent.redirects.as_slice() else {
        panic!("{:?}", agent.redirects)
    };
    assert_eq!(
        (
            entry.prefix_len,
            entry.ports.first,
            entry.ports.last,
            entry.proxy_port
        ),
        (96, 443, 443, 3128)
    );
    assert_eq!(&entry.proxy[10..], &[0xff, 0xff, 127, 0, 0, 1]);
    assert_eq!(entry.key(3).data().protocol, PROTO_TCP);
    for (rule, wanted) in [
        (
            "{ to: api.example.org:443, via: \"127.0.0.1:3128\" }",
            "names a host",
        ),
        (
            "{ to: 10.0.0.0/8:53/udp, via: \"127.0.0.1:3128\" }",
            "only TCP",
        ),
        (
            "{ to: 10.0.0.0/8:443, via: \"127.0.0.1:3128\" }, { to: 10.1.0.0/16:80, via: \"127.0.0.1:3129\" }",
            "may not nest",
        ),
        (
            "{ to: 10.1.2.3:80, via: \"127.0.0.1:3129\" }, { to: 10.0.0.0/8:443, via: \"127.0.0.1:3128\" }",
            "may not nest",
        ),
    ] {
        let policy = parse(
            "p.yaml",
            &format!("agents:\n  - name: t\n    cgroup: claw/t\n    redirect: [{rule}]\n"),
        )
        .unwrap();
        let err = compile_guarding(&policy, &Guards::default()).unwrap_err();
        assert!(err.message.contains(wanted), "{err}");
    }
    let err = parse(
        "p.yaml",
        "agents:\n  - name: t\n    cgroup: claw/t\n    redirect: [{ to: 10.0.0.1:80, via: proxy }]\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("ADDRESS:PORT"), "{err}");
}

#[test]
fn preload_variables_are_refused_unless_allowed() {
    let names = |agent: &CompiledAgent| -> Vec<String> {
        agent
            .env_rules
            .iter()
            .map(|r| String::from_utf8(r.prefix.clone()).unwrap())
            .collect()
    };
    let all = names(&agent(""));
    for name in [
        "LD_PRELOAD=",
        "LD_AUDIT=",
        "NODE_OPTIONS=",
        "PYTHONSTARTUP=",
        "BUN_OPTIONS=",
    ] {
        assert!(all.iter().any(|n| n == name), "{name} in {all:?}");
    }
    let node = names(&agent("    allow_env: [NODE_OPTIONS]\n"));
    assert!(!node.iter().any(|n| n == "NODE_OPTIONS="));
    assert_eq!(node.len(), all.len() - 1);
    let err = parse(
        "p.yaml",
        "agents:\n  - name: t\n    cgroup: claw/t\n    allow_env: [NODE_OPTION]\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("NODE_OPTIONS"), "{err}");
}

#[test]
fn hostnames_are_left_for_the_daemon() {
    let a = agent("    connect:\n      - api.example.org:443/tcp\n      - 10.0.0.1:80/tcp\n");
    assert_eq!(a.hostname_rules.len(), 1);
    assert_eq!(a.net_rules.len(), 1);
}

#[test]
fn net_key_and_value_layout() {
    let rule = NetRule {
        protocol: PROTO_TCP,
        address: [7; 16],
        prefix_len: 120,
        ports: vec![PortRange {
            first: 80,
            last: 81,
        }],
    };
    let key = rule.key(9);
    let prefix_len = key.prefix_len();
    assert_eq!(prefix_len, 40 + 120);
    assert_eq!(key.data().ruleset, [0, 0, 0, 9]);
    let value = rule.value();
    let count = value.count;
    assert_eq!(count, 1);
    assert_eq!((value.ranges[0].first, value.ranges[0].last), (80, 81));
}
