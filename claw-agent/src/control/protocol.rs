//! The control socket's protocol: newline-delimited JSON. A client sends one request line; the
//! daemon answers with one line (`status`) or a stream of lines (`follow`).

use serde::{Deserialize, Serialize};

pub use crate::kernel::status::{Counters, ProgramStatus};
use crate::{
    control::{advise::Rule, grant::Lifetime},
    events::event::Event,
    kernel::enforcer::Coverage,
    policy::{call::Narrowing, describe::RuleLine, landlock::Plan},
};

/// Longest request line accepted; requests are small, and a client must not make the daemon
/// buffer without bound.
pub const MAX_REQUEST_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Is the policy enforced, by what, with which counts so far.
    Status {},
    /// Every event from now on; first, from the audit log, those after sequence number `after`
    /// (a follower resuming) or since the RFC 3339 time `since`.
    Follow {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<String>,
    },
    /// Make the policy file at `policy` (an absolute path, read by the daemon) the enforced one.
    Apply { policy: String },
    /// The enforced policy, as rule lines.
    Rules {},
    /// Start tool call `call` of agent `agent`: the daemon makes its cgroup (held to the agent's
    /// policy, or to `narrowing` of it) and answers `call-started`; the client runs `command`
    /// there, then sends `call-end`. The call ends, and its processes are killed, when the
    /// client sends that or its connection closes.
    Call {
        agent: String,
        call: String,
        #[serde(default)]
        narrowing: Narrowing,
        /// For the record (the `call` event): what the client runs.
        #[serde(default)]
        command: Vec<String>,
        /// The client starts the command under the Landlock layer `call-started` carries; a
        /// claw-agent with a Landlock layer refuses clients that do not.
        #[serde(default)]
        landlock: bool,
    },
    /// The second line of a `call` connection: the command ended with `status`.
    CallEnd { status: i32 },
    /// Let the object of denial `event` (its `seq`) through for its agent — with `call_only`,
    /// for its tool call only — within `lifetime`.
    Allow {
        event: u64,
        lifetime: Lifetime,
        #[serde(default)]
        call_only: bool,
    },
    /// The logged event numbered `seq`.
    Event { seq: u64 },
    /// Draft the narrowest rules that would have allowed the denials logged since the RFC 3339
    /// time `since` (of `agent`, of tool call `call`, if given), as an edit of the enforced
    /// policy file.
    Advise {
        since: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call: Option<String>,
    },
    /// The same for one denial, by its number: the rule `clawctl allow --persist` writes.
    Persist { event: u64 },
    /// The Landlock layer a command started in agent `agent` must run under (`clawctl run`
    /// without a call id).
    Landlock { agent: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Reply {
    Status(Status),
    /// The subscription is in place: every event from here on will follow.
    Subscribed,
    Event {
        event: std::sync::Arc<Event>,
    },
    /// This subscriber fell behind and `count` events were dropped for it (and only for it).
    Lost {
        count: u64,
    },
    /// The policy is now enforced; `generation` counts applies since the daemon started.
    Applied {
        policy: String,
        generation: u64,
    },
    Rules {
        policy: String,
        lines: Vec<RuleLine>,
    },
    /// The request failed: what happened and how to fix it (`message`), and what kind of
    /// failure it is (`kind`), by which clawctl chooses its exit code.
    Error {
        message: String,
        #[serde(default)]
        kind: ErrorKind,
    },
    /// The call's cgroup (absolute path) exists and holds its rules: start the command in it —
    /// under `landlock`, if given (claw-agent runs with a Landlock layer).
    CallStarted {
        cgroup: String,
        cgroup_id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        landlock: Option<Plan>,
    },
    /// Start the command under this Landlock layer (None: none).
    Landlock {
        landlock: Option<Plan>,
    },
    /// The call's processes are gone and its cgroup removed.
    CallEnded {
        call: String,
    },
    /// The grant is in the kernel: `message` says what it lets through, for whom, how long.
    Allowed {
        message: String,
    },
    /// Rules drafted into the enforced policy file `policy`: its text now (`current`) and with
    /// them (`proposed`); `notes` say what no rule can allow. Nothing is changed.
    Draft {
        policy: String,
        rules: Vec<Rule>,
        notes: Vec<String>,
        current: String,
        proposed: String,
    },
}

/// What kind of failure an error reply reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The request was malformed or its values invalid: fix the request.
    BadRequest,
    /// What it names does not exist: no such agent, event or tool call.
    NotFound,
    /// The daemon would not: a policy rejected, a grant or call refused by the rules.
    #[default]
    Refused,
    /// This client may not ask that, or not on this socket.
    Forbidden,
    /// The daemon tried and the machine said no: the kernel, the cgroup tree, a file.
    Failed,
    /// The daemon cannot answer now (it is shutting down).
    Unavailable,
}

/// A failure as the daemon's parts hand it to the sockets: its kind and its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl Reply {
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Reply::Error {
            message: message.into(),
            kind,
        }
    }
}

impl From<Failure> for Reply {
    fn from(failure: Failure) -> Self {
        Reply::error(failure.kind, failure.message)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// True once every program is attached with the policy's rules in its maps.
    pub enforcing: bool,
    /// `full`; `landlock` (no BPF LSM: network rules enforced, file and exec rules by Landlock
    /// for the processes claw starts); or `degraded` (network rules only).
    pub coverage: Coverage,
    /// Whether the processes claw starts run under Landlock (with `landlock`, or stacked on
    /// `full`).
    #[serde(default)]
    pub landlock: bool,
    pub policy: String,
    /// The cgroup v2 mount the agents' cgroups are relative to.
    pub cgroup_root: String,
    /// Applies since the daemon started (the first policy is 1).
    pub generation: u64,
    pub agents: Vec<AgentStatus>,
    pub programs: Vec<ProgramStatus>,
    pub counters: Counters,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub name: String,
    pub cgroup: String,
    pub cgroup_id: u64,
    /// `enforce` or `audit`.
    pub mode: String,
    /// Entries in the kernel's file and network rule maps.
    pub file_rules: usize,
    pub net_rules: usize,
    pub gpu: bool,
    /// Restarts of the supervised process (`run:`), if the agent has one.
    pub restarts: Option<u64>,
    pub limits: Vec<LimitStatus>,
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitStatus {
    /// memory_max, memory_high, pids_max, cpu_max.
    pub name: String,
    pub value: String,
    /// False where the cgroup hierarchy lacks the controller (with --allow-missing-limits).
    pub enforced: bool,
}

/// What the agent's cgroup uses now, from its interface files (None where a file is missing).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub memory_bytes: Option<u64>,
    pub tasks: Option<u64>,
    pub cpu_usec: Option<u64>,
    pub oom_kills: Option<u64>,
    /// Processes in the cgroup (cgroup.procs).
    pub processes: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_small_tagged_objects() {
        assert_eq!(
            serde_json::to_string(&Request::Follow {
                after: None,
                since: None
            })
            .unwrap(),
            r#"{"request":"follow"}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"request":"status"}"#).unwrap(),
            Request::Status {}
        );
        assert!(serde_json::from_str::<Request>(r#"{"request":"shutdown"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"request":"status","x":1}"#).is_err());
    }
}
