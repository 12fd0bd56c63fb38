//! The policy file: YAML, parsed strictly (unknown keys are errors), every error placed at
//! `file:line:col` with what is wrong and how to fix it.
//!
//! YAML through serde-saphyr: serde_yaml is archived, and its forks place an error raised while
//! validating a value at the enclosing mapping; serde-saphyr is maintained, pure Rust, and places
//! every error, including those of the validating `Deserialize` impls in `rules`, at the
//! offending scalar, with a snippet of the line.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::{de, Deserialize, Deserializer};

use crate::policy::{
    limits::Limits,
    rules::{ConnectRule, EnvName, ListenRule, RedirectRule, RulePath},
    run::RunSpec,
};

/// A policy file as written: its own agents, the fragments it includes, rules for all agents.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default)]
    include: Vec<IncludePath>,
    /// Rules every agent of the policy gets, in addition to its own.
    #[serde(default)]
    common: Rules,
    #[serde(default)]
    agents: Option<Agents>,
}

/// A whole policy: the main file's agents, each with the common rules of every file merged in.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The main file, as given.
    pub file: PathBuf,
    pub agents: Vec<Agent>,
}

/// The agents, in file order; names and cgroups are unique.
#[derive(Debug)]
struct Agents(Vec<Agent>);

#[derive(Debug, Clone, Deserialize)]
#[serde(from = "AgentDocument")]
pub struct Agent {
    pub name: AgentName,
    pub cgroup: CgroupPath,
    pub mode: Mode,
    /// May create executable memory without a file (JIT compilers such as V8 or the JVM).
    pub jit: bool,
    pub limits: Limits,
    pub devices: Devices,
    /// A process claw-agent runs (and keeps running) in the agent's cgroup.
    pub run: Option<RunSpec>,
    /// Preload variables the agent's programs may be started with (others are refused).
    pub allow_env: Vec<EnvName>,
    pub rules: Rules,
}

/// Device nodes an agent may open beyond the harmless base set (null, zero, full, random,
/// urandom, tty, ptmx, pts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Devices {
    /// NVIDIA (/dev/nvidia*, /dev/nvidia-uvm*, /dev/nvidia-caps/*) and DRI (/dev/dri/*) nodes.
    #[serde(default)]
    pub gpu: bool,
}

// Its rule keys sit beside `name`: serde's `flatten` would stop `deny_unknown_fields` from
// rejecting typos.
/// An agent: a cgroup claw creates, and what its processes may do. Everything not named is
/// denied; unknown keys are errors.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct AgentDocument {
    /// What operators see in events and pass to `clawctl`.
    name: AgentName,
    /// The agent's cgroup, relative to the cgroup v2 mount; claw-agent creates it.
    cgroup: CgroupPath,
    /// `enforce` (denied operations fail and are reported) or `audit` (reported, let through).
    #[serde(default)]
    mode: Mode,
    /// May create executable memory without a file (JIT compilers such as V8 or the JVM).
    #[serde(default)]
    jit: bool,
    /// cgroup limits: memory, tasks, CPU.
    #[serde(default)]
    limits: Limits,
    /// Device nodes beyond the harmless base set.
    #[serde(default)]
    devices: Devices,
    /// A process claw-agent runs (and keeps running) in the agent's cgroup.
    #[serde(default)]
    run: Option<RunSpec>,
    /// Preload variables the agent's programs may be started with (others are refused).
    #[serde(default)]
    allow_env: Vec<EnvName>,
    /// Paths the agent may read and write.
    #[serde(default)]
    files: Files,
    /// Programs the agent may execute (execve), scripts included.
    #[serde(default)]
    exec: Vec<RulePath>,
    /// Shared objects the agent's programs may map executable (the dynamic loader, libraries).
    #[serde(default)]
    libraries: Vec<RulePath>,
    /// Destinations the agent may connect to (TCP) or send datagrams to (UDP).
    #[serde(default)]
    connect: Vec<ConnectRule>,
    /// Local addresses and ports the agent may bind and listen on.
    #[serde(default)]
    listen: Vec<ListenRule>,
    /// TCP destinations whose connects the kernel sends to a local proxy instead.
    #[serde(default)]
    redirect: Vec<RedirectRule>,
}

impl From<AgentDocument> for Agent {
    fn from(doc: AgentDocument) -> Self {
        Self {
            name: doc.name,
            cgroup: doc.cgroup,
            mode: doc.mode,
            jit: doc.jit,
            limits: doc.limits,
            devices: doc.devices,
            run: doc.run,
            allow_env: doc.allow_env,
            rules: Rules {
                files: doc.files,
                exec: doc.exec,
                libraries: doc.libraries,
                connect: doc.connect,
                listen: doc.listen,
                redirect: doc.redirect,
            },
        }
    }
}

