//! Events as operators, the audit log and SIEMs see them, and their decoding from kernel records.

use std::{
    collections::{HashMap, VecDeque},
    net::Ipv6Addr,
    time::{Duration, SystemTime},
};

use claw_common::{
    access, decision, device_kind, op, record, DeviceRecord, FileRecord, NetRecord, RecordHeader,
    EVENT_PATH_BYTES, PROTO_TCP, PROTO_UDP, UNNUMBERED,
};
use serde::{Deserialize, Serialize};

use crate::kernel::{catalogue, enforcer::Coverage};

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
    pub coverage: Coverage,
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
            coverage,
            details: None,
        }
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

/// Who a ruleset id belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    pub name: String,
    pub cgroup: String,
    pub cgroup_id: u64,
}

/// A tool call: its agent, its id, its cgroup (relative to the cgroup v2 mount).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallIdentity {
    pub agent: String,
    pub call: String,
    pub cgroup: String,
}

/// Calls that ended, still known so that their last events (read from the kernel after the end)
/// are attributed.
const ENDED_CALLS_KEPT: usize = 4096;

/// Who the kernel's records are about: every ruleset id the daemon has installed, old ones
/// included (events may arrive after an apply replaced them), and the tool calls' cgroups.
#[derive(Debug, Clone, Default)]
pub struct Identities {
    rulesets: HashMap<u32, AgentIdentity>,
    /// Each agent's rules as reasons quote them, by agent name.
    summaries: HashMap<String, std::sync::Arc<crate::policy::reason::Summary>>,
    calls: HashMap<u64, CallIdentity>,
    ended: VecDeque<u64>,
}

impl Identities {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, ruleset: u32, identity: AgentIdentity) {
        self.rulesets.insert(ruleset, identity);
    }

    pub fn get(&self, ruleset: &u32) -> Option<&AgentIdentity> {
        self.rulesets.get(ruleset)
    }

    pub fn values(&self) -> impl Iterator<Item = &AgentIdentity> {
        self.rulesets.values()
    }

    pub fn call_started(&mut self, cgroup_id: u64, call: CallIdentity) {
        self.calls.insert(cgroup_id, call);
    }

    pub fn call_ended(&mut self, cgroup_id: u64) {
        self.ended.push_back(cgroup_id);
        while self.ended.len() > ENDED_CALLS_KEPT {
            if let Some(oldest) = self.ended.pop_front() {
                self.calls.remove(&oldest);
            }
        }
    }

    pub fn call(&self, cgroup_id: u64) -> Option<&CallIdentity> {
        self.calls.get(&cgroup_id)
    }

    /// The rules of the enforced policy's agents, for the reasons of their denials.
    pub fn set_summaries(
        &mut self,
        summaries: impl IntoIterator<Item = crate::policy::reason::Summary>,
    ) {
        self.summaries = summaries
            .into_iter()
            .map(|s| (s.agent.clone(), std::sync::Arc::new(s)))
            .collect();
    }

    /// Why `event` (a denial) was denied, if its agent is known.
    pub fn reason(&self, event: &Event) -> Option<String> {
        let summary = self.summaries.get(&event.agent)?;
        Some(crate::policy::reason::explain(
            summary,
            &event.op,
            event.access.as_deref().unwrap_or(""),
            event.object().unwrap_or(""),
        ))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("kernel record of {0} bytes is too short")]
    Short(usize),
    #[error("kernel record of unknown kind {0}")]
    UnknownKind(u32),
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

/// Reads a `T` from the front of `bytes`, if they are long enough.
fn read_record<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: the length is checked and the record types are plain old data (any bytes valid).
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}

/// The current wall-clock time as events show it.
pub fn now() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

/// CLOCK_BOOTTIME in nanoseconds: the clock the programs stamp records and windows with.
pub fn boot_time_ns() -> u64 {
    clock(libc::CLOCK_BOOTTIME).as_nanos() as u64
}

pub fn decode(
    bytes: &[u8],
    identities: &Identities,
    boot_to_wall: Duration,
    coverage: Coverage,
) -> Result<Event, DecodeError> {
    decode_with_header(bytes, identities, boot_to_wall, coverage).map(|(_, event)| event)
}

