//! The cgroup v2 filesystem: where it is mounted, creating an agent's cgroup, its id.

use std::{
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("reading {path}: {source}")]
    Mountinfo {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("no cgroup v2 filesystem is mounted (none in /proc/self/mountinfo) — mount one, e.g. `mount -t cgroup2 none /sys/fs/cgroup`, or pass --cgroup-root")]
    NoCgroup2,
    #[error("writing `{value}` to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "claw-agent runs in a cgroup namespace of its own ({found}), not the host's: the cgroup \
         levels it computes would not be the kernel's, and processes below an agent would go \
         unconfined — run it in the host's cgroup namespace (on Kubernetes: hostPID and a \
         privileged container with the host's /sys/fs/cgroup; with Docker: --cgroupns=host)"
    )]
    OwnNamespace { found: String },
    #[error("reading {path}: {source}")]
    Namespace {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("creating cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The link naming this process's cgroup namespace.
pub const OWN_CGROUP_NAMESPACE: &str = "/proc/self/ns/cgroup";

/// The initial (host) cgroup namespace, as its link reads: its inode number is fixed
/// (PROC_CGROUP_INIT_INO in include/linux/proc_ns.h).
const HOST_CGROUP_NAMESPACE: &str = "cgroup:[4026531835]";

/// Refuses a cgroup namespace other than the host's (`link` is /proc/self/ns/cgroup): the
/// programs count cgroup levels from the hierarchy's real root, claw-agent from its mount.
pub fn check_host_namespace(link: &Path) -> Result<(), CgroupError> {
    let found = std::fs::read_link(link).map_err(|source| CgroupError::Namespace {
        path: link.to_owned(),
        source,
    })?;
    let found = found.to_string_lossy().into_owned();
    if found == HOST_CGROUP_NAMESPACE {
        Ok(())
    } else {
        Err(CgroupError::OwnNamespace { found })
    }
}

/// The mount point of the first cgroup2 filesystem in a mountinfo table.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // Fields: id parent major:minor root mount-point options... - fstype source super-options
        let (before, after) = line.split_once(" - ")?;
        let fstype = after.split_whitespace().next()?;
        let mount_point = before.split_whitespace().nth(4)?;
        (fstype == "cgroup2")
            .then(|| PathBuf::from(crate::policy::compile::unescape_mountinfo(mount_point)))
    })
}

pub fn find_cgroup2_root() -> Result<PathBuf, CgroupError> {
    const MOUNTINFO: &str = "/proc/self/mountinfo";
    let table = std::fs::read_to_string(MOUNTINFO).map_err(|source| CgroupError::Mountinfo {
        path: MOUNTINFO,
        source,
    })?;
    cgroup2_mount(&table).ok_or(CgroupError::NoCgroup2)
}

/// Creates `root/relative` (and its parents) if missing and returns its cgroup id, which for
/// cgroup v2 is the inode number of its directory — what bpf_get_current_cgroup_id() reports.
pub fn ensure(root: &Path, relative: &str) -> Result<u64, CgroupError> {
    let path = root.join(relative);
    let created = std::fs::create_dir_all(&path).and_then(|()| std::fs::metadata(&path));
    created
        .map(|meta| meta.ino())
        .map_err(|source| CgroupError::Create { path, source })
}

/// Cgroups below one searched for an id, at most: naming a process's cgroup in an event must not
/// cost more than a bounded walk.
const DESCENDANTS_SEARCHED: usize = 4096;

/// The path (relative to `root`) of the cgroup with id `cgroup_id` at or below `root/under`, if
/// it still exists; searched breadth first.
pub fn find_below(root: &Path, under: &str, cgroup_id: u64) -> Option<String> {
    let mut queue = std::collections::VecDeque::from([under.trim_matches('/').to_owned()]);
    let mut searched = 0;
    while let Some(relative) = queue.pop_front() {
        let Ok(entries) = std::fs::read_dir(root.join(&relative)) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_dir() {
                continue;
            }
            let child = format!("{relative}/{}", entry.file_name().to_string_lossy());
            if meta.ino() == cgroup_id {
                return Some(child);
            }
            searched += 1;
            if searched >= DESCENDANTS_SEARCHED {
                return None;
            }
            queue.push_back(child);
        }
    }
    None
}

/// Enables `controllers` in `cgroup.subtree_control` of every cgroup from the root down to the
/// parent of `relative`, so that `relative` has their interface files (memory.max, pids.max,
/// cpu.max). Enabling one already enabled changes nothing.
pub fn enable_controllers(
    root: &Path,
    relative: &str,
    controllers: &[&str],
) -> Result<(), CgroupError> {
    if controllers.is_empty() {
        return Ok(());
    }
    let line: Vec<String> = controllers.iter().map(|c| format!("+{c}")).collect();
    let mut dir = root.to_path_buf();
    let components: Vec<&str> = relative.split('/').collect();
    for component in &components[..components.len().saturating_sub(1)] {
        write(&dir.join("cgroup.subtree_control"), &line.join(" "))?;
        dir.push(component);
    }
    write(&dir.join("cgroup.subtree_control"), &line.join(" "))
}

/// Writes one interface file of the cgroup `relative`.
pub fn write_file(root: &Path, relative: &str, file: &str, value: &str) -> Result<(), CgroupError> {
    write(&root.join(relative).join(file), value)
}

/// Reads one interface file of the cgroup `relative`, trimmed; None where it does not exist.
pub fn read_file(root: &Path, relative: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(root.join(relative).join(file))
        .ok()
        .map(|s| s.trim().to_owned())
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_host_cgroup_namespace_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host");
        std::os::unix::fs::symlink(HOST_CGROUP_NAMESPACE, &host).unwrap();
        check_host_namespace(&host).unwrap();
        let own = dir.path().join("own");
        std::os::unix::fs::symlink("cgroup:[4026532999]", &own).unwrap();
        let err = check_host_namespace(&own).unwrap_err().to_string();
        assert!(
            err.contains("cgroup:[4026532999]") && err.contains("--cgroupns=host"),
            "{err}"
        );
    }

    #[test]
    fn a_descendant_is_found_by_its_id_and_only_below_where_asked() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("claw/tools/pod/container");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::create_dir_all(root.path().join("elsewhere")).unwrap();
        let id = std::fs::metadata(&deep).unwrap().ino();
        assert_eq!(
            find_below(root.path(), "claw/tools", id).as_deref(),
            Some("claw/tools/pod/container")
        );
        assert_eq!(
            find_below(root.path(), "/claw/tools/", id).as_deref(),
            Some("claw/tools/pod/container")
        );
        let elsewhere = std::fs::metadata(root.path().join("elsewhere"))
            .unwrap()
            .ino();
        assert_eq!(find_below(root.path(), "claw/tools", elsewhere), None);
    }

    #[test]
    fn finds_cgroup2_in_hybrid_layout() {
        let table = "\
25 30 0:22 / /sys/fs/cgroup rw,relatime shared:9 - tmpfs tmpfs rw,mode=755
26 25 0:23 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory
27 25 0:24 / /sys/fs/cgroup/unified rw,relatime shared:11 - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_mount(table),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn unescapes_mount_points_and_reports_absence() {
        let table = "27 25 0:24 / /mnt/my\\040cgroups rw - cgroup2 none rw\n";
        assert_eq!(cgroup2_mount(table), Some(PathBuf::from("/mnt/my cgroups")));
        assert_eq!(cgroup2_mount("1 0 0:1 / / rw - ext4 /dev/vda rw\n"), None);
    }
}
