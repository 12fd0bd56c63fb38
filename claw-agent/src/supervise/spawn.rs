//! Starting a program inside an agent's cgroup from its first instruction: clone3 with
//! CLONE_INTO_CGROUP puts the child in the cgroup as it is created, so not one instruction of it
//! runs outside the policy (a fork, then a write to cgroup.procs, would leave a window).
//!
//! Written here because std's Command cannot pass clone3 flags. After clone3 the child of this
//! multi-threaded process only makes async-signal-safe calls (dup2, setsid, chdir, setgid,
//! setgroups, setuid, unshare, prctl, capset, landlock_restrict_self, execve, write, _exit);
//! everything else — the Landlock ruleset included — is prepared before.

use super::landlock::{self, Confinement, LandlockError};
use crate::policy::landlock::Plan;
use std::{
    ffi::CString,
    fs::File,
    io::Read as _,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
};

/// What to run, and how.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// argv[0] is looked up in PATH unless it contains a `/`.
    pub command: Vec<String>,
    /// The whole environment of the program (nothing is inherited).
    pub env: Vec<(String, String)>,
    pub workdir: Option<PathBuf>,
    /// (uid, gid) to run as; None keeps the caller's.
    pub user: Option<(u32, u32)>,
    /// Descriptors for the child's stdin, stdout, stderr; None inherits the caller's.
    pub stdio: [Option<RawFd>; 3],
    /// The Landlock layer to start it under (its ruleset built as it starts); None for none.
    pub landlock: Option<Plan>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("the command is empty")]
    Empty,
    #[error("`{0}` not found in PATH")]
    NotFound(String),
    #[error("opening cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{call}: {source}")]
    Syscall {
        call: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Landlock(#[from] LandlockError),
    #[error("starting `{program}`: {source}")]
    Exec {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// A started child: its pid, and a pidfd that stays valid after it exits (until reaped).
#[derive(Debug)]
pub struct Child {
    pub pid: u32,
    pub pidfd: OwnedFd,
    /// Under Landlock: the kernel's ABI, and the grants left out (and why).
    pub landlock: Option<(u32, Vec<String>)>,
}

/// The kernel's clone_args (version 2, with the cgroup field); libc has no binding for it.
#[repr(C)]
#[derive(Default)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

const CLONE_PIDFD: u64 = 0x1000;
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

fn cstring(bytes: &[u8]) -> Result<CString, SpawnError> {
    CString::new(bytes).map_err(|_| SpawnError::Syscall {
        call: "a NUL byte in an argument",
        source: std::io::Error::from_raw_os_error(libc::EINVAL),
    })
}

/// argv[0] as an absolute path: PATH is searched here, before clone3 (execve does not search).
pub fn resolve(program: &str, path: &str) -> Result<PathBuf, SpawnError> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    path.split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| SpawnError::NotFound(program.to_owned()))
}

/// Starts `spec` inside the cgroup at `cgroup_dir`.
pub fn spawn(cgroup_dir: &Path, spec: &Spec) -> Result<Child, SpawnError> {
    let program = spec.command.first().ok_or(SpawnError::Empty)?;
    let search = spec
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or("/usr/local/bin:/usr/bin:/bin", |(_, v)| v.as_str());
    let resolved = resolve(program, search)?;
    let executable = cstring(resolved.as_os_str().as_bytes())?;
    let argv: Vec<CString> = spec
        .command
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let envp: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}").as_bytes()))
        .collect::<Result<_, _>>()?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    let workdir = spec
        .workdir
        .as_ref()
        .map(|w| cstring(w.as_os_str().as_bytes()))
        .transpose()?;
    let cgroup = File::open(cgroup_dir).map_err(|source| SpawnError::Cgroup {
        path: cgroup_dir.to_path_buf(),
        source,
    })?;
    let confinement = spec
        .landlock
        .as_ref()
        .map(|plan| landlock::build(plan, &resolved, cgroup_dir))
        .transpose()?;
    // The child reports a failed exec through this pipe; a successful exec closes it (CLOEXEC).
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) into a two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(syscall("pipe2"));
    }
    // SAFETY: the fds were just created and are owned here.
    let (report_read, report_write) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

    let mut pidfd: RawFd = -1;
    let args = CloneArgs {
        flags: CLONE_PIDFD | CLONE_INTO_CGROUP,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3(2) like fork(2); the child branch below only makes async-signal-safe calls
    // on memory prepared above, and never returns.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        // SAFETY: in the child; see above.
        unsafe {
            child(
                spec,
                &executable,
                &argv_ptrs,
                &envp_ptrs,
                workdir.as_ref(),
                confinement.as_ref(),
                report_write.as_raw_fd(),
            )
        }
    }
    if pid < 0 {
        return Err(syscall("clone3(CLONE_INTO_CGROUP)"));
    }
    drop(report_write);
    // SAFETY: the kernel gave us this pidfd.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let mut errno = [0u8; 4];
    let mut report = File::from(report_read);
    match report.read(&mut errno) {
        Ok(4) => {
            // The exec failed: reap the child, which has exited.
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), 0) };
            Err(SpawnError::Exec {
                program: program.clone(),
                source: std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno)),
            })
        }
        _ => Ok(Child {
            pid: pid as u32,
            pidfd,
            landlock: confinement.map(|c| (c.abi, c.skipped)),
        }),
    }
}

