//! Rate limits on reports, never on decisions: repeats of one (agent, operation, object) beyond
//! IDENTICAL_PER_SECOND, and an agent's reports beyond AGENT_EVENTS_PER_SECOND, are counted here
//! instead of sent, so that an agent hammering a denied path cannot crowd the others' events out
//! of the ring buffer. claw-agent turns the counts into `throttled` events; reports that do not
//! fit in the ring buffer are counted per agent as lost.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::helpers::bpf_ktime_get_boot_ns;
use claw_common::{AgentEvents, RateState, ThrottleKey, UNNUMBERED};

use crate::{AGENT_EVENTS, THROTTLE};

/// Reports per second for one (agent, operation, object); 0 lifts the limit. Set at load.
#[no_mangle]
static IDENTICAL_PER_SECOND: u64 = 0;
/// Reports per second for one agent; 0 lifts the limit. Set at load.
#[no_mangle]
static AGENT_EVENTS_PER_SECOND: u64 = 0;

const SECOND_NS: u64 = 1_000_000_000;

fn limit(global: &'static u64) -> u64 {
    // SAFETY: reading a plain static (a constant of the frozen read-only map).
    unsafe { core::ptr::read_volatile(global) }
}

/// Adds one to a counter other CPUs may be adding to.
///
/// # Safety
/// `counter` points into a map value.
#[inline(always)]
unsafe fn increment(counter: *mut u64) {
    // The intrinsic, because the BPF target offers no AtomicU64::fetch_add; it compiles to the
    // BPF atomic add. SAFETY: map values are 8-byte aligned and live as long as the program run.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, 1) };
}

/// One more report in the window starting at `*window_start`, if fewer than `limit` were sent in
/// it. Two CPUs opening a window at once may send a few more than `limit`; every report is still
/// either sent or counted.
///
/// # Safety
/// Both point into one map value.
#[inline(always)]
unsafe fn take(window_start: *mut u64, sent: *mut u64, now: u64, limit: u64) -> bool {
    // SAFETY: as the caller guarantees.
    unsafe {
        if now.wrapping_sub(*window_start) >= SECOND_NS {
            *window_start = now;
            *sent = 0;
        }
        if *sent >= limit {
            return false;
        }
        increment(sent);
    }
    true
}

/// The agent's counters, created on its first report.
#[inline(always)]
fn agent_events(cgroup_id: u64) -> Option<*mut AgentEvents> {
    if let Some(events) = AGENT_EVENTS.get_ptr_mut(cgroup_id) {
        return Some(events);
    }
    // Another CPU may create it first: that is fine, the entry exists either way.
    let _ = AGENT_EVENTS.insert(cgroup_id, AgentEvents::default(), 1);
    AGENT_EVENTS.get_ptr_mut(cgroup_id)
}

/// Whether a report of (`cgroup_id`, `op`, `object_hash`) may go to the ring buffer: if so, the
/// repeats of it counted so far (the record carries them); if not, it is counted as throttled.
#[inline(always)]
pub fn admit(cgroup_id: u64, op: u32, object_hash: u64) -> Option<u64> {
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let Some(agent) = agent_events(cgroup_id) else {
        // The per-agent map is full: send, so the report is at least counted on arrival.
        return Some(0);
    };
    let mut repeats_before = 0;
    let identical = limit(&IDENTICAL_PER_SECOND);
    if identical != 0 {
        let key = ThrottleKey {
            cgroup_id,
            object_hash,
            op,
            _pad: 0,
        };
        match THROTTLE.get_ptr_mut(key) {
            // SAFETY: pointers into the map values found above.
            Some(state) => unsafe {
                if !take(
                    &raw mut (*state).window_start_ns,
                    &raw mut (*state).sent,
                    now,
                    identical,
                ) {
                    increment(&raw mut (*state).suppressed);
                    increment(&raw mut (*agent).throttled_identical);
                    return None;
                }
                repeats_before = (*state).suppressed;
            },
            None => {
                let first = RateState {
                    window_start_ns: now,
                    sent: 1,
                    suppressed: 0,
                };
                let _ = THROTTLE.insert(key, first, 0);
            }
        }
    }
    let budget = limit(&AGENT_EVENTS_PER_SECOND);
    // SAFETY: pointers into the agent's map value.
    unsafe {
        if budget != 0
            && !take(
                &raw mut (*agent).window_start_ns,
                &raw mut (*agent).sent,
                now,
                budget,
            )
        {
            increment(&raw mut (*agent).throttled_budget);
            return None;
        }
    }
    Some(repeats_before)
}

/// The number of a report placed in the ring buffer: the agent's reports placed before it.
#[inline(always)]
pub fn number(cgroup_id: u64) -> u64 {
    let Some(agent) = agent_events(cgroup_id) else {
        return UNNUMBERED;
    };
    let mut number: u64 = 1;
    // The BPF atomic fetch-and-add (kernel 5.12+), written out: LLVM emits it only for BPF CPU
    // v3, whose 32-bit code the 6.1 verifier cannot follow through the path hash, and for
    // the generic CPU it lowers a fetch-add to the plain atomic add, returning the operand.
    // SAFETY: `agent` points into the agent's map value, at an 8-byte aligned counter.
    unsafe {
        core::arch::asm!(
            "{number} = atomic_fetch_add((u64 *)({counter} + 0), {number})",
            counter = in(reg) &raw mut (*agent).submitted,
            number = inout(reg) number,
        );
    }
    number
}

/// Counts a report the ring buffer had no room for, globally (the caller) and for its agent.
#[inline(always)]
pub fn count_lost(cgroup_id: u64) {
    if let Some(agent) = agent_events(cgroup_id) {
        // SAFETY: a pointer into the agent's map value.
        unsafe { increment(&raw mut (*agent).lost) };
    }
}

/// FNV-1a over 64-bit words: cheap, and good enough to tell objects apart for counting (a
/// collision merges two objects' repeat counts, never loses one).
#[inline(always)]
pub fn mix(hash: u64, word: u64) -> u64 {
    (hash ^ word).wrapping_mul(0x0000_0100_0000_01b3)
}

pub const HASH_SEED: u64 = 0xcbf2_9ce4_8422_2325;
