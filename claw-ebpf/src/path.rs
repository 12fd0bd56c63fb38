//! Hooks on changes to the file tree: each needs WRITE on every path it touches. Paths are walked
//! from (mount, dentry): 6.1 does not allow d_path on these hooks.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use claw_common::{access, op};

use crate::{
    decide::{current_agent, file_verdict, resolve_walk, scratch},
    kernel::{offset, read_ptr},
};

/// `need` on the entry `dentry` of the mount of `dir` (a `struct path *`).
#[inline(always)]
fn check_entry(ctx_dir: *const u8, dentry: *const u8, op: u32, need: u32) -> i32 {
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    // SAFETY: checked kernel reads of hook arguments.
    let resolved = unsafe {
        match (read_ptr(ctx_dir, offset!(PATH_MNT)), scratch()) {
            (Some(mnt), Some(s)) => resolve_walk(s, mnt, dentry),
            _ => None,
        }
    };
    file_verdict(cgroup_id, agent, op, need, resolved)
}

/// WRITE on the object of a `struct path *`.
#[inline(always)]
fn check_path(path: *const u8, op: u32) -> i32 {
    // SAFETY: a checked kernel read of the hook's argument; a failed read resolves no path,
    // which is denied.
    let dentry = unsafe { read_ptr(path, offset!(PATH_DENTRY)) }.unwrap_or(core::ptr::null());
    check_entry(path, dentry, op, access::WRITE)
}

const S_IFMT: u32 = 0o170000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;

/// Creating files, fifos and sockets needs WRITE; a device node never may be made (one in a
/// writable directory would open the disk or memory behind every rule).
#[lsm(hook = "path_mknod")]
pub fn path_mknod(ctx: LsmContext) -> i32 {
    let mode: u32 = ctx.arg(2);
    let kind = mode & S_IFMT;
    let need = if kind == S_IFCHR || kind == S_IFBLK {
        access::ADMIN
    } else {
        access::WRITE
    };
    check_entry(ctx.arg(0), ctx.arg(1), op::MKNOD, need)
}

#[lsm(hook = "path_mkdir")]
pub fn path_mkdir(ctx: LsmContext) -> i32 {
    check_entry(ctx.arg(0), ctx.arg(1), op::MKDIR, access::WRITE)
}

#[lsm(hook = "path_unlink")]
pub fn path_unlink(ctx: LsmContext) -> i32 {
    check_entry(ctx.arg(0), ctx.arg(1), op::UNLINK, access::WRITE)
}

#[lsm(hook = "path_rmdir")]
pub fn path_rmdir(ctx: LsmContext) -> i32 {
    check_entry(ctx.arg(0), ctx.arg(1), op::RMDIR, access::WRITE)
}

#[lsm(hook = "path_symlink")]
pub fn path_symlink(ctx: LsmContext) -> i32 {
    check_entry(ctx.arg(0), ctx.arg(1), op::SYMLINK, access::WRITE)
}

/// A hard link touches the new name and the file it names: both need WRITE, so that a link
/// cannot give a file an allowed name.
#[lsm(hook = "path_link")]
pub fn path_link(ctx: LsmContext) -> i32 {
    let old_dentry: *const u8 = ctx.arg(0);
    let new_dir: *const u8 = ctx.arg(1);
    let new_dentry: *const u8 = ctx.arg(2);
    // A link stays on its mount, so the new directory's mount is the old file's too.
    let ret = check_entry(new_dir, old_dentry, op::LINK, access::WRITE);
    if ret != 0 {
        return ret;
    }
    check_entry(new_dir, new_dentry, op::LINK, access::WRITE)
}

#[lsm(hook = "path_rename")]
pub fn path_rename(ctx: LsmContext) -> i32 {
    let ret = check_entry(ctx.arg(0), ctx.arg(1), op::RENAME, access::WRITE);
    if ret != 0 {
        return ret;
    }
    check_entry(ctx.arg(2), ctx.arg(3), op::RENAME, access::WRITE)
}

#[lsm(hook = "path_truncate")]
pub fn path_truncate(ctx: LsmContext) -> i32 {
    check_path(ctx.arg(0), op::TRUNCATE)
}

#[lsm(hook = "path_chmod")]
pub fn path_chmod(ctx: LsmContext) -> i32 {
    check_path(ctx.arg(0), op::CHMOD)
}

#[lsm(hook = "path_chown")]
pub fn path_chown(ctx: LsmContext) -> i32 {
    check_path(ctx.arg(0), op::CHOWN)
}
