//! The Landlock ruleset of a process claw starts, built from its agent's `policy::landlock::Plan`
//! just before the start (rules bind the inodes their paths name at that moment), in the parent:
//! the child of clone3 only calls prctl and landlock_restrict_self before execve.
//!
//! rust-landlock builds the ruleset (it handles every ABI's rights and their absence); the paths
//! are opened here with openat2, which the crate does not offer, so that a symbolic link an
//! agent could have planted is not followed.

use std::{
    ffi::CString,
    fs::File,
    io::Read as _,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    },
    path::{Path, PathBuf},
};

use landlock::{
    make_bitflags, Access as _, AccessFs, BitFlags, PathBeneath, Ruleset, RulesetAttr as _,
    RulesetCreatedAttr as _, Scope, ABI,
};

use crate::policy::landlock::{tag, Access, Grant, Plan};

/// landlock_restrict_self flags (ABI 7): log denials after execve too (by default the kernel
/// stops logging at the first exec), and not those of sandboxes the agent makes itself.
const LOG_NEW_EXEC_ON: u32 = 2;
const LOG_SUBDOMAINS_OFF: u32 = 4;

/// A ruleset ready for the child to restrict itself with, and what building it found.
#[derive(Debug)]
pub struct Confinement {
    pub ruleset: OwnedFd,
    pub restrict_flags: u32,
    /// The child's name while it restricts itself — what the kernel's audit record of its
    /// domain carries, so that a denial is known to be this agent's: `claw-<cgroup id in hex>`.
    pub tag: CString,
    /// Kept in its cgroup and stripped of capabilities (coverage `landlock`, where no BPF LSM
    /// hook stands behind Landlock).
    pub contain: bool,
    /// With `contain`: the cgroup file systems' mount points, hidden in its mount namespace.
    pub cgroup_mounts: Vec<CString>,
    /// The kernel's Landlock ABI.
    pub abi: u32,
    /// Grants left out, and why (a path missing, or a symbolic link in a tree agents write).
    pub skipped: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("Landlock is not available: {0}")]
    Unavailable(String),
    #[error("building the Landlock ruleset: {0}")]
    Ruleset(#[from] landlock::RulesetError),
}

/// The rights a grant gives at a directory or at a file (Landlock refuses directory rights on a
/// file). An exact-path rule naming a directory lets it be listed: Landlock cannot grant a
/// directory without what is below it, so listing (names only) reaches its subdirectories too.
fn rights(access: Access, directory: bool, exact: bool) -> BitFlags<AccessFs> {
    let mut rights = BitFlags::EMPTY;
    if access.read {
        rights |= AccessFs::ReadFile;
        if directory {
            rights |= AccessFs::ReadDir;
        }
    }
    if access.write {
        rights |= make_bitflags!(AccessFs::{WriteFile | Truncate});
        if directory && !exact {
            // Every write directory gets the same set: Refer needs it on both sides of a move.
            rights |= make_bitflags!(AccessFs::{MakeReg | MakeDir | MakeSym | MakeSock | MakeFifo | RemoveFile | RemoveDir | Refer});
        }
    }
    if access.execute {
        rights |= make_bitflags!(AccessFs::{Execute | ReadFile});
    }
    if access.library {
        rights |= AccessFs::ReadFile;
    }
    if access.ioctl {
        rights |= AccessFs::IoctlDev;
    }
    if access.device {
        rights |= make_bitflags!(AccessFs::{ReadFile | WriteFile});
        if directory {
            rights |= AccessFs::ReadDir;
        }
    }
    if exact && directory {
        // Listing only, and only for a read rule: what a write, exec or library rule naming a
        // directory allows (the directory itself) has no Landlock right short of its subtree.
        return if access.read {
            AccessFs::ReadDir.into()
        } else {
            BitFlags::EMPTY
        };
    }
    if !directory {
        rights &= make_bitflags!(AccessFs::{Execute | WriteFile | ReadFile | Truncate | IoctlDev});
    }
    rights
}

