//! Landlock's denials as claw events: the kernel's audit records (Linux 6.15+, Landlock ABI 7)
//! read from the audit netlink socket's multicast group — beside auditd if it runs, which keeps
//! its records — and attributed to the agent whose process made the domain.
//!
//! A denial comes as an ACCESS record (`domain=… blockers=fs.read_file path="…"`); the first
//! denial of a domain is followed by its DOMAIN record (`status=allocated … comm="claw-1f"`),
//! whose comm is what the child claw started was named when it restricted itself: its cgroup
//! id (`supervise::landlock::tag`). Domains of other programs are not claw's: their records are
//! ignored.
//!
//! Written on libc: no maintained crate reads the audit multicast group.

use std::{
    collections::{HashMap, VecDeque},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use crate::{
    events::{
        bus::{Bus, Stage},
        event::{Decision, Event, Kind},
        identities::Identities,
    },
    kernel::enforcer::Coverage,
};

const AUDIT_GET: u16 = 1000;
const AUDIT_SET: u16 = 1001;
const AUDIT_LANDLOCK_ACCESS: u16 = 1423;
const AUDIT_LANDLOCK_DOMAIN: u16 = 1424;
const AUDIT_NLGRP_READLOG: u32 = 1;
const AUDIT_STATUS_ENABLED: u32 = 1;

/// A Landlock audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Access {
        domain: u64,
        blockers: Vec<String>,
        path: Option<String>,
    },
    Allocated {
        domain: u64,
        pid: u32,
        /// The program that made the domain (claw-agent or clawctl, for claw's).
        exe: String,
        comm: String,
    },
    Deallocated {
        domain: u64,
        denials: u64,
    },
}

/// The value of `key` in an audit record's text: quoted, or (an untrusted string with special
/// characters) hex-encoded, or a bare word.
fn value(text: &str, key: &str) -> Option<String> {
    let start = text
        .match_indices(&format!("{key}="))
        .find(|(at, _)| *at == 0 || text.as_bytes()[at - 1] == b' ')?
        .0
        + key.len()
        + 1;
    let rest = &text[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        return Some(quoted.split('"').next()?.to_owned());
    }
    let word = rest.split(' ').next()?;
    Some(word.to_owned())
}

/// A bare value that audit hex-encoded (an untrusted string with spaces, quotes or controls).
fn untrusted(text: &str, key: &str) -> Option<String> {
    let start = text.find(&format!(" {key}="))? + key.len() + 2;
    if text[start..].starts_with('"') {
        return value(text, key);
    }
    let word = text[start..].split(' ').next()?;
    let bytes: Option<Vec<u8>> = (0..word.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(word.get(i..i + 2)?, 16).ok())
        .collect();
    bytes.map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Parses the text of a record of type `kind` (`audit(SECONDS:SERIAL): k=v …`).
pub fn parse(kind: u16, text: &str) -> Option<Record> {
    let body = text.split_once("): ").map_or(text, |(_, body)| body);
    let body = &format!(" {body}");
    let domain = u64::from_str_radix(&value(body, "domain")?, 16).ok()?;
    match kind {
        AUDIT_LANDLOCK_ACCESS => Some(Record::Access {
            domain,
            blockers: value(body, "blockers")?
                .split(',')
                .map(str::to_owned)
                .collect(),
            path: untrusted(body, "path").or_else(|| untrusted(body, "name")),
        }),
        AUDIT_LANDLOCK_DOMAIN => match value(body, "status")?.as_str() {
            "allocated" => Some(Record::Allocated {
                domain,
                pid: value(body, "pid")?.parse().ok()?,
                exe: untrusted(body, "exe")?,
                comm: untrusted(body, "comm")?,
            }),
            "deallocated" => Some(Record::Deallocated {
                domain,
                denials: value(body, "denials")?.parse().ok()?,
            }),
            _ => None,
        },
        _ => None,
    }
}

/// One denial of a claw domain: the cgroup id the domain's process was started in, what was
/// blocked, and the creator's pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub cgroup_id: u64,
    pub creator_pid: u32,
    pub domain: u64,
    pub blockers: Vec<String>,
    pub path: Option<String>,
}

/// Denials waiting for their domain's record, at most.
const PENDING: usize = 1024;