/// The record's header (which names its throttle key) and the event it makes.
pub fn decode_with_header(
    bytes: &[u8],
    identities: &Identities,
    boot_to_wall: Duration,
    coverage: Coverage,
) -> Result<(RecordHeader, Event), DecodeError> {
    let header: RecordHeader = read_record(bytes)?;
    let mut event = from_header(&header, identities, boot_to_wall, coverage);
    match header.kind {
        record::FILE => {
            let file: FileRecord = read_record(bytes)?;
            event.path = match file.path_len {
                len if len > 0 => {
                    Some(c_string(&file.path[..(len as usize).min(EVENT_PATH_BYTES)]))
                }
                0 => Some("<anonymous memory>".to_owned()),
                -2 => None,
                _ => Some("<unresolved>".to_owned()),
            };
            event.access = Some(access_names(header.access));
        }
        record::NET => {
            let net: NetRecord = read_record(bytes)?;
            if header.op == op::CAPABILITY {
                event.capability = Some(catalogue::capability_name(net.port));
                event.reason = identities.reason(&event);
                return Ok((header, event));
            }
            if header.op == op::SIGNAL || header.op == op::PTRACE {
                let target = i32::from_ne_bytes([
                    net.address[0],
                    net.address[1],
                    net.address[2],
                    net.address[3],
                ]);
                let detail = if header.op == op::SIGNAL {
                    "signal"
                } else {
                    "mode"
                };
                event.details = Some(serde_json::json!({ "target_pid": target, detail: net.port }));
                event.reason = identities.reason(&event);
                return Ok((header, event));
            }
            event.destination = Some(if header.op == op::SOCKET {
                // `port` carries the socket type for socket creation.
                format!(
                    "socket family {} type {} protocol {}",
                    net.family, net.port, net.protocol
                )
            } else {
                destination(&net)
            });
        }
        record::DEVICE => {
            let device: DeviceRecord = read_record(bytes)?;
            let kind = if device.kind == device_kind::BLOCK {
                'b'
            } else {
                'c'
            };
            let access: String = [(1, 'm'), (2, 'r'), (4, 'w')]
                .iter()
                .filter(|(bit, _)| device.access & bit != 0)
                .map(|(_, c)| *c)
                .collect();
            event.device = Some(format!("{kind} {}:{} {access}", device.major, device.minor));
        }
        other => return Err(DecodeError::UnknownKind(other)),
    }
    if event.kind == Kind::Deny || event.kind == Kind::Audit {
        event.reason = identities.reason(&event);
    }
    Ok((header, event))
}

fn from_header(
    header: &RecordHeader,
    identities: &Identities,
    boot_to_wall: Duration,
    coverage: Coverage,
) -> Event {
    // A ruleset of an earlier claw-agent (events that waited in the ring buffer across a
    // restart) is not known by id: its cgroup still says whose it was.
    let identity = identities.get(&header.ruleset).or_else(|| {
        identities
            .values()
            .find(|identity| identity.cgroup_id == header.cgroup_id)
    });
    let (agent, mut cgroup) = match identity {
        Some(a) => (a.name.clone(), format!("/{}", a.cgroup)),
        None => (
            format!("unknown-ruleset-{}", header.ruleset),
            format!("cgroup-id:{}", header.cgroup_id),
        ),
    };
    let mut call = None;
    if header.task_cgroup_id != header.cgroup_id {
        match identities.call(header.task_cgroup_id) {
            Some(known) => {
                cgroup = format!("/{}", known.cgroup);
                call = Some(known.call.clone());
            }
            None => cgroup = format!("cgroup-id:{}", header.task_cgroup_id),
        }
    }
    let time = SystemTime::UNIX_EPOCH + boot_to_wall + Duration::from_nanos(header.boot_time_ns);
    let (kind, outcome) = match header.decision {
        decision::AUDIT => (Kind::Audit, Decision::Allow),
        decision::GRANTED => (Kind::Granted, Decision::Allow),
        _ => (Kind::Deny, Decision::Deny),
    };
    Event {
        schema: SCHEMA_VERSION,
        seq: 0,
        kind,
        time: humantime::format_rfc3339_nanos(time).to_string(),
        agent,
        cgroup,
        call,
        pid: header.pid,
        comm: c_string(&header.comm),
        record: (header.record != UNNUMBERED).then_some(header.record),
        op: op::name(header.op).to_owned(),
        path: None,
        destination: None,
        device: None,
        capability: None,
        name: None,
        access: None,
        object_key: Some(format!("{:016x}", header.object_hash)),
        decision: outcome,
        reason: None,
        coverage,
        details: None,
    }
}

