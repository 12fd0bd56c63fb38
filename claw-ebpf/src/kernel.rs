//! Reading kernel structs. Rust eBPF has no CO-RE relocations, so every member offset used here
//! is a global that claw-agent fills from the running kernel's BTF at load (they differ between
//! kernels: `file.f_path` is at 16 on 6.1 and 64 on 6.12).

use core::ffi::c_void;

use aya_ebpf::helpers::generated::bpf_probe_read_kernel;

/// Declares offset globals; claw-agent overrides each by name (claw_agent::enforcer::OFFSETS).
macro_rules! offsets {
    ($($name:ident),* $(,)?) => {
        $(
            #[no_mangle]
            pub(crate) static $name: u64 = 0;
        )*
    };
}

offsets!(
    FILE_F_PATH,
    FILE_F_MODE,
    FILE_F_FLAGS,
    BPRM_FILE,
    BPRM_P,
    BPRM_ARGC,
    BPRM_ENVC,
    VMA_VM_FILE,
    PATH_MNT,
    PATH_DENTRY,
    DENTRY_D_PARENT,
    DENTRY_D_NAME,
    QSTR_NAME,
    QSTR_LEN,
    VFSMOUNT_MNT_ROOT,
    MOUNT_MNT,
    MOUNT_MNT_PARENT,
    MOUNT_MNT_MOUNTPOINT,
    TASK_FS,
    FS_ROOT,
    UNIX_SOCK_PATH,
    SOCKET_SK,
    TASK_CGROUPS,
    TASK_TGID,
    CSS_SET_DFL_CGRP,
    CGROUP_KN,
    CGROUP_LEVEL,
    CGROUP_ANCESTORS,
    KERNFS_NODE_ID,
    SOCK_FAMILY,
    SOCK_PROTOCOL,
    SOCK_NUM,
    SOCK_RCV_SADDR,
    SOCK_V6_RCV_SADDR,
    VMA_ANON_VMA,
    TASK_PERSONALITY,
    FILE_F_OWNER,
    VFSMOUNT_MNT_SB,
    DENTRY_D_SB,
    IATTR_IA_VALID,
    MOUNT_MNT_NS,
);

/// The value of an offset global, by name.
macro_rules! offset {
    ($name:ident) => {
        $crate::kernel::value(&$crate::kernel::$name)
    };
}
pub(crate) use offset;

/// The volatile read keeps the compiler from folding the placeholder 0; the verifier sees the
/// loaded value as a constant (the globals live in a frozen read-only map) and so still checks
/// what lies at the offset.
#[inline(always)]
pub fn value(global: &'static u64) -> usize {
    // SAFETY: reading a plain static.
    unsafe { core::ptr::read_volatile(global) as usize }
}

/// Reads a `T` at `base + offset` of kernel memory; None if the read faults.
///
/// # Safety
/// `base` must be a kernel pointer (the read itself is checked by the kernel).
pub unsafe fn read<T: Copy + Default>(base: *const u8, offset: usize) -> Option<T> {
    let mut value = T::default();
    // SAFETY: a checked kernel read into a local of the right size.
    let ret = unsafe {
        bpf_probe_read_kernel(
            (&mut value as *mut T).cast::<c_void>(),
            size_of::<T>() as u32,
            base.wrapping_add(offset).cast::<c_void>(),
        )
    };
    (ret == 0).then_some(value)
}

/// Reads a kernel pointer at `base + offset`.
///
/// # Safety
/// As for [`read`].
pub unsafe fn read_ptr(base: *const u8, offset: usize) -> Option<*const u8> {
    // SAFETY: as for `read`.
    unsafe { read::<u64>(base, offset) }
        .filter(|&p| p != 0)
        .map(|p| p as *const u8)
}
