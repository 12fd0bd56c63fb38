//! claw's kernel programs. They hold no policy: they look up the maps that claw-agent's policy
//! compiler fills, answer 0 or -EPERM, and report denials through the EVENTS ring buffer.
#![no_std]
#![no_main]

mod file_open;

use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::Key, HashMap, LpmTrie, PerCpuArray, RingBuf},
};
use claw_common::{PathRuleKey, EVENT_PATH_BYTES};

/// cgroup v2 id -> agent id, for every cgroup the daemon manages. A miss means "not an agent".
#[map]
static AGENTS: HashMap<u64, u32> = HashMap::with_max_entries(4096, 0);

/// (agent id, path prefix) -> access bits (claw_common::access).
#[map]
static FILE_RULES: LpmTrie<PathRuleKey, u32> = LpmTrie::with_max_entries(1 << 20, 0);

/// Denials on their way to claw-agent.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Per-CPU counters indexed by claw_common::counter.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(claw_common::counter::COUNT, 0);

/// Per-CPU working memory: a resolved path is larger than the 512-byte eBPF stack.
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
pub struct Scratch {
    path: [u8; EVENT_PATH_BYTES],
    key: Key<PathRuleKey>,
}

const EPERM: i32 = 1;

fn count(index: u32) {
    if let Some(counter) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot; programs do not preempt each other on one CPU for these hooks.
        unsafe { *counter += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// bpf_probe_read_kernel and bpf_d_path are offered to GPL-compatible programs only.
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
