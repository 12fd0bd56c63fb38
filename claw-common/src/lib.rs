//! Records and map keys that cross the kernel/user boundary.
//!
//! Every type here is `#[repr(C)]`, `Copy`, built from fixed-width integers and byte arrays, with no
//! implicit padding (each has a compile-time size assertion), because the kernel programs and the
//! daemon read the same bytes. Kinds and verdicts travel as integers; userspace turns them into
//! enums with `TryFrom`.
#![no_std]

/// Bytes of a path kept in a rule key. An LPM trie key holds at most 256 bytes of data, and the
/// first four are the agent id, so rule paths are limited to 252 bytes; longer opened paths still
/// match directory rules on their first 252 bytes.
pub const RULE_PATH_BYTES: usize = 252;

/// Bytes of a path reported in an event: the kernel's PATH_MAX, so a reported path is never cut.
pub const EVENT_PATH_BYTES: usize = 4096;

/// Length of a task's command name in the kernel (TASK_COMM_LEN).
pub const COMM_BYTES: usize = 16;

/// Access bits stored as the value of a file rule.
pub mod access {
    /// The agent may open the file (issue 2 checks every open against this bit).
    pub const READ: u32 = 1;
}

/// Operations reported in events.
pub mod op {
    pub const FILE_OPEN: u32 = 1;
}

/// Decisions reported in events.
pub mod decision {
    pub const DENY: u32 = 1;
}

/// Indices of the per-CPU counters the programs keep, so that nothing is lost silently.
pub mod counter {
    /// Opens by processes of an agent that a rule allowed.
    pub const ALLOWED: u32 = 0;
    /// Opens by processes of an agent that were denied.
    pub const DENIED: u32 = 1;
    /// Deny events that did not fit in the ring buffer (the deny itself still happened).
    pub const EVENTS_LOST: u32 = 2;
    /// Opens whose path the kernel could not resolve; they are denied (fail closed).
    pub const PATH_ERRORS: u32 = 3;
    /// Number of counters.
    pub const COUNT: u32 = 4;
}

/// Key of the file rule trie: an agent id followed by a path. A rule for the directory `/usr/` is
/// the prefix `agent ++ "/usr/"`; a rule for the exact file `/etc/hosts` is the prefix
/// `agent ++ "/etc/hosts\0"`, so that it matches that path and no longer one.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PathRuleKey {
    /// Agent id in big-endian byte order, so that it is the leading bits of the prefix.
    pub agent_id: [u8; 4],
    pub path: [u8; RULE_PATH_BYTES],
}

/// A denied operation, as the kernel writes it to the event ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DenyRecord {
    /// CLOCK_BOOTTIME of the decision, in nanoseconds.
    pub boot_time_ns: u64,
    /// cgroup v2 id (inode number) of the denied task's cgroup.
    pub cgroup_id: u64,
    /// Thread group id (what userspace calls the pid).
    pub pid: u32,
    pub agent_id: u32,
    /// One of [`op`].
    pub op: u32,
    /// One of [`decision`].
    pub decision: u32,
    /// Bytes of `path` the kernel wrote, including the terminating NUL, or a negative errno when
    /// the path could not be resolved.
    pub path_len: i32,
    /// Explicit padding so that the layout has no hidden bytes.
    pub _pad: u32,
    pub comm: [u8; COMM_BYTES],
    pub path: [u8; EVENT_PATH_BYTES],
}

const _: () = assert!(core::mem::size_of::<PathRuleKey>() == 256);
const _: () = assert!(core::mem::size_of::<DenyRecord>() == 40 + COMM_BYTES + EVENT_PATH_BYTES);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data types: fixed-width integers and byte arrays, no padding, any bit
    // pattern is valid.
    unsafe impl aya::Pod for super::PathRuleKey {}
    unsafe impl aya::Pod for super::DenyRecord {}
}
