//! Records and map keys that cross the kernel/user boundary.
//!
//! Every type here is `#[repr(C)]`, `Copy`, built from fixed-width integers and byte arrays, with no
//! implicit padding (each has a compile-time size assertion), because the kernel programs and the
//! daemon read the same bytes. Kinds and verdicts travel as integers; userspace turns them into
//! enums.
#![no_std]

/// Bytes of a path kept in a rule key. An LPM trie key holds at most 256 bytes of data, and the
/// first four are the ruleset id, so rule paths are limited to 252 bytes; longer opened paths
/// still match directory rules on their first 252 bytes.
pub const RULE_PATH_BYTES: usize = 252;

/// Bytes of a path reported in an event: the kernel's PATH_MAX, so a reported path is never cut.
pub const EVENT_PATH_BYTES: usize = 4096;

/// Room for a resolved path, plus `/` and one file name appended to a directory's path.
pub const PATH_BUFFER: usize = 2 * EVENT_PATH_BYTES;

/// Length of a task's command name in the kernel (TASK_COMM_LEN).
pub const COMM_BYTES: usize = 16;

/// Port ranges one network rule can hold.
pub const MAX_PORT_RANGES: usize = 16;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
/// Set in a NET_RULES key's protocol for a listen rule (where an agent may bind and listen),
/// keeping those apart from connect rules in the one trie: TCP and UDP leave the bit free.
pub const LISTEN_RULE: u8 = 0x80;

/// Access bits: the value of a file rule, and what an operation needs.
pub mod access {
    /// Open for reading.
    pub const READ: u32 = 1;
    /// Open for writing; create, remove, rename, link, truncate, chmod, chown.
    pub const WRITE: u32 = 2;
    /// Execute as a program (execve).
    pub const EXEC: u32 = 4;
    /// Map executable (the dynamic loader, shared libraries, the program's own image).
    pub const MAP: u32 = 8;
    /// Connect or send to the Unix socket bound to the file. Apart from WRITE so that an agent
    /// can reach claw-agent's agent socket without being able to unlink or replace it.
    pub const CONNECT: u32 = 16;
    /// Mounting and changing the root: no rule grants it, so agents never may.
    pub const ADMIN: u32 = 1 << 31;
}

/// How an agent's denials take effect (AgentEntry::mode).
pub mod mode {
    pub const ENFORCE: u32 = 0;
    /// Would-be denials are reported and the operation proceeds.
    pub const AUDIT: u32 = 1;
}

