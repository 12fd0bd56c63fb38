//! Tool calls: one command an orchestrator runs for its model, in a cgroup of its own under its
//! agent's, held to the agent's policy or to a narrowing of it valid for that call only. Pure:
//! what a call id may be, and what a narrowing leaves of an agent's rules.

use serde::{Deserialize, Serialize};

use crate::policy::{
    compile::Guards,
    rules::{mask, name_covers, network_text, ConnectRule, Host, PortRange, Protocols, RulePath},
    Agent,
};

/// Why a call id or a narrowing is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NarrowingError {
    #[error(
        "call id `{id}` is not usable — give 1 to {MAX_CALL_ID} characters of A-Z a-z 0-9 . _ - (not starting with `.`), e.g. the orchestrator's tool-call id"
    )]
    BadId { id: String },
    #[error("{flag} {value}: {reason}")]
    Unparsable {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "--allow-connect {rule}: name the host the call needs (e.g. `api.{domain}`), not a pattern — a narrowed call's names are resolved when it starts"
    )]
    Pattern { rule: String, domain: String },
    #[error(
        "{flag} {value}: agent `{agent}` may not {what} — a call can only narrow its agent's policy; grant it in the policy first"
    )]
    Wider {
        flag: &'static str,
        value: String,
        agent: String,
        what: &'static str,
    },
    #[error(
        "{flag} {value}: it is inside the credential store {store}, which agent `{agent}` does not name — a call can only narrow its agent's policy"
    )]
    CredentialStore {
        flag: &'static str,
        value: String,
        store: String,
        agent: String,
    },
    #[error(
        "--allow-connect {value}: it is inside the guarded network {network}, which agent `{agent}` does not name — a call can only narrow its agent's policy"
    )]
    GuardedNetwork {
        value: String,
        network: String,
        agent: String,
    },
}

impl NarrowingError {
    /// Whether the request itself is malformed (rather than asking for more than the agent
    /// may do).
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            Self::BadId { .. } | Self::Unparsable { .. } | Self::Pattern { .. }
        )
    }
}

/// Longest call id: it names a cgroup directory (`call-ID`) and appears in every event.
pub const MAX_CALL_ID: usize = 64;

/// Checks a call id: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with `.` — it becomes a
/// directory name, so nothing that could climb or hide in the cgroup tree.
pub fn check_id(id: &str) -> Result<(), NarrowingError> {
    let valid = !id.is_empty()
        && id.len() <= MAX_CALL_ID
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(NarrowingError::BadId { id: id.to_owned() })
    }
}

/// What one call may do, narrower than its agent: each list given replaces the agent's rules of
/// that kind by their intersection with it; a list left empty keeps the agent's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Narrowing {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connect: Vec<String>,
}

impl Narrowing {
    pub fn is_empty(&self) -> bool {
        self.read.is_empty() && self.write.is_empty() && self.connect.is_empty()
    }
}

/// A narrowing as rules, each checked to lie within what `agent` may do: a call can only
/// narrow its agent's policy, never widen it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    read: Vec<RulePath>,
    write: Vec<RulePath>,
    connect: Vec<ConnectRule>,
}

pub fn parse(narrowing: &Narrowing, agent: &Agent) -> Result<Parsed, NarrowingError> {
    let rules = &agent.rules;
    let unparsable = |flag: &'static str, value: &str| {
        let value = value.to_owned();
        move |reason: String| NarrowingError::Unparsable {
            flag,
            value,
            reason,
        }
    };
    let paths = |asked: &[String], flag| -> Result<Vec<RulePath>, NarrowingError> {
        asked
            .iter()
            .map(|p| RulePath::parse(p).map_err(unparsable(flag, p)))
            .collect()
    };
    let read = paths(&narrowing.read, "--allow-read")?;
    let write = paths(&narrowing.write, "--allow-write")?;
    let connect: Vec<ConnectRule> = narrowing
        .connect
        .iter()
        .map(|c| ConnectRule::parse(c).map_err(unparsable("--allow-connect", c)))
        .collect::<Result<_, _>>()?;
    // A narrowed call's names are resolved when it starts, and a pattern has no address.
    if let Some(pattern) = connect
        .iter()
        .find(|c| matches!(&c.host, Host::Name(name) if name.starts_with('*')))
    {
        return Err(NarrowingError::Pattern {
            rule: pattern.text.clone(),
            domain: pattern.text.trim_start_matches("*.").to_owned(),
        });
    }
    // Executables and libraries are readable too (the loader and interpreters read them).
    let readable: Vec<&RulePath> = rules
        .files
        .read
        .iter()
        .chain(&rules.exec)
        .chain(&rules.libraries)
        .collect();
    let wider = |flag, value: &str, what| NarrowingError::Wider {
        flag,
        value: value.to_owned(),
        agent: agent.name.0.clone(),
        what,
    };
    for path in &read {
        if !readable.iter().any(|rule| covers(rule, path)) {
            return Err(wider("--allow-read", &path.0, "read it"));
        }
    }
    for path in &write {
        if !rules.files.write.iter().any(|rule| covers(rule, path)) {
            return Err(wider("--allow-write", &path.0, "write it"));
        }
    }
    for rule in &connect {
        if !rules.connect.iter().any(|r| connect_covers(r, rule)) {
            return Err(wider("--allow-connect", &rule.text, "connect there"));
        }
    }
    Ok(Parsed {
        read,
        write,
        connect,
    })
}

