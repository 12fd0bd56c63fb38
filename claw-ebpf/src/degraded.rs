//! Without BPF LSM (`claw-agent --degraded`) nothing can refuse a file or an exec; these
//! tracepoint programs report what an agent does outside its file and exec rules, as `audit`
//! events. They see paths as the process passed them (not resolved: relative paths, symlinks and
//! `..` are not followed), which is why degraded mode audits and never claims to enforce.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{bpf_probe_read_kernel_str, bpf_probe_read_user_str},
    macros::tracepoint,
    programs::TracePointContext,
    EbpfContext as _,
};
use claw_common::{access, counter, decision, op, EVENT_PATH_BYTES};

use crate::decide::{count, current_agent, granted, report_file, scratch, Reported, Resolved};

/// Offsets of fields in the tracepoints' records, from their format files in tracefs.
#[no_mangle]
static EXEC_FILENAME_LOC: u64 = 0;
#[no_mangle]
static OPENAT_FILENAME: u64 = 0;
#[no_mangle]
static OPENAT_FLAGS: u64 = 0;

const O_ACCMODE: u32 = 0x3;
const O_WRONLY: u32 = 0x1;
const O_RDWR: u32 = 0x2;
const O_CREAT: u32 = 0x40;
const O_TRUNC: u32 = 0x200;

fn global(value: &'static u64) -> usize {
    // SAFETY: reading a plain static.
    unsafe { core::ptr::read_volatile(value) as usize }
}

/// Reports `need` on the path in scratch memory if no rule grants it.
#[inline(always)]
fn audit(op: u32, need: u32, len: i64) {
    let Some((cgroup_id, agent)) = current_agent() else {
        return;
    };
    let Some(scratch) = scratch() else {
        return;
    };
    if len <= 0 {
        count(counter::PATH_ERRORS);
        return;
    }
    let resolved = Resolved::at_start(scratch, len as usize);
    if granted(scratch, agent.ruleset, resolved) & need == need {
        count(counter::ALLOWED);
        return;
    }
    count(counter::AUDITED);
    report_file(
        cgroup_id,
        agent,
        op,
        need,
        decision::AUDIT,
        Reported::Path(resolved),
    );
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn audit_exec(ctx: TracePointContext) -> u32 {
    if current_agent().is_none() {
        return 0;
    }
    let Some(scratch) = scratch() else {
        return 0;
    };
    // SAFETY: a checked read of the record's __data_loc word, then of the string it locates
    // inside the record.
    let len = unsafe {
        let Ok(location) = ctx.read_at::<u32>(global(&EXEC_FILENAME_LOC)) else {
            return 0;
        };
        let filename = (ctx.as_ptr() as *const u8).wrapping_add((location & 0xffff) as usize);
        bpf_probe_read_kernel_str(
            scratch.path.as_mut_ptr().cast::<c_void>(),
            EVENT_PATH_BYTES as u32,
            filename.cast::<c_void>(),
        )
    };
    audit(op::EXEC, access::EXEC, len);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat")]
pub fn audit_openat(ctx: TracePointContext) -> u32 {
    if current_agent().is_none() {
        return 0;
    }
    let Some(scratch) = scratch() else {
        return 0;
    };
    // SAFETY: checked reads of the syscall's arguments and of the user's path string.
    let (len, flags) = unsafe {
        let (Ok(filename), Ok(flags)) = (
            ctx.read_at::<u64>(global(&OPENAT_FILENAME)),
            ctx.read_at::<u64>(global(&OPENAT_FLAGS)),
        ) else {
            return 0;
        };
        let len = bpf_probe_read_user_str(
            scratch.path.as_mut_ptr().cast::<c_void>(),
            EVENT_PATH_BYTES as u32,
            filename as *const c_void,
        );
        (len, flags as u32)
    };
    let mut need = match flags & O_ACCMODE {
        O_WRONLY => access::WRITE,
        O_RDWR => access::READ | access::WRITE,
        _ => access::READ,
    };
    if flags & (O_CREAT | O_TRUNC) != 0 {
        need |= access::WRITE;
    }
    audit(op::OPEN, need, len);
    0
}
