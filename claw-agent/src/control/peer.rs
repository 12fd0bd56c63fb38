//! Who is at the other end of a Unix socket: its uid and its cgroup. Both sockets decide on the
//! cgroup (the control socket serves no agent; the agent socket serves an agent its own events),
//! so it must be the connecting process's, not that of whichever process has its pid by the
//! time the daemon looks.
//!
//! Written on libc: the crates in use wrap neither SO_PEERPIDFD nor pidfd_send_signal.

use std::{
    fs,
    os::fd::{AsRawFd, FromRawFd as _, OwnedFd, RawFd},
};

/// A connected client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub pid: i32,
    /// Its cgroup v2 path as /proc/PID/cgroup shows it: relative to the root, leading `/`.
    pub cgroup: String,
}

/// Why a client could not be identified: it is then refused.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("reading the client's credentials: {0}")]
    Credentials(#[source] std::io::Error),
    #[error("the client's pid is unknown (SO_PEERCRED)")]
    NoPid,
    #[error("cannot tell which cgroup pid {pid} is in ({source}; it may have exited)")]
    Gone {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("pid {pid} is in no cgroup v2 (its /proc/{pid}/cgroup has no `0::` line)")]
    NoCgroup { pid: i32 },
}

/// The peer of the connected Unix stream `socket`.
///
/// The pid the kernel recorded at connect is held as a pidfd (SO_PEERPIDFD, Linux 6.5+; before,
/// pidfd_open of that pid), /proc/PID/cgroup is read, and the pidfd's process must still be
/// running afterwards: then the pid, and so what was read, was its. On kernels before 6.5 one
/// race is left: a client that exits before pidfd_open, its pid reused by then.
pub fn identify(socket: &impl AsRawFd) -> Result<Peer, PeerError> {
    let fd = socket.as_raw_fd();
    let (uid, pid) = credentials(fd)?;
    if pid <= 0 {
        return Err(PeerError::NoPid);
    }
    let pidfd = match peer_pidfd(fd) {
        Ok(pidfd) => pidfd,
        Err(err) if err.raw_os_error() == Some(libc::ENOPROTOOPT) => {
            pidfd_open(pid).map_err(gone(pid))?
        }
        Err(err) => return Err(gone(pid)(err)),
    };
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(gone(pid))?;
    still_running(&pidfd).map_err(gone(pid))?;
    let cgroup = cgroup_v2(&text).ok_or(PeerError::NoCgroup { pid })?;
    Ok(Peer {
        uid,
        pid,
        cgroup: cgroup.to_owned(),
    })
}

fn gone(pid: i32) -> impl FnOnce(std::io::Error) -> PeerError {
    move |source| PeerError::Gone { pid, source }
}

/// The path on the unified hierarchy's line of a /proc/PID/cgroup.
pub fn cgroup_v2(text: &str) -> Option<&str> {
    text.lines().find_map(|line| line.strip_prefix("0::"))
}

/// A socket option the kernel fills in as a `T`.
fn socket_option<T: Copy>(fd: RawFd, option: libc::c_int, empty: T) -> std::io::Result<T> {
    let mut value = empty;
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes, the size of `value`.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(value)
}

fn credentials(fd: RawFd) -> Result<(u32, i32), PeerError> {
    let empty = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let cred = socket_option(fd, libc::SO_PEERCRED, empty).map_err(PeerError::Credentials)?;
    Ok((cred.uid, cred.pid))
}

fn peer_pidfd(fd: RawFd) -> std::io::Result<OwnedFd> {
    let pidfd: libc::c_int = socket_option(fd, libc::SO_PEERPIDFD, -1)?;
    // SAFETY: the kernel handed us this new descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(pidfd) })
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor the kernel handed us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// Signal 0 through the pidfd: delivered (checked, not sent) only while its process exists.
fn still_running(pidfd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: pidfd_send_signal with signal 0 and no siginfo only checks.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn a_connected_peer_is_this_process_in_its_cgroup() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let peer = identify(&ours).unwrap();
        assert_eq!(peer.pid, std::process::id() as i32);
        let own = fs::read_to_string("/proc/self/cgroup").unwrap();
        assert_eq!(Some(peer.cgroup.as_str()), cgroup_v2(&own));
    }

    #[test]
    fn a_peer_that_exited_is_not_identified() {
        let path = std::env::temp_dir().join(format!("claw-peer-{}.sock", std::process::id()));
        let _ = fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        // The child only calls socket, connect and _exit: safe after fork in a threaded test.
        // SAFETY: sockaddr_un is plain data; all zeroes is a valid (empty) address.
        let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        address.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (slot, byte) in address
            .sun_path
            .iter_mut()
            .zip(path.as_os_str().as_encoded_bytes())
        {
            *slot = *byte as libc::c_char;
        }
        // SAFETY: see above; the parent waits for the child.
        let stream = unsafe {
            let child = libc::fork();
            if child == 0 {
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                libc::connect(
                    fd,
                    (&raw const address).cast(),
                    std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
                );
                libc::_exit(0);
            }
            let (stream, _) = listener.accept().unwrap();
            libc::waitpid(child, std::ptr::null_mut(), 0);
            stream
        };
        let _ = fs::remove_file(&path);
        let err = identify(&stream).unwrap_err().to_string();
        assert!(err.contains("may have exited"), "{err}");
    }

    #[test]
    fn the_unified_line_is_found_among_v1_lines() {
        let text = "12:memory:/user.slice\n0::/claw/tools/call-7\n";
        assert_eq!(cgroup_v2(text), Some("/claw/tools/call-7"));
        assert_eq!(cgroup_v2("3:cpu:/\n"), None);
    }
}