/// What an agent may do. Everything not named is denied.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    #[serde(default)]
    pub files: Files,
    /// Programs the agent may execute (execve), scripts included.
    #[serde(default)]
    pub exec: Vec<RulePath>,
    /// Shared objects the agent's programs may map executable (the dynamic loader, libraries).
    #[serde(default)]
    pub libraries: Vec<RulePath>,
    /// Destinations the agent may connect to (TCP) or send datagrams to (UDP).
    #[serde(default)]
    pub connect: Vec<ConnectRule>,
    /// Local addresses and ports the agent may bind and listen on; binding port 0 (an
    /// ephemeral port, as a client does) needs none, listening always does.
    #[serde(default)]
    pub listen: Vec<ListenRule>,
    /// TCP destinations whose connects the kernel sends to a local proxy instead.
    #[serde(default)]
    pub redirect: Vec<RedirectRule>,
}

impl Rules {
    fn extend(&mut self, other: &Rules) {
        self.files.read.extend(other.files.read.iter().cloned());
        self.files.write.extend(other.files.write.iter().cloned());
        self.exec.extend(other.exec.iter().cloned());
        self.libraries.extend(other.libraries.iter().cloned());
        self.connect.extend(other.connect.iter().cloned());
        self.listen.extend(other.listen.iter().cloned());
        self.redirect.extend(other.redirect.iter().cloned());
    }
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Files {
    /// Paths the agent may open for reading. `/dir/` covers the directory and all below it;
    /// `/dir/file` covers exactly that path.
    #[serde(default)]
    pub read: Vec<RulePath>,
    /// Paths the agent may open for writing, create, remove, rename, link, truncate, chmod,
    /// chown.
    #[serde(default, deserialize_with = "writable_paths")]
    #[schemars(with = "Vec<RulePath>")]
    pub write: Vec<RulePath>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Denied operations fail with EPERM and are reported.
    #[default]
    Enforce,
    /// Operations that would be denied succeed and are reported as `audit`.
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

/// An agent's name: what operators see in events and pass to `clawctl`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentName(pub String);

/// A cgroup path relative to the cgroup v2 mount, such as `claw/tools`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CgroupPath(pub String);

/// A fragment to include, relative to the including file's directory.
#[derive(Debug, Clone)]
struct IncludePath(String);

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

impl PolicyError {
    fn unplaced(file: &Path, message: String) -> Self {
        Self {
            file: file.display().to_string(),
            line: 0,
            column: 0,
            message,
            snippet: String::new(),
        }
    }
}

/// Reads a policy file and the fragments it includes.
pub fn load(path: &Path) -> Result<Policy, PolicyError> {
    let mut stack = Vec::new();
    let (document, common) = load_document(path, &mut stack)?;
    let Some(Agents(mut agents)) = document.agents else {
        return Err(PolicyError::unplaced(
            path,
            "no `agents:` — a policy names at least one agent (fragments with only `common:` are for `include:`)".to_owned(),
        ));
    };
    for agent in &mut agents {
        agent.rules.extend(&common);
    }
    Ok(Policy {
        file: path.to_owned(),
        agents,
    })
}

/// Parses one file and, depth first, its includes; returns it and the union of every `common`.
fn load_document(path: &Path, stack: &mut Vec<PathBuf>) -> Result<(Document, Rules), PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        PolicyError::unplaced(path, format!("cannot read the policy file: {err}"))
    })?;
    let document = parse_document(&path.display().to_string(), &text)?;
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    stack.push(canonical);
    let mut common = document.common.clone();
    for include in &document.include {
        let included = path.parent().unwrap_or(Path::new(".")).join(&include.0);
        let place = |message: String| {
            let mut err = locate(path, &text, &include.0, message);
            err.file = path.display().to_string();
            err
        };
        if !included.exists() {
            return Err(place(format!(
                "included file `{}` does not exist (looked for {}) — paths in `include:` are relative to this file",
                include.0,
                included.display()
            )));
        }
        let canonical = included.canonicalize().unwrap_or_else(|_| included.clone());
        if stack.contains(&canonical) {
            return Err(place(format!(
                "including `{}` makes a cycle — a fragment must not include a file that includes it",
                include.0
            )));
        }
        let (fragment, fragment_common) = load_document(&included, stack)?;
        if fragment.agents.is_some() {
            return Err(place(format!(
                "included file `{}` defines agents — fragments hold only `include:` and `common:`; define agents in the main policy",
                include.0
            )));
        }
        common.extend(&fragment_common);
    }
    stack.pop();
    Ok((document, common))
}

