//! Events as SIEMs take them: a syslog record (RFC 5424) whose message is the event in JSON, CEF
//! or OCSF. Pure functions; the transport is forward.rs.

use std::time::SystemTime;

use serde_json::{json, Value};

use crate::{
    events::event::{Decision, Event},
    export::config::Format,
};

/// Facility of every record: "log audit" (13).
const FACILITY: u8 = 13;

/// The private enterprise number in structured data: 32473 is the one RFC 5612 reserves for
/// documentation, used until claw has its own.
const SD_ID: &str = "claw@32473";

/// RFC 5424 severity of an event: what an operator should look at first.
fn severity(event: &Event) -> u8 {
    match event.kind.as_str() {
        "oom" => 3,
        "deny" | "lost" | "throttled" | "pids_max" => 4,
        "audit" => 5,
        _ => 6,
    }
}

/// One syslog record: `<PRI>1 TIME HOST claw PID KIND [claw@32473 seq="N"] PAYLOAD`.
pub fn syslog_record(event: &Event, format: Format, hostname: &str, pid: u32) -> String {
    format!(
        "<{}>1 {} {} claw {pid} {} [{SD_ID} seq=\"{}\"] {}",
        FACILITY * 8 + severity(event),
        syslog_time(&event.time),
        if hostname.is_empty() { "-" } else { hostname },
        event.kind,
        event.seq,
        payload(event, format)
    )
}

/// RFC 5424 allows at most six digits of a second's fraction; events carry nine.
fn syslog_time(time: &str) -> String {
    match humantime::parse_rfc3339(time) {
        Ok(parsed) => humantime::format_rfc3339_micros(parsed).to_string(),
        Err(_) => "-".to_owned(),
    }
}

pub fn payload(event: &Event, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string(event).unwrap_or_default(),
        Format::Cef => cef(event),
        Format::Ocsf => ocsf(event).to_string(),
    }
}

