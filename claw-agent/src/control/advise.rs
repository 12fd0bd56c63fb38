//! Drafting rules from denials (`clawctl advise`, `clawctl allow --persist`): each denial becomes
//! the narrowest rule that would have allowed it — its exact path or destination, never a
//! directory — written into the policy file's text where that agent's rules of that kind are,
//! so that the operator reviews a small diff of the file they keep, comments and all.
//!
//! Pure: events and text in, rules and text out.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{
    events::event::{self, Event},
    policy,
    policy::rules,
};

/// Where a rule goes in an agent's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Read,
    Write,
    Exec,
    Libraries,
    Connect,
    Listen,
}

impl Kind {
    /// The keys leading to the list in an agent's entry.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::Read => &["files", "read"],
            Kind::Write => &["files", "write"],
            Kind::Exec => &["exec"],
            Kind::Libraries => &["libraries"],
            Kind::Connect => &["connect"],
            Kind::Listen => &["listen"],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Read => "files.read",
            Kind::Write => "files.write",
            Kind::Exec => "exec",
            Kind::Libraries => "libraries",
            Kind::Connect => "connect",
            Kind::Listen => "listen",
        }
    }
}

/// One rule to add.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rule {
    pub agent: String,
    pub kind: Kind,
    pub value: String,
}

/// Rules that would have allowed `denials`, and for those no rule can allow, why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Draft {
    pub rules: BTreeSet<Rule>,
    pub notes: BTreeSet<String>,
}

/// The narrowest rules that would have allowed each denial among `events`.
pub fn draft<'a>(events: impl IntoIterator<Item = &'a Event>) -> Draft {
    let mut draft = Draft::default();
    for event in events
        .into_iter()
        .filter(|e| e.kind == event::Kind::Deny || e.kind == event::Kind::Audit)
    {
        let rule = |kind, value: &str| Rule {
            agent: event.agent.clone(),
            kind,
            value: value.to_owned(),
        };
        let access = event.access.as_deref().unwrap_or("");
        let needs = |name: &str| access.split('+').any(|a| a == name);
        match (
            event.op.as_str(),
            event.path.as_deref(),
            event.destination.as_deref(),
        ) {
            ("connect" | "sendmsg", _, Some(destination)) => {
                draft.rules.insert(rule(Kind::Connect, destination));
            }
            ("bind" | "listen", _, Some(address)) => {
                draft.rules.insert(rule(Kind::Listen, address));
            }
            (op, Some(path), _) if path.starts_with('/') && !needs("admin") => {
                // A rule ending in `/` would cover a whole tree, not the one object denied.
                if path.ends_with('/') || rules::RulePath::parse(path).is_err() {
                    draft.notes.insert(format!(
                        "{}: {op} {path}: the path cannot be named by a rule (too long or not normalised) — name a parent directory",
                        event.agent
                    ));
                    continue;
                }
                // files.write is also what lets an agent connect to a Unix socket.
                if needs("write") || needs("connect") {
                    if let Some(tree) = rules::protected_tree(path) {
                        draft.notes.insert(format!(
                            "{}: {op} {path}: no rule may grant writing inside {tree} ({})",
                            event.agent,
                            rules::why_protected(tree)
                        ));
                        continue;
                    }
                    draft.rules.insert(rule(Kind::Write, path));
                }
                if needs("exec") {
                    draft.rules.insert(rule(Kind::Exec, path));
                } else if needs("map") {
                    draft.rules.insert(rule(Kind::Libraries, path));
                } else if needs("read") {
                    draft.rules.insert(rule(Kind::Read, path));
                }
            }
            (op, _, _) => {
                draft.notes.insert(format!(
                    "{}: {op} {}: no rule can allow it (claw denies it to every agent)",
                    event.agent,
                    event.object().unwrap_or("")
                ));
            }
        }
    }
    draft
}