/// openat2's struct open_how (libc's binding cannot be built outside libc: it is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens `path` for a rule (O_PATH): without following symbolic links, unless none of them can
/// be in a tree some agent writes.
fn open_rule_path(path: &Path, writable: &[String]) -> Result<OwnedFd, String> {
    let name = CString::new(path.as_os_str().as_bytes()).map_err(|_| "a NUL byte".to_owned())?;
    const RESOLVE_NO_SYMLINKS: u64 = 0x04;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_NO_SYMLINKS,
    };
    let open = |how: &OpenHow| {
        // SAFETY: openat2(2) with a NUL-terminated path and a filled open_how.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                libc::AT_FDCWD,
                name.as_ptr(),
                how as *const OpenHow,
                size_of::<OpenHow>(),
            )
        };
        if fd < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            // SAFETY: the kernel just gave us this descriptor.
            Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
        }
    };
    match open(&how) {
        Ok(fd) => Ok(fd),
        Err(err) if err.raw_os_error() == Some(libc::ELOOP) => {
            if let Some(why) = untrusted_link(path, writable) {
                return Err(format!("{why}: not followed"));
            }
            open(&OpenHow { resolve: 0, ..how }).map_err(|e| e.to_string())
        }
        Err(err) => Err(err.to_string()),
    }
}

/// Why a symbolic link on `path`'s way cannot be trusted to stay where it points, if one cannot:
/// one in a tree some agent writes, or not root's in a directory only root writes (/lib and
/// /bin on merged-/usr systems are root's, in /). Links are followed, 40 at most; anything
/// that cannot be read is untrusted.
fn untrusted_link(path: &Path, writable: &[String]) -> Option<String> {
    untrusted_link_within(path, writable, 40)
}

fn untrusted_link_within(path: &Path, writable: &[String], links_left: u32) -> Option<String> {
    use std::path::Component;
    let mut walked = PathBuf::from("/");
    let components: Vec<Component> = path.components().collect();
    for (index, component) in components.iter().enumerate() {
        match component {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => continue,
            // What was walked holds no link: `..` is its parent.
            Component::ParentDir => {
                walked.pop();
                continue;
            }
            Component::Normal(name) => walked.push(name),
        }
        let Ok(meta) = std::fs::symlink_metadata(&walked) else {
            return None;
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        let text = walked.to_string_lossy();
        if let Some(tree) = writable.iter().find(|w| {
            let dir = w.trim_end_matches('/');
            text.starts_with(w.as_str()) || text == dir || w.starts_with(&format!("{text}/"))
        }) {
            return Some(format!(
                "a symbolic link at {text}, and agents may write {tree}"
            ));
        }
        let parent = walked.parent().and_then(|p| std::fs::metadata(p).ok());
        let root_only = |m: &std::fs::Metadata| m.uid() == 0 && m.mode() & 0o022 == 0;
        if meta.uid() != 0 || !parent.as_ref().is_some_and(root_only) {
            return Some(format!(
                "a symbolic link at {text} that someone other than root could have placed"
            ));
        }
        if links_left == 0 {
            return Some(format!("too many symbolic links at {text}"));
        }
        // Where it points is checked in turn, with what follows it.
        let Ok(target) = std::fs::read_link(&walked) else {
            return Some(format!("the symbolic link at {text} cannot be read"));
        };
        let mut next = walked.parent().unwrap_or(Path::new("/")).join(target);
        for rest in &components[index + 1..] {
            next.push(rest);
        }
        return untrusted_link_within(&next, writable, links_left - 1);
    }
    None
}

/// The trees agents write, as written and as the kernel resolves them (a rule on /var/run/x/
/// is a rule on /run/x/).
fn resolved_trees(writable: &[String]) -> Vec<String> {
    let mut trees = writable.to_vec();
    for tree in writable {
        if let Ok(real) = std::fs::canonicalize(tree) {
            let mut real = real.to_string_lossy().into_owned();
            if tree.ends_with('/') && !real.ends_with('/') {
                real.push('/');
            }
            trees.push(real);
        }
    }
    trees.sort();
    trees.dedup();
    trees
}

/// Mount points of cgroup file systems (v1 and v2) in `mountinfo`, deepest first: hidden from a
/// contained process, which could otherwise move itself into another cgroup (root owns
/// cgroup.procs, and without `nsdelegate` a cgroup namespace does not stop the move).
pub fn cgroup_mounts(mountinfo: &str) -> Vec<String> {
    let mut points: Vec<String> = mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fstype = after.split_whitespace().next()?;
            let point = before.split_whitespace().nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2")
                .then(|| crate::policy::compile::unescape_mountinfo(point))
        })
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    points
}

