//! Scale on this host: 100 agents with 10,000 rules each (5,000 file paths, 5,000 destinations),
//! loaded, enforced, and applied again live. The kernel's maps hold both generations during the
//! swap; every agent's rules reach the maps, and each agent is held to its own.

mod common;

use std::{fmt::Write as _, time::Instant};

use common::{probe, Host, EPERM};

const AGENTS: usize = 100;
const FILE_RULES: usize = 5_000;
const CONNECT_RULES: usize = 5_000;

/// Agent `i` may reach 127.(i+1).x.y:443 for its 5,000 (x, y); nothing else.
fn allowed(agent: usize, rule: usize) -> String {
    format!("127.{}.{}.{}:443", agent + 1, rule / 250, rule % 250)
}

fn policy_text(host: &mut Host) -> (String, Vec<std::path::PathBuf>) {
    let mut text = String::from("agents:\n");
    let mut cgroups = Vec::new();
    for agent in 0..AGENTS {
        let (relative, absolute) = host.agent(&format!("a{agent}"));
        cgroups.push(absolute);
        write!(
            text,
            "  - name: a{agent}\n    cgroup: {relative}\n    files:\n      read:\n"
        )
        .unwrap();
        for rule in 0..FILE_RULES {
            writeln!(text, "        - /data/a{agent}/f{rule}").unwrap();
        }
        text.push_str("    connect:\n");
        for rule in 0..CONNECT_RULES {
            writeln!(text, "      - {}/tcp", allowed(agent, rule)).unwrap();
        }
    }
    (text, cgroups)
}

fn agents_in_maps(host: &Host) -> Vec<(String, u64, u64)> {
    let status: serde_json::Value =
        serde_json::from_slice(&host.clawctl(&["status", "--json"]).stdout).unwrap();
    status["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_owned(),
                a["file_rules"].as_u64().unwrap(),
                a["net_rules"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn held_to_own_rules(cgroups: &[std::path::PathBuf]) {
    for (agent, cgroup) in [(0, &cgroups[0]), (AGENTS - 1, &cgroups[AGENTS - 1])] {
        let own = allowed(agent, CONNECT_RULES - 1);
        let other = allowed((agent + 1) % AGENTS, 0);
        assert_ne!(
            probe(&["connect", &own], Some(cgroup)),
            EPERM,
            "a{agent} to {own}"
        );
        assert_eq!(
            probe(&["connect", &other], Some(cgroup)),
            EPERM,
            "a{agent} to {other}"
        );
        assert_eq!(
            probe(&["connect", "127.200.0.1:443"], Some(cgroup)),
            EPERM,
            "a{agent}"
        );
    }
}

#[test]
fn a_hundred_agents_with_ten_thousand_rules_each_load_and_apply() {
    let mut host = Host::new("scale");
    let (text, cgroups) = policy_text(&mut host);
    let policy = host.policy(&text);

    let started = Instant::now();
    host.start(&policy, &[]);
    let loaded = started.elapsed();
    let agents = agents_in_maps(&host);
    assert_eq!(agents.len(), AGENTS);
    for (name, file_rules, net_rules) in &agents {
        assert_eq!(
            (*file_rules as usize, *net_rules as usize),
            // And two entries of claw's own: the agent socket, which every agent may connect to,
            // and pidfds (pidfs files on 6.9 and later).
            (FILE_RULES + 2, CONNECT_RULES),
            "{name}"
        );
    }
    held_to_own_rules(&cgroups);

    let started = Instant::now();
    let applied = host.clawctl(&["policy", "apply", policy.to_str().unwrap()]);
    let reapplied = started.elapsed();
    assert!(applied.status.success(), "{applied:?}");
    assert_eq!(agents_in_maps(&host), agents);
    held_to_own_rules(&cgroups);
    eprintln!(
        "{AGENTS} agents x {} rules: started enforcing in {:.1} s, applied again in {:.1} s",
        FILE_RULES + CONNECT_RULES,
        loaded.as_secs_f64(),
        reapplied.as_secs_f64()
    );
    host.stop();
}
