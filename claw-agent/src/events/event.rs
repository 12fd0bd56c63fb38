//! Events as operators, the audit log, SIEMs and clawctl see them: the schema, its kinds and
//! decisions, and the clocks events are stamped with.

use std::time::{Duration, SystemTime};

use claw_common::access;
use serde::{Deserialize, Serialize};

use crate::kernel::enforcer::Coverage;

/// What an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Refused.
    Deny,
    /// An audit-mode agent did what its policy does not allow, and it went through.
    Audit,
    /// Refused by the rules, let through by an operator's grant.
    Granted,
    /// An operator granted an object (`clawctl allow`).
    Grant,
    /// A tool call started or ended.
    Call,
    /// Repeats counted instead of sent.
    Throttled,
    /// Events that could not be delivered, counted.
    Lost,
    Oom,
    PidsMax,
    /// A supervised process started, exited, was restarted or given up on.
    Lifecycle,
    /// A policy applied or rejected.
    Policy,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deny => "deny",
            Kind::Audit => "audit",
            Kind::Granted => "granted",
            Kind::Grant => "grant",
            Kind::Call => "call",
            Kind::Throttled => "throttled",
            Kind::Lost => "lost",
            Kind::Oom => "oom",
            Kind::PidsMax => "pids_max",
            Kind::Lifecycle => "lifecycle",
            Kind::Policy => "policy",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Deny,
    Allow,
    /// The kernel killed a process (OOM).
    Kill,
    /// A policy was applied, or rejected (the previous one stays).
    Applied,
    Rejected,
    /// Nothing was decided (a lifecycle or call event).
    #[serde(rename = "-")]
    None,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Deny => "deny",
            Decision::Allow => "allow",
            Decision::Kill => "kill",
            Decision::Applied => "applied",
            Decision::Rejected => "rejected",
            Decision::None => "-",
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Version of the event schema; bumped on any incompatible change of the fields below.
pub const SCHEMA_VERSION: u32 = 1;

/// One decision the kernel took about an agent's process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub schema: u32,
    /// Position on the daemon's event bus: rises by one per event, across daemon restarts (it
    /// continues from the audit log). A follower resumes after the last one it saw.
    #[serde(default)]
    pub seq: u64,
    /// `deny` (refused); `audit` (an audit-mode agent did what its policy does not allow, and it
    /// went through); `granted` (refused by the rules, let through by an operator's grant);
    /// `call` (a tool call started or ended); `throttled` (repeats counted instead of sent); `lost` (events that could
    /// not be delivered, counted); `oom`, `pids_max`, `lifecycle`, `policy`.
    pub kind: Kind,
    /// RFC 3339, UTC, nanoseconds.
    pub time: String,
    pub agent: String,
    /// The cgroup of the process as /proc/PID/cgroup shows it: relative to the cgroup v2 root,
    /// with a leading `/` — the agent's, or its tool call's.
    pub cgroup: String,
    /// The tool call the process belongs to (`clawctl run --call-id`), known from its cgroup:
    /// nothing the process says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    pub pid: u32,
    pub comm: String,
    /// The kernel's number for the record this event came from, per agent cgroup (the agent's
    /// records before it); none for events claw-agent makes itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<u64>,
    /// open, exec, mmap, mprotect, mknod, unlink, mkdir, rmdir, rename, link, symlink, truncate,
    /// chmod, chown, connect, sendmsg.
    pub op: String,
    /// The file an operation touched (file operations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `ADDRESS:PORT/PROTOCOL` (network operations); IPv6 in brackets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// The device refused (op `device`): `c 195:0 rw` (type, major:minor, m/r/w access).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The capability refused (op `capability`), e.g. `CAP_SYS_ADMIN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// The name asked of the agent's resolver (op `dns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The access the operation needed: read, write, exec, map, connect (a Unix socket), joined
    /// with `+`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    /// The kernel's key for the object (hex): equal for repeats of one operation on one object;
    /// what `clawctl allow` grants under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_key: Option<String>,
    /// `deny` or `allow` (the outcome for the process).
    pub decision: Decision,
    /// For a denial: the rule it ran into, in words a model can act on ("tools may write only
    /// under /workspace/").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `full`, or `degraded`: claw-agent runs without BPF LSM, so file and exec events are
    /// reports (`audit`) of paths as the process passed them, and nothing on files is enforced.
    /// `-` on an event about no agent's enforcement (a forwarder's losses).
    #[serde(with = "coverage_or_dash")]
    pub coverage: Option<Coverage>,
    /// Kind-specific facts (OOM kill: limit, victim's memory; lifecycle: exit status, restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl Event {
    /// An event the daemon itself reports now (not a kernel record) about `agent`, whose cgroup
    /// is given relative to the cgroup root (or `-` for no agent).
    pub fn about(kind: Kind, agent: &str, cgroup: &str, op: &str, coverage: Coverage) -> Self {
        Self {
            schema: SCHEMA_VERSION,
            seq: 0,
            kind,
            time: now(),
            agent: agent.to_owned(),
            // `-`: an event about no agent (an apply, a forwarder's losses).
            cgroup: match cgroup {
                "-" => "-".to_owned(),
                _ => format!("/{}", cgroup.trim_start_matches('/')),
            },
            call: None,
            pid: 0,
            comm: String::new(),
            record: None,
            op: op.to_owned(),
            path: None,
            destination: None,
            device: None,
            capability: None,
            name: None,
            access: None,
            object_key: None,
            decision: Decision::None,
            reason: None,
            coverage: Some(coverage),
            details: None,
        }
    }

    /// An event the daemon reports about no agent and no enforcement (a forwarder's losses):
    /// agent, cgroup and coverage are `-`.
    pub fn about_no_agent(kind: Kind, op: &str) -> Self {
        Self {
            coverage: None,
            ..Self::about(kind, "-", "-", op, Coverage::Full)
        }
    }

    /// The coverage as the schema writes it: `full`, `degraded`, or `-`.
    pub fn coverage_name(&self) -> &'static str {
        self.coverage.map_or("-", Coverage::as_str)
    }

    /// What the event is about: its path, destination, device or capability.
    pub fn object(&self) -> Option<&str> {
        self.path
            .as_deref()
            .or(self.destination.as_deref())
            .or(self.device.as_deref())
            .or(self.capability.as_deref())
            .or(self.name.as_deref())
    }
}

