//! Grants (`clawctl allow EVENT`): exactly the object of one denial, for exactly the agent or
//! tool call it was denied to, once or for a while. Pure: a logged denial in, the GRANTS map
//! entry out.

use std::{net::IpAddr, time::Duration};

use claw_common::{op, Grant, GrantKey, NO_EXPIRY, RULE_PATH_BYTES, UNLIMITED_USES};
use serde::{Deserialize, Serialize};

use crate::events::event::{access_bits, Event, Kind};

/// How long a grant holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Lifetime {
    /// Uses it allows; None: any number until it expires.
    pub uses: Option<u32>,
    /// Seconds it holds for; None: until used up.
    pub seconds: Option<u64>,
}

/// Why no grant can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error(
        "say how long the grant holds: --once (one retry), --for 10m (any number for a while), or both"
    )]
    NoLifetime,
    #[error("event {seq} is a `{kind}` event — only denials can be allowed")]
    NotADenial { seq: u64, kind: String },
    #[error(
        "event {seq} carries no object key (logged by an older claw-agent) — add a rule instead"
    )]
    NoObjectKey { seq: u64 },
    #[error("event {seq}: unknown operation `{op}`")]
    UnknownOperation { seq: u64, op: String },
    #[error(
        "event {seq}: the path is {len} bytes long — grants name paths of at most {max} bytes; add a rule for a parent directory instead"
    )]
    PathTooLong { seq: u64, len: usize, max: usize },
    #[error("event {seq}: `{op}` is refused to every agent — no grant can allow it")]
    RefusedToEveryAgent { seq: u64, op: String },
    #[error(
        "event {seq}: no grant may allow writing inside {tree} — {}",
        crate::policy::rules::why_protected(tree)
    )]
    ProtectedTree { seq: u64, tree: &'static str },
    #[error("event {seq}: unreadable destination `{destination}`")]
    UnreadableDestination { seq: u64, destination: String },
    #[error(
        "event {seq}: a `{op}` denial names no file or destination a grant could hold — only file and network denials can be allowed"
    )]
    NoObject { seq: u64, op: String },
}

/// A grant of one use that nobody takes does not wait forever.
pub const ONCE_EXPIRES_AFTER: Duration = Duration::from_secs(3600);

impl Lifetime {
    /// `--once`, `--for D`, or both (one use within D).
    pub fn new(once: bool, duration: Option<Duration>) -> Result<Self, GrantError> {
        match (once, duration) {
            (false, None) => Err(GrantError::NoLifetime),
            (once, duration) => Ok(Self {
                uses: once.then_some(1),
                seconds: Some(duration.unwrap_or(ONCE_EXPIRES_AFTER).as_secs().max(1)),
            }),
        }
    }
}

/// The GRANTS entry that lets `denial`'s object through for `cgroup_id` (its agent's, or its
/// call's) within `lifetime`, counted from `now_ns` (CLOCK_BOOTTIME).
pub fn entry(
    denial: &Event,
    cgroup_id: u64,
    lifetime: Lifetime,
    now_ns: u64,
) -> Result<(GrantKey, Grant), GrantError> {
    let seq = denial.seq;
    if denial.kind != Kind::Deny {
        return Err(GrantError::NotADenial {
            seq,
            kind: denial.kind.to_string(),
        });
    }
    let object_hash = denial
        .object_key
        .as_deref()
        .and_then(|key| u64::from_str_radix(key, 16).ok())
        .ok_or(GrantError::NoObjectKey { seq })?;
    let code = op::code(&denial.op).ok_or_else(|| GrantError::UnknownOperation {
        seq,
        op: denial.op.clone(),
    })?;
    let mut grant = Grant {
        expires_ns: lifetime.seconds.map_or(NO_EXPIRY, |s| {
            now_ns.saturating_add(s.saturating_mul(1_000_000_000))
        }),
        uses_left: lifetime.uses.map_or(UNLIMITED_USES, i64::from),
        path_len: 0,
        port: 0,
        protocol: 0,
        _pad: 0,
        address: [0; 16],
        path: [0; RULE_PATH_BYTES],
        _pad2: 0,
    };
    let mut access = 0;
    match (&denial.path, &denial.destination) {
        (Some(path), _) if path.starts_with('/') => {
            if path.len() >= RULE_PATH_BYTES {
                return Err(GrantError::PathTooLong {
                    seq,
                    len: path.len(),
                    max: RULE_PATH_BYTES - 1,
                });
            }
            access = denial.access.as_deref().map_or(0, access_bits);
            if access & claw_common::access::ADMIN != 0 {
                return Err(GrantError::RefusedToEveryAgent {
                    seq,
                    op: denial.op.clone(),
                });
            }
            if access & claw_common::access::WRITE != 0 {
                if let Some(tree) = crate::policy::rules::protected_tree(path) {
                    return Err(GrantError::ProtectedTree { seq, tree });
                }
            }
            grant.path[..path.len()].copy_from_slice(path.as_bytes());
            grant.path_len = path.len() as u32 + 1;
        }
        (_, Some(destination))
            if [op::CONNECT, op::SENDMSG, op::BIND, op::LISTEN].contains(&code) =>
        {
            let (address, port, protocol) = parse_destination(destination).ok_or_else(|| {
                GrantError::UnreadableDestination {
                    seq,
                    destination: destination.clone(),
                }
            })?;
            grant.address = address;
            grant.port = port;
            grant.protocol = protocol;
        }
        _ => {
            return Err(GrantError::NoObject {
                seq,
                op: denial.op.clone(),
            })
        }
    }
    let key = GrantKey {
        cgroup_id,
        object_hash,
        op: code,
        access,
    };
    Ok((key, grant))
}