/// Operations reported in events.
pub mod op {
    pub const OPEN: u32 = 1;
    pub const EXEC: u32 = 2;
    pub const MMAP: u32 = 3;
    pub const MPROTECT: u32 = 4;
    pub const MKNOD: u32 = 5;
    pub const UNLINK: u32 = 6;
    pub const MKDIR: u32 = 7;
    pub const RMDIR: u32 = 8;
    pub const RENAME: u32 = 9;
    pub const LINK: u32 = 10;
    pub const SYMLINK: u32 = 11;
    pub const TRUNCATE: u32 = 12;
    pub const CHMOD: u32 = 13;
    pub const CHOWN: u32 = 14;
    pub const CONNECT: u32 = 15;
    pub const SENDMSG: u32 = 16;
    /// Creating a raw or packet socket (NetRecord: `family`, `port` holds the socket type).
    pub const SOCKET: u32 = 17;
    pub const MOUNT: u32 = 18;
    pub const CHROOT: u32 = 19;
    /// Connecting or sending to a Unix socket (the path it is bound to).
    pub const UNIX_CONNECT: u32 = 20;
    /// The bpf() syscall.
    pub const BPF: u32 = 21;
    /// Using a capability on the deny list (NetRecord: `port` holds the capability number).
    pub const CAPABILITY: u32 = 22;
    /// Setting or removing an extended attribute other than `user.*`, or an ACL.
    pub const XATTR: u32 = 23;
    /// Starting a child directly in another cgroup (clone3 with CLONE_INTO_CGROUP).
    pub const CLONE_INTO_CGROUP: u32 = 24;
    /// Opening or making a device node (DeviceRecord).
    pub const DEVICE: u32 = 25;
    /// Signalling a process outside the agent (NetRecord: `port` holds the signal, `address`
    /// the target's pid in its first four bytes, native order).
    pub const SIGNAL: u32 = 26;
    /// Tracing a process outside the agent (NetRecord: `port` holds the ptrace mode, `address`
    /// the target's pid).
    pub const PTRACE: u32 = 27;
    /// Starting a program with a preload variable the agent may not pass (FileRecord: `path`
    /// holds the variable, `NAME=value`).
    pub const PRELOAD: u32 = 28;
    /// Changing how another process is scheduled or limited — its nice value, I/O priority,
    /// scheduler or CPU affinity, memory placement, resource limits — outside the agent
    /// (NetRecord: `address` the target's pid, `port` one of [`task_change`]).
    pub const TASK_CHANGE: u32 = 29;
    /// Using a System V IPC object (message queue, semaphore set, shared memory segment).
    pub const SYSV_IPC: u32 = 30;
    /// Binding an IPv4/IPv6 socket to a port no listen rule names (NetRecord: the local address).
    pub const BIND: u32 = 31;
    /// Listening on a TCP socket whose address and port no listen rule names (NetRecord: the
    /// local address; port 0 when it was never bound).
    pub const LISTEN: u32 = 32;
    /// Using a kernel key or keyring (keyctl, request_key, add_key to a keyring).
    pub const KEY: u32 = 33;
    /// The kernel asked to load a module on the agent's behalf (FileRecord: `path` holds the
    /// module's name or alias).
    pub const MODULE_REQUEST: u32 = 34;
    /// Watching a path (inotify, fanotify, dnotify) outside files.read.
    pub const NOTIFY: u32 = 35;
    /// Setting a file's access or modification time (utimensat, futimens, utime).
    pub const TIMES: u32 = 36;
    /// Pushing input into a terminal (TIOCSTI) or the console's selection tricks (TIOCLINUX).
    pub const TERMINAL: u32 = 37;

    /// Which change of another process a TASK_CHANGE record reports.
    pub mod task_change {
        pub const NICE: u16 = 1;
        pub const IOPRIO: u16 = 2;
        pub const SCHEDULER: u16 = 3;
        pub const MEMORY: u16 = 4;
        pub const RLIMIT: u16 = 5;

        /// The system calls behind each change, as events name them.
        pub fn name(change: u16) -> &'static str {
            match change {
                NICE => "setpriority",
                IOPRIO => "ioprio_set",
                SCHEDULER => "sched_setscheduler/sched_setaffinity",
                MEMORY => "migrate_pages/move_pages",
                RLIMIT => "prlimit",
                _ => "unknown",
            }
        }
    }

    /// Each operation's name, as events show it.
    pub const NAMES: [(u32, &str); 37] = [
        (OPEN, "open"),
        (EXEC, "exec"),
        (MMAP, "mmap"),
        (MPROTECT, "mprotect"),
        (MKNOD, "mknod"),
        (UNLINK, "unlink"),
        (MKDIR, "mkdir"),
        (RMDIR, "rmdir"),
        (RENAME, "rename"),
        (LINK, "link"),
        (SYMLINK, "symlink"),
        (TRUNCATE, "truncate"),
        (CHMOD, "chmod"),
        (CHOWN, "chown"),
        (CONNECT, "connect"),
        (SENDMSG, "sendmsg"),
        (SOCKET, "socket"),
        (MOUNT, "mount"),
        (CHROOT, "chroot"),
        (UNIX_CONNECT, "unix-connect"),
        (BPF, "bpf"),
        (CAPABILITY, "capability"),
        (XATTR, "xattr"),
        (CLONE_INTO_CGROUP, "clone-into-cgroup"),
        (DEVICE, "device"),
        (SIGNAL, "signal"),
        (PTRACE, "ptrace"),
        (PRELOAD, "preload"),
        (TASK_CHANGE, "task-change"),
        (SYSV_IPC, "sysv-ipc"),
        (BIND, "bind"),
        (LISTEN, "listen"),
        (KEY, "key"),
        (MODULE_REQUEST, "module-request"),
        (NOTIFY, "notify"),
        (TIMES, "times"),
        (TERMINAL, "terminal"),
    ];

    /// The name of operation `code` (`unknown` for a code this build does not know).
    pub fn name(code: u32) -> &'static str {
        NAMES
            .iter()
            .find(|(c, _)| *c == code)
            .map_or("unknown", |(_, name)| name)
    }

    /// The code of an operation named as events name it.
    pub fn code(name: &str) -> Option<u32> {
        NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(code, _)| *code)
    }
}