/// Refuses a narrowing that names something inside a credential store or a guarded network
/// that the agent's own rules do not name: a call's rule would otherwise lift a guard its agent
/// is held to (a call may narrow, never widen).
pub fn check_guards(agent: &Agent, call: &Parsed, guards: &Guards) -> Result<(), NarrowingError> {
    let rules = &agent.rules;
    let readable: Vec<&RulePath> = rules
        .files
        .read
        .iter()
        .chain(&rules.exec)
        .chain(&rules.libraries)
        .collect();
    let writable: Vec<&RulePath> = rules.files.write.iter().collect();
    for (asked, own, flag) in [
        (&call.read, &readable, "--allow-read"),
        (&call.write, &writable, "--allow-write"),
    ] {
        for path in asked {
            for store in guards.credentials.iter().filter(|c| covers(c, path)) {
                let named = own
                    .iter()
                    .any(|r| covers(r, path) && (*r == store || covers(store, r)));
                if !named {
                    return Err(NarrowingError::CredentialStore {
                        flag,
                        value: path.0.clone(),
                        store: store.0.clone(),
                        agent: agent.name.0.clone(),
                    });
                }
            }
        }
    }
    for asked in &call.connect {
        let Host::Network {
            address,
            prefix_len,
        } = asked.host
        else {
            continue;
        };
        let inside = |network: &[u8; 16], length: u8, guard: &([u8; 16], u8)| {
            length >= guard.1 && mask(network, guard.1) == guard.0
        };
        for guard in guards
            .networks
            .iter()
            .filter(|g| inside(&address, prefix_len, g))
        {
            let named = rules.connect.iter().any(|r| {
                connect_covers(r, asked)
                    && matches!(r.host, Host::Network { address: a, prefix_len: l } if inside(&a, l, guard))
            });
            if !named {
                return Err(NarrowingError::GuardedNetwork {
                    value: asked.text.clone(),
                    network: network_text(&guard.0, guard.1),
                    agent: agent.name.0.clone(),
                });
            }
        }
    }
    Ok(())
}

/// The agent as one call sees it: each narrowed kind of rule cut down to its intersection with
/// the call's list. Applied again to the new agent when the policy changes during the call, so
/// that a call never holds more than its agent.
pub fn narrow(agent: &Agent, call: &Parsed) -> Agent {
    let mut narrowed = agent.clone();
    let rules = &mut narrowed.rules;
    if !call.read.is_empty() {
        rules.files.read = intersect_paths(&rules.files.read, &call.read);
    }
    if !call.write.is_empty() {
        rules.files.write = intersect_paths(&rules.files.write, &call.write);
    }
    if !call.connect.is_empty() {
        rules.connect = rules
            .connect
            .iter()
            .flat_map(|r| call.connect.iter().filter_map(|c| intersect_connect(r, c)))
            .collect();
    }
    narrowed
}

/// `rule` grants `path` (and all below it, for a directory).
fn covers(rule: &RulePath, path: &RulePath) -> bool {
    rule == path
        || rule.is_directory()
            && (path.0.starts_with(&rule.0) || path.0 == rule.0.trim_end_matches('/'))
}

fn intersect_paths(agent: &[RulePath], call: &[RulePath]) -> Vec<RulePath> {
    let mut kept: Vec<RulePath> = call
        .iter()
        .filter(|p| agent.iter().any(|r| covers(r, p)))
        .chain(agent.iter().filter(|r| call.iter().any(|p| covers(p, r))))
        .cloned()
        .collect();
    kept.sort();
    kept.dedup();
    kept
}

fn connect_covers(rule: &ConnectRule, asked: &ConnectRule) -> bool {
    intersect_connect(rule, asked).is_some_and(|i| {
        i.host == asked.host && i.ports == asked.ports && i.protocols == asked.protocols
    })
}