/// `ADDRESS:PORT/PROTOCOL` as events write it (IPv6 in brackets).
fn parse_destination(text: &str) -> Option<([u8; 16], u16, u8)> {
    let (rest, protocol) = text.rsplit_once('/')?;
    let protocol = match protocol {
        "tcp" => claw_common::PROTO_TCP,
        "udp" => claw_common::PROTO_UDP,
        other => other.strip_prefix("proto-")?.parse().ok()?,
    };
    let (host, port) = rest.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let address = match host.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    Some((address, port.parse().ok()?, protocol))
}

#[cfg(test)]
mod tests {
    use claw_common::access;

    use super::*;
    use crate::events::event::tests::sample;

    fn denial(op: &str) -> Event {
        let mut event = sample("deny");
        event.seq = 9;
        event.op = op.to_owned();
        event.access = Some("read".to_owned());
        event.object_key = Some("00000000000000ff".to_owned());
        event
    }

    #[test]
    fn a_file_grant_holds_exactly_the_denied_path_and_access() {
        let once = Lifetime::new(true, None).unwrap();
        let (key, grant) = entry(&denial("open"), 77, once, 1_000).unwrap();
        assert_eq!(
            key,
            GrantKey {
                cgroup_id: 77,
                object_hash: 0xff,
                op: op::OPEN,
                access: access::READ
            }
        );
        assert_eq!(&grant.path[..grant.path_len as usize], b"/etc/shadow\0");
        assert_eq!(grant.uses_left, 1);
        assert_eq!(grant.expires_ns, 1_000 + 3600 * 1_000_000_000);
    }

    #[test]
    fn a_network_grant_holds_the_destination() {
        let mut event = denial("connect");
        event.path = None;
        event.access = None;
        event.destination = Some("[::1]:8443/tcp".to_owned());
        let lifetime = Lifetime::new(false, Some(Duration::from_secs(600))).unwrap();
        let (key, grant) = entry(&event, 77, lifetime, 0).unwrap();
        assert_eq!((key.op, key.access), (op::CONNECT, 0));
        assert_eq!(grant.address, std::net::Ipv6Addr::LOCALHOST.octets());
        assert_eq!((grant.port, grant.protocol, grant.path_len), (8443, 6, 0));
        assert_eq!(grant.uses_left, UNLIMITED_USES);
        assert_eq!(grant.expires_ns, 600 * 1_000_000_000);
        event.destination = Some("10.0.0.1:53/udp".to_owned());
        let (_, grant) = entry(&event, 77, lifetime, 0).unwrap();
        assert_eq!(&grant.address[10..], &[0xff, 0xff, 10, 0, 0, 1]);
        // A listen denial: the local address it was refused at.
        event.op = "listen".to_owned();
        event.destination = Some("0.0.0.0:4444/tcp".to_owned());
        let (key, grant) = entry(&event, 77, lifetime, 0).unwrap();
        assert_eq!((key.op, grant.port), (op::LISTEN, 4444));
    }

    #[test]
    fn only_denials_of_files_and_destinations_are_granted() {
        let once = Lifetime::new(true, None).unwrap();
        let mut audit = denial("open");
        audit.kind = Kind::Audit;
        assert!(entry(&audit, 1, once, 0)
            .unwrap_err()
            .to_string()
            .contains("only denials"));
        let mut capability = denial("capability");
        capability.path = None;
        capability.capability = Some("CAP_SYS_ADMIN".to_owned());
        assert!(entry(&capability, 1, once, 0)
            .unwrap_err()
            .to_string()
            .contains("only file and network"));
        let mut old = denial("open");
        old.object_key = None;
        assert!(entry(&old, 1, once, 0)
            .unwrap_err()
            .to_string()
            .contains("object key"));
        let mut escape = denial("open");
        escape.path = Some("/sys/fs/cgroup/cgroup.procs".to_owned());
        escape.access = Some("write".to_owned());
        assert!(entry(&escape, 1, once, 0)
            .unwrap_err()
            .to_string()
            .contains("claw's own enforcement"));
        escape.access = Some("admin".to_owned());
        assert!(entry(&escape, 1, once, 0)
            .unwrap_err()
            .to_string()
            .contains("every agent"));
        let mut long = denial("open");
        long.path = Some(format!("/{}", "a".repeat(300)));
        assert!(entry(&long, 1, once, 0)
            .unwrap_err()
            .to_string()
            .contains("parent directory"));
        assert!(Lifetime::new(false, None)
            .unwrap_err()
            .to_string()
            .contains("--once"));
    }
}
