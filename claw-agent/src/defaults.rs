//! Where claw's files and sockets are unless told otherwise. A leaf: it uses nothing of the
//! crate, so any module may use it.

use std::time::Duration;

/// The control socket: root only, outside every agent.
pub const CONTROL_SOCKET: &str = "/run/claw/claw.sock";

/// The agent socket's name, beside the control socket unless told otherwise: where claw-agent
/// answers processes inside agents about their own events.
pub const AGENT_SOCKET_NAME: &str = "agent.sock";

/// The hash-chained audit log.
pub const AUDIT_LOG: &str = "/var/log/claw/audit.log";

/// Where maps and links are pinned, to outlive the daemon (on a bpf filesystem).
pub const PIN_DIR: &str = "/sys/fs/bpf/claw";

/// Where the kernel lists its active LSMs.
pub const LSM_LIST: &str = "/sys/kernel/security/lsm";

/// The running kernel's BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Forwarders' spools, one directory each.
pub const SPOOL_DIR: &str = "/var/lib/claw/spool";

/// The metrics page's address.
pub const METRICS_LISTEN: &str = "127.0.0.1:9464";

/// Longest claw-agent trusts a DNS answer before resolving again, whatever its TTL.
pub const MAX_DNS_TTL: Duration = Duration::from_secs(300);