/// Binds records to claw's domains: made by claw-agent or clawctl, named with a tag.
#[derive(Debug, Default)]
pub struct Attributor {
    /// claw-agent and the clawctl programs that start confined processes: a domain made by
    /// another program is not claw's, whatever its name (any process can take a name like a
    /// tag).
    programs: Vec<PathBuf>,
    /// Domain id → (cgroup id, creator pid) for claw's domains; None for others'.
    domains: HashMap<u64, Option<(u64, u32)>>,
    pending: VecDeque<(u64, Vec<String>, Option<String>)>,
    /// Denials of each of claw's live domains handed out as events.
    reported: HashMap<u64, u64>,
    /// Denials dropped before their domain was known (the queue was full).
    pub unattributed: u64,
    /// Denials of claw's domains that never came as records (the kernel's audit dropped them:
    /// its backlog full, or its rate limit), told by each domain's own count when it ends.
    pub unreported: u64,
}

impl Attributor {
    /// Attributes domains made by one of `programs` (resolved paths).
    pub fn new(programs: Vec<PathBuf>) -> Self {
        Self {
            programs,
            ..Self::default()
        }
    }

    /// The programs of a claw-agent at `exe`: itself, and clawctl beside it or in the `bin`
    /// beside its `sbin` (the package's layout), as the kernel resolves them.
    pub fn programs_of(exe: &Path) -> Vec<PathBuf> {
        let Some(dir) = exe.parent() else {
            return vec![exe.to_path_buf()];
        };
        let mut programs = vec![exe.to_path_buf()];
        for clawctl in [dir.join("clawctl"), dir.join("../bin/clawctl")] {
            if let Ok(real) = std::fs::canonicalize(&clawctl) {
                programs.push(real);
            }
        }
        programs
    }

    fn made_by_claw(&self, exe: &str) -> bool {
        // An upgraded binary shows as `PATH (deleted)` while the old one runs.
        let exe = Path::new(exe.strip_suffix(" (deleted)").unwrap_or(exe));
        self.programs.iter().any(|p| p == exe)
    }

    pub fn feed(&mut self, record: Record) -> Vec<Denial> {
        let denial = |(cgroup_id, creator_pid): (u64, u32), domain, blockers, path| Denial {
            cgroup_id,
            creator_pid,
            domain,
            blockers,
            path,
        };
        match record {
            Record::Access {
                domain,
                blockers,
                path,
            } => match self.domains.get(&domain) {
                Some(Some(owner)) => {
                    *self.reported.entry(domain).or_default() += 1;
                    vec![denial(*owner, domain, blockers, path)]
                }
                Some(None) => Vec::new(),
                None => {
                    if self.pending.len() == PENDING {
                        self.pending.pop_front();
                        self.unattributed += 1;
                    }
                    self.pending.push_back((domain, blockers, path));
                    Vec::new()
                }
            },
            Record::Allocated {
                domain,
                pid,
                exe,
                comm,
            } => {
                let owner = crate::policy::landlock::tag_cgroup_id(&comm)
                    .filter(|_| self.made_by_claw(&exe))
                    .map(|id| (id, pid));
                self.domains.insert(domain, owner);
                let (mine, others): (VecDeque<_>, VecDeque<_>) =
                    self.pending.drain(..).partition(|(d, _, _)| *d == domain);
                self.pending = others;
                match owner {
                    Some(owner) => {
                        *self.reported.entry(domain).or_default() += mine.len() as u64;
                        mine.into_iter()
                            .map(|(d, blockers, path)| denial(owner, d, blockers, path))
                            .collect()
                    }
                    None => Vec::new(),
                }
            }
            Record::Deallocated { domain, denials } => {
                if let Some(Some(_)) = self.domains.remove(&domain) {
                    let reported = self.reported.remove(&domain).unwrap_or(0);
                    self.unreported += denials.saturating_sub(reported);
                }
                Vec::new()
            }
        }
    }
}

/// (op, access) of a denial's first blocker, in the words of claw's events.
pub fn operation(blockers: &[String]) -> (&'static str, Option<&'static str>) {
    match blockers.first().map(String::as_str).unwrap_or("") {
        "fs.execute" => ("exec", Some("exec")),
        "fs.write_file" => ("open", Some("write")),
        "fs.read_file" | "fs.read_dir" => ("open", Some("read")),
        "fs.truncate" => ("truncate", Some("write")),
        "fs.remove_dir" => ("rmdir", Some("write")),
        "fs.remove_file" => ("unlink", Some("write")),
        "fs.make_dir" => ("mkdir", Some("write")),
        "fs.make_sym" => ("symlink", Some("write")),
        "fs.refer" => ("rename", Some("write")),
        "fs.ioctl_dev" => ("ioctl", None),
        "scope.signal" => ("signal", None),
        "scope.abstract_unix_socket" => ("connect", None),
        blocker if blocker.starts_with("fs.make_") => ("mknod", Some("write")),
        _ => ("landlock", None),
    }
}

