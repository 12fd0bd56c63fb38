//! Hooks on opened files: open (read/write), exec, and mapping a file executable; and memory
//! that was written becoming executable (code an agent wrote runs only with `jit: true`).

use aya_ebpf::{helpers::bpf_get_current_task, macros::lsm, programs::LsmContext};
use claw_common::{access, op};

use crate::{
    decide::{
        anonymous_exec, current_agent, file_verdict, file_verdict_in, resolve_d_path,
        resolve_path_walk, scratch,
    },
    kernel::{offset, read, read_ptr},
};

const FMODE_READ: u32 = 0x1;
const FMODE_WRITE: u32 = 0x2;
/// Set in `f_flags` (not `f_mode`) when the kernel opens a file to execute or map it as a
/// program or its ELF interpreter.
const FMODE_EXEC: u32 = 0x20;
const PROT_WRITE: u64 = 0x2;
const PROT_EXEC: u64 = 0x4;
const MAP_ANONYMOUS: u64 = 0x20;
/// Access mode 3 (O_RDONLY|O_WRONLY|O_RDWR bits both set) opens for ioctl only: f_mode gets
/// neither READ nor WRITE, but such a descriptor still reaches the file.
const O_ACCMODE: u32 = 0x3;
const O_TRUNC: u32 = 0x200;

/// What opening `file` needs: MAP for the kernel's exec opens, else READ and/or WRITE.
///
/// # Safety
/// `file` is the hook's `struct file` argument.
#[inline(always)]
unsafe fn open_needs(file: *const u8) -> u32 {
    // SAFETY: the offsets are the kernel's own members of `struct file` (from BTF).
    // Direct loads, which the verifier checks against BTF and turns into fault-safe reads: no
    // helper call on the hottest path.
    let (f_mode, f_flags) = unsafe {
        (
            core::ptr::read_volatile(file.wrapping_add(offset!(FILE_F_MODE)) as *const u32),
            core::ptr::read_volatile(file.wrapping_add(offset!(FILE_F_FLAGS)) as *const u32),
        )
    };
    if f_flags & FMODE_EXEC != 0 {
        return access::MAP;
    }
    let ioctl_only = f_flags & O_ACCMODE == O_ACCMODE;
    let mut need = 0;
    if f_mode & FMODE_READ != 0 || ioctl_only {
        need |= access::READ;
    }
    // O_TRUNC empties the file even on a read-only open.
    if f_mode & FMODE_WRITE != 0 || ioctl_only || f_flags & O_TRUNC != 0 {
        need |= access::WRITE;
    }
    need
}

#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    let file: *const u8 = ctx.arg(0);
    // SAFETY: `file` is the hook's argument.
    let need = unsafe { open_needs(file) };
    if need == 0 {
        return 0;
    }
    let Some(scratch) = scratch() else {
        return file_verdict(cgroup_id, agent, op::OPEN, need, None);
    };
    // SAFETY: f_path is a struct path inside the hook's file.
    let resolved = unsafe { resolve_d_path(scratch, file.wrapping_add(offset!(FILE_F_PATH))) };
    file_verdict_in(scratch, cgroup_id, agent, op::OPEN, need, resolved)
}

#[lsm(hook = "bprm_check_security")]
pub fn bprm_check_security(ctx: LsmContext) -> i32 {
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    let bprm: *const u8 = ctx.arg(0);
    // A direct load, so that the verifier knows the result as the binprm's `struct file *`.
    // SAFETY: the offset is the kernel's own, from BTF.
    let file = unsafe { *(bprm.wrapping_add(offset!(BPRM_FILE)) as *const *const u8) };
    let resolved = scratch().and_then(|s| {
        // SAFETY: f_path is a struct path inside the file being executed.
        unsafe { resolve_d_path(s, file.wrapping_add(offset!(FILE_F_PATH))) }
    });
    file_verdict(cgroup_id, agent, op::EXEC, access::EXEC, resolved)
}

#[lsm(hook = "mmap_file")]
pub fn mmap_file(ctx: LsmContext) -> i32 {
    let prot: u64 = ctx.arg(2);
    if prot & PROT_EXEC == 0 {
        return 0;
    }
    let file: *const u8 = ctx.arg(0);
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    // Tested through the mapping's flags, not `file == NULL`: 6.12's verifier takes hook
    // arguments as non-null and removes that branch as dead code.
    let flags: u64 = ctx.arg(3);
    // Writable and executable at once (SELinux's execmem): whatever is written runs.
    if flags & MAP_ANONYMOUS != 0 || prot & PROT_WRITE != 0 {
        return anonymous_exec(cgroup_id, agent, op::MMAP);
    }
    let resolved = scratch().and_then(|s| {
        // SAFETY: f_path is a struct path inside the hook's file.
        unsafe { resolve_d_path(s, file.wrapping_add(offset!(FILE_F_PATH))) }
    });
    file_verdict(cgroup_id, agent, op::MMAP, access::MAP, resolved)
}

#[lsm(hook = "file_mprotect")]
pub fn file_mprotect(ctx: LsmContext) -> i32 {
    let prot: u64 = ctx.arg(2);
    if prot & PROT_EXEC == 0 {
        return 0;
    }
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    let vma: *const u8 = ctx.arg(0);
    // Writable and executable at once (SELinux's execmem): whatever is written runs.
    if prot & PROT_WRITE != 0 {
        return anonymous_exec(cgroup_id, agent, op::MPROTECT);
    }
    // SAFETY: checked kernel reads; d_path is not allowed on this hook, so the path is walked.
    let resolved = unsafe {
        let Some(file) = read_ptr(vma, offset!(VMA_VM_FILE)) else {
            return anonymous_exec(cgroup_id, agent, op::MPROTECT);
        };
        // A private file mapping with an anon_vma has had pages copied on write (SELinux's
        // execmod): they hold what the process wrote, not the file, so they are code the agent
        // made — a way to run a program no exec rule names, by writing it over an allowed one.
        if read_ptr(vma, offset!(VMA_ANON_VMA)).is_some() {
            return anonymous_exec(cgroup_id, agent, op::MPROTECT);
        }
        resolve_path_walk(file.wrapping_add(offset!(FILE_F_PATH)))
    };
    file_verdict(cgroup_id, agent, op::MPROTECT, access::MAP, resolved)
}

/// personality(READ_IMPLIES_EXEC): every readable mapping is made executable, and the heap brk()
/// grows too — writable and executable memory no mmap or mprotect hook sees. Every new mapping
/// and brk() asks this hook for its address first: refused to a process of a `jit: false` agent
/// with that personality.
const READ_IMPLIES_EXEC: u32 = 0x0040_0000;

#[lsm(hook = "mmap_addr")]
pub fn mmap_addr(_ctx: LsmContext) -> i32 {
    // Every mapping of every process passes here: the personality first, one read.
    // SAFETY: helper without preconditions; then a checked read of the task's personality.
    let personality = unsafe {
        read::<u32>(
            bpf_get_current_task() as *const u8,
            offset!(TASK_PERSONALITY),
        )
    }
    .unwrap_or(0);
    if personality & READ_IMPLIES_EXEC == 0 {
        return 0;
    }
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    anonymous_exec(cgroup_id, agent, op::MMAP)
}
