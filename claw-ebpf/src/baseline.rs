//! The benchmark's yardstick, not part of claw: the least a path-checking file_open program can
//! do — look up the task's cgroup, resolve the path, one LPM trie lookup — with nothing else
//! (no open-mode decoding, no counters, no events). `cargo xtask bench` runs it beside claw's.
//! A task whose own cgroup is not registered is looked up once more, by its ancestor at
//! AGENT_LEVEL: the least finding the agent of a cgroup below it (a container in a pod) adds.
#![no_std]
#![no_main]

use core::ffi::c_void;

use aya_ebpf::{
    bindings::path,
    helpers::{
        bpf_d_path, bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id,
        generated::bpf_probe_read_kernel,
    },
    macros::{lsm, map},
    maps::{lpm_trie::Key, HashMap, LpmTrie, PerCpuArray},
    programs::LsmContext,
};
use claw_common::{AgentEntry, PathRuleKey, EVENT_PATH_BYTES, RULE_PATH_BYTES};

#[map]
static BASELINE_AGENTS: HashMap<u64, AgentEntry> = HashMap::with_max_entries(16, 0);

#[map]
static BASELINE_RULES: LpmTrie<PathRuleKey, u32> = LpmTrie::with_max_entries(16, 0);

#[repr(C)]
pub struct Scratch {
    path: [u8; EVENT_PATH_BYTES],
    key: Key<PathRuleKey>,
}

#[map]
static BASELINE_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Offset of `f_path` in `struct file`, from the running kernel's BTF.
#[no_mangle]
static FILE_F_PATH: u64 = 0;

/// The level of the registered cgroup in the cgroup tree (0: none; the root cgroup is never one).
#[no_mangle]
static AGENT_LEVEL: u64 = 0;

#[lsm(hook = "file_open")]
pub fn baseline_file_open(ctx: LsmContext) -> i32 {
    // SAFETY: helper without preconditions; the map value is copied out.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let agent = match unsafe { BASELINE_AGENTS.get(cgroup_id) } {
        Some(agent) => *agent,
        None => {
            // SAFETY: a global set at load.
            let level = unsafe { core::ptr::read_volatile(&AGENT_LEVEL) };
            if level == 0 {
                return 0;
            }
            // SAFETY: helper without preconditions; the map value is copied out.
            let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
            let Some(agent) = (unsafe { BASELINE_AGENTS.get(ancestor) }).copied() else {
                return 0;
            };
            agent
        }
    };
    let Some(scratch) = BASELINE_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let file: *const u8 = ctx.arg(0);
    // SAFETY: the per-CPU slot is this run's; f_path lies inside the hook's file (offset from
    // BTF, checked by the verifier).
    unsafe {
        let scratch = &mut *scratch;
        let offset = core::ptr::read_volatile(&FILE_F_PATH) as usize;
        let len = bpf_d_path(
            file.wrapping_add(offset) as *mut path,
            scratch.path.as_mut_ptr() as *mut _,
            EVENT_PATH_BYTES as u32,
        );
        if len <= 0 {
            return 0;
        }
        scratch.key.prefix_len = (32 + 8 * core::cmp::min(len as usize, RULE_PATH_BYTES)) as u32;
        scratch.key.data.ruleset = agent.ruleset.to_be_bytes();
        bpf_probe_read_kernel(
            scratch.key.data.path.as_mut_ptr().cast::<c_void>(),
            RULE_PATH_BYTES as u32,
            scratch.path.as_ptr().cast::<c_void>(),
        );
        // The verdict is not the point: the yardstick never denies.
        let _ = BASELINE_RULES.get(&scratch.key);
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