/// The event of `denial`, its agent (and tool call) known from its cgroup id.
pub fn event(denial: &Denial, identities: &Identities, coverage: Coverage) -> Option<Event> {
    let (agent, cgroup, call) = match identities.call(denial.cgroup_id) {
        Some(call) => (
            call.agent.clone(),
            call.cgroup.clone(),
            Some(call.call.clone()),
        ),
        None => {
            let agent = identities
                .values()
                .find(|a| a.cgroup_id == denial.cgroup_id)?;
            (agent.name.clone(), agent.cgroup.clone(), None)
        }
    };
    let (op, access) = operation(&denial.blockers);
    let mut event = Event::about(Kind::Deny, &agent, &cgroup, op, coverage);
    event.call = call;
    event.path = denial.path.clone();
    event.access = access.map(str::to_owned);
    event.decision = Decision::Deny;
    event.details = Some(serde_json::json!({
        "enforced_by": "landlock",
        "blockers": denial.blockers,
        "landlock_domain": format!("{:x}", denial.domain),
        "domain_creator_pid": denial.creator_pid,
    }));
    event.reason = identities.reason(&event);
    Some(event)
}

/// Audit's state as found, put back when dropped (claw-agent turned it on to read Landlock's
/// records).
pub struct AuditEnabled {
    restore: bool,
}

impl Drop for AuditEnabled {
    fn drop(&mut self) {
        if self.restore {
            if let Ok(socket) = audit_socket(0) {
                let _ = set_enabled(&socket, false);
            }
        }
    }
}

fn audit_socket(groups: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: socket(2); the descriptor is owned from here on.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_AUDIT,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: just created.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a zeroed sockaddr_nl is valid; bind(2) with its size.
    let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    address.nl_family = libc::AF_NETLINK as u16;
    address.nl_groups = groups;
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            &address as *const libc::sockaddr_nl as *const libc::sockaddr,
            size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if bound != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(socket)
}