/// The destinations both rules allow, as one rule (None if they share none).
fn intersect_connect(a: &ConnectRule, b: &ConnectRule) -> Option<ConnectRule> {
    let host = match (&a.host, &b.host) {
        // The narrower of two names, where one covers the other (`*.github.com` and
        // `api.github.com`).
        (Host::Name(x), Host::Name(y)) if name_covers(x, y) => b.host.clone(),
        (Host::Name(x), Host::Name(y)) if name_covers(y, x) => a.host.clone(),
        (
            Host::Network {
                address: x,
                prefix_len: xl,
            },
            Host::Network {
                address: y,
                prefix_len: yl,
            },
        ) => {
            let shorter = (*xl).min(*yl);
            if mask(x, shorter) != mask(y, shorter) {
                return None;
            }
            if xl >= yl {
                a.host.clone()
            } else {
                b.host.clone()
            }
        }
        _ => return None,
    };
    let ports = PortRange {
        first: a.ports.first.max(b.ports.first),
        last: a.ports.last.min(b.ports.last),
    };
    if ports.first > ports.last {
        return None;
    }
    let protocols = match (a.protocols, b.protocols) {
        (Protocols::Both, p) | (p, Protocols::Both) => p,
        (x, y) if x == y => x,
        _ => return None,
    };
    let host_text = match &host {
        Host::Name(name) => name.clone(),
        // A single address is written without its prefix length, as operators write it.
        Host::Network {
            address,
            prefix_len: 128,
        } => network_text(address, 128)
            .rsplit_once('/')
            .map_or_else(String::new, |(address, _)| address.to_owned()),
        Host::Network {
            address,
            prefix_len,
        } => network_text(address, *prefix_len),
    };
    let port_text = if ports.first == ports.last {
        ports.first.to_string()
    } else {
        format!("{}-{}", ports.first, ports.last)
    };
    let protocol_text = match protocols {
        Protocols::Tcp => "/tcp",
        Protocols::Udp => "/udp",
        Protocols::Both => "",
    };
    Some(ConnectRule {
        host,
        ports,
        protocols,
        text: format!("{host_text}:{port_text}{protocol_text}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy;

    fn tools() -> Agent {
        policy::parse(
            "p.yaml",
            "agents:
  - name: tools
    cgroup: claw/tools
    files:
      read: [/usr/, /workspace/]
      write: [/workspace/]
    exec: [/usr/bin/git]
    connect: [10.0.0.0/8:443/tcp, api.example.org:443/tcp]
",
        )
        .unwrap()
        .agents
        .remove(0)
    }

    fn narrowing(read: &[&str], write: &[&str], connect: &[&str]) -> Narrowing {
        let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        Narrowing {
            read: own(read),
            write: own(write),
            connect: own(connect),
        }
    }

    fn connect_texts(agent: &Agent) -> Vec<&str> {
        agent
            .rules
            .connect
            .iter()
            .map(|r| r.text.as_str())
            .collect()
    }

    fn texts(paths: &[RulePath]) -> Vec<&str> {
        paths.iter().map(|p| p.0.as_str()).collect()
    }

    #[test]
    fn call_ids_are_safe_directory_names() {
        for good in ["c1", "toolu_01ABC", "call.7-x", &"a".repeat(64)] {
            assert!(check_id(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "..", "a/b", "a b", "x\0", &"a".repeat(65)] {
            let err = check_id(bad).unwrap_err().to_string();
            assert!(err.contains("A-Z a-z 0-9"), "{err}");
        }
    }

    #[test]
    fn a_narrowing_keeps_only_what_both_allow() {
        let agent = tools();
        let call = parse(
            &narrowing(
                &["/workspace/repo/"],
                &["/workspace/repo/out/"],
                &["10.1.2.3:443/tcp"],
            ),
            &agent,
        )
        .unwrap();
        let narrowed = narrow(&agent, &call);
        assert_eq!(texts(&narrowed.rules.files.read), ["/workspace/repo/"]);
        assert_eq!(texts(&narrowed.rules.files.write), ["/workspace/repo/out/"]);
        assert_eq!(connect_texts(&narrowed), ["10.1.2.3:443/tcp"]);
        // Programs and libraries stay, or nothing would run.
        assert_eq!(texts(&narrowed.rules.exec), ["/usr/bin/git"]);
    }

    #[test]
    fn a_call_narrows_a_pattern_to_the_hosts_it_needs() {
        let agent = policy::parse(
            "p.yaml",
            "agents:\n  - name: t\n    cgroup: claw/t\n    connect: [\"*.example.org:443/tcp\"]\n",
        )
        .unwrap()
        .agents
        .remove(0);
        let call = parse(&narrowing(&[], &[], &["api.example.org:443/tcp"]), &agent).unwrap();
        let narrowed = narrow(&agent, &call);
        assert_eq!(connect_texts(&narrowed), ["api.example.org:443/tcp"]);
        let err = parse(&narrowing(&[], &[], &["*.example.org:443/tcp"]), &agent)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a pattern"), "{err}");
        let err = parse(&narrowing(&[], &[], &["example.org:443/tcp"]), &agent)
            .unwrap_err()
            .to_string();
        assert!(err.contains("may not connect there"), "{err}");
    }

    #[test]
    fn kinds_not_narrowed_keep_the_agents_rules() {
        let agent = tools();
        let call = parse(&narrowing(&["/workspace/a.txt"], &[], &[]), &agent).unwrap();
        let narrowed = narrow(&agent, &call);
        assert_eq!(texts(&narrowed.rules.files.read), ["/workspace/a.txt"]);
        assert_eq!(texts(&narrowed.rules.files.write), ["/workspace/"]);
        assert_eq!(narrowed.rules.connect.len(), 2);
    }

    #[test]
    fn a_call_cannot_widen_its_agent() {
        let agent = tools();
        for (asked, flag) in [
            (
                narrowing(&["/etc/shadow"], &[], &[]),
                "--allow-read /etc/shadow",
            ),
            (narrowing(&[], &["/usr/"], &[]), "--allow-write /usr/"),
            (
                narrowing(&[], &[], &["10.0.0.1:22/tcp"]),
                "--allow-connect 10.0.0.1:22/tcp",
            ),
            (
                narrowing(&[], &[], &["0.0.0.0/0:443/tcp"]),
                "--allow-connect 0.0.0.0/0:443/tcp",
            ),
            (
                narrowing(&[], &[], &["10.0.0.1:443"]),
                "--allow-connect 10.0.0.1:443",
            ),
        ] {
            let err = parse(&asked, &agent).unwrap_err().to_string();
            assert!(
                err.starts_with(flag) && err.contains("only narrow"),
                "{err}"
            );
        }
        let err = parse(&narrowing(&["relative"], &[], &[]), &agent)
            .unwrap_err()
            .to_string();
        assert!(err.contains("relative"), "{err}");
        assert!(parse(
            &narrowing(&["/usr/bin/git"], &[], &["api.example.org:443/tcp"]),
            &agent
        )
        .is_ok());
    }

    #[test]
    fn a_call_cannot_lift_a_guard_its_agent_is_held_to() {
        let agent = policy::parse(
            "p.yaml",
            "agents:
  - name: t
    cgroup: claw/t
    files:
      read: [/root/, /home/u/.kube/]
    connect: [0.0.0.0/0:80/tcp, 169.254.169.254:80/tcp]
",
        )
        .unwrap()
        .agents
        .remove(0);
        let guards = Guards {
            credentials: crate::policy::rules::credential_paths("u:x:1000:1000::/home/u:/bin/sh\n"),
            networks: crate::policy::rules::guarded_networks(),
            ..Guards::default()
        };
        let check = |n: Narrowing| check_guards(&agent, &parse(&n, &agent).unwrap(), &guards);
        let err = check(narrowing(&["/root/.ssh/id_rsa"], &[], &[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("credential store /root/.ssh/"), "{err}");
        let err = check(narrowing(&[], &[], &["127.0.0.1:80/tcp"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("guarded network 127.0.0.0/8"), "{err}");
        // What the agent names itself a call may narrow to.
        assert!(check(narrowing(
            &["/home/u/.kube/config"],
            &[],
            &["169.254.169.254:80/tcp"]
        ))
        .is_ok());
        assert!(check(narrowing(&["/root/notes.txt"], &[], &["10.1.1.1:80/tcp"])).is_ok());
    }

    #[test]
    fn a_policy_change_during_a_call_narrows_it_further() {
        let call = parse(
            &narrowing(&["/workspace/"], &[], &["10.0.0.0/8:443/tcp"]),
            &tools(),
        )
        .unwrap();
        let mut smaller = tools();
        smaller.rules.files.read = vec![RulePath("/workspace/docs/".to_owned())];
        smaller.rules.connect = vec![ConnectRule::parse("10.9.0.0/16:443-444/tcp").unwrap()];
        let narrowed = narrow(&smaller, &call);
        assert_eq!(texts(&narrowed.rules.files.read), ["/workspace/docs/"]);
        assert_eq!(connect_texts(&narrowed), ["10.9.0.0/16:443/tcp"]);
        smaller.rules.connect = vec![ConnectRule::parse("192.168.0.0/16:443/tcp").unwrap()];
        assert!(narrow(&smaller, &call).rules.connect.is_empty());
    }
}