/// The ruleset for a process of `plan` started as `program` in the cgroup `cgroup_dir`.
pub fn build(plan: &Plan, program: &Path, cgroup_dir: &Path) -> Result<Confinement, LandlockError> {
    let abi = crate::kernel::preflight::landlock_abi().map_err(LandlockError::Unavailable)?;
    let mut created = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI::V5))?
        .scope(Scope::from_all(ABI::V6))?
        .create()?;
    let mut skipped = Vec::new();
    let writable = resolved_trees(&plan.writable);
    let mut rules: Vec<(OwnedFd, BitFlags<AccessFs>)> = Vec::new();
    for grant in &plan.grants {
        expand(grant, &writable, &mut rules, &mut skipped);
    }
    for interpreter in interpreters(plan, &writable, program) {
        match open_rule_path(&interpreter, &writable) {
            Ok(fd) => rules.push((fd, make_bitflags!(AccessFs::{Execute | ReadFile}))),
            Err(why) => skipped.push(format!(
                "{} (ELF interpreter): {why}",
                interpreter.display()
            )),
        }
    }
    for (fd, rights) in rules {
        if !rights.is_empty() {
            created = created.add_rule(PathBeneath::new(fd, rights))?;
        }
    }
    let ruleset: Option<OwnedFd> = created.into();
    let ruleset = ruleset
        .ok_or_else(|| LandlockError::Unavailable("the kernel made no ruleset".to_owned()))?;
    let cgroup_id = std::fs::metadata(cgroup_dir).map(|m| m.ino()).unwrap_or(0);
    Ok(Confinement {
        ruleset,
        restrict_flags: if abi >= 7 {
            LOG_NEW_EXEC_ON | LOG_SUBDOMAINS_OFF
        } else {
            0
        },
        tag: CString::new(tag(cgroup_id)).expect("hex has no NUL"),
        contain: plan.contain,
        cgroup_mounts: if plan.contain {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(|err| {
                LandlockError::Unavailable(format!("reading /proc/self/mountinfo: {err}"))
            })?;
            cgroup_mounts(&mountinfo)
                .into_iter()
                .filter_map(|p| CString::new(p).ok())
                .collect()
        } else {
            Vec::new()
        },
        abi,
        skipped,
    })
}

/// The rules of one grant: its path, or (guarded paths below it) the entries on the way.
fn expand(
    grant: &Grant,
    writable: &[String],
    rules: &mut Vec<(OwnedFd, BitFlags<AccessFs>)>,
    skipped: &mut Vec<String>,
) {
    if let Some(prefix) = grant.path.strip_suffix('*') {
        // `/dev/nvidia*`: every entry of the directory starting with the name.
        let (dir, start) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let dir = format!("{dir}/");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.as_bytes().starts_with(start.as_bytes()) {
                continue;
            }
            // Device nodes (and the driver's directories of them), never links: a link there
            // could point anywhere.
            let path = Path::new(&dir).join(&name);
            let device_like = std::fs::symlink_metadata(&path).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt as _;
                m.file_type().is_char_device() || (m.is_dir() && m.uid() == 0)
            });
            if device_like {
                add_path(&path, grant.access, false, writable, rules, skipped);
            } else {
                skipped.push(format!("{}: not a device node", path.display()));
            }
        }
        return;
    }
    let path = Path::new(&grant.path);
    if grant.except.is_empty() {
        add_path(
            path,
            grant.access,
            !grant.path.ends_with('/'),
            writable,
            rules,
            skipped,
        );
        return;
    }
    narrow(path, grant.access, &grant.except, writable, rules, skipped);
}