fn epoch_millis(time: &str) -> u64 {
    humantime::parse_rfc3339(time)
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// CEF header fields escape `\` and `|`.
fn cef_header(text: &str) -> String {
    text.replace('\\', "\\\\").replace('|', "\\|")
}

/// CEF extension values escape `\`, `=` and line breaks.
fn cef_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('=', "\\=")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

/// `HOST:PORT/PROTOCOL` (IPv6 in brackets) -> (host, port, protocol).
fn split_destination(destination: &str) -> Option<(&str, &str, &str)> {
    let (address, protocol) = destination.rsplit_once('/')?;
    let (host, port) = address.rsplit_once(':')?;
    Some((
        host.trim_start_matches('[').trim_end_matches(']'),
        port,
        protocol,
    ))
}

fn cef(event: &Event) -> String {
    let cef_severity = match event.kind.as_str() {
        "oom" => 8,
        "deny" => 7,
        "lost" => 6,
        "audit" => 5,
        "throttled" | "pids_max" => 4,
        _ => 3,
    };
    let name = format!("{} {}", event.op, event.kind);
    let mut extension = vec![
        format!("rt={}", epoch_millis(&event.time)),
        format!("externalId={}", event.seq),
        format!("act={}", cef_value(event.decision.as_str())),
        format!("cs1Label=agent cs1={}", cef_value(&event.agent)),
        format!("cs2Label=cgroup cs2={}", cef_value(&event.cgroup)),
        format!("spid={}", event.pid),
        format!("sproc={}", cef_value(&event.comm)),
    ];
    if let Some(path) = &event.path {
        extension.push(format!("filePath={}", cef_value(path)));
    }
    if let Some((host, port, protocol)) = event.destination.as_deref().and_then(split_destination) {
        extension.push(format!("dst={}", cef_value(host)));
        extension.push(format!("dpt={port}"));
        extension.push(format!("proto={}", cef_value(protocol)));
    }
    if let Some(object) = event.device.as_deref().or(event.capability.as_deref()) {
        extension.push(format!("cs3Label=object cs3={}", cef_value(object)));
    }
    if let Some(details) = &event.details {
        extension.push(format!("msg={}", cef_value(&details.to_string())));
    }
    format!(
        "CEF:0|claw|claw-agent|{}|{}|{}|{cef_severity}|{}",
        env!("CARGO_PKG_VERSION"),
        cef_header(&format!("{}:{}", event.kind, event.op)),
        cef_header(&name),
        extension.join(" ")
    )
}

/// OCSF 1.1: file operations are File System Activity, exec and process ends Process Activity,
/// connects and sends Network Activity; the rest (counts, policy) the Base Event. claw's own
/// fields go under `unmapped`.
fn ocsf(event: &Event) -> Value {
    let (category, class, activity) = match event.op.as_str() {
        "open" | "mmap" | "mprotect" | "truncate" => (1, 1001, 2),
        "unlink" | "rmdir" => (1, 1001, 4),
        "mkdir" | "mknod" | "symlink" | "link" => (1, 1001, 1),
        "rename" | "chmod" | "chown" | "xattr" => (1, 1001, 3),
        "exec" => (1, 1007, 1),
        "oom-kill" | "exited" => (1, 1007, 2),
        "connect" | "sendmsg" | "unix-connect" => (4, 4001, 1),
        "bind" | "listen" => (4, 4001, 7),
        _ => (0, 0, 0),
    };
    let (disposition_id, disposition) = match event.decision.as_str() {
        "deny" => (2, "Blocked"),
        "allow" => (1, "Allowed"),
        _ => (0, "Unknown"),
    };
    let mut record = json!({
        "category_uid": category,
        "class_uid": class,
        "activity_id": activity,
        "type_uid": class * 100 + activity,
        "time": epoch_millis(&event.time),
        "severity_id": match event.kind.as_str() { "oom" => 4, "deny" | "lost" => 3, "audit" | "throttled" => 2, _ => 1 },
        "disposition_id": disposition_id,
        "disposition": disposition,
        "status_id": if event.decision == Decision::Deny { 2 } else { 1 },
        "metadata": {
            "version": "1.1.0",
            "uid": event.seq.to_string(),
            "product": { "name": "claw", "vendor_name": "claw", "version": env!("CARGO_PKG_VERSION") },
        },
        "actor": { "process": { "pid": event.pid, "name": event.comm } },
        "unmapped": {
            "kind": event.kind,
            "op": event.op,
            "agent": event.agent,
            "cgroup": event.cgroup,
            "coverage": event.coverage_name(),
            "access": event.access,
            "device": event.device,
            "capability": event.capability,
            "details": event.details,
        },
    });
    if let Some(path) = &event.path {
        record["file"] = json!({ "path": path });
    }
    if let Some((host, port, protocol)) = event.destination.as_deref().and_then(split_destination) {
        record["dst_endpoint"] = json!({ "ip": host, "port": port.parse::<u16>().ok() });
        record["connection_info"] = json!({ "protocol_name": protocol });
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::event::tests::sample;

    fn connect_event() -> Event {
        let mut event = sample("deny");
        event.seq = 42;
        event.time = "2026-11-22T10:00:00.123456789Z".to_owned();
        event.op = "connect".to_owned();
        event.path = None;
        event.destination = Some("[2001:db8::1]:443/tcp".to_owned());
        event.comm = "cu|rl=x".to_owned();
        event
    }

    #[test]
    fn syslog_records_follow_rfc_5424() {
        let record = syslog_record(&connect_event(), Format::Json, "node-1", 77);
        let (header, message) = record.split_once("] ").unwrap();
        assert_eq!(
            header,
            "<108>1 2026-11-22T10:00:00.123456Z node-1 claw 77 deny [claw@32473 seq=\"42\""
        );
        let event: Event = serde_json::from_str(message).unwrap();
        assert_eq!(event, connect_event());
    }

    #[test]
    fn cef_escapes_and_maps_the_destination() {
        let line = payload(&connect_event(), Format::Cef);
        assert!(line.starts_with("CEF:0|claw|claw-agent|"), "{line}");
        assert!(line.contains("|deny:connect|connect deny|7|"), "{line}");
        for part in [
            "rt=1795341600123",
            "externalId=42",
            "act=deny",
            "cs1Label=agent cs1=tools",
            "sproc=cu|rl\\=x",
            "dst=2001:db8::1",
            "dpt=443",
            "proto=tcp",
        ] {
            assert!(line.contains(part), "missing {part}: {line}");
        }
    }

    #[test]
    fn ocsf_classes_follow_the_operation() {
        let network = ocsf(&connect_event());
        assert_eq!(network["class_uid"], 4001);
        assert_eq!(network["type_uid"], 400101);
        assert_eq!(network["disposition"], "Blocked");
        assert_eq!(network["dst_endpoint"]["port"], 443);
        assert_eq!(network["metadata"]["uid"], "42");
        let file = ocsf(&sample("deny"));
        assert_eq!(file["class_uid"], 1001);
        assert_eq!(file["file"]["path"], "/etc/shadow");
        assert_eq!(file["unmapped"]["agent"], "tools");
        let mut policy = sample("policy");
        policy.op = "apply".to_owned();
        assert_eq!(ocsf(&policy)["class_uid"], 0);
    }
}