fn send(socket: &OwnedFd, kind: u16, payload: &[u8]) -> std::io::Result<()> {
    let mut message = Vec::with_capacity(16 + payload.len());
    message.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
    message.extend_from_slice(&kind.to_ne_bytes());
    message.extend_from_slice(&(libc::NLM_F_REQUEST as u16 | libc::NLM_F_ACK as u16).to_ne_bytes());
    message.extend_from_slice(&1u32.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes());
    message.extend_from_slice(payload);
    // SAFETY: send(2) of an initialised buffer.
    let sent = unsafe {
        libc::send(
            socket.as_raw_fd(),
            message.as_ptr().cast(),
            message.len(),
            0,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One message from the audit socket into `buffer`; its length.
fn receive(socket: &OwnedFd, buffer: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: recv(2) into a buffer of that size.
    let read = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            0,
        )
    };
    if read < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(read as usize)
}

/// The first message of `kind` the kernel answers with (its payload), or its error.
fn answer(socket: &OwnedFd, kind: u16) -> std::io::Result<Vec<u8>> {
    let mut buffer = vec![0u8; 8192];
    for _ in 0..4 {
        let read = receive(socket, &mut buffer)?;
        let message = &buffer[..read];
        if message.len() < 16 {
            continue;
        }
        let got = u16::from_ne_bytes([message[4], message[5]]);
        if got == libc::NLMSG_ERROR as u16 && message.len() >= 20 {
            let errno = i32::from_ne_bytes(message[16..20].try_into().expect("4 bytes"));
            if errno != 0 {
                return Err(std::io::Error::from_raw_os_error(-errno));
            }
            if kind == libc::NLMSG_ERROR as u16 {
                return Ok(Vec::new());
            }
            continue;
        }
        if got == kind {
            return Ok(message[16..].to_vec());
        }
    }
    Err(std::io::Error::other("no answer from the kernel's audit"))
}

fn set_enabled(socket: &OwnedFd, enabled: bool) -> std::io::Result<()> {
    // struct audit_status: mask, enabled, then fields left zero.
    let mut status = [0u8; 40];
    status[..4].copy_from_slice(&AUDIT_STATUS_ENABLED.to_ne_bytes());
    status[4..8].copy_from_slice(&u32::from(enabled).to_ne_bytes());
    send(socket, AUDIT_SET, &status)?;
    answer(socket, libc::NLMSG_ERROR as u16).map(drop)
}

/// Turns the kernel's audit on if it is off (Landlock logs nothing otherwise); the guard puts it
/// back. Err: audit cannot be used here, and why.
pub fn enable_audit() -> std::io::Result<AuditEnabled> {
    let socket = audit_socket(0)?;
    send(&socket, AUDIT_GET, &[])?;
    let status = answer(&socket, AUDIT_GET)?;
    let enabled = status
        .get(4..8)
        .map_or(0, |b| u32::from_ne_bytes(b.try_into().expect("4 bytes")));
    if enabled != 0 {
        return Ok(AuditEnabled { restore: false });
    }
    set_enabled(&socket, true)?;
    tracing::info!("turned the kernel's audit on to read Landlock's denials (it is turned off again when claw-agent stops)");
    Ok(AuditEnabled { restore: true })
}

/// Reads Landlock's records on a thread of its own and publishes claw's denials on `bus`.
pub fn follow(
    identities: Arc<RwLock<Identities>>,
    bus: Arc<Bus>,
    coverage: Coverage,
) -> std::io::Result<()> {
    let socket = audit_socket(1 << (AUDIT_NLGRP_READLOG - 1))?;
    std::thread::Builder::new()
        .name("landlock-audit".to_owned())
        .spawn(move || {
            let exe = std::env::current_exe().unwrap_or_default();
            let exe = exe
                .to_str()
                .and_then(|e| e.strip_suffix(" (deleted)"))
                .map_or(exe.clone(), PathBuf::from);
            let mut attributor = Attributor::new(Attributor::programs_of(&exe));
            let mut buffer = vec![0u8; 16 * 1024];
            loop {
                let read = match receive(&socket, &mut buffer) {
                    Ok(read) => read,
                    Err(err) => {
                    if err.raw_os_error() == Some(libc::ENOBUFS) {
                        tracing::warn!("Landlock audit records were lost (the socket's buffer overflowed)");
                        bus.count_lost(Stage::Landlock, 1);
                        continue;
                    }
                    if err.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    tracing::error!("reading Landlock's audit records: {err}; its denials are no longer reported");
                    return;
                    }
                };
                let message = &buffer[..read];
                if message.len() < 16 {
                    continue;
                }
                let kind = u16::from_ne_bytes([message[4], message[5]]);
                let text = String::from_utf8_lossy(&message[16..]);
                let Some(record) = parse(kind, text.trim_end_matches('\0')) else {
                    continue;
                };
                let dropped = attributor.unattributed + attributor.unreported;
                let denials = attributor.feed(record);
                let now_dropped = attributor.unattributed + attributor.unreported;
                if now_dropped > dropped {
                    bus.count_lost(Stage::Landlock, now_dropped - dropped);
                }
                for denial in denials {
                    let found = event(&denial, &identities.read().unwrap_or_else(|p| p.into_inner()), coverage);
                    if let Some(event) = found {
                        bus.publish(event);
                    }
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCESS: &str = r#"audit(1764790000.123:456): domain=1a2b3c blockers=fs.read_file path="/srv/secret" dev="sda1" ino=1234"#;
    const ALLOCATED: &str = r#"audit(1764790000.123:456): domain=1a2b3c status=allocated mode=enforcing pid=4321 uid=0 exe="/usr/sbin/claw-agent" comm="claw-2f""#;

    #[test]
    fn records_are_parsed() {
        assert_eq!(
            parse(AUDIT_LANDLOCK_ACCESS, ACCESS),
            Some(Record::Access {
                domain: 0x1a2b3c,
                blockers: vec!["fs.read_file".into()],
                path: Some("/srv/secret".into()),
            })
        );
        assert_eq!(
            parse(AUDIT_LANDLOCK_DOMAIN, ALLOCATED),
            Some(Record::Allocated {
                domain: 0x1a2b3c,
                pid: 4321,
                exe: "/usr/sbin/claw-agent".into(),
                comm: "claw-2f".into(),
            })
        );
        let gone = "audit(1.2:3): domain=1a2b3c status=deallocated denials=7";
        assert_eq!(
            parse(AUDIT_LANDLOCK_DOMAIN, gone),
            Some(Record::Deallocated {
                domain: 0x1a2b3c,
                denials: 7
            })
        );
    }

    #[test]
    fn untrusted_strings_come_hex_encoded() {
        // A path with a space: audit writes it as bare hex.
        let text = "audit(1.2:3): domain=1 blockers=fs.write_file path=2F612062 dev=\"sda1\" ino=1";
        let Some(Record::Access { path, .. }) = parse(AUDIT_LANDLOCK_ACCESS, text) else {
            panic!("not parsed");
        };
        assert_eq!(path.as_deref(), Some("/a b"));
    }

    #[test]
    fn denials_wait_for_their_domain_and_others_are_ignored() {
        let mut attributor = Attributor::new(vec![
            PathBuf::from("/usr/sbin/claw-agent"),
            PathBuf::from("/usr/bin/clawctl"),
        ]);
        let access = parse(AUDIT_LANDLOCK_ACCESS, ACCESS).unwrap();
        assert!(attributor.feed(access.clone()).is_empty());
        let denials = attributor.feed(parse(AUDIT_LANDLOCK_DOMAIN, ALLOCATED).unwrap());
        assert_eq!(denials.len(), 1);
        assert_eq!((denials[0].cgroup_id, denials[0].creator_pid), (0x2f, 4321));
        // Known from now on.
        assert_eq!(attributor.feed(access).len(), 1);
        // Another program's domain: never an event.
        let other = ALLOCATED
            .replace("1a2b3c", "99")
            .replace("claw-2f", "firefox");
        let other_access = ACCESS.replace("1a2b3c", "99");
        attributor.feed(parse(AUDIT_LANDLOCK_ACCESS, &other_access).unwrap());
        assert!(attributor
            .feed(parse(AUDIT_LANDLOCK_DOMAIN, &other).unwrap())
            .is_empty());
        assert!(attributor
            .feed(parse(AUDIT_LANDLOCK_ACCESS, &other_access).unwrap())
            .is_empty());
        // A tag taken by another program is not claw's.
        let forged = ALLOCATED
            .replace("1a2b3c", "77")
            .replace("/usr/sbin/claw-agent", "/home/u/claw-agent");
        let forged_access = ACCESS.replace("1a2b3c", "77");
        // clawctl's domains (tool calls) are claw's too, and so are an upgraded claw-agent's.
        for (domain, exe) in [
            ("55", "/usr/bin/clawctl"),
            ("56", "/usr/sbin/claw-agent (deleted)"),
        ] {
            let made = ALLOCATED
                .replace("1a2b3c", domain)
                .replace("/usr/sbin/claw-agent", exe);
            attributor
                .feed(parse(AUDIT_LANDLOCK_ACCESS, &ACCESS.replace("1a2b3c", domain)).unwrap());
            assert_eq!(
                attributor
                    .feed(parse(AUDIT_LANDLOCK_DOMAIN, &made).unwrap())
                    .len(),
                1,
                "{exe}"
            );
        }
        attributor.feed(parse(AUDIT_LANDLOCK_ACCESS, &forged_access).unwrap());
        assert!(attributor
            .feed(parse(AUDIT_LANDLOCK_DOMAIN, &forged).unwrap())
            .is_empty());
    }

    #[test]
    fn denials_the_kernel_dropped_are_counted_when_their_domain_ends() {
        let mut attributor = Attributor::new(vec![PathBuf::from("/usr/sbin/claw-agent")]);
        let access = parse(AUDIT_LANDLOCK_ACCESS, ACCESS).unwrap();
        attributor.feed(access.clone());
        attributor.feed(parse(AUDIT_LANDLOCK_DOMAIN, ALLOCATED).unwrap());
        attributor.feed(access);
        // Five denials in the domain's own count, two came as records.
        let ended = "audit(1.2:9): domain=1a2b3c status=deallocated denials=5";
        attributor.feed(parse(AUDIT_LANDLOCK_DOMAIN, ended).unwrap());
        assert_eq!(attributor.unreported, 3);
        // Another program's domain ending is none of claw's business.
        let other = ALLOCATED
            .replace("1a2b3c", "99")
            .replace("claw-2f", "firefox");
        attributor.feed(parse(AUDIT_LANDLOCK_DOMAIN, &other).unwrap());
        let gone = "audit(1.2:10): domain=99 status=deallocated denials=40";
        attributor.feed(parse(AUDIT_LANDLOCK_DOMAIN, gone).unwrap());
        assert_eq!(attributor.unreported, 3);
    }

    #[test]
    fn blockers_name_claws_operations() {
        assert_eq!(operation(&["fs.execute".into()]), ("exec", Some("exec")));
        assert_eq!(operation(&["fs.make_reg".into()]), ("mknod", Some("write")));
        assert_eq!(operation(&["fs.read_dir".into()]), ("open", Some("read")));
    }
}