fn destination(net: &NetRecord) -> String {
    let address = Ipv6Addr::from(net.address);
    let host = match (net.family, address.to_ipv4_mapped()) {
        (4, Some(v4)) => v4.to_string(),
        _ => format!("[{address}]"),
    };
    let protocol = match net.protocol {
        PROTO_TCP => "tcp".to_owned(),
        PROTO_UDP => "udp".to_owned(),
        other => format!("proto-{other}"),
    };
    format!("{host}:{}/{protocol}", net.port)
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

fn access_names(bits: u32) -> String {
    let names: Vec<&str> = ACCESS_NAMES
        .into_iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, name)| name)
        .collect();
    names.join("+")
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
pub mod tests {
    use claw_common::COMM_BYTES;

    use super::*;

    /// An event of `kind` about agent `tools`, for tests elsewhere.
    pub fn sample(kind: &str) -> Event {
        let kind = serde_json::from_value(serde_json::json!(kind)).expect("an event kind");
        let mut event = Event::about(kind, "tools", "claw/tools", "open", Coverage::Full);
        event.path = Some("/etc/shadow".to_owned());
        event.decision = Decision::Deny;
        event
    }

    fn header(kind: u32, op: u32, decision: u32) -> RecordHeader {
        let mut comm = [0; COMM_BYTES];
        comm[..3].copy_from_slice(b"cat");
        RecordHeader {
            kind,
            op,
            boot_time_ns: 1_500_000_000,
            cgroup_id: 77,
            task_cgroup_id: 77,
            object_hash: 0,
            repeats_before: 0,
            record: 31,
            pid: 4242,
            ruleset: 5,
            decision,
            access: access::READ | access::WRITE,
            comm,
        }
    }

