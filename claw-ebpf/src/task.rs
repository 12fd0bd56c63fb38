//! The calling task's cgroup. A leaf: decide (is the task an agent) and grant (grants to a tool
//! call's own cgroup) both ask, and decide consults grant, so it cannot live in either.

use aya_ebpf::helpers::bpf_get_current_cgroup_id;

/// The calling task's own cgroup.
#[inline(always)]
pub fn task_cgroup_id() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_get_current_cgroup_id() }
}