/// `dir` with everything below it but `except`: listing only at `dir` (if readable), each other
/// entry granted on its own; entries on the way to an excepted path narrowed in turn.
fn narrow(
    dir: &Path,
    access: Access,
    except: &[String],
    writable: &[String],
    rules: &mut Vec<(OwnedFd, BitFlags<AccessFs>)>,
    skipped: &mut Vec<String>,
) {
    if access.read {
        let listing = Access {
            read: true,
            ..Access::default()
        };
        add_path(dir, listing, true, writable, rules, skipped);
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        skipped.push(format!("{}: cannot be listed to narrow it", dir.display()));
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let text = path.to_string_lossy();
        let as_dir = format!("{text}/");
        if except.iter().any(|e| *e == text || *e == as_dir) {
            continue;
        }
        let below: Vec<String> = except
            .iter()
            .filter(|e| e.starts_with(&as_dir))
            .cloned()
            .collect();
        let is_symlink = entry.file_type().is_ok_and(|t| t.is_symlink());
        if is_symlink {
            // Its target is reached through a grant of its own, if any.
            continue;
        }
        if below.is_empty() {
            add_path(&path, access, false, writable, rules, skipped);
        } else {
            narrow(&path, access, &below, writable, rules, skipped);
        }
    }
}

fn add_path(
    path: &Path,
    access: Access,
    exact: bool,
    writable: &[String],
    rules: &mut Vec<(OwnedFd, BitFlags<AccessFs>)>,
    skipped: &mut Vec<String>,
) {
    match open_rule_path(path, writable) {
        Ok(fd) => {
            let directory = File::from(fd.try_clone().expect("dup of an O_PATH fd"))
                .metadata()
                .is_ok_and(|m| m.is_dir());
            rules.push((fd, rights(access, directory, exact)));
        }
        Err(why) => skipped.push(format!("{}: {why}", path.display())),
    }
}

/// Programs whose ELF interpreter every dynamically linked program here shares.
const USUAL_PROGRAMS: &[&str] = &["/bin/sh", "/usr/bin/env"];

