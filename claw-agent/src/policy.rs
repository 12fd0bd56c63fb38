//! The policy file: YAML, parsed strictly (unknown keys are errors), every error placed at
//! `file:line:col` with what is wrong and how to fix it.
//!
//! YAML through serde-saphyr: serde_yaml is archived, and its forks place an error raised while
//! validating a value at the enclosing mapping; serde-saphyr is maintained, pure Rust, and places
//! every error, including those of the validating `Deserialize` impls below, at the offending
//! scalar, with a snippet of the line.

use std::{collections::HashSet, fmt, path::Path};

use serde::{de, Deserialize, Deserializer};

/// Longest path a file rule may name: the kernel's rule key holds 252 bytes, and an exact-file
/// rule needs one more byte for its terminating NUL.
pub const MAX_RULE_PATH: usize = claw_common::RULE_PATH_BYTES - 1;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub agents: Agents,
}

/// The agents, in file order; names and cgroups are unique.
#[derive(Debug)]
pub struct Agents(pub Vec<Agent>);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    pub name: AgentName,
    pub cgroup: CgroupPath,
    #[serde(default)]
    pub files: Files,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Files {
    /// Paths the agent may open. `/dir/` covers the directory and all below it; `/dir/file`
    /// covers exactly that path.
    #[serde(default)]
    pub read: Vec<RulePath>,
}

/// An agent's name: what operators see in events and pass to `clawctl`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentName(pub String);

/// A cgroup path relative to the cgroup v2 mount, such as `claw/tools`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CgroupPath(pub String);

/// An absolute, normalised path in a file rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RulePath(pub String);

impl RulePath {
    /// A trailing `/` names a directory and everything below it.
    pub fn is_directory(&self) -> bool {
        self.0.ends_with('/')
    }
}

/// A policy that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    pub file: String,
    /// 1-based; 0 when the error has no position (the file could not be read).
    pub line: u64,
    pub column: u64,
    pub message: String,
    /// The offending lines with a caret under the error, for people; may be empty.
    pub snippet: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )?;
            if !self.snippet.is_empty() {
                write!(f, "\n{}", self.snippet)?;
            }
            Ok(())
        }
    }
}

pub fn load(path: &Path) -> Result<Policy, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|err| PolicyError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        message: format!("cannot read the policy file: {err}"),
        snippet: String::new(),
    })?;
    parse(&path.display().to_string(), &text)
}

/// Parses policy text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Policy, PolicyError> {
    serde_saphyr::from_str(text).map_err(|err| {
        let (line, column) = err.location().map_or((1, 1), |at| (at.line(), at.column()));
        let message = err.without_snippet().to_string();
        // The position is also appended in words; it already leads as line:col.
        let message = match message.rfind(" at line ") {
            Some(cut) => message[..cut].to_owned(),
            None => message,
        };
        let rendered = err.to_string();
        let snippet = rendered
            .split_once('\n')
            .map(|(_, rest)| rest.replace("<input>", file))
            .unwrap_or_default();
        PolicyError {
            file: file.to_owned(),
            line,
            column,
            message,
            snippet,
        }
    })
}

fn invalid<E: de::Error>(what: impl fmt::Display) -> E {
    E::custom(what)
}

impl<'de> Deserialize<'de> for AgentName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        let valid_chars = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if name.is_empty() || name.len() > 63 || !valid_chars {
            return Err(invalid(format_args!(
                "agent name `{name}` is not valid — use 1 to 63 characters from a-z, 0-9, `-` and `_`"
            )));
        }
        Ok(Self(name))
    }
}

impl<'de> Deserialize<'de> for CgroupPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let path = String::deserialize(deserializer)?;
        if path.starts_with('/') {
            return Err(invalid(format_args!(
                "cgroup `{path}` is absolute — write it relative to the cgroup v2 mount, e.g. `claw/tools`"
            )));
        }
        let trimmed = path.trim_end_matches('/');
        if trimmed.is_empty()
            || trimmed
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == ".." || part.contains('\0'))
        {
            return Err(invalid(format_args!(
                "cgroup `{path}` is not a plain relative path — use names separated by single `/`, without `.` or `..`, e.g. `claw/tools`"
            )));
        }
        Ok(Self(trimmed.to_owned()))
    }
}

impl<'de> Deserialize<'de> for RulePath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let path = String::deserialize(deserializer)?;
        if !path.starts_with('/') {
            return Err(invalid(format_args!(
                "path `{path}` is relative — rules name absolute paths, e.g. `/workspace/`"
            )));
        }
        let inner = path.trim_start_matches('/');
        let inner = inner.strip_suffix('/').unwrap_or(inner);
        if path != "/"
            && inner
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == ".." || part.contains('\0'))
        {
            return Err(invalid(format_args!(
                "path `{path}` is not normalised — the kernel matches resolved paths, so write it without `//`, `.` or `..`"
            )));
        }
        if path.len() > MAX_RULE_PATH {
            return Err(invalid(format_args!(
                "path `{}…` is {} bytes long — rules hold at most {MAX_RULE_PATH} bytes; name a shorter parent directory ending in `/`",
                &path[..40],
                path.len()
            )));
        }
        Ok(Self(path))
    }
}

impl<'de> Deserialize<'de> for Agents {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AgentsVisitor;

        impl<'de> de::Visitor<'de> for AgentsVisitor {
            type Value = Agents;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of agents")
            }

