//! Decoding the kernel's ring-buffer records into events.

use std::{
    net::Ipv6Addr,
    time::{Duration, SystemTime},
};

use claw_common::{
    decision, device_kind, op, record, DeviceRecord, FileRecord, NetRecord, RecordHeader,
    EVENT_PATH_BYTES, PROTO_TCP, PROTO_UDP, UNNUMBERED,
};

use serde_json::json;

use crate::{
    events::{
        event::{access_names, Decision, Event, Kind, SCHEMA_VERSION},
        identities::Identities,
    },
    kernel::{catalogue, enforcer::Coverage},
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("kernel record of {0} bytes is too short")]
    Short(usize),
    #[error("kernel record of unknown kind {0}")]
    UnknownKind(u32),
}

/// Reads a `T` from the front of `bytes`, if they are long enough.
fn read_record<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: the length is checked and the record types are plain old data (any bytes valid).
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
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
            let target = i32::from_ne_bytes([
                net.address[0],
                net.address[1],
                net.address[2],
                net.address[3],
            ]);
            let details = match header.op {
                op::SIGNAL => Some(json!({ "target_pid": target, "signal": net.port })),
                op::PTRACE => Some(json!({ "target_pid": target, "mode": net.port })),
                op::TASK_CHANGE => Some(json!({
                    "target_pid": target,
                    "call": op::task_change::name(net.port),
                })),
                _ => None,
            };
            if details.is_some() {
                event.details = details;
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
    if coverage == Coverage::Landlock
        && event.kind == Kind::Audit
        && matches!(event.op.as_str(), "open" | "exec")
    {
        // Seen at the system call's entry by a tracepoint, which decides nothing: for a process
        // claw started Landlock decides (its refusal is a deny event of its own); for another
        // process in the agent's cgroup it went through.
        event.decision = Decision::None;
        event.details = Some(serde_json::json!({
            "reported_by": "tracepoint",
            "decided_by": "Landlock for the processes claw started (a refusal is a deny event with enforced_by landlock); nothing for other processes",
        }));
    }
    Ok((header, event))
}

/// How an event names a cgroup known only by its id (ingest names a descendant of an agent's).
pub fn unnamed(cgroup_id: u64) -> String {
    format!("cgroup-id:{cgroup_id}")
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
            None => cgroup = unnamed(header.task_cgroup_id),
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
        coverage: Some(coverage),
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

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use claw_common::{access, COMM_BYTES};

    use super::*;
    use crate::events::{event::tests::identities, identities::CallIdentity};

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
