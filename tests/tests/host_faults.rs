//! Faults on this host: the policy file replaced by garbage before a reload, and an agent's
//! cgroup removed from outside. claw-agent keeps enforcing what it enforced, says what happened,
//! and recovers on the next apply.

mod common;

use common::{probe, Host, EPERM};

fn connect_allowed_and_denied(host: &Host, agent: &std::path::Path, allowed: &str, denied: &str) {
    assert_eq!(probe(&["connect", denied], Some(agent)), EPERM, "{denied}");
    assert_ne!(
        probe(&["connect", allowed], Some(agent)),
        EPERM,
        "{allowed} (daemon log in {})",
        host.dir.path().display()
    );
}

#[test]
fn garbage_in_the_policy_file_at_reload_changes_nothing() {
    let mut host = Host::new("garbage");
    let (relative, agent) = host.agent("a");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let allowed = listener.local_addr().unwrap().to_string();
    let policy = host.policy(&format!(
        "agents:\n  - name: a\n    cgroup: {relative}\n    connect: [\"{allowed}/tcp\"]\n"
    ));
    host.start(&policy, &[]);
    let generation = |host: &Host| {
        let status: serde_json::Value =
            serde_json::from_slice(&host.clawctl(&["status", "--json"]).stdout).unwrap();
        status["generation"].as_u64().unwrap()
    };
    let before = generation(&host);
    std::fs::write(&policy, "agents:\n  - name: a\n    cgroup: [not a path\n").unwrap();
    host.reload();
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(generation(&host), before, "a garbage policy was applied");
    connect_allowed_and_denied(&host, &agent, &allowed, "127.0.0.1:9");
    assert!(host.clawctl(&["status"]).status.success());
}

#[test]
fn an_agent_cgroup_removed_from_outside_comes_back_enforced_at_the_next_apply() {
    let mut host = Host::new("removed");
    let (relative, agent) = host.agent("a");
    let policy = host.policy(&format!("agents:\n  - name: a\n    cgroup: {relative}\n"));
    host.start(&policy, &[]);
    std::fs::remove_dir(&agent).expect("removing the empty agent cgroup");
    assert!(
        host.clawctl(&["status"]).status.success(),
        "claw-agent stopped answering"
    );
    let applied = host.clawctl(&["policy", "apply", policy.to_str().unwrap()]);
    assert!(applied.status.success(), "{applied:?}");
    assert!(agent.exists(), "the apply did not recreate the cgroup");
    assert_eq!(probe(&["connect", "127.0.0.1:9"], Some(&agent)), EPERM);
}
