//! Events as operators, the audit log and SIEMs see them, and their decoding from kernel records.

use std::time::{Duration, SystemTime};

use claw_common::{decision, op, DenyRecord, EVENT_PATH_BYTES};
use serde::{Deserialize, Serialize};

/// Version of the event schema; bumped on any incompatible change of the fields below.
pub const SCHEMA_VERSION: u32 = 1;

/// One decision the kernel took about an agent's process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub schema: u32,
    pub kind: String,
    /// RFC 3339, UTC, nanoseconds.
    pub time: String,
    pub agent: String,
    /// The agent's cgroup as /proc/PID/cgroup shows it: relative to the cgroup v2 root, with a
    /// leading `/`.
    pub cgroup: String,
    pub pid: u32,
    pub comm: String,
    pub op: String,
    pub path: String,
    pub decision: String,
}

/// Who an agent id is, as the running policy says.
#[derive(Debug, Clone)]
pub struct AgentIdentity {
    pub id: u32,
    pub name: String,
    pub cgroup: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("kernel record of {0} bytes is shorter than a deny record")]
    Short(usize),
}

/// Offset that turns CLOCK_BOOTTIME (what the kernel stamps) into wall-clock time.
pub fn boot_to_wall_offset() -> Duration {
    let read = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec to the pointer it is given.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    };
    let boot = read(libc::CLOCK_BOOTTIME);
    let wall = read(libc::CLOCK_REALTIME);
    wall.saturating_sub(boot)
}

pub fn decode(
    bytes: &[u8],
    agents: &[AgentIdentity],
    boot_to_wall: Duration,
) -> Result<Event, DecodeError> {
    if bytes.len() < size_of::<DenyRecord>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: the length is checked and DenyRecord is plain old data (any bytes are valid).
    let record: DenyRecord = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let (agent, cgroup) = match agents.iter().find(|a| a.id == record.agent_id) {
        Some(a) => (a.name.clone(), format!("/{}", a.cgroup)),
        None => (
            format!("unknown-agent-{}", record.agent_id),
            format!("cgroup-id:{}", record.cgroup_id),
        ),
    };
    let path = if record.path_len > 0 {
        let len = (record.path_len as usize).min(EVENT_PATH_BYTES);
        c_string(&record.path[..len])
    } else {
        format!("<unresolved: errno {}>", -record.path_len)
    };
    let time = SystemTime::UNIX_EPOCH + boot_to_wall + Duration::from_nanos(record.boot_time_ns);
    Ok(Event {
        schema: SCHEMA_VERSION,
        kind: "deny".to_owned(),
        time: humantime::format_rfc3339_nanos(time).to_string(),
        agent,
        cgroup,
        pid: record.pid,
        comm: c_string(&record.comm),
        op: op_name(record.op),
        path,
        decision: decision_name(record.decision),
    })
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn op_name(code: u32) -> String {
    match code {
        op::FILE_OPEN => "open".to_owned(),
        other => format!("op-{other}"),
    }
}

fn decision_name(code: u32) -> String {
    match code {
        decision::DENY => "deny".to_owned(),
        other => format!("decision-{other}"),
    }
}

#[cfg(test)]
mod tests {
    use claw_common::COMM_BYTES;

    use super::*;

    fn record_bytes(path: &[u8], path_len: i32) -> Vec<u8> {
        let mut record = DenyRecord {
            boot_time_ns: 1_500_000_000,
            cgroup_id: 77,
            pid: 4242,
            agent_id: 1,
            op: op::FILE_OPEN,
            decision: decision::DENY,
            path_len,
            _pad: 0,
            comm: [0; COMM_BYTES],
            path: [0xAA; EVENT_PATH_BYTES],
        };
        record.comm[..3].copy_from_slice(b"cat");
        record.path[..path.len()].copy_from_slice(path);
        // SAFETY: DenyRecord is plain old data without padding.
        unsafe {
            std::slice::from_raw_parts(
                (&record as *const DenyRecord).cast::<u8>(),
                size_of::<DenyRecord>(),
            )
        }
        .to_vec()
    }

    fn agents() -> Vec<AgentIdentity> {
        vec![AgentIdentity {
            id: 1,
            name: "tools".to_owned(),
            cgroup: "claw/tools".to_owned(),
        }]
    }

    #[test]
    fn decodes_a_deny() {
        let bytes = record_bytes(b"/etc/secret\0", 12);
        let event = decode(&bytes, &agents(), Duration::from_secs(1_700_000_000)).unwrap();
        assert_eq!(event.agent, "tools");
        assert_eq!(event.cgroup, "/claw/tools");
        assert_eq!(event.pid, 4242);
        assert_eq!(event.comm, "cat");
        assert_eq!(event.op, "open");
        assert_eq!(event.path, "/etc/secret");
        assert_eq!(event.decision, "deny");
        assert_eq!(event.time, "2023-11-14T22:13:21.500000000Z");
    }

    #[test]
    fn unresolved_path_and_unknown_agent_are_explicit() {
        let bytes = record_bytes(b"", -36);
        let event = decode(&bytes, &[], Duration::ZERO).unwrap();
        assert_eq!(event.path, "<unresolved: errno 36>");
        assert_eq!(event.agent, "unknown-agent-1");
        assert_eq!(event.cgroup, "cgroup-id:77");
    }

    #[test]
    fn short_record_is_an_error() {
        assert_eq!(
            decode(&[0; 10], &agents(), Duration::ZERO),
            Err(DecodeError::Short(10))
        );
    }

    #[test]
    fn json_has_the_documented_keys() {
        let bytes = record_bytes(b"/x\0", 3);
        let event = decode(&bytes, &agents(), Duration::ZERO).unwrap();
        let value = serde_json::to_value(&event).unwrap();
        for key in [
            "time", "agent", "cgroup", "pid", "comm", "op", "path", "decision",
        ] {
            assert!(value.get(key).is_some(), "missing {key}: {value}");
        }
    }
}