/// Decisions reported in events.
pub mod decision {
    pub const DENY: u32 = 1;
    /// An audit-mode agent did something its policy does not allow; it was let through.
    pub const AUDIT: u32 = 2;
    /// An operator's grant of exactly this object (`clawctl allow`) let a denial through.
    pub const GRANTED: u32 = 3;
}

/// Kinds of ring-buffer records, the first field of each.
pub mod record {
    pub const FILE: u32 = 1;
    pub const NET: u32 = 2;
    pub const DEVICE: u32 = 3;
}

/// Device kinds in DeviceKey::kind (the kernel's BPF_DEVCG_DEV_*).
pub mod device_kind {
    pub const BLOCK: u32 = 1;
    pub const CHAR: u32 = 2;
}

/// DeviceKey::minor of a rule that covers every minor of its major.
pub const ANY_MINOR: u32 = u32::MAX;

/// Key of the DEVICE_RULES map: a device (or, with ANY_MINOR, a major) an agent may use.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceKey {
    pub ruleset: u32,
    /// One of [`device_kind`].
    pub kind: u32,
    pub major: u32,
    pub minor: u32,
}

/// A device access no rule allowed.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DeviceRecord {
    pub header: RecordHeader,
    /// One of [`device_kind`].
    pub kind: u32,
    /// The kernel's BPF_DEVCG_ACC_* bits: 1 mknod, 2 read, 4 write.
    pub access: u32,
    pub major: u32,
    pub minor: u32,
}

/// Indices of the per-CPU counters the programs keep, so that nothing is lost silently.
pub mod counter {
    /// Operations by an agent's processes that a rule allowed.
    pub const ALLOWED: u32 = 0;
    /// Operations denied (enforce mode).
    pub const DENIED: u32 = 1;
    /// Operations an audit-mode agent was let through although no rule allowed them.
    pub const AUDITED: u32 = 2;
    /// Events that did not fit in the ring buffer (the decision itself still happened).
    pub const EVENTS_LOST: u32 = 3;
    /// Operations whose path the kernel could not resolve; decided as "no rule matches".
    pub const PATH_ERRORS: u32 = 4;
    /// Number of counters.
    pub const COUNT: u32 = 5;
}

/// Key of the THROTTLE map: one kind of report — an agent's cgroup, an operation, an object.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ThrottleKey {
    pub cgroup_id: u64,
    pub object_hash: u64,
    pub op: u32,
    pub _pad: u32,
}

/// Value of the THROTTLE map: reports of one key sent in the current one-second window, and those
/// suppressed since the key appeared (only ever grows; claw-agent reports the increase).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateState {
    pub window_start_ns: u64,
    pub sent: u64,
    pub suppressed: u64,
}

/// Value of the AGENT_EVENTS map, keyed by cgroup id: the agent's report budget window, and
/// every report of the agent that did not reach the ring buffer, by cause. The counts only ever
/// grow; claw-agent turns their increase into `throttled` and `lost` events.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentEvents {
    pub window_start_ns: u64,
    pub sent: u64,
    /// Repeats of one (operation, object) beyond the identical-report rate.
    pub throttled_identical: u64,
    /// Reports beyond the agent's budget per second.
    pub throttled_budget: u64,
    /// Reports that did not fit in the ring buffer.
    pub lost: u64,
    /// Reports placed in the ring buffer: the number the next one gets.
    pub submitted: u64,
}