/// # Safety
/// Only in the child of clone3; never returns.
unsafe fn child(
    spec: &Spec,
    executable: &CString,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    workdir: Option<&CString>,
    confinement: Option<&Confinement>,
    report: RawFd,
) -> ! {
    // SAFETY: async-signal-safe calls on prepared memory; every failure is reported and exits.
    unsafe {
        let fail = |call_failed: bool| {
            if call_failed {
                let errno = *libc::__errno_location();
                libc::write(report, errno.to_ne_bytes().as_ptr().cast(), 4);
                libc::_exit(127);
            }
        };
        for (target, source) in spec.stdio.iter().enumerate() {
            if let Some(source) = source {
                fail(libc::dup2(*source, target as i32) < 0);
            }
        }
        // A session of its own, without a controlling terminal: the caller's terminal stays
        // usable as stdio, but the program cannot push input into it (TIOCSTI needs it as the
        // controlling terminal), become its foreground job, or be sent its job-control signals.
        fail(libc::setsid() < 0);
        if let Some(workdir) = workdir {
            fail(libc::chdir(workdir.as_ptr()) != 0);
        }
        if let Some(confinement) = confinement {
            fail(!landlock::contain(confinement));
        }
        if let Some((uid, gid)) = spec.user {
            fail(libc::setgroups(0, std::ptr::null()) != 0);
            fail(libc::setgid(gid) != 0);
            fail(libc::setuid(uid) != 0);
        }
        if let Some(confinement) = confinement {
            fail(!landlock::restrict_self(confinement));
        }
        libc::execve(executable.as_ptr(), argv.as_ptr(), envp.as_ptr());
        fail(true);
        libc::_exit(127)
    }
}

fn syscall(call: &'static str) -> SpawnError {
    SpawnError::Syscall {
        call,
        source: std::io::Error::last_os_error(),
    }
}

/// Waits for the child to end; returns its exit code, or 128 + the signal that ended it.
pub fn wait(child: &Child) -> std::io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let ret = unsafe { libc::waitpid(child.pid as i32, &mut status, 0) };
        if ret >= 0 {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    Ok(if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    })
}

/// (uid, gid) of `user` from /etc/passwd. Read directly rather than through getpwnam: the
/// daemon is linked statically, where glibc's name service switch is unavailable.
pub fn lookup_user(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&user) && fields.len() >= 4)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}

/// The environment a command run by claw gets unless the policy says otherwise.
pub fn default_env() -> Vec<(String, String)> {
    vec![(
        "PATH".to_owned(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_come_from_the_passwd_file() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nollama:x:998:997::/var/lib/ollama:/usr/sbin/nologin\n";
        assert_eq!(lookup_user(passwd, "ollama"), Some((998, 997)));
        assert_eq!(lookup_user(passwd, "nobody"), None);
    }

    #[test]
    fn programs_are_found_in_path() {
        assert_eq!(resolve("/bin/x", "").unwrap(), PathBuf::from("/bin/x"));
        assert!(matches!(
            resolve("no-such-program-claw", "/usr/bin"),
            Err(SpawnError::NotFound(_))
        ));
    }
}
