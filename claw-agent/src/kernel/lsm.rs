//! The kernel's active LSMs, in boot order: from securityfs (`/sys/kernel/security/lsm`), or
//! where that is not mounted, from lsm_list_modules(2) (Linux 6.8+) — so that neither the start
//! nor the preflight needs to mount anything, and both read the same list.

use std::path::Path;

use crate::kernel::enforcer::EnforcerError;

/// The active LSMs: `lsm_list`, or lsm_list_modules(2) where it cannot be read.
pub fn active(lsm_list: &Path) -> Result<Vec<String>, EnforcerError> {
    active_or(lsm_list, listed_modules)
}

fn active_or(
    lsm_list: &Path,
    fallback: impl FnOnce() -> std::io::Result<Vec<String>>,
) -> Result<Vec<String>, EnforcerError> {
    match std::fs::read_to_string(lsm_list) {
        Ok(list) => Ok(list.trim().split(',').map(str::to_owned).collect()),
        Err(source) => fallback().map_err(|_| EnforcerError::LsmListUnreadable {
            path: lsm_list.display().to_string(),
            source,
        }),
    }
}

/// The active LSMs by lsm_list_modules(2). Written by hand: libc has no wrapper for it yet.
fn listed_modules() -> std::io::Result<Vec<String>> {
    /// lsm_list_modules, on x86_64 and in the generic table (arm64) alike.
    const SYS_LSM_LIST_MODULES: libc::c_long = 461;
    let mut ids = [0u64; 32];
    let mut size = std::mem::size_of_val(&ids) as u32;
    // SAFETY: the kernel writes at most `size` bytes into `ids` and the size back into `size`.
    let count = unsafe {
        libc::syscall(
            SYS_LSM_LIST_MODULES,
            ids.as_mut_ptr(),
            &mut size as *mut u32,
            0u32,
        )
    };
    if count < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ids
        .iter()
        .take(count as usize)
        .map(|id| name(*id))
        .collect())
}

/// The name of an LSM id (include/uapi/linux/lsm.h), as the lsm= boot parameter spells it.
fn name(id: u64) -> String {
    let name = match id {
        100 => "capability",
        101 => "selinux",
        102 => "smack",
        103 => "tomoyo",
        104 => "apparmor",
        105 => "yama",
        106 => "loadpin",
        107 => "safesetid",
        108 => "lockdown",
        109 => "bpf",
        110 => "landlock",
        111 => "ima",
        112 => "evm",
        113 => "ipe",
        other => return format!("lsm-{other}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsm_ids_are_named_as_the_boot_parameter_spells_them() {
        assert_eq!(name(109), "bpf");
        assert_eq!(name(110), "landlock");
        assert_eq!(name(999), "lsm-999");
    }

    #[test]
    fn the_list_file_comes_first_and_its_read_error_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("lsm");
        std::fs::write(&file, "lockdown,capability,bpf\n").unwrap();
        let listed = active_or(&file, || panic!("the file was readable")).unwrap();
        assert_eq!(listed, ["lockdown", "capability", "bpf"]);
        let missing = dir.path().join("missing");
        assert_eq!(
            active_or(&missing, || Ok(vec!["landlock".to_owned()])).unwrap(),
            ["landlock"]
        );
        let err = active_or(&missing, || Err(std::io::Error::other("ENOSYS")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mount -t securityfs"), "{err}");
    }
}