/// An error about `needle` placed at its first occurrence in `text`.
fn locate(path: &Path, text: &str, needle: &str, message: String) -> PolicyError {
    let (line, column) = text
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find(needle).map(|c| (i as u64 + 1, c as u64 + 1)))
        .unwrap_or((1, 1));
    PolicyError {
        file: path.display().to_string(),
        line,
        column,
        message,
        snippet: String::new(),
    }
}

/// Parses policy text that includes nothing; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Policy, PolicyError> {
    let document = parse_document(file, text)?;
    if !document.include.is_empty() {
        return Err(PolicyError::unplaced(
            Path::new(file),
            "`include:` needs a policy file on disk (load it by path)".to_owned(),
        ));
    }
    let Some(Agents(mut agents)) = document.agents else {
        return Err(PolicyError::unplaced(
            Path::new(file),
            "no `agents:` — a policy names at least one agent".to_owned(),
        ));
    };
    for agent in &mut agents {
        agent.rules.extend(&document.common);
    }
    Ok(Policy {
        file: PathBuf::from(file),
        agents,
    })
}

fn parse_document(file: &str, text: &str) -> Result<Document, PolicyError> {
    from_yaml(file, text)
}

/// Reads YAML into `T`; an error is placed (file:line:col) and shows the offending line.
pub(crate) fn from_yaml<T: serde::de::DeserializeOwned>(
    file: &str,
    text: &str,
) -> Result<T, PolicyError> {
    // The parser's default budget (250,000 nodes) guards against YAML bombs but stops short of
    // a fleet's policy: 100 agents with 10,000 rules each are about a million nodes.
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_nodes: 4_000_000,
            max_events: 16_000_000,
        },
    };
    serde_saphyr::from_str_with_options(text, options).map_err(|err| {
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

pub(crate) fn invalid<E: de::Error>(what: impl fmt::Display) -> E {
    E::custom(what)
}

/// A write rule's path, refused inside the trees claw's enforcement lives in.
struct WritablePath(RulePath);

impl<'de> Deserialize<'de> for WritablePath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let path = RulePath::deserialize(deserializer)?;
        if let Some(tree) = crate::policy::rules::protected_tree(&path.0) {
            return Err(invalid(format_args!(
                "write rule `{}` is inside {tree} ({}) — agents may never write there; remove the rule",
                path.0,
                crate::policy::rules::why_protected(tree)
            )));
        }
        Ok(Self(path))
    }
}

fn writable_paths<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<RulePath>, D::Error> {
    let paths = Vec::<WritablePath>::deserialize(deserializer)?;
    Ok(paths.into_iter().map(|p| p.0).collect())
}

crate::policy::schema::scalar_schema!(
    AgentName,
    "AgentName",
    ["string"],
    "1 to 63 characters from a-z, 0-9, `-` and `_`"
);
crate::policy::schema::scalar_schema!(
    CgroupPath,
    "CgroupPath",
    ["string"],
    "relative to the cgroup v2 mount, e.g. `claw/tools`"
);
crate::policy::schema::scalar_schema!(
    IncludePath,
    "IncludePath",
    ["string"],
    "a fragment beside the policy, relative to it, e.g. `base/runtime.yaml`"
);

impl schemars::JsonSchema for Agent {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Agent".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        AgentDocument::json_schema(generator)
    }
}

impl schemars::JsonSchema for Agents {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Agents".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        crate::policy::schema::array_of::<Agent>(generator)
    }
}