/// Value of the REPORTED map, keyed by cgroup id: what claw-agent has made of an agent's
/// AGENT_EVENTS so far, kept pinned for the claw-agent after it. Only claw-agent uses it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reported {
    /// The counts reported (as `throttled` and `lost` events).
    pub counts: AgentEvents,
    /// The agent's records accounted for: written to the audit log, or reported lost.
    pub accounted: u64,
    /// The event-bus sequence number `accounted` is complete up to (exclusive).
    pub accounted_through: u64,
    /// The event-bus sequence number from which summaries may be missing from `counts`.
    pub reported_through: u64,
}

/// A rule-trie lookup key as the kernel takes it: the prefix length, then the key.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PathLookup {
    pub prefix_len: u32,
    pub key: PathRuleKey,
}

/// Each CPU's working memory (a resolved path does not fit the 512-byte eBPF stack) and its
/// counters, in one per-CPU map so that the hottest path counts without a second map lookup.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CpuState {
    /// Indexed by [`counter`].
    pub counters: [u64; counter::COUNT as usize],
    pub path: [u8; PATH_BUFFER],
    pub lookup: PathLookup,
    /// Explicit padding so that the layout has no hidden bytes.
    pub _pad: u32,
}

/// Value of the AGENTS map, keyed by cgroup id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentEntry {
    /// Which rules apply: the id the installer gave this agent's rules in the latest apply.
    pub ruleset: u32,
    /// One of [`mode`].
    pub mode: u32,
    /// [`agent_flags`] bits.
    pub flags: u32,
    /// Where this cgroup's DNS goes instead of where it was sent: the port of the resolver
    /// claw-agent runs for the agent on 127.0.0.1 (0: none).
    pub resolver_port: u16,
    pub _pad: u16,
    /// The agent whose reports this cgroup's are numbered, throttled and counted with: the
    /// cgroup's own id for an agent, its agent's for a tool call's cgroup (so that calls, which
    /// come and go, add no entries to the report maps).
    pub agent_cgroup_id: u64,
    /// The cgroup this entry is for (the map key again). The kernel may hand a replaced element to
    /// the next update at once, even to another key's; a program that finds its key here knows it
    /// read its own cgroup's entry.
    pub cgroup_id: u64,
}

/// Levels of the cgroup hierarchy an agent's (or a tool call's) cgroup may be at: AGENT_LEVELS
/// is one u64 whose bit L says some registered cgroup is at level L, and the programs look for a
/// process's nearest registered ancestor at those levels only, below this bound.
pub const MAX_AGENT_LEVEL: u16 = 31;

/// Per-agent switches (AgentEntry::flags).
pub mod agent_flags {
    /// The agent may create executable memory without a file (JIT compilers: V8, the JVM).
    pub const JIT: u32 = 1;
    /// Connects may also go to the addresses the agent's resolver answered for the names its
    /// rules allow (DNS_ALLOW, under the agent's cgroup id). Not for a tool call with narrowed
    /// rules of its own.
    pub const RESOLVED_NAMES: u32 = 2;
}

/// The port DNS is sent to; an agent's goes to its resolver instead.
pub const DNS_PORT: u16 = 53;

/// Key of DNS_ALLOW: an address the agent's resolver answered for a name its rules allow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResolvedKey {
    /// The agent's cgroup id.
    pub cgroup_id: u64,
    pub protocol: u8,
    pub _pad: [u8; 7],
    /// IPv6, or IPv4-mapped.
    pub address: [u8; 16],
}

/// Value of DNS_ALLOW: the ports the rules naming the name allow, until the answer expires.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Resolved {
    /// CLOCK_BOOTTIME, nanoseconds.
    pub expires_ns: u64,
    pub ports: NetRuleValue,
    pub _pad: u32,
}

/// Where a UDP socket's redirected DNS was sent, so that answers seem to come from there (stub
/// resolvers such as musl's drop answers from any other address).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OriginalDestination {
    /// IPv6, or IPv4-mapped.
    pub address: [u8; 16],
    /// Network byte order, as the socket address holds it.
    pub port: u16,
    pub _pad: [u8; 6],
}

/// Key of the file rule trie: a ruleset id followed by a path. A rule for the directory `/usr/` is
/// the prefix `ruleset ++ "/usr/"`; a rule for the exact file `/etc/hosts` is the prefix
/// `ruleset ++ "/etc/hosts\0"`, so that it matches that path and no longer one.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PathRuleKey {
    /// Big-endian, so that it is the leading bits of the prefix.
    pub ruleset: [u8; 4],
    pub path: [u8; RULE_PATH_BYTES],
}

