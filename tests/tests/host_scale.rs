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

/// A destination agent 0 is given by the changed policy instead of its last one.
const CHANGED: &str = "127.250.0.1:443";

/// The agents' cgroups: (relative to the root, for the policy; absolute, to run in).
fn agent_cgroups(host: &mut Host) -> (Vec<String>, Vec<std::path::PathBuf>) {
    (0..AGENTS)
        .map(|agent| host.agent(&format!("a{agent}")))
        .unzip()
}

/// The policy; with `changed`, agent 0's last destination is CHANGED instead.
fn policy_text(relatives: &[String], changed: bool) -> String {
    let mut text = String::from("agents:\n");
    for (agent, relative) in relatives.iter().enumerate() {
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
            let destination = if changed && agent == 0 && rule == CONNECT_RULES - 1 {
                CHANGED.to_owned()
            } else {
                allowed(agent, rule)
            };
            writeln!(text, "      - {destination}/tcp").unwrap();
        }
    }
    text
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
    let (relatives, cgroups) = agent_cgroups(&mut host);
    let policy = host.policy(&policy_text(&relatives, false));

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

    // One agent changed: it alone gets a new ruleset, the others keep theirs (not rewritten),
    // and every agent is held to its rules of the new policy.
    let changed = policy.with_file_name("changed.yaml");
    std::fs::write(&changed, policy_text(&relatives, true)).unwrap();
    let started = Instant::now();
    let applied = host.clawctl(&["policy", "apply", changed.to_str().unwrap()]);
    let one_changed = started.elapsed();
    assert!(applied.status.success(), "{applied:?}");
    let dropped = allowed(0, CONNECT_RULES - 1);
    assert_eq!(
        probe(&["connect", &dropped], Some(&cgroups[0])),
        EPERM,
        "a0 to {dropped}, no longer in its rules"
    );
    assert_ne!(
        probe(&["connect", CHANGED], Some(&cgroups[0])),
        EPERM,
        "a0 to {CHANGED}, now in its rules"
    );
    assert_eq!(
        probe(&["connect", CHANGED], Some(&cgroups[1])),
        EPERM,
        "a1 to {CHANGED}"
    );
    let unchanged = allowed(AGENTS - 1, CONNECT_RULES - 1);
    assert_ne!(
        probe(&["connect", &unchanged], Some(&cgroups[AGENTS - 1])),
        EPERM,
        "a{} to {unchanged}, kept",
        AGENTS - 1
    );
    // And back: the changed agent's original rules again.
    let applied = host.clawctl(&["policy", "apply", policy.to_str().unwrap()]);
    assert!(applied.status.success(), "{applied:?}");
    held_to_own_rules(&cgroups);
    assert_eq!(
        probe(&["connect", CHANGED], Some(&cgroups[0])),
        EPERM,
        "a0 to {CHANGED} after going back"
    );
    eprintln!(
        "{AGENTS} agents x {} rules: started enforcing in {:.1} s, applied again in {:.1} s, with one agent changed in {:.1} s",
        FILE_RULES + CONNECT_RULES,
        loaded.as_secs_f64(),
        reapplied.as_secs_f64(),
        one_changed.as_secs_f64()
    );
    host.stop();
}
