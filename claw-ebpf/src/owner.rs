//! Signals a file sends to the process named as its owner (SIGIO, SIGURG, or F_SETSIG's choice,
//! set by F_SETOWN, F_SETOWN_EX, FIOSETOWN or SIOCSPGRP): delivered only within the agent whose
//! process set the owner, as kill() is. The owner is recorded when set (SIGNAL_OWNERS) and
//! judged when a signal is sent — by whichever process completes the I/O, so the setter must be
//! remembered.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use claw_common::{op, record, NetRecord};

use crate::{
    decide::{agent_of_task, count, current_agent, emit, entry_of, header, outcome, refuse},
    kernel::{offset, read, read_ptr, value},
    SIGNAL_OWNERS,
};

/// Whether `file.f_owner` points to its fown_struct (6.12) or holds it (before): claw-agent sets
/// it from the kernel's BTF.
#[no_mangle]
static FILE_F_OWNER_IS_POINTER: u64 = 0;
/// Where a fown_struct points back to its file (6.12; unused where the file holds it).
#[no_mangle]
static FOWN_FILE: u64 = 0;

const F_SETFL: u32 = 4;
const F_SETOWN: u32 = 8;
const F_SETSIG: u32 = 10;
const F_SETOWN_EX: u32 = 15;
const O_ASYNC: u64 = 0o20000;
const FIOSETOWN: u32 = 0x8901;
const SIOCSPGRP: u32 = 0x8902;
const FIOASYNC: u32 = 0x5452;
/// Pushing input into a terminal (TIOCSTI), and the console's selection and paste tricks
/// (TIOCLINUX): keystrokes for whoever reads the terminal next.
const TIOCSTI: u32 = 0x5412;
const TIOCLINUX: u32 = 0x541c;
/// Changing a file's inode flags (noatime, nodump, ...; immutable and append-only need
/// CAP_LINUX_IMMUTABLE, denied) or its project: a metadata write, which needs the file open for
/// writing — as a write rule allows — not only the ownership the kernel asks for.
const FS_IOC_SETFLAGS: u32 = 0x4008_6602;
const FS_IOC32_SETFLAGS: u32 = 0x4004_6602;
const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;
const FMODE_WRITE: u32 = 0x2;
const EPERM: i32 = 1;

#[inline(always)]
fn owner_is_pointer() -> bool {
    value(&FILE_F_OWNER_IS_POINTER) != 0
}

/// An agent is about to set `file`'s owner, or the signal it gets, or turn its signals on (a
/// terminal's O_ASYNC names its foreground group as owner): recorded first, and refused when the
/// record cannot be kept (the map is full), so that no signal an agent arranged goes unjudged. A
/// record of a change the kernel then refused stays until the file is freed: the file's signals
/// are judged as the agent's (fail closed).
#[inline(always)]
fn setting_owner(file: *const u8) -> i32 {
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    if SIGNAL_OWNERS
        .insert(file as u64, agent.cgroup_id, 0)
        .is_ok()
    {
        return 0;
    }
    refuse(cgroup_id, agent, op::SIGNAL)
}

#[lsm(hook = "file_fcntl")]
pub fn file_fcntl(ctx: LsmContext) -> i32 {
    // (struct file *file, unsigned int cmd, unsigned long arg)
    let cmd: u32 = ctx.arg(1);
    let arg: u64 = ctx.arg(2);
    let arranges_signals = cmd == F_SETOWN
        || cmd == F_SETOWN_EX
        || cmd == F_SETSIG
        || (cmd == F_SETFL && arg & O_ASYNC != 0);
    if !arranges_signals {
        return 0;
    }
    setting_owner(ctx.arg(0))
}

#[lsm(hook = "file_ioctl")]
pub fn file_ioctl(ctx: LsmContext) -> i32 {
    ioctl(ctx.arg(0), ctx.arg(1))
}

