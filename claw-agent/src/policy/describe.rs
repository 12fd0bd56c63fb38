//! A policy as a flat list of rule lines — one per thing an agent may do — for `policy check`,
//! `policy diff` and `explain` (which kernel mechanism enforces each kind: `kernel::catalogue`).

use serde::{Deserialize, Serialize};

use crate::policy::Policy;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RuleLine {
    pub agent: String,
    /// cgroup, mode, read, write, exec, libraries, connect, listen, ...
    pub kind: String,
    pub value: String,
}

impl std::fmt::Display for RuleLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} {}", self.agent, self.kind, self.value)
    }
}

/// Every line of `policy`, agents in policy order, lines sorted and unique within an agent.
pub fn rule_lines(policy: &Policy) -> Vec<RuleLine> {
    let mut lines = Vec::new();
    for agent in &policy.agents {
        let name = &agent.name.0;
        let line = |kind: &str, value: String| RuleLine {
            agent: name.clone(),
            kind: kind.to_owned(),
            value,
        };
        let mut own = vec![
            line("cgroup", agent.cgroup.0.clone()),
            line("mode", agent.mode.as_str().to_owned()),
        ];
        if agent.jit {
            own.push(line("jit", "true".to_owned()));
        }
        if agent.devices.gpu {
            own.push(line("devices", "gpu".to_owned()));
        }
        let limits = &agent.limits;
        let values = [
            ("memory_max", limits.memory_max.map(|b| b.to_string())),
            ("memory_high", limits.memory_high.map(|b| b.to_string())),
            ("pids_max", limits.pids_max.map(|n| n.to_string())),
            ("cpu_max", limits.cpu_max.map(|c| c.to_string())),
        ];
        for (name, value) in values {
            if let Some(value) = value {
                own.push(line("limit", format!("{name} {value}")));
            }
        }
        own.extend(
            agent
                .allow_env
                .iter()
                .map(|n| line("allow_env", n.0.clone())),
        );
        let rules = &agent.rules;
        own.extend(rules.files.read.iter().map(|p| line("read", p.0.clone())));
        own.extend(rules.files.write.iter().map(|p| line("write", p.0.clone())));
        own.extend(rules.exec.iter().map(|p| line("exec", p.0.clone())));
        own.extend(
            rules
                .libraries
                .iter()
                .map(|p| line("libraries", p.0.clone())),
        );
        own.extend(rules.connect.iter().map(|c| match c.host {
            crate::policy::rules::Host::Name(_) => line("connect-name", c.text.clone()),
            _ => line("connect", c.text.clone()),
        }));
        own.extend(rules.listen.iter().map(|l| line("listen", l.to_string())));
        own.extend(
            rules
                .redirect
                .iter()
                .map(|r| line("redirect", r.to_string())),
        );
        own.sort();
        own.dedup();
        lines.extend(own);
    }
    lines
}

/// Lines only in `new` (added) and only in `old` (removed).
pub fn diff(old: &[RuleLine], new: &[RuleLine]) -> (Vec<RuleLine>, Vec<RuleLine>) {
    let added = new.iter().filter(|l| !old.contains(l)).cloned().collect();
    let removed = old.iter().filter(|l| !new.contains(l)).cloned().collect();
    (added, removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse;

    #[test]
    fn lines_are_flat_sorted_and_diffable() {
        let old = parse(
            "a.yaml",
            "agents:\n  - name: t\n    cgroup: claw/t\n    files:\n      read: [/usr/, /lib/]\n",
        )
        .unwrap();
        let new = parse(
            "b.yaml",
            "agents:\n  - name: t\n    cgroup: claw/t\n    mode: audit\n    files:\n      read: [/usr/]\n    connect: [10.0.0.1:80/tcp]\n",
        )
        .unwrap();
        let (old, new) = (rule_lines(&old), rule_lines(&new));
        assert_eq!(old[0].to_string(), "t: cgroup claw/t");
        let (added, removed) = diff(&old, &new);
        let added: Vec<String> = added.iter().map(ToString::to_string).collect();
        let removed: Vec<String> = removed.iter().map(ToString::to_string).collect();
        assert_eq!(added, ["t: connect 10.0.0.1:80/tcp", "t: mode audit"]);
        assert_eq!(removed, ["t: mode enforce", "t: read /lib/"]);
    }
}
