//! claw's kernel programs. They hold no policy: they look up the maps that claw-agent's policy
//! compiler fills, answer allow or deny, and report what no rule allowed through EVENTS.
#![no_std]
#![no_main]
// atomic_xadd: counters that several CPUs add to (see throttle.rs).
#![allow(internal_features)]
#![feature(core_intrinsics)]
#![feature(asm_experimental_arch)]

mod confine;
mod decide;
mod degraded;
mod devices;
mod file;
mod grant;
mod kernel;
mod mounts;
mod net;
mod owner;
mod path;
mod preload;
mod task;
mod throttle;

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    btf_maps::{self, ArrayOfMaps},
    macros::{btf_map, map},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use claw_common::{
    AgentEntry, AgentEvents, CpuState, DeviceKey, Grant, GrantKey, NetRuleKey, NetRuleValue,
    OriginalDestination, PathRuleKey, RateState, Redirect, Reported, Resolved, ResolvedKey,
    ThrottleKey,
};

/// cgroup v2 id -> the agent's ruleset and mode, for every cgroup the daemon manages. A miss
/// means "not an agent". Not preallocated: an apply replaces entries while programs read them,
/// and a preallocated map hands a replaced element straight to the next update (a reader could
/// see another agent's entry); these are freed only after an RCU grace period.
#[map]
static AGENTS: HashMap<u64, AgentEntry> = HashMap::with_max_entries(4096, BPF_F_NO_PREALLOC);

/// One u64: bit L set when a cgroup in AGENTS is at level L of the hierarchy. A process whose own
/// cgroup is not in AGENTS is held by its nearest ancestor that is, looked for at these levels
/// only (so the host's processes pay a lookup per level in use, not per level they are at).
/// claw-agent sets a level's bit before it adds an entry at that level, and never clears one.
#[map]
static AGENT_LEVELS: Array<u64> = Array::with_max_entries(1, 0);

/// (ruleset, path prefix) -> access bits (claw_common::access).
#[map]
static FILE_RULES: LpmTrie<PathRuleKey, u32> = LpmTrie::with_max_entries(1 << 21, 0);

/// (ruleset, protocol, network) -> allowed port ranges.
#[map]
static NET_RULES: LpmTrie<NetRuleKey, NetRuleValue> = LpmTrie::with_max_entries(1 << 21, 0);

/// (ruleset, protocol, network) -> the ports whose connects go to a local proxy instead.
#[map]
static REDIRECTS: LpmTrie<NetRuleKey, Redirect> = LpmTrie::with_max_entries(1 << 14, 0);

/// (ruleset, "NAME=") of each preload variable an agent's programs may not be started with.
#[map]
static ENV_RULES: LpmTrie<PathRuleKey, u32> = LpmTrie::with_max_entries(1 << 17, 0);

/// (ruleset, device kind, major, minor or ANY_MINOR) an agent may use.
#[map]
static DEVICE_RULES: HashMap<DeviceKey, u8> = HashMap::with_max_entries(1 << 14, 0);

/// Decisions on their way to claw-agent.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// cgroup id -> the agent's report budget and counts of reports throttled or lost.
#[map]
static AGENT_EVENTS: HashMap<u64, AgentEvents> = HashMap::with_max_entries(8192, 0);

/// cgroup id -> the AGENT_EVENTS counts claw-agent has reported. Only claw-agent uses it: pinned
/// with the others, it tells a restarted daemon what happened while none ran.
#[map]
static REPORTED: HashMap<u64, Reported> = HashMap::with_max_entries(8192, 0);

/// (agent, operation, object) -> repeats sent this second and suppressed so far. LRU: an evicted
/// key's later repeats still count in AGENT_EVENTS.
#[map]
static THROTTLE: LruHashMap<ThrottleKey, RateState> = LruHashMap::with_max_entries(16384, 0);

/// Objects operators let an agent or a tool call reach beyond its rules (`clawctl allow`),
/// once, for a while, or both.
#[map]
static GRANTS: HashMap<GrantKey, Grant> = HashMap::with_max_entries(4096, 0);

/// Read by no program: claw-agent updates it to wait until every program run that began before
/// has ended (after an update of a map of maps the kernel waits for an RCU grace period, and
/// programs run inside RCU read sections). Rules a switch left behind are removed only then.
#[btf_map]
static GRACE_PERIOD: ArrayOfMaps<btf_maps::Array<u32, 1>, 1> = ArrayOfMaps::new();

/// Addresses an agent's resolver answered for names its rules allow, until their TTL: claw-agent
/// adds them as it answers, and removes them once expired.
#[map]
static DNS_ALLOW: HashMap<ResolvedKey, Resolved> =
    HashMap::with_max_entries(1 << 16, BPF_F_NO_PREALLOC);

/// Socket cookie -> where its redirected DNS was sent (net.rs): what its answers come from.
#[map]
static ORIGINAL_DESTINATIONS: LruHashMap<u64, OriginalDestination> =
    LruHashMap::with_max_entries(1 << 14, 0);

/// File -> the registered cgroup of the agent whose process set its I/O-signal owner, signal or
/// O_ASYNC (owner.rs). Removed when a process outside agents sets the owner, or the file is
/// freed. Not preallocated: entries are live files an agent arranged signals on.
#[map]
static SIGNAL_OWNERS: HashMap<u64, u64> = HashMap::with_max_entries(1 << 18, BPF_F_NO_PREALLOC);

/// Thread (pid_tgid) -> the vfsmount it last took write access to (mounts.rs), for agents'
/// threads. LRU: threads come and go.
#[map]
static WRITE_MOUNTS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(1 << 14, 0);

/// Each CPU's working memory and counters (claw_common::CpuState).
#[map]
static CPU_STATE: PerCpuArray<CpuState> = PerCpuArray::with_max_entries(1, 0);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// bpf_probe_read_kernel and bpf_d_path are offered to GPL-compatible programs only.
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