#[lsm(hook = "file_ioctl_compat")]
pub fn file_ioctl_compat(ctx: LsmContext) -> i32 {
    ioctl(ctx.arg(0), ctx.arg(1))
}

#[inline(always)]
fn ioctl(file: *const u8, cmd: u32) -> i32 {
    if cmd == FIOSETOWN || cmd == SIOCSPGRP || cmd == FIOASYNC {
        return setting_owner(file);
    }
    let flags = cmd == FS_IOC_SETFLAGS || cmd == FS_IOC32_SETFLAGS || cmd == FS_IOC_FSSETXATTR;
    if cmd != TIOCSTI && cmd != TIOCLINUX && !flags {
        return 0;
    }
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    if !flags {
        return refuse(cgroup_id, agent, op::TERMINAL);
    }
    // SAFETY: a checked read of the hook's file's mode.
    let mode = unsafe { read::<u32>(file, offset!(FILE_F_MODE)) }.unwrap_or(0);
    if mode & FMODE_WRITE != 0 {
        return 0;
    }
    refuse(cgroup_id, agent, op::XATTR)
}

/// Every owner setting passes here, whatever asked for it (a tty's O_ASYNC names the caller):
/// an agent's is recorded, and one made outside agents clears the record.
#[lsm(hook = "file_set_fowner")]
pub fn file_set_fowner(ctx: LsmContext) -> i32 {
    let file: *const u8 = ctx.arg(0);
    match current_agent() {
        Some((_, agent)) => {
            let _ = SIGNAL_OWNERS.insert(file as u64, agent.cgroup_id, 0);
        }
        None => {
            let _ = SIGNAL_OWNERS.remove(file as u64);
        }
    }
    0
}

/// A freed file's record goes with it — whether or not the change it was made for happened, so
/// that refused changes leave nothing behind.
#[lsm(hook = "file_free_security")]
pub fn file_free_security(ctx: LsmContext) -> i32 {
    let file: *const u8 = ctx.arg(0);
    let _ = SIGNAL_OWNERS.remove(file as u64);
    0
}

#[lsm(hook = "file_send_sigiotask")]
pub fn file_send_sigiotask(ctx: LsmContext) -> i32 {
    // (struct task_struct *tsk, struct fown_struct *fown, int sig)
    let target: *const u8 = ctx.arg(0);
    let fown: *const u8 = ctx.arg(1);
    let signal: i32 = ctx.arg(2);
    let file = if owner_is_pointer() {
        // SAFETY: a checked read of the fown_struct's file.
        match unsafe { read_ptr(fown, value(&FOWN_FILE)) } {
            Some(file) => file,
            None => return 0,
        }
    } else {
        fown.wrapping_sub(offset!(FILE_F_OWNER))
    };
    // SAFETY: the value is copied out at once.
    let Some(setter) = (unsafe { SIGNAL_OWNERS.get(file as u64) }).copied() else {
        return 0;
    };
    // SAFETY: `target` is the hook's task_struct argument.
    let holder = unsafe { agent_of_task(target) }.map(|(_, entry)| entry.cgroup_id);
    if holder == Some(setter) {
        return 0;
    }
    // The setter's agent, to report it; gone (removed since), the signal is refused all the same.
    let Some((_, agent)) = entry_of(setter) else {
        count(claw_common::counter::DENIED);
        return -EPERM;
    };
    // SAFETY: as above.
    let pid = unsafe { read::<i32>(target, offset!(TASK_TGID)) }.unwrap_or(0);
    let mut address = [0u8; 16];
    address[..4].copy_from_slice(&pid.to_ne_bytes());
    let (decision, ret) = outcome(agent);
    emit(NetRecord {
        header: header(record::NET, op::SIGNAL, setter, agent, decision, 0),
        address,
        // 0: the default, SIGIO.
        port: if signal == 0 { 29 } else { signal as u16 },
        protocol: 0,
        family: 0,
        _pad: 0,
    });
    ret
}