    fn bytes<T>(record: &T) -> Vec<u8> {
        // SAFETY: plain old data without padding.
        unsafe { std::slice::from_raw_parts((record as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    fn file_record(path: &[u8], path_len: i32, decision: u32) -> Vec<u8> {
        let mut record = FileRecord {
            header: header(record::FILE, op::OPEN, decision),
            path_len,
            _pad: 0,
            path: [0xAA; EVENT_PATH_BYTES],
        };
        record.path[..path.len()].copy_from_slice(path);
        bytes(&record)
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
    fn a_tool_calls_records_carry_its_call_id_from_the_cgroup() {
        let mut identities = identities();
        identities.call_started(
            78,
            CallIdentity {
                agent: "tools".to_owned(),
                call: "c-1".to_owned(),
                cgroup: "claw/tools/call-c-1".to_owned(),
            },
        );
        let mut record = FileRecord {
            header: RecordHeader {
                task_cgroup_id: 78,
                ..header(record::FILE, op::OPEN, decision::DENY)
            },
            path_len: 4,
            _pad: 0,
            path: [0; EVENT_PATH_BYTES],
        };
        record.path[..4].copy_from_slice(b"/x\0\0");
        let event = decode(&bytes(&record), &identities, Duration::ZERO, Coverage::Full).unwrap();
        assert_eq!(
            (
                event.agent.as_str(),
                event.cgroup.as_str(),
                event.call.as_deref()
            ),
            ("tools", "/claw/tools/call-c-1", Some("c-1"))
        );
        // Ended calls stay known for their last records.
        identities.call_ended(78);
        let event = decode(&bytes(&record), &identities, Duration::ZERO, Coverage::Full).unwrap();
        assert_eq!(event.call.as_deref(), Some("c-1"));
        // A call cgroup the daemon never started is not passed off as the agent's.
        record.header.task_cgroup_id = 79;
        let event = decode(&bytes(&record), &identities, Duration::ZERO, Coverage::Full).unwrap();
        assert_eq!((event.cgroup.as_str(), event.call), ("cgroup-id:79", None));
    }

    #[test]
    fn decodes_a_file_deny() {
        let bytes = file_record(b"/etc/secret\0", 12, decision::DENY);
        let event = decode(
            &bytes,
            &identities(),
            Duration::from_secs(1_700_000_000),
            Coverage::Full,
        )
        .unwrap();
        assert_eq!(event.kind, Kind::Deny);
        assert_eq!(event.agent, "tools");
        assert_eq!(event.cgroup, "/claw/tools");
        assert_eq!(event.pid, 4242);
        assert_eq!(event.comm, "cat");
        assert_eq!(event.op, "open");
        assert_eq!(event.path.as_deref(), Some("/etc/secret"));
        assert_eq!(event.access.as_deref(), Some("read+write"));
        assert_eq!(event.decision, Decision::Deny);
        assert_eq!(event.time, "2023-11-14T22:13:21.500000000Z");
    }

    #[test]
    fn audit_mode_event_says_it_was_allowed() {
        let bytes = file_record(b"/x\0", 3, decision::AUDIT);
        let event = decode(&bytes, &identities(), Duration::ZERO, Coverage::Full).unwrap();
        assert_eq!(
            (event.kind.as_str(), event.decision.as_str()),
            ("audit", "allow")
        );
    }

    #[test]
    fn decodes_network_denies_v4_and_v6() {
        let mut address = [0u8; 16];
        address[10..].copy_from_slice(&[0xff, 0xff, 10, 0, 0, 1]);
        let v4 = NetRecord {
            header: header(record::NET, op::CONNECT, decision::DENY),
            address,
            port: 443,
            protocol: PROTO_TCP,
            family: 4,
            _pad: 0,
        };
        let event = decode(&bytes(&v4), &identities(), Duration::ZERO, Coverage::Full).unwrap();
        assert_eq!(event.op, "connect");
        assert_eq!(event.destination.as_deref(), Some("10.0.0.1:443/tcp"));
        assert_eq!(event.path, None);
        let mapped_over_v6 = NetRecord {
            family: 6,
            protocol: PROTO_UDP,
            ..v4
        };
        let event = decode(
            &bytes(&mapped_over_v6),
            &identities(),
            Duration::ZERO,
            Coverage::Full,
        )
        .unwrap();
        assert_eq!(
            event.destination.as_deref(),
            Some("[::ffff:10.0.0.1]:443/udp")
        );
    }

    #[test]
    fn unresolved_path_and_unknown_ruleset_are_explicit() {
        let bytes = file_record(b"", -1, decision::DENY);
        let event = decode(&bytes, &Identities::new(), Duration::ZERO, Coverage::Full).unwrap();
        assert_eq!(event.path.as_deref(), Some("<unresolved>"));
        assert_eq!(event.agent, "unknown-ruleset-5");
        assert_eq!(event.cgroup, "cgroup-id:77");
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        assert_eq!(
            decode(&[0; 10], &identities(), Duration::ZERO, Coverage::Full),
            Err(DecodeError::Short(10))
        );
        let mut odd = file_record(b"/x\0", 3, decision::DENY);
        odd[0] = 99;
        assert_eq!(
            decode(&odd, &identities(), Duration::ZERO, Coverage::Full),
            Err(DecodeError::UnknownKind(99))
        );
    }

    #[test]
    fn json_has_the_documented_keys() {
        let bytes = file_record(b"/x\0", 3, decision::DENY);
        let event = decode(&bytes, &identities(), Duration::ZERO, Coverage::Full).unwrap();
        let value = serde_json::to_value(&event).unwrap();
        for key in [
            "time", "agent", "cgroup", "pid", "comm", "op", "path", "decision",
        ] {
            assert!(value.get(key).is_some(), "missing {key}: {value}");
        }
    }
}
