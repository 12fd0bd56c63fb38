//! The mount each agent thread last took write access to. Hooks handed a dentry alone
//! (inode_setattr: timestamps; inode_setxattr, inode_removexattr: user.* attributes) cannot name
//! the path the rules name without its mount. Every change through a path takes write access to
//! the path's mount first, in the same system call — utimensat and setxattr through
//! mnt_want_write, futimens and fsetxattr through mnt_want_write_file — so the thread's last is
//! the dentry's: checked by its superblock, and by the walk reaching that mount's root (a record
//! of another mount of the filesystem leaves the path unresolved: refused).
//!
//! A stacking filesystem (overlayfs) changes its upper layer in turn, through a private mount of
//! its own that no process can name: such mounts are not recorded, and once the hook allowed the
//! change through the recorded mount, the filesystem's own change of another superblock in the
//! same call is let through (ALLOWED_BIT).

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::fentry, programs::FEntryContext};

use claw_common::AgentEntry;

use crate::{
    decide::{current_agent, file_verdict, resolve_walk, scratch, Resolved, Scratch},
    kernel::{offset, read, read_ptr},
    WRITE_MOUNTS,
};

#[fentry(function = "mnt_want_write")]
pub fn mnt_want_write(ctx: FEntryContext) -> u32 {
    // (struct vfsmount *m)
    remember(ctx.arg(0));
    0
}

#[fentry(function = "mnt_want_write_file")]
pub fn mnt_want_write_file(ctx: FEntryContext) -> u32 {
    // (struct file *file)
    let file: *const u8 = ctx.arg(0);
    // SAFETY: a checked read of the file's f_path.mnt.
    if let Some(mount) = unsafe { read_ptr(file, offset!(FILE_F_PATH) + offset!(PATH_MNT)) } {
        remember(mount);
    }
    0
}

/// Set in a record once a hook allowed a change through its mount (pointers are aligned).
const ALLOWED_BIT: u64 = 1;
/// The kernel's mark on private mounts (MNT_NS_INTERNAL, ERR_PTR(-EINVAL)).
const INTERNAL_NAMESPACE: u64 = -22i64 as u64;

#[inline(always)]
fn remember(mount: *const u8) {
    if current_agent().is_none() {
        return;
    }
    // SAFETY: a checked read of the mount's namespace (the vfsmount sits inside its mount).
    let namespace = unsafe {
        read::<u64>(
            mount.wrapping_sub(offset!(MOUNT_MNT)),
            offset!(MOUNT_MNT_NS),
        )
    };
    // Kernel-internal mounts (an overlay's upper layer, no namespace at all) name nothing.
    if matches!(namespace, None | Some(0) | Some(INTERNAL_NAMESPACE)) {
        return;
    }
    let thread = bpf_get_current_pid_tgid();
    // LRU: a thread's stale record is replaced by its next write, or evicted.
    let _ = WRITE_MOUNTS.insert(thread, mount as u64, 0);
}

/// Where a change of `dentry` is made, as the calling thread last took write access.
pub enum Written {
    /// Its path through that mount.
    Path(Resolved),
    /// Another superblock's, after a change through the mount was allowed: the stacked
    /// filesystem's own (overlayfs's upper layer).
    Stacked,
    /// No record, or it does not hold the dentry.
    Unknown,
}

/// `dentry`'s path through the mount the calling thread last took write access to.
///
/// # Safety
/// `dentry` is a kernel pointer to a dentry.
#[inline(always)]
pub unsafe fn written_path(scratch: &mut Scratch, dentry: *const u8) -> Written {
    // SAFETY: the value is copied out at once.
    let Some(record) = (unsafe { WRITE_MOUNTS.get(bpf_get_current_pid_tgid()) }).copied() else {
        return Written::Unknown;
    };
    let mount = (record & !ALLOWED_BIT) as *const u8;
    // SAFETY: checked kernel reads; then the walk, as resolve_walk requires.
    unsafe {
        let (Some(mount_sb), Some(dentry_sb)) = (
            read_ptr(mount, offset!(VFSMOUNT_MNT_SB)),
            read_ptr(dentry, offset!(DENTRY_D_SB)),
        ) else {
            return Written::Unknown;
        };
        if mount_sb != dentry_sb {
            return if record & ALLOWED_BIT != 0 {
                Written::Stacked
            } else {
                Written::Unknown
            };
        }
        resolve_walk(scratch, mount, dentry).map_or(Written::Unknown, Written::Path)
    }
}

/// The thread's change through its recorded mount was allowed: a stacked filesystem may now
/// change its layers in the same call.
#[inline(always)]
pub fn allowed_through_record() {
    let thread = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out at once.
    if let Some(record) = (unsafe { WRITE_MOUNTS.get(thread) }).copied() {
        let _ = WRITE_MOUNTS.insert(thread, record | ALLOWED_BIT, 0);
    }
}

/// The verdict on changing `dentry` (op, needing `need`) for an agent's thread, by the path
/// through the mount it writes through.
#[inline(always)]
pub fn change_verdict(
    cgroup_id: u64,
    agent: AgentEntry,
    op: u32,
    need: u32,
    dentry: *const u8,
) -> i32 {
    let Some(scratch) = scratch() else {
        return file_verdict(cgroup_id, agent, op, need, None);
    };
    // SAFETY: `dentry` is a hook's dentry argument.
    let ret = match unsafe { written_path(scratch, dentry) } {
        Written::Stacked => return 0,
        Written::Path(resolved) => file_verdict(cgroup_id, agent, op, need, Some(resolved)),
        Written::Unknown => file_verdict(cgroup_id, agent, op, need, None),
    };
    if ret == 0 {
        allowed_through_record();
    }
    ret
}