            // Checked while reading so that a duplicate is reported where it stands.
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Agents, A::Error> {
                let mut agents: Vec<Agent> = Vec::new();
                let mut names = HashSet::new();
                let mut cgroups = HashSet::new();
                while let Some(agent) = seq.next_element::<Agent>()? {
                    if !names.insert(agent.name.clone()) {
                        return Err(invalid(format_args!(
                            "agent name `{}` is used twice — give every agent its own name",
                            agent.name.0
                        )));
                    }
                    if !cgroups.insert(agent.cgroup.clone()) {
                        return Err(invalid(format_args!(
                            "cgroup `{}` is given to two agents — give every agent its own cgroup",
                            agent.cgroup.0
                        )));
                    }
                    agents.push(agent);
                }
                Ok(Agents(agents))
            }
        }

        deserializer.deserialize_seq(AgentsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "\
agents:
  - name: tools
    cgroup: claw/tools
    files:
      read: [/usr/, /lib/, /workspace/]
";

    fn error(text: &str) -> PolicyError {
        parse("p.yaml", text).expect_err("policy should be rejected")
    }

    #[test]
    fn parses_the_issue_example() {
        let policy = parse("p.yaml", EXAMPLE).unwrap();
        let agent = &policy.agents.0[0];
        assert_eq!(agent.name.0, "tools");
        assert_eq!(agent.cgroup.0, "claw/tools");
        let read: Vec<_> = agent.files.read.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(read, ["/usr/", "/lib/", "/workspace/"]);
    }

    #[test]
    fn agent_without_files_reads_nothing() {
        let policy = parse("p.yaml", "agents:\n  - name: a\n    cgroup: claw/a\n").unwrap();
        assert!(policy.agents.0[0].files.read.is_empty());
    }

    #[test]
    fn unknown_key_is_placed_and_lists_the_known_ones() {
        let err = error("agents:\n  - name: a\n    cgroup: claw/a\n    filez: {}\n");
        assert_eq!((err.line, err.column), (4, 5), "{err}");
        assert!(err.message.contains("unknown field `filez`"), "{err}");
        assert!(
            err.message.contains("expected one of name, cgroup, files"),
            "{err}"
        );
        assert!(
            err.to_string().starts_with("p.yaml:4:5: unknown field"),
            "{err}"
        );
        assert!(err.to_string().contains("    filez: {}"), "snippet: {err}");
    }

    #[test]
    fn relative_rule_path_is_placed() {
        let err = error(
            "agents:\n  - name: a\n    cgroup: claw/a\n    files:\n      read: [/usr/, etc/]\n",
        );
        assert_eq!((err.line, err.column), (5, 21), "{err}");
        assert!(err.message.contains("path `etc/` is relative"), "{err}");
        assert!(err.message.contains("absolute"), "{err}");
    }

    #[test]
    fn unnormalised_rule_paths_are_rejected() {
        for bad in ["/usr/../etc/", "/usr//lib/", "/./x"] {
            let text = format!(
                "agents:\n  - name: a\n    cgroup: claw/a\n    files:\n      read: [\"{bad}\"]\n"
            );
            let err = error(&text);
            assert!(err.message.contains("not normalised"), "{bad}: {err}");
        }
    }

    #[test]
    fn overlong_rule_path_is_rejected() {
        let long = format!("/{}", "a".repeat(MAX_RULE_PATH));
        let err = error(&format!(
            "agents:\n  - name: a\n    cgroup: claw/a\n    files:\n      read: [{long}]\n"
        ));
        assert!(err.message.contains("at most 251 bytes"), "{err}");
    }

    #[test]
    fn bad_cgroups_are_rejected() {
        let err = error("agents:\n  - name: a\n    cgroup: /sys/fs/cgroup/x\n");
        assert_eq!(err.line, 3, "{err}");
        assert!(err.message.contains("is absolute"), "{err}");
        let err = error("agents:\n  - name: a\n    cgroup: claw/../x\n");
        assert!(err.message.contains("without `.` or `..`"), "{err}");
    }

    #[test]
    fn bad_agent_name_is_rejected() {
        let err = error("agents:\n  - name: Tools!\n    cgroup: claw/a\n");
        assert_eq!(err.line, 2, "{err}");
        assert!(
            err.message.contains("agent name `Tools!` is not valid"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_names_and_cgroups_are_rejected() {
        let err =
            error("agents:\n  - name: a\n    cgroup: claw/a\n  - name: a\n    cgroup: claw/b\n");
        assert!(err.message.contains("`a` is used twice"), "{err}");
        let err =
            error("agents:\n  - name: a\n    cgroup: claw/a\n  - name: b\n    cgroup: claw/a/\n");
        assert!(err.message.contains("given to two agents"), "{err}");
    }

    #[test]
    fn missing_agents_and_syntax_errors_are_placed() {
        let err = error("agent: []\n");
        assert!(err.message.contains("unknown field `agent`"), "{err}");
        let err = error("agents:\n  - name: a\n    cgroup: claw/a\n    files: [unclosed\n");
        assert!(err.line >= 4, "{err}");
    }

    #[test]
    fn unreadable_file_names_the_file() {
        let err = load(Path::new("/nonexistent/policy.yaml")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/policy.yaml: cannot read"),
            "{err}"
        );
    }
}
