//! The cgroups of tasks: the calling task's own and its ancestors (through the kernel's helpers),
//! and another task's (through its task struct, read at offsets from BTF). A leaf: decide (which
//! agent holds the task), confine (is a target within the agent) and grant (grants to a tool
//! call's own cgroup) all ask, and decide consults grant, so it cannot live in either.

use aya_ebpf::helpers::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id};

use crate::kernel::{offset, read, read_ptr};

/// The calling task's own cgroup.
#[inline(always)]
pub fn task_cgroup_id() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_get_current_cgroup_id() }
}

/// The calling task's ancestor cgroup at `level` (its own at its own level), or 0 where the task
/// is not that deep. For LSM, tracepoint and socket-address programs.
#[inline(always)]
pub fn current_ancestor_cgroup_id(level: u16) -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_get_current_ancestor_cgroup_id(i32::from(level)) }
}

/// `task`'s cgroup v2 (task->cgroups->dfl_cgrp).
///
/// # Safety
/// `task` is a kernel pointer to a task_struct.
#[inline(always)]
pub unsafe fn cgroup_of(task: *const u8) -> Option<*const u8> {
    // SAFETY: checked kernel reads along the chain.
    unsafe {
        let css_set = read_ptr(task, offset!(TASK_CGROUPS))?;
        read_ptr(css_set, offset!(CSS_SET_DFL_CGRP))
    }
}

/// The id of `cgroup` (cgroup->kn->id).
///
/// # Safety
/// `cgroup` is a kernel pointer to a struct cgroup.
#[inline(always)]
pub unsafe fn cgroup_id(cgroup: *const u8) -> Option<u64> {
    // SAFETY: checked kernel reads.
    unsafe {
        let kn = read_ptr(cgroup, offset!(CGROUP_KN))?;
        read::<u64>(kn, offset!(KERNFS_NODE_ID))
    }
}

/// The id of `cgroup`'s ancestor at `level` (itself at its own level); None where `cgroup` is
/// not that deep or a read fails.
///
/// # Safety
/// `cgroup` is a kernel pointer to a struct cgroup.
#[inline(always)]
pub unsafe fn ancestor_id(cgroup: *const u8, level: u16) -> Option<u64> {
    // SAFETY: checked kernel reads: cgroup->level, cgroup->ancestors[level]->kn->id.
    unsafe {
        let own_level = read::<i32>(cgroup, offset!(CGROUP_LEVEL))?;
        if i32::from(level) > own_level {
            return None;
        }
        let ancestor = read_ptr(
            cgroup,
            offset!(CGROUP_ANCESTORS) + usize::from(level) * size_of::<u64>(),
        )?;
        cgroup_id(ancestor)
    }
}
