//! The policy compiler: a parsed policy in, the exact entries of the kernel's maps out. Pure (no
//! I/O), so every rule's meaning in the kernel is unit-tested here.

use std::collections::BTreeMap;

use aya::maps::lpm_trie::Key;
use claw_common::{access, PathRuleKey, RULE_PATH_BYTES};

use crate::policy::{Policy, RulePath};

/// What the daemon needs to install one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    pub agents: Vec<CompiledAgent>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledAgent {
    /// The id the kernel reports in events; 1-based, in policy order.
    pub id: u32,
    pub name: String,
    /// Relative to the cgroup v2 mount.
    pub cgroup: String,
    pub file_rules: Vec<FileRule>,
}

/// One entry of the FILE_RULES trie: the agent, the bytes a path must start with, the access
/// granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRule {
    pub agent_id: u32,
    /// A directory rule ends in `/`; an exact-path rule ends in NUL, so it cannot match a longer
    /// path.
    pub prefix: Vec<u8>,
    pub access: u32,
}

impl FileRule {
    pub fn key(&self) -> Key<PathRuleKey> {
        let mut path = [0u8; RULE_PATH_BYTES];
        path[..self.prefix.len()].copy_from_slice(&self.prefix);
        Key::new(
            (32 + 8 * self.prefix.len()) as u32,
            PathRuleKey {
                agent_id: self.agent_id.to_be_bytes(),
                path,
            },
        )
    }
}

pub fn compile(policy: &Policy) -> Compiled {
    let agents = policy
        .agents
        .0
        .iter()
        .zip(1u32..)
        .map(|(agent, id)| {
            let mut prefixes: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
            for path in &agent.files.read {
                for prefix in prefixes_of(path) {
                    *prefixes.entry(prefix).or_default() |= access::READ;
                }
            }
            CompiledAgent {
                id,
                name: agent.name.0.clone(),
                cgroup: agent.cgroup.0.clone(),
                file_rules: prefixes
                    .into_iter()
                    .map(|(prefix, access)| FileRule {
                        agent_id: id,
                        prefix,
                        access,
                    })
                    .collect(),
            }
        })
        .collect();
    Compiled { agents }
}

/// `/dir/` grants everything below the directory and the directory itself (which the kernel
/// resolves as `/dir`); `/file` grants exactly that path.
fn prefixes_of(path: &RulePath) -> Vec<Vec<u8>> {
    let bytes = path.0.as_bytes();
    if !path.is_directory() {
        return vec![[bytes, b"\0"].concat()];
    }
    let mut prefixes = vec![bytes.to_vec()];
    if bytes.len() > 1 {
        prefixes.push([&bytes[..bytes.len() - 1], b"\0"].concat());
    }
    prefixes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse;

    fn compiled(text: &str) -> Compiled {
        compile(&parse("p.yaml", text).unwrap())
    }

    fn prefixes(agent: &CompiledAgent) -> Vec<String> {
        agent
            .file_rules
            .iter()
            .map(|r| {
                String::from_utf8(r.prefix.clone())
                    .unwrap()
                    .replace('\0', "$")
            })
            .collect()
    }

    #[test]
    fn directory_rules_cover_below_and_the_directory_itself() {
        let c = compiled(
            "agents:\n  - name: t\n    cgroup: claw/t\n    files:\n      read: [/workspace/]\n",
        );
        assert_eq!(prefixes(&c.agents[0]), ["/workspace$", "/workspace/"]);
    }

    #[test]
    fn file_rules_are_exact() {
        let c = compiled(
            "agents:\n  - name: t\n    cgroup: claw/t\n    files:\n      read: [/etc/hosts]\n",
        );
        assert_eq!(prefixes(&c.agents[0]), ["/etc/hosts$"]);
    }

    #[test]
    fn root_rule_is_one_prefix() {
        let c = compiled("agents:\n  - name: t\n    cgroup: claw/t\n    files:\n      read: [/]\n");
        assert_eq!(prefixes(&c.agents[0]), ["/"]);
    }

    #[test]
    fn duplicates_merge_and_ids_follow_policy_order() {
        let c = compiled(
            "agents:\n  - name: a\n    cgroup: claw/a\n    files:\n      read: [/x/, /x/]\n  - name: b\n    cgroup: claw/b\n",
        );
        assert_eq!(c.agents[0].id, 1);
        assert_eq!(c.agents[1].id, 2);
        assert_eq!(c.agents[0].file_rules.len(), 2);
        assert!(c.agents[1].file_rules.is_empty());
        assert!(c.agents[0]
            .file_rules
            .iter()
            .all(|r| r.access == access::READ));
    }

    #[test]
    fn key_carries_agent_then_path_and_counts_bits() {
        let rule = FileRule {
            agent_id: 0x0102_0304,
            prefix: b"/usr/".to_vec(),
            access: access::READ,
        };
        let key = rule.key();
        let prefix_len = key.prefix_len();
        assert_eq!(prefix_len, 32 + 5 * 8);
        let data = key.data();
        assert_eq!(data.agent_id, [1, 2, 3, 4]);
        assert_eq!(&data.path[..5], b"/usr/");
        assert!(data.path[5..].iter().all(|&b| b == 0));
    }
}
