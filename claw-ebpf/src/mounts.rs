//! The mount each agent thread last took write access to. Hooks handed a dentry alone
//! (inode_setattr: timestamps; inode_setxattr, inode_removexattr: user.* attributes) cannot name
//! the path the rules name without its mount. Every change through a path takes write access to
//! the path's mount first, in the same system call — utimensat and setxattr through
//! mnt_want_write, futimens and fsetxattr through mnt_want_write_file — so the thread's last is
//! the dentry's: checked by its superblock, and by the walk reaching that mount's root (a record
//! of another mount of the filesystem leaves the path unresolved: refused).

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::fentry, programs::FEntryContext};

use crate::{
    decide::{current_agent, resolve_walk, Resolved, Scratch},
    kernel::{offset, read_ptr},
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

#[inline(always)]
fn remember(mount: *const u8) {
    if current_agent().is_none() {
        return;
    }
    let thread = bpf_get_current_pid_tgid();
    // LRU: a thread's stale record is replaced by its next write, or evicted.
    let _ = WRITE_MOUNTS.insert(thread, mount as u64, 0);
}

/// `dentry`'s path through the mount the calling thread last took write access to; None when it
/// took none, or that mount is of another filesystem or does not hold the dentry.
///
/// # Safety
/// `dentry` is a kernel pointer to a dentry.
#[inline(always)]
pub unsafe fn written_path(scratch: &mut Scratch, dentry: *const u8) -> Option<Resolved> {
    // SAFETY: the value is copied out at once.
    let mount = unsafe { *WRITE_MOUNTS.get(bpf_get_current_pid_tgid())? } as *const u8;
    // SAFETY: checked kernel reads; then the walk, as resolve_walk requires.
    unsafe {
        let mount_sb = read_ptr(mount, offset!(VFSMOUNT_MNT_SB))?;
        let dentry_sb = read_ptr(dentry, offset!(DENTRY_D_SB))?;
        if mount_sb != dentry_sb {
            return None;
        }
        resolve_walk(scratch, mount, dentry)
    }
}