/// Why drafted rules could not be written into the policy text: the operator adds them by hand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdviseError {
    #[error("the drafted policy does not parse: {0}")]
    Unparsable(String),
    #[error("no agent `{agent}` in the policy file")]
    NoAgentInFile { agent: String },
    #[error("agent `{agent}` is not in {file}")]
    NoAgent { agent: String, file: String },
    #[error("could not place `{value}` under {kind} of agent `{agent}` in {file} — add it there by hand")]
    NotPlaced {
        value: String,
        kind: &'static str,
        agent: String,
        file: String,
    },
    #[error("`{key}` of agent `{agent}` is written inline — add `{value}` under {kind} by hand")]
    Inline {
        key: String,
        agent: String,
        value: String,
        kind: &'static str,
    },
    #[error("{kind} of agent `{agent}` is not a list — add `{value}` by hand")]
    NotAList {
        kind: &'static str,
        agent: String,
        value: String,
    },
}

/// `text` (the policy file at `file`) with `rules` added to their agents, checked by parsing
/// the result: every rule must be in force in it, and it must be a valid policy.
pub fn add_rules(file: &str, text: &str, rules: &BTreeSet<Rule>) -> Result<String, AdviseError> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for rule in rules {
        insert(&mut lines, rule)?;
    }
    let mut edited = lines.join("\n");
    edited.push('\n');
    let parsed =
        policy::parse(file, &edited).map_err(|err| AdviseError::Unparsable(err.to_string()))?;
    for rule in rules {
        let agent = parsed
            .agents
            .iter()
            .find(|a| a.name.0 == rule.agent)
            .ok_or_else(|| AdviseError::NoAgent {
                agent: rule.agent.clone(),
                file: file.to_owned(),
            })?;
        let r = &agent.rules;
        let present = match rule.kind {
            Kind::Read => r.files.read.iter().any(|p| p.0 == rule.value),
            Kind::Write => r.files.write.iter().any(|p| p.0 == rule.value),
            Kind::Exec => r.exec.iter().any(|p| p.0 == rule.value),
            Kind::Libraries => r.libraries.iter().any(|p| p.0 == rule.value),
            Kind::Connect => r.connect.iter().any(|c| c.text == rule.value),
            Kind::Listen => r.listen.iter().any(|l| l.0.text == rule.value),
        };
        if !present {
            return Err(AdviseError::NotPlaced {
                value: rule.value.clone(),
                kind: rule.kind.name(),
                agent: rule.agent.clone(),
                file: file.to_owned(),
            });
        }
    }
    Ok(edited)
}

/// Indentation of a line (spaces).
fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_content(line: &str) -> bool {
    let trimmed = line.trim();
    !trimmed.is_empty() && !trimmed.starts_with('#')
}

/// The value of `key: value` on a line at `at` indentation, if the line is that key.
fn key_value<'a>(line: &'a str, key: &str, at: usize) -> Option<&'a str> {
    if indent(line) != at {
        return None;
    }
    let rest = line
        .trim_start()
        .strip_prefix('-')
        .map_or(line.trim_start(), |r| r.trim_start());
    let value = rest.strip_prefix(key)?.strip_prefix(':')?;
    Some(value)
}

/// `value` as a YAML scalar: plain where that is unambiguous, else double-quoted.
fn scalar(value: &str) -> String {
    let plain = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-:+@".contains(c))
        && !value.contains(": ")
        && !value.ends_with(':');
    if plain {
        value.to_owned()
    } else {
        serde_json::to_string(value).unwrap_or_default()
    }
}