/// The coverage field as text: `full`, `degraded`, or `-` for none.
mod coverage_or_dash {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::kernel::enforcer::Coverage;

    const NONE: &str = "-";

    pub fn serialize<S: Serializer>(
        coverage: &Option<Coverage>,
        out: S,
    ) -> Result<S::Ok, S::Error> {
        match coverage {
            Some(coverage) => coverage.serialize(out),
            None => out.serialize_str(NONE),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<Option<Coverage>, D::Error> {
        let text = String::deserialize(input)?;
        if text == NONE {
            return Ok(None);
        }
        Coverage::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(&text)).map(Some)
    }
}

/// Offset that turns CLOCK_BOOTTIME (what the kernel stamps) into wall-clock time.
pub fn boot_to_wall_offset() -> Duration {
    clock(libc::CLOCK_REALTIME).saturating_sub(clock(libc::CLOCK_BOOTTIME))
}

fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the pointer it is given.
    unsafe { libc::clock_gettime(id, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The current wall-clock time as events show it.
pub fn now() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

/// CLOCK_BOOTTIME in nanoseconds: the clock the programs stamp records and windows with.
pub fn boot_time_ns() -> u64 {
    clock(libc::CLOCK_BOOTTIME).as_nanos() as u64
}

/// Access bits and the names events give them.
const ACCESS_NAMES: [(u32, &str); 6] = [
    (access::READ, "read"),
    (access::WRITE, "write"),
    (access::EXEC, "exec"),
    (access::MAP, "map"),
    (access::CONNECT, "connect"),
    (access::ADMIN, "admin"),
];

/// The access bits of `read+write`-style names (as events show them); unknown names add none.
pub fn access_bits(names: &str) -> u32 {
    ACCESS_NAMES
        .into_iter()
        .filter(|(_, name)| names.split('+').any(|n| n == *name))
        .fold(0, |bits, (bit, _)| bits | bit)
}

pub(crate) fn access_names(bits: u32) -> String {
    let names: Vec<&str> = ACCESS_NAMES
        .into_iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, name)| name)
        .collect();
    names.join("+")
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::events::identities::{AgentIdentity, Identities};

    /// An event of `kind` about agent `tools`, for tests elsewhere.
    pub fn sample(kind: &str) -> Event {
        let kind = serde_json::from_value(serde_json::json!(kind)).expect("an event kind");
        let mut event = Event::about(kind, "tools", "claw/tools", "open", Coverage::Full);
        event.path = Some("/etc/shadow".to_owned());
        event.decision = Decision::Deny;
        event
    }

    /// Ruleset 5 is agent `tools` (cgroup claw/tools, id 77).
    pub fn identities() -> Identities {
        let mut identities = Identities::new();
        identities.insert(
            5,
            AgentIdentity {
                name: "tools".to_owned(),
                cgroup: "claw/tools".to_owned(),
                cgroup_id: 77,
            },
        );
        identities
    }

    #[test]
    fn coverage_is_text_and_a_dash_for_no_agent() {
        let full = serde_json::to_value(sample("deny")).unwrap();
        assert_eq!(full["coverage"], "full");
        let lost = Event::about_no_agent(Kind::Lost, "forward");
        let json = serde_json::to_value(&lost).unwrap();
        assert_eq!(json["coverage"], "-");
        assert_eq!(json["agent"], "-");
        assert_eq!(json["cgroup"], "-");
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back.coverage, None);
        let degraded: Event = serde_json::from_value(serde_json::json!({
            "schema": SCHEMA_VERSION, "seq": 1, "kind": "deny", "time": "t", "agent": "a",
            "cgroup": "/a", "pid": 1, "comm": "c", "op": "open", "decision": "deny",
            "coverage": "degraded"
        }))
        .unwrap();
        assert_eq!(degraded.coverage, Some(Coverage::NetworkOnly));
        assert_eq!(degraded.coverage_name(), "degraded");
    }
}