/// The ELF interpreters (PT_INTERP) of `program`, of the programs exec rules name one by one and
/// of the system's usual programs, where a library grant covers them (its exceptions
/// respected): the kernel opens the interpreter as it opens a program (Landlock asks for
/// execute), while the libraries it loads need read only. Programs in trees agents write are
/// not read: an agent could name any file as their interpreter.
fn interpreters(plan: &Plan, writable_trees: &[String], program: &Path) -> Vec<PathBuf> {
    let in_tree =
        |text: &str, tree: &str| text == tree || (tree.ends_with('/') && text.starts_with(tree));
    let covered = |path: &Path| {
        let text = path.to_string_lossy();
        plan.grants
            .iter()
            .filter(|g| g.access.library)
            .any(|g| in_tree(&text, &g.path) && !g.except.iter().any(|e| in_tree(&text, e)))
    };
    let writable = |path: &Path| {
        let text = path.to_string_lossy();
        writable_trees.iter().any(|w| in_tree(&text, w))
    };
    let mut found: Vec<PathBuf> = plan
        .grants
        .iter()
        .filter(|g| g.access.execute && !g.path.ends_with('/'))
        .map(|g| PathBuf::from(&g.path))
        .chain([program.to_path_buf()])
        .chain(USUAL_PROGRAMS.iter().map(PathBuf::from))
        .filter(|p| !writable(p) && untrusted_link(p, writable_trees).is_none())
        .filter_map(|p| elf_interpreter(&p))
        .filter(|interp| untrusted_link(interp, writable_trees).is_none())
        .filter_map(|interp| {
            let real = std::fs::canonicalize(&interp).ok()?;
            (covered(&real) && !writable(&real)).then_some(real)
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The PT_INTERP path of a 64-bit little-endian ELF file, if it has one.
pub fn elf_interpreter(path: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt as _;
    // Non-blocking: a FIFO put in a program's place must not stall the start.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut head = vec![0u8; 4096];
    let read = file.read(&mut head).ok()?;
    let head = &head[..read];
    if head.get(..5)? != b"\x7fELF\x02" || *head.get(5)? != 1 {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(head.get(at..at + 2)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(head.get(at..at + 8)?.try_into().ok()?));
    let (phoff, phentsize, phnum) = (
        u64_at(0x20)? as usize,
        u16_at(0x36)? as usize,
        u16_at(0x38)?,
    );
    const PT_INTERP: u32 = 3;
    for index in 0..usize::from(phnum) {
        let at = phoff + index * phentsize;
        let kind = u32::from_le_bytes(head.get(at..at + 4)?.try_into().ok()?);
        if kind != PT_INTERP {
            continue;
        }
        let (offset, size) = (u64_at(at + 8)? as usize, u64_at(at + 32)? as usize);
        let name = head.get(offset..offset + size)?;
        let name = name.strip_suffix(b"\0").unwrap_or(name);
        return Some(PathBuf::from(std::ffi::OsStr::from_bytes(name)));
    }
    None
}

/// The kernel's capability header and data (version 3), for capset(2); libc has no binding.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// In the child of clone3, before it gives up root (`run.user`): with `contain`, keep it in its
/// cgroup — a mount namespace of its own without the cgroup file systems (root owns
/// cgroup.procs: with cgroupfs in reach, clone3 or a write there would move it out of its
/// agent), and a cgroup namespace rooted at its cgroup — and empty its capability bounding set,
/// so that nothing it runs can regain a capability (or mount cgroupfs again). All of it needs
/// root's capabilities, hence before the user switch. Async-signal-safe syscalls only, on
/// memory prepared before; returns false on failure, errno set.
///
/// # Safety
/// Only in a child after clone3, with `confinement`'s memory prepared before.
pub unsafe fn contain(confinement: &Confinement) -> bool {
    if !confinement.contain {
        return true;
    }
    // SAFETY: unshare(2), mount(2), umount2(2) and prctl(2) on prepared C strings.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWCGROUP) != 0 {
            return false;
        }
        // Private from here: the unmounts below stay in this namespace.
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return false;
        }
        for point in &confinement.cgroup_mounts {
            if libc::umount2(point.as_ptr(), libc::MNT_DETACH) != 0 {
                return false;
            }
        }
        for capability in 0..64 {
            // EINVAL past the kernel's last capability.
            libc::prctl(libc::PR_CAPBSET_DROP, capability, 0, 0, 0);
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        ) == 0
    }
}

/// In the child of clone3, right before execve (after the user switch): name it with its tag;
/// with `contain`, drop the capabilities it still holds (Landlock does not check what root's
/// capabilities reach: modules, bpf, other processes); then no_new_privs and the ruleset.
/// Async-signal-safe syscalls only; returns false on failure, errno set.
///
/// # Safety
/// Only in a child after clone3 and `contain`, with `confinement`'s memory prepared before.
pub unsafe fn restrict_self(confinement: &Confinement) -> bool {
    const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    // SAFETY: prctl(2), capset(2) and landlock_restrict_self(2) on prepared memory.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, confinement.tag.as_ptr());
        if confinement.contain {
            let header = CapHeader {
                version: CAPABILITY_VERSION_3,
                pid: 0,
            };
            let none = [CapData {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            }; 2];
            if libc::syscall(libc::SYS_capset, &header as *const CapHeader, none.as_ptr()) != 0 {
                return false;
            }
        }
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::syscall(
                libc::SYS_landlock_restrict_self,
                confinement.ruleset.as_raw_fd(),
                confinement.restrict_flags,
            ) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_fit_the_kind_of_file() {
        let read = Access {
            read: true,
            ..Access::default()
        };
        let write = Access {
            write: true,
            ..Access::default()
        };
        assert_eq!(
            rights(read, true, false),
            AccessFs::ReadFile | AccessFs::ReadDir
        );
        assert_eq!(rights(read, false, true), AccessFs::ReadFile);
        assert!(rights(write, true, false).contains(AccessFs::Refer));
        assert_eq!(
            rights(write, false, true),
            AccessFs::WriteFile | AccessFs::Truncate
        );
        // An exact path naming a directory: listing only, for a read rule; nothing otherwise.
        assert_eq!(rights(read, true, true), AccessFs::ReadDir);
        assert_eq!(rights(write, true, true), BitFlags::EMPTY);
        let library = Access {
            library: true,
            ..Access::default()
        };
        assert!(!rights(library, true, false).contains(AccessFs::Execute));
        // A driver's directory of device nodes: open, list, ioctl; nothing made or removed.
        let device = Access {
            device: true,
            ioctl: true,
            ..Access::default()
        };
        assert_eq!(
            rights(device, true, false),
            AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::ReadDir | AccessFs::IoctlDev
        );
    }

    #[test]
    fn cgroup_mounts_are_found_deepest_first() {
        let mountinfo = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
30 22 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs ro
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
33 22 0:29 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup_mounts(mountinfo),
            [
                "/sys/fs/cgroup/unified",
                "/sys/fs/cgroup/cpu",
                "/mnt/my cgroups"
            ]
        );
    }

    #[test]
    fn links_with_parent_components_and_loops_are_judged() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        std::fs::create_dir_all(base.join("work/real")).unwrap();
        std::fs::create_dir_all(base.join("opt")).unwrap();
        // Root's link climbing with `..` into a tree an agent writes, where the agent planted a
        // link of its own.
        std::os::unix::fs::symlink("../work/bin", base.join("opt/tool")).unwrap();
        std::os::unix::fs::symlink("real", base.join("work/bin")).unwrap();
        let tree = format!("{}/work/", base.display());
        let why = untrusted_link(&base.join("opt/tool/x"), &[tree]).unwrap();
        assert!(why.contains("agents may write"), "{why}");
        // A loop ends, untrusted.
        std::os::unix::fs::symlink("loop", base.join("loop")).unwrap();
        assert!(untrusted_link(&base.join("loop"), &[]).is_some());
    }

    #[test]
    fn symbolic_links_are_followed_only_where_root_alone_placed_them() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("lib");
        std::os::unix::fs::symlink("/usr/lib", &link).unwrap();
        let text = format!("{}/", dir.path().display());
        // In a tree an agent writes.
        let why = untrusted_link(&link.join("x"), &[text]).unwrap();
        assert!(why.contains("agents may write"), "{why}");
        // Root's link in a directory only root writes (a temporary directory is not: 1777).
        assert!(untrusted_link(Path::new("/tmp"), &[]).is_none());
        if Path::new("/lib").is_symlink() {
            assert_eq!(
                untrusted_link(Path::new("/lib/x86_64-linux-gnu"), &[]),
                None
            );
        }
    }

    #[test]
    fn the_interpreter_of_this_test_binary_is_found() {
        let exe = std::env::current_exe().unwrap();
        let interp = elf_interpreter(&exe).expect("a dynamically linked test binary");
        assert!(interp.to_string_lossy().contains("ld-linux"), "{interp:?}");
        assert_eq!(elf_interpreter(Path::new("/etc/passwd")), None);
    }
}
