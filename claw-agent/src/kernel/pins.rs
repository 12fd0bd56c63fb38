//! Where claw's kernel objects outlive the daemon: a directory on a BPF filesystem holding the
//! maps (`maps/NAME`) and the links that attach the programs (`links/GENERATION/NAME`). While a
//! link is pinned its program stays attached, whatever happens to claw-agent (SIGKILL
//! included); while the maps are pinned, the rules stay and events wait in the ring buffer.
//!
//! A restarted daemon reuses the maps, attaches its own programs beside the old ones (every
//! program runs; any one can refuse, so two generations together are never weaker than one),
//! then unpins the old generation's links. `claw-agent --uninstall` removes the directory: the
//! links go, the programs detach, the maps are freed.

use std::{
    ffi::CString,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

/// The kernel's BPF filesystem mount point, which claw-agent mounts when nothing is there.
const BPF_MOUNT: &str = "/sys/fs/bpf";

/// statfs(2) f_type of a BPF filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("{path} is not on a BPF filesystem — mount one there (mount -t bpf bpf {path}) or pass --bpffs DIR on one")]
    NotBpffs { path: PathBuf },
    #[error("mounting a BPF filesystem on {path}: {source}")]
    Mount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct Pins {
    dir: PathBuf,
    /// This daemon's links go under links/GENERATION.
    generation: String,
}

/// Whether `path` is the root of a mounted BPF filesystem.
pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs(2) writes one struct statfs into memory we own.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a pointer to our struct.
    let ok = unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } == 0;
    ok && stat.f_type as i64 == BPF_FS_MAGIC
}

impl Pins {
    /// The pin directory `dir`, whose parent must be (or, for /sys/fs/bpf, is made) a BPF
    /// filesystem.
    pub fn open(dir: &Path) -> Result<Self, PinError> {
        let parent = dir.parent().unwrap_or(Path::new("/"));
        if !is_bpffs(parent) {
            if parent != Path::new(BPF_MOUNT) {
                return Err(PinError::NotBpffs {
                    path: parent.to_path_buf(),
                });
            }
            mount_bpffs(parent)?;
        }
        let generation = format!(
            "{}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
            std::process::id()
        );
        let pins = Self {
            dir: dir.to_path_buf(),
            generation,
        };
        for sub in [pins.dir.join("maps"), pins.generation_dir()] {
            std::fs::create_dir_all(&sub).map_err(|source| PinError::Io { path: sub, source })?;
        }
        Ok(pins)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join("maps").join(name)
    }

    /// Whether maps of an earlier claw-agent are there to adopt.
    pub fn has_maps(&self, names: &[&str]) -> bool {
        names.iter().all(|name| self.map(name).exists())
    }

    fn generation_dir(&self) -> PathBuf {
        self.dir.join("links").join(&self.generation)
    }

    /// Where this daemon pins the link called `name` (a program, or program@cgroup-id).
    pub fn link(&self, name: &str) -> PathBuf {
        self.generation_dir().join(name)
    }

    /// Unpins every link of earlier generations: their programs detach once nothing else holds
    /// them. Returns how many were removed.
    pub fn remove_older_links(&self) -> Result<usize, PinError> {
        let links = self.dir.join("links");
        let mut removed = 0;
        let entries = std::fs::read_dir(&links).map_err(|source| PinError::Io {
            path: links.clone(),
            source,
        })?;
        for entry in entries.filter_map(Result::ok) {
            if entry.file_name() == self.generation.as_str() {
                continue;
            }
            removed += remove_tree(&entry.path())?;
        }
        Ok(removed)
    }

    /// Removes everything claw pinned: links first (the programs detach), then the maps.
    pub fn remove_all(dir: &Path) -> Result<usize, PinError> {
        if !dir.exists() {
            return Ok(0);
        }
        let links = remove_tree(&dir.join("links"))?;
        remove_tree(dir)?;
        Ok(links)
    }
}

/// Removes `path` and what is under it; returns the files (pins) removed.
fn remove_tree(path: &Path) -> Result<usize, PinError> {
    let io = |source| PinError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !path.exists() {
        return Ok(0);
    }
    if !path.is_dir() {
        std::fs::remove_file(path).map_err(io)?;
        return Ok(1);
    }
    let mut removed = 0;
    for entry in std::fs::read_dir(path).map_err(io)?.filter_map(Result::ok) {
        removed += remove_tree(&entry.path())?;
    }
    std::fs::remove_dir(path).map_err(io)?;
    Ok(removed)
}

/// Attaches `program` to `cgroup` through a new BPF link and pins the link at `path`. Written by
/// hand for the cgroup device program: aya 0.14 keeps that link's descriptor private, so it
/// cannot be pinned through aya.
pub fn link_and_pin(
    program: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    attach_type: u32,
    path: &Path,
) -> std::io::Result<()> {
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_LINK_CREATE: libc::c_long = 28;
    // union bpf_attr, as LINK_CREATE reads it: prog_fd, target_fd, attach_type, flags.
    let mut attr = [0u32; 16];
    attr[0] = program.as_raw_fd() as u32;
    attr[1] = cgroup.as_raw_fd() as u32;
    attr[2] = attach_type;
    // SAFETY: bpf(2) reads `size_of_val(&attr)` bytes of the attr we own.
    let link = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if link < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us.
    let link = unsafe { OwnedFd::from_raw_fd(link as i32) };
    let c_path =
        CString::new(path.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    // union bpf_attr, as OBJ_PIN reads it: pathname (u64), bpf_fd, file_flags.
    let mut attr = [0u64; 4];
    attr[0] = c_path.as_ptr() as u64;
    attr[1] = link.as_raw_fd() as u64;
    // SAFETY: bpf(2) reads the attr we own and the NUL-terminated path it points to.
    let pinned = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_PIN,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if pinned < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Mounts a BPF filesystem on `path` (made if missing).
pub fn mount_bpffs(path: &Path) -> Result<(), PinError> {
    let mount_error = |source| PinError::Mount {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(path).map_err(mount_error)?;
    let target = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|err| mount_error(std::io::Error::other(err)))?;
    // SAFETY: mount(2) with NUL-terminated strings we own.
    let ret = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret != 0 {
        return Err(mount_error(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_off_bpffs_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = Pins::open(&dir.path().join("claw")).unwrap_err();
        assert!(err.to_string().contains("mount -t bpf bpf"), "{err}");
    }
}
