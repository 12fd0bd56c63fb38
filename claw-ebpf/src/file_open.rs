//! lsm/file_open: an agent's process may open a file only if FILE_RULES grants its path.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::path,
    helpers::{
        bpf_d_path, bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_ktime_get_boot_ns, generated::bpf_probe_read_kernel,
    },
    macros::lsm,
    programs::LsmContext,
};
use claw_common::{access, counter, decision, op, DenyRecord, EVENT_PATH_BYTES, RULE_PATH_BYTES};

use crate::{count, Scratch, AGENTS, EPERM, EVENTS, FILE_RULES, SCRATCH};

/// Offset of `f_path` in `struct file`, read by claw-agent from the running kernel's BTF: it is 16
/// on 6.1 and 64 on 6.12, and Rust eBPF has no CO-RE relocations.
#[no_mangle]
static FILE_F_PATH_OFFSET: u64 = 0;

#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    // A denial by an LSM program that ran before this one stands.
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    // SAFETY: helper without preconditions.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: the value is a plain u32 copied out at once.
    let Some(&agent_id) = (unsafe { AGENTS.get(cgroup_id) }) else {
        return 0;
    };
    let file: *const u8 = ctx.arg(0);
    decide(file, cgroup_id, agent_id)
}

fn decide(file: *const u8, cgroup_id: u64, agent_id: u32) -> i32 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        // Unreachable in practice (index 0 of a one-entry array); still fail closed.
        count(counter::PATH_ERRORS);
        count(counter::DENIED);
        return -EPERM;
    };
    // SAFETY: the per-CPU scratch slot belongs to this program run.
    let scratch: &mut Scratch = unsafe { &mut *scratch };
    // SAFETY: the offset is the kernel's own (from BTF) and the verifier checks that it lands on a
    // `struct path` inside `struct file`.
    let path_len = unsafe {
        let offset = core::ptr::read_volatile(&FILE_F_PATH_OFFSET) as usize;
        bpf_d_path(
            file.add(offset) as *mut path,
            scratch.path.as_mut_ptr() as *mut _,
            EVENT_PATH_BYTES as u32,
        )
    } as i32;
    if path_len <= 0 {
        count(counter::PATH_ERRORS);
        count(counter::DENIED);
        emit(scratch, cgroup_id, agent_id, path_len);
        return -EPERM;
    }
    let key_bytes = core::cmp::min(path_len as usize, RULE_PATH_BYTES);
    scratch.key.prefix_len = (32 + 8 * key_bytes) as u32;
    // SAFETY: both buffers are this program's own scratch memory of the given sizes.
    let copied = unsafe {
        bpf_probe_read_kernel(
            scratch.key.data.path.as_mut_ptr() as *mut c_void,
            RULE_PATH_BYTES as u32,
            scratch.path.as_ptr() as *const c_void,
        )
    };
    scratch.key.data.agent_id = agent_id.to_be_bytes();
    let granted = copied == 0
        && FILE_RULES
            .get(&scratch.key)
            .is_some_and(|bits| bits & access::READ != 0);
    if granted {
        count(counter::ALLOWED);
        return 0;
    }
    count(counter::DENIED);
    emit(scratch, cgroup_id, agent_id, path_len);
    -EPERM
}

fn emit(scratch: &Scratch, cgroup_id: u64, agent_id: u32, path_len: i32) {
    let Some(mut entry) = EVENTS.reserve::<DenyRecord>(0) else {
        count(counter::EVENTS_LOST);
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: the reserved record is ours until submitted; `path` is filled by a sized copy.
    unsafe {
        fill_header(record, cgroup_id, agent_id, path_len);
        if path_len > 0 {
            bpf_probe_read_kernel(
                (*record).path.as_mut_ptr() as *mut c_void,
                EVENT_PATH_BYTES as u32,
                scratch.path.as_ptr() as *const c_void,
            );
        }
    }
    entry.submit(0);
}

/// # Safety
/// `record` points to a reserved, writable ring-buffer record.
unsafe fn fill_header(record: *mut DenyRecord, cgroup_id: u64, agent_id: u32, path_len: i32) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        (*record).boot_time_ns = bpf_ktime_get_boot_ns();
        (*record).cgroup_id = cgroup_id;
        (*record).pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        (*record).agent_id = agent_id;
        (*record).op = op::FILE_OPEN;
        (*record).decision = decision::DENY;
        (*record).path_len = path_len;
        (*record)._pad = 0;
        (*record).comm = bpf_get_current_comm().unwrap_or_default();
        if path_len <= 0 {
            (*record).path[0] = 0;
        }
    }
}