/// The policy file's schema, as schemars derives it.
pub(super) fn schema() -> schemars::Schema {
    schemars::schema_for!(Document)
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

impl<'de> Deserialize<'de> for IncludePath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let path = String::deserialize(deserializer)?;
        if path.is_empty() || path.starts_with('/') {
            return Err(invalid(format_args!(
                "include `{path}` must be a relative path — fragments live beside the policy, e.g. `base/runtime.yaml`"
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
                while let Some(agent) = seq.next_element::<Agent>()? {
                    let index = agents.len();
                    if let Some(first) = agents.iter().position(|a| a.name == agent.name) {
                        return Err(invalid(format_args!(
                            "agent name `{}` is used twice (agents[{first}] and agents[{index}]) — give every agent its own name",
                            agent.name.0
                        )));
                    }
                    if let Some(first) = agents.iter().position(|a| a.cgroup == agent.cgroup) {
                        return Err(invalid(format_args!(
                            "cgroup `{}` is given to two agents (agents[{first}] and agents[{index}]) — give every agent its own cgroup",
                            agent.cgroup.0
                        )));
                    }
                    agents.push(agent);
                }
                if agents.is_empty() {
                    return Err(invalid(
                        "`agents:` is empty — name at least one agent, with its `name:` and `cgroup:`",
                    ));
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

    pub(crate) fn error(text: &str) -> PolicyError {
        parse("p.yaml", text).expect_err("policy should be rejected")
    }

    #[test]
    fn parses_the_issue_2_example() {
        let policy = parse("p.yaml", EXAMPLE).unwrap();
        let agent = &policy.agents[0];
        assert_eq!(agent.name.0, "tools");
        assert_eq!(agent.cgroup.0, "claw/tools");
        assert_eq!(agent.mode, Mode::Enforce);
        let read: Vec<_> = agent
            .rules
            .files
            .read
            .iter()
            .map(|p| p.0.as_str())
            .collect();
        assert_eq!(read, ["/usr/", "/lib/", "/workspace/"]);
    }

    #[test]
    fn parses_the_full_language() {
        let policy = parse(
            "p.yaml",
            "\
common:
  files:
    read: [/etc/ld.so.cache]
agents:
  - name: inference
    cgroup: claw/inference
    mode: audit
    files:
      read: [/models/]
      write: [/var/lib/ollama/]
    exec: [/usr/bin/ollama]
    libraries: [/usr/lib/]
    connect: []
",
        )
        .unwrap();
        let agent = &policy.agents[0];
        assert_eq!(agent.mode, Mode::Audit);
        assert_eq!(agent.rules.files.write[0].0, "/var/lib/ollama/");
        assert_eq!(agent.rules.exec[0].0, "/usr/bin/ollama");
        assert_eq!(agent.rules.libraries[0].0, "/usr/lib/");
        let read: Vec<_> = agent
            .rules
            .files
            .read
            .iter()
            .map(|p| p.0.as_str())
            .collect();
        assert_eq!(
            read,
            ["/models/", "/etc/ld.so.cache"],
            "common rules are merged in"
        );
    }

    #[test]
    fn agent_without_rules_may_do_nothing() {
        let policy = parse("p.yaml", "agents:\n  - name: a\n    cgroup: claw/a\n").unwrap();
        let rules = &policy.agents[0].rules;
        assert!(rules.files.read.is_empty() && rules.exec.is_empty() && rules.connect.is_empty());
    }

    #[test]
    fn unknown_key_is_placed_and_lists_the_known_ones() {
        let err = error("agents:\n  - name: a\n    cgroup: claw/a\n    filez: {}\n");
        assert_eq!((err.line, err.column), (4, 5), "{err}");
        assert!(err.message.contains("unknown field `filez`"), "{err}");
        assert!(
            err.to_string().starts_with("p.yaml:4:5: unknown field"),
            "{err}"
        );
        assert!(err.to_string().contains("    filez: {}"), "snippet: {err}");
    }

    #[test]
    fn unknown_key_inside_files_is_placed() {
        let err = error("agents:\n  - name: a\n    cgroup: claw/a\n    files:\n      exec: [/x]\n");
        assert_eq!((err.line, err.column), (5, 7), "{err}");
        assert!(err.message.contains("unknown field `exec`"), "{err}");
    }

    #[test]
    fn missing_cgroup_is_reported() {
        let err = error("agents:\n  - name: a\n");
        assert_eq!(err.line, 2, "{err}");
        assert!(err.message.contains("missing field `cgroup`"), "{err}");
    }

    #[test]
    fn wrong_type_is_reported() {
        let err = error("agents:\n  - name: a\n    cgroup: claw/a\n    exec: /usr/bin/git\n");
        assert_eq!(err.line, 4, "{err}");
    }

    #[test]
    fn bad_connect_rules_are_placed_at_the_rule() {
        let cases = [
            ("10.0.0.1", "has no port"),
            ("10.0.0.1:99999/tcp", "is not a port"),
            ("10.0.0.1:80/icmp", "protocol `icmp`"),
            ("10.1.2.3/8:443", "bits set past its prefix length"),
            ("2001:db8::1:443", "in brackets"),
        ];
        for (rule, want) in cases {
            let err = error(&format!(
                "agents:\n  - name: a\n    cgroup: claw/a\n    connect:\n      - \"{rule}\"\n"
            ));
            assert_eq!((err.line, err.column), (5, 9), "{rule}: {err}");
            assert!(err.message.contains(want), "{rule}: {err}");
            assert!(err.message.contains(" — "), "{rule} says how to fix: {err}");
        }
    }

    #[test]
    fn bad_mode_lists_the_modes() {
        let err = error("agents:\n  - name: a\n    cgroup: claw/a\n    mode: permissive\n");
        assert_eq!((err.line, err.column), (4, 11), "{err}");
        assert!(
            err.message.contains("enforce") && err.message.contains("audit"),
            "{err}"
        );
    }

    #[test]
    fn bad_cgroups_are_rejected() {
        let err = error("agents:\n  - name: a\n    cgroup: /sys/fs/cgroup/x\n");
        assert_eq!((err.line, err.column), (3, 13), "{err}");
        assert!(err.message.contains("is absolute"), "{err}");
        let err = error("agents:\n  - name: a\n    cgroup: claw/../x\n");
        assert!(err.message.contains("without `.` or `..`"), "{err}");
    }

    #[test]
    fn bad_agent_name_is_rejected() {
        let err = error("agents:\n  - name: Tools!\n    cgroup: claw/a\n");
        assert_eq!((err.line, err.column), (2, 11), "{err}");
        assert!(
            err.message.contains("agent name `Tools!` is not valid"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_names_and_cgroups_are_rejected() {
        let err =
            error("agents:\n  - name: a\n    cgroup: claw/a\n  - name: a\n    cgroup: claw/b\n");
        assert!(
            err.message
                .contains("`a` is used twice (agents[0] and agents[1])"),
            "{err}"
        );
        let err =
            error("agents:\n  - name: a\n    cgroup: claw/a\n  - name: b\n    cgroup: claw/a/\n");
        assert!(err.message.contains("given to two agents"), "{err}");
    }

    #[test]
    fn empty_or_missing_agents_are_rejected() {
        let err = error("agents: []\n");
        assert!(err.message.contains("`agents:` is empty"), "{err}");
        let err = error("common: {}\n");
        assert!(err.message.contains("no `agents:`"), "{err}");
        let err = error("agent: []\n");
        assert!(err.message.contains("unknown field `agent`"), "{err}");
    }

    #[test]
    fn syntax_error_is_placed() {
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

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn includes_merge_common_rules_into_every_agent() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "base/runtime.yaml",
            "include: [libs.yaml]\ncommon:\n  files:\n    read: [/etc/ld.so.cache]\n",
        );
        write(
            dir.path(),
            "base/libs.yaml",
            "common:\n  libraries: [/usr/lib/]\n",
        );
        let main = write(
            dir.path(),
            "p.yaml",
            "include: [base/runtime.yaml]\nagents:\n  - name: a\n    cgroup: claw/a\n  - name: b\n    cgroup: claw/b\n",
        );
        let policy = load(&main).unwrap();
        for agent in &policy.agents {
            assert_eq!(agent.rules.files.read[0].0, "/etc/ld.so.cache");
            assert_eq!(agent.rules.libraries[0].0, "/usr/lib/");
        }
    }

    #[test]
    fn missing_include_is_placed_in_the_including_file() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(
            dir.path(),
            "p.yaml",
            "include: [base/nope.yaml]\nagents:\n  - name: a\n    cgroup: claw/a\n",
        );
        let err = load(&main).unwrap_err();
        assert_eq!((err.line, err.column), (1, 11), "{err}");
        assert!(
            err.message.contains("`base/nope.yaml` does not exist"),
            "{err}"
        );
    }

    #[test]
    fn include_cycle_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", "include: [b.yaml]\n");
        write(dir.path(), "b.yaml", "include: [a.yaml]\n");
        let main = write(
            dir.path(),
            "p.yaml",
            "include: [a.yaml]\nagents:\n  - name: a\n    cgroup: claw/a\n",
        );
        let err = load(&main).unwrap_err();
        assert!(err.message.contains("makes a cycle"), "{err}");
        assert!(err.file.ends_with("b.yaml"), "{err}");
    }

    #[test]
    fn fragment_with_agents_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "f.yaml",
            "agents:\n  - name: x\n    cgroup: claw/x\n",
        );
        let main = write(
            dir.path(),
            "p.yaml",
            "include: [f.yaml]\nagents:\n  - name: a\n    cgroup: claw/a\n",
        );
        let err = load(&main).unwrap_err();
        assert!(err.message.contains("defines agents"), "{err}");
    }

    #[test]
    fn absolute_include_is_rejected() {
        let err =
            error("include: [/etc/claw/base.yaml]\nagents:\n  - name: a\n    cgroup: claw/a\n");
        assert_eq!((err.line, err.column), (1, 11), "{err}");
        assert!(err.message.contains("must be a relative path"), "{err}");
    }
}