/// The range of lines (start inclusive, end exclusive) of the agent entry named `agent`, and the
/// indentation of its keys.
fn agent_block(lines: &[String], agent: &str) -> Option<(usize, usize, usize)> {
    let start = lines.iter().position(|line| {
        let trimmed = line.trim_start();
        trimmed.strip_prefix('-').is_some_and(|rest| {
            rest.trim_start()
                .strip_prefix("name:")
                .is_some_and(|name| strip_comment(name).trim().trim_matches(['"', '\'']) == agent)
        })
    })?;
    let item_indent = indent(&lines[start]);
    let key_indent = item_indent
        + 1
        + (lines[start][item_indent + 1..].len()
            - lines[start][item_indent + 1..].trim_start().len());
    let end = (start + 1..lines.len())
        .find(|&i| is_content(&lines[i]) && indent(&lines[i]) <= item_indent)
        .unwrap_or(lines.len());
    Some((start, end, key_indent))
}

fn strip_comment(value: &str) -> &str {
    match value.find(" #") {
        Some(at) => &value[..at],
        None => value,
    }
}

/// Adds `rule` to `lines`, where the agent's list of that kind is (made if missing).
fn insert(lines: &mut Vec<String>, rule: &Rule) -> Result<(), AdviseError> {
    let (start, end, key_indent) =
        agent_block(lines, &rule.agent).ok_or_else(|| AdviseError::NoAgentInFile {
            agent: rule.agent.clone(),
        })?;
    let value = scalar(&rule.value);
    let keys = rule.kind.keys();
    let (mut from, mut to, mut at) = (start, end, key_indent);
    for (depth, key) in keys.iter().enumerate() {
        let leaf = depth == keys.len() - 1;
        let found = (from..to).find(|&i| key_value(&lines[i], key, at).is_some());
        let Some(line) = found else {
            // Missing: made right after the parent's line (or at the end of the agent).
            let mut new = Vec::new();
            let mut pad = at;
            for (d, k) in keys[depth..].iter().enumerate() {
                if depth + d == keys.len() - 1 {
                    new.push(format!("{}{k}: [{value}]", " ".repeat(pad)));
                } else {
                    new.push(format!("{}{k}:", " ".repeat(pad)));
                    pad += 2;
                }
            }
            let position = if depth == 0 { to } else { from };
            lines.splice(position..position, new);
            return Ok(());
        };
        let value_text = strip_comment(key_value(&lines[line], key, at).unwrap_or(""))
            .trim()
            .to_owned();
        // The key's own block: the lines after it that are indented deeper.
        let block_end = (line + 1..to)
            .find(|&i| is_content(&lines[i]) && indent(&lines[i]) <= at)
            .unwrap_or(to);
        if !leaf {
            if !value_text.is_empty() {
                return Err(AdviseError::Inline {
                    key: key.to_string(),
                    agent: rule.agent.clone(),
                    value: rule.value.clone(),
                    kind: rule.kind.name(),
                });
            }
            let child = (line + 1..block_end).find(|&i| is_content(&lines[i]));
            at = child.map_or(at + 2, |c| indent(&lines[c]));
            (from, to) = (line + 1, block_end);
            continue;
        }
        if value_text.starts_with('[') && value_text.ends_with(']') {
            let close = lines[line].rfind(']').unwrap_or(lines[line].len());
            let inside = value_text[1..value_text.len() - 1].trim();
            let addition = if inside.is_empty() {
                value
            } else {
                format!(", {value}")
            };
            lines[line].insert_str(close, &addition);
            return Ok(());
        }
        if !value_text.is_empty() {
            return Err(AdviseError::NotAList {
                kind: rule.kind.name(),
                agent: rule.agent.clone(),
                value: rule.value.clone(),
            });
        }
        let items: Vec<usize> = (line + 1..block_end)
            .filter(|&i| lines[i].trim_start().starts_with("- "))
            .collect();
        let (position, pad) = match items.last() {
            Some(&last) => (last + 1, indent(&lines[last])),
            None => (line + 1, at + 2),
        };
        lines.insert(position, format!("{}- {value}", " ".repeat(pad)));
        return Ok(());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::event::tests::sample;

    const POLICY: &str = "\
# Tools.
agents:
  - name: tools
    cgroup: claw/tools   # the executor
    files:
      read: [/usr/, /workspace/]   # code
    exec:
      - /usr/bin/git
    connect: []
  - name: other
    cgroup: claw/other
";

    fn denial(op: &str, path: Option<&str>, destination: Option<&str>, access: &str) -> Event {
        let mut event = sample("deny");
        event.op = op.to_owned();
        event.path = path.map(str::to_owned);
        event.destination = destination.map(str::to_owned);
        event.access = (!access.is_empty()).then(|| access.to_owned());
        event
    }

    fn rule(agent: &str, kind: Kind, value: &str) -> Rule {
        Rule {
            agent: agent.to_owned(),
            kind,
            value: value.to_owned(),
        }
    }

    #[test]
    fn each_denial_becomes_its_narrowest_rule() {
        let events = [
            denial("open", Some("/etc/hosts"), None, "read"),
            denial("open", Some("/etc/hosts"), None, "read"),
            denial("open", Some("/data/out.txt"), None, "read+write"),
            denial("exec", Some("/usr/bin/curl"), None, "exec"),
            denial("mmap", Some("/opt/lib/x.so"), None, "map"),
            denial("connect", None, Some("10.0.0.1:443/tcp"), ""),
            denial("listen", None, Some("0.0.0.0:4444/tcp"), ""),
            denial("mount", None, None, "admin"),
            denial("open", Some("/sys/fs/cgroup/cgroup.procs"), None, "write"),
            denial("open", Some("/"), None, "read"),
        ];
        let draft = draft(&events);
        let rules: Vec<(Kind, &str)> = draft
            .rules
            .iter()
            .map(|r| (r.kind, r.value.as_str()))
            .collect();
        assert_eq!(
            rules,
            [
                (Kind::Read, "/data/out.txt"),
                (Kind::Read, "/etc/hosts"),
                (Kind::Write, "/data/out.txt"),
                (Kind::Exec, "/usr/bin/curl"),
                (Kind::Libraries, "/opt/lib/x.so"),
                (Kind::Connect, "10.0.0.1:443/tcp"),
                (Kind::Listen, "0.0.0.0:4444/tcp"),
            ]
        );
        assert_eq!(draft.notes.len(), 3, "{:?}", draft.notes);
        assert!(draft.notes.iter().any(|n| n.contains("no rule can allow")));
        assert!(draft
            .notes
            .iter()
            .any(|n| n.contains("claw's own enforcement")));
    }

    #[test]
    fn rules_go_where_the_agents_lists_are_and_comments_stay() {
        let rules = BTreeSet::from([
            rule("tools", Kind::Read, "/etc/hosts"),
            rule("tools", Kind::Exec, "/usr/bin/curl"),
            rule("tools", Kind::Connect, "[::1]:8080/tcp"),
            rule("tools", Kind::Write, "/data/out.txt"),
            rule("other", Kind::Read, "/srv/x"),
        ]);
        let edited = add_rules("p.yaml", POLICY, &rules).unwrap();
        assert_eq!(
            edited,
            "\
# Tools.
agents:
  - name: tools
    cgroup: claw/tools   # the executor
    files:
      write: [/data/out.txt]
      read: [/usr/, /workspace/, /etc/hosts]   # code
    exec:
      - /usr/bin/git
      - /usr/bin/curl
    connect: [\"[::1]:8080/tcp\"]
  - name: other
    cgroup: claw/other
    files:
      read: [/srv/x]
"
        );
    }

    #[test]
    fn what_cannot_be_placed_is_refused_not_guessed() {
        let inline =
            "agents:\n  - name: tools\n    cgroup: claw/tools\n    files: { read: [/usr/] }\n";
        let err = add_rules(
            "p.yaml",
            inline,
            &BTreeSet::from([rule("tools", Kind::Read, "/x")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("by hand"), "{err}");
        let err = add_rules(
            "p.yaml",
            POLICY,
            &BTreeSet::from([rule("ghost", Kind::Read, "/x")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no agent `ghost`"), "{err}");
    }
}