/// Key of the network rule trie: ruleset, protocol (exact; with [`LISTEN_RULE`] for a listen
/// rule), then an IPv6 address whose leading bits are the prefix. IPv4 is IPv4-mapped
/// (`::ffff:a.b.c.d`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NetRuleKey {
    pub ruleset: [u8; 4],
    pub protocol: u8,
    pub address: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRangeEntry {
    pub first: u16,
    pub last: u16,
}

/// The ports allowed to one network: `ranges[..count]`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NetRuleValue {
    pub count: u32,
    pub ranges: [PortRangeEntry; MAX_PORT_RANGES],
}

/// Key of the GRANTS map: one object an operator let an agent, or one of its tool calls, reach
/// although its rules do not (`clawctl allow EVENT`), keyed as its denial was reported.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GrantKey {
    /// The agent's cgroup id, or a tool call's (a grant for that call only).
    pub cgroup_id: u64,
    /// RecordHeader::object_hash of the denial. Only a lookup key: the object itself is
    /// compared (the hash is no secret and easily collided).
    pub object_hash: u64,
    pub op: u32,
    /// The access the denied operation needed ([`access`] bits; 0 for network operations).
    pub access: u32,
}

/// Grant::uses_left of a grant that lasts until it expires.
pub const UNLIMITED_USES: i64 = i64::MAX;
/// Grant::expires_ns of a grant that lasts until it is used up.
pub const NO_EXPIRY: u64 = u64::MAX;

/// Value of the GRANTS map: the exact object, and how long and how often the grant holds.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Grant {
    /// CLOCK_BOOTTIME after which the grant no longer holds.
    pub expires_ns: u64,
    /// Operations it still lets through; every use takes one.
    pub uses_left: i64,
    /// Bytes of `path` (NUL included) for a file grant; 0 for a network grant.
    pub path_len: u32,
    /// Host byte order.
    pub port: u16,
    pub protocol: u8,
    pub _pad: u8,
    /// IPv6 or IPv4-mapped, as NetRecord::address.
    pub address: [u8; 16],
    pub path: [u8; RULE_PATH_BYTES],
    pub _pad2: u32,
}

/// Value of the REDIRECTS trie (keyed as NET_RULES): TCP connects to these ports of the network
/// go to a local proxy instead (an operator's L7 filter or credential injector), whatever the
/// program's own proxy settings.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub first_port: u16,
    pub last_port: u16,
    /// Host byte order.
    pub proxy_port: u16,
    pub _pad: u16,
    /// IPv6, or IPv4-mapped.
    pub proxy: [u8; 16],
}

/// RecordHeader::record of a report whose agent had no AGENT_EVENTS entry (the map was full).
pub const UNNUMBERED: u64 = u64::MAX;

/// What every record starts with.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RecordHeader {
    /// One of [`record`].
    pub kind: u32,
    /// One of [`op`].
    pub op: u32,
    /// CLOCK_BOOTTIME of the decision, in nanoseconds.
    pub boot_time_ns: u64,
    /// cgroup v2 id (inode number) of the agent's cgroup: the key its reports are counted under.
    pub cgroup_id: u64,
    /// cgroup v2 id of the task's own cgroup: the agent's, or one of its tool calls'.
    pub task_cgroup_id: u64,
    /// Hash of what the operation touched (path, destination, device): with `cgroup_id` and `op`
    /// it names the ThrottleKey under which repeats of this report are counted.
    pub object_hash: u64,
    /// Repeats of this key the kernel had counted (suppressed) when it sent this record: what
    /// claw-agent counts the key's later summaries from.
    pub repeats_before: u64,
    /// The agent's records before this one (AgentEvents::submitted when it was placed), or
    /// UNNUMBERED: a claw-agent that starts tells what waited in the ring buffer for it from
    /// what came after, and so what its predecessor read but never logged.
    pub record: u64,
    /// Thread group id (what userspace calls the pid).
    pub pid: u32,
    pub ruleset: u32,
    /// One of [`decision`].
    pub decision: u32,
    /// The access the operation needed ([`access`] bits).
    pub access: u32,
    pub comm: [u8; COMM_BYTES],
}

/// A file operation that no rule allowed.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileRecord {
    pub header: RecordHeader,
    /// Bytes of `path` the kernel wrote, including the terminating NUL, or a negative errno when
    /// the path could not be resolved.
    pub path_len: i32,
    /// Explicit padding so that the layout has no hidden bytes.
    pub _pad: u32,
    pub path: [u8; EVENT_PATH_BYTES],
}

/// A connect or datagram send that no rule allowed.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NetRecord {
    pub header: RecordHeader,
    /// IPv6, or IPv4-mapped.
    pub address: [u8; 16],
    /// Host byte order.
    pub port: u16,
    pub protocol: u8,
    /// 4 or 6: the family the program saw.
    pub family: u8,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<AgentEntry>() == 32);
const _: () = assert!(core::mem::size_of::<DeviceKey>() == 16);
const _: () = assert!(core::mem::size_of::<DeviceRecord>() == 72 + COMM_BYTES + 16);
const _: () = assert!(core::mem::size_of::<PathRuleKey>() == 256);
const _: () = assert!(core::mem::size_of::<PathLookup>() == 260);
const _: () = assert!(
    core::mem::size_of::<CpuState>() == 8 * counter::COUNT as usize + PATH_BUFFER + 260 + 4
);
const _: () = assert!(core::mem::size_of::<NetRuleKey>() == 21);
const _: () = assert!(core::mem::size_of::<NetRuleValue>() == 4 + 4 * MAX_PORT_RANGES);
const _: () = assert!(core::mem::size_of::<RecordHeader>() == 72 + COMM_BYTES);
const _: () = assert!(core::mem::size_of::<FileRecord>() == 88 + 8 + EVENT_PATH_BYTES);
const _: () = assert!(core::mem::size_of::<NetRecord>() == 88 + 24);
const _: () = assert!(core::mem::size_of::<ThrottleKey>() == 24);
const _: () = assert!(core::mem::size_of::<GrantKey>() == 24);
const _: () = assert!(core::mem::size_of::<Redirect>() == 24);
const _: () = assert!(core::mem::size_of::<ResolvedKey>() == 32);
const _: () = assert!(core::mem::size_of::<Resolved>() == 8 + 4 + 4 * MAX_PORT_RANGES + 4);
const _: () = assert!(core::mem::size_of::<OriginalDestination>() == 24);
const _: () = assert!(core::mem::size_of::<Grant>() == 40 + RULE_PATH_BYTES + 4);
const _: () = assert!(core::mem::size_of::<RateState>() == 24);
const _: () = assert!(core::mem::size_of::<AgentEvents>() == 48);
const _: () = assert!(core::mem::size_of::<Reported>() == 72);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data types: fixed-width integers and byte arrays, no padding, any bit
    // pattern is valid.
    unsafe impl aya::Pod for super::AgentEntry {}
    unsafe impl aya::Pod for super::PathRuleKey {}
    unsafe impl aya::Pod for super::CpuState {}
    unsafe impl aya::Pod for super::DeviceKey {}
    unsafe impl aya::Pod for super::DeviceRecord {}
    unsafe impl aya::Pod for super::NetRuleKey {}
    unsafe impl aya::Pod for super::NetRuleValue {}
    unsafe impl aya::Pod for super::FileRecord {}
    unsafe impl aya::Pod for super::NetRecord {}
    unsafe impl aya::Pod for super::ThrottleKey {}
    unsafe impl aya::Pod for super::RateState {}
    unsafe impl aya::Pod for super::AgentEvents {}
    unsafe impl aya::Pod for super::Reported {}
    unsafe impl aya::Pod for super::GrantKey {}
    unsafe impl aya::Pod for super::Redirect {}
    unsafe impl aya::Pod for super::Grant {}
    unsafe impl aya::Pod for super::ResolvedKey {}
    unsafe impl aya::Pod for super::Resolved {}
    unsafe impl aya::Pod for super::OriginalDestination {}
}
