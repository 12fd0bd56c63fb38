//! `claw-vmtest probe OP ARGS...`: one operation, run by the cases inside an agent's cgroup. It
//! exits 0 on success or with the operation's errno, so a case can tell EPERM from anything else.

use std::{
    ffi::CString,
    net::{SocketAddr, TcpStream, UdpSocket},
    os::{
        fd::{AsRawFd as _, RawFd},
        unix::ffi::OsStrExt as _,
    },
    process::ExitCode,
    time::Duration,
};

const USAGE: &str =
    "probe open PATH [r|w|rw|t|3] | sleep SECONDS | hog MEBIBYTES | fork-bomb | cgroup | clone-into-cgroup CGROUP_DIR | mknod-device PATH | bpf | sethostname NAME | \
unshare-mount | ping-socket | setxattr PATH NAME | anon-exec | anon-mprotect | create PATH | mkdir PATH | rmdir PATH | unlink PATH | \
rename FROM TO | link FROM TO | symlink TARGET LINK | truncate PATH | chmod PATH | chown PATH | \
exec PATH [ARGS...] | read-file PATH | touch PATH | futimens PATH | sigio PID | sigio-own-child | tiocsti | own-session | set-flags PATH | set-flags-rw PATH | key-add | key-read SERIAL | netlink-protocol N | \
inotify PATH | mq-open /NAME | set-acl PATH | acct PATH | sock-diag | pidfd PID | pidfd-signal PID | pidfd-own-child | reopen PATH | reopen-fd FD | hold-then-reopen PATH MARKER | mmap-exec PATH | mprotect-exec PATH | \
task-change nice|ioprio|affinity|prlimit PID | task-change-own-child nice|ioprio|affinity|prlimit | \
vsock-socket | alg-socket | unix-socket | tcp-socket | sctp-socket | mptcp-socket | netlink-socket | \
listen ADDRESS:PORT | udp-bind ADDRESS:PORT | bind-fd FD IPV4:PORT | written-exec PATH | written-only PATH | rwx-map PATH | rw-then-rwx PATH | traceme | executable-heap | sysv-shm-create HEXKEY | sysv-shm-get HEXKEY | sysv-shm-attach ID | sysv-shm-rmid ID | \
connect ADDRESS:PORT | sendto ADDRESS:PORT | dns-query[-tcp] SERVER:PORT NAME | raw-socket | packet-socket | bind-mount FROM TO | \
chroot DIR | unix-connect PATH|@ABSTRACT | unix-sendto PATH | open-loop ALLOWED OTHER COUNT | time-open PATH COUNT | \
time-open-landlock PATH COUNT PREFIX... | exec-landlock RULES PROGRAM ARG... | init-module | delete-module NAME | umount DIR";

pub fn run(args: &[String]) -> ExitCode {
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    let result = match (arg(0), args.len()) {
        ("open", 2 | 3) => open(arg(1), arg(2)),
        ("create", 2) => open(arg(1), "create"),
        ("mkdir", 2) => std::fs::create_dir(arg(1)),
        ("rmdir", 2) => std::fs::remove_dir(arg(1)),
        ("unlink", 2) => std::fs::remove_file(arg(1)),
        ("rename", 3) => std::fs::rename(arg(1), arg(2)),
        ("link", 3) => std::fs::hard_link(arg(1), arg(2)),
        ("symlink", 3) => std::os::unix::fs::symlink(arg(1), arg(2)),
        ("truncate", 2) => path_call(arg(1), |p| unsafe { libc::truncate(p, 0) }),
        ("chmod", 2) => path_call(arg(1), |p| unsafe { libc::chmod(p, 0o600) }),
        ("chown", 2) => path_call(arg(1), |p| unsafe { libc::chown(p, 0, 0) }),
        ("exec", n) if n >= 2 => exec(&args[1..]),
        ("reopen", 2) => reopen(arg(1)),
        ("hold-then-reopen", 3) => hold_then_reopen(arg(1), arg(2)),
        ("reopen-fd", 2) => std::fs::File::open(format!("/proc/self/fd/{}", arg(1))).map(drop),
        ("mmap-exec", 2) => map_exec(arg(1), false),
        ("mprotect-exec", 2) => map_exec(arg(1), true),
        ("connect", 2) => connect(arg(1)),
        ("mknod-device", 2) => path_call(arg(1), |p| unsafe {
            libc::mknod(p, libc::S_IFCHR | 0o600, libc::makedev(1, 3))
        }),
        ("bpf", 1) => bpf_next_map_id(),
        ("hog", 2) => hog(arg(1)),
        ("fork-bomb", 1) => return fork_bomb(),
        ("cgroup", 1) => return print_cgroup(),
        ("sleep", 2) => {
            std::thread::sleep(std::time::Duration::from_secs(arg(1).parse().unwrap_or(1)));
            Ok(())
        }
        ("clone-into-cgroup", 2) => clone_into_cgroup(arg(1)),
        ("background-sleep", 2) => background_sleep(arg(1)),
        ("sethostname", 2) => {
            let name = arg(1).as_bytes();
            // SAFETY: sethostname(2) with a buffer and its length.
            if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
        ("unshare-mount", 1) => {
            // SAFETY: unshare(2) of this process's mount namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNS) } == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
        ("ping-socket", 1) => socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
        ("setxattr", 3) => setxattr(arg(1), arg(2)),
        ("anon-exec", 1) => anonymous_exec(false),
        ("anon-mprotect", 1) => anonymous_exec(true),
        ("raw-socket", 1) => socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
        ("packet-socket", 1) => socket(libc::AF_PACKET, libc::SOCK_RAW, 0),
        ("vsock-socket", 1) => socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0),
        ("alg-socket", 1) => socket(libc::AF_ALG, libc::SOCK_SEQPACKET, 0),
        ("unix-socket", 1) => socket(libc::AF_UNIX, libc::SOCK_STREAM, 0),
        ("tcp-socket", 1) => socket(libc::AF_INET6, libc::SOCK_STREAM, 0),
        ("sctp-socket", 1) => socket(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP),
        ("mptcp-socket", 1) => socket(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_MPTCP),
        ("netlink-socket", 1) => socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
        ("listen", 2) => {
            socket_address(arg(1)).and_then(|a| std::net::TcpListener::bind(a).map(drop))
        }
        ("bind-fd", 3) => bind_fd(arg(1), arg(2)),
        ("udp-bind", 2) => socket_address(arg(1)).and_then(|a| UdpSocket::bind(a).map(drop)),
        ("written-exec", 2) => written_mapping(arg(1), true),
        ("written-only", 2) => written_mapping(arg(1), false),
        ("rwx-map", 2) => writable_executable(arg(1), false),
        ("rw-then-rwx", 2) => writable_executable(arg(1), true),
        ("traceme", 1) => traceme(),
        ("executable-heap", 1) => executable_heap(),
        ("bind-mount", 3) => bind_mount(arg(1), arg(2)),
        ("chroot", 2) => path_call(arg(1), |p| unsafe { libc::chroot(p) }),
        ("init-module", 1) => init_module(),
        ("delete-module", 2) => path_call(arg(1), |name| unsafe {
            libc::syscall(libc::SYS_delete_module, name, libc::O_NONBLOCK) as libc::c_int
        }),
        ("umount", 2) => path_call(arg(1), |p| unsafe { libc::umount2(p, 0) }),
        ("unix-connect", 2) => unix_connect(arg(1)),
        ("unix-sendto", 2) => std::os::unix::net::UnixDatagram::unbound()
            .and_then(|s| s.send_to(b"claw", arg(1)))
            .map(drop),
        ("sendto", 2) => sendto(arg(1)),
        ("dns-query", 3) => dns_query(arg(1), arg(2), false),
        ("dns-query-tcp", 3) => dns_query(arg(1), arg(2), true),
        ("open-loop", 4) => return open_loop(arg(1), arg(2), arg(3)),
        ("signal", 2) => signal(arg(1)),
        ("ptrace", 2) => ptrace(arg(1)),
        ("signal-own-child", 1) => on_own_child(signal),
        ("read-file", 2) => std::fs::read(arg(1)).map(drop),
        ("touch", 2) => path_call(arg(1), |p| unsafe {
            // SAFETY: utimensat(2) with a valid C string; NULL times: now.
            libc::utimensat(libc::AT_FDCWD, p, std::ptr::null(), 0)
        }),
        ("futimens", 2) => std::fs::File::open(arg(1)).and_then(|file| {
            // SAFETY: futimens(2) on a descriptor we own; NULL times: now.
            last_result(unsafe { libc::futimens(file.as_raw_fd(), std::ptr::null()) }.into())
        }),
        ("sigio", 2) => sigio(arg(1)),
        ("tiocsti", 1) => tiocsti(),
        ("set-flags", 2) => set_flags(arg(1), false),
        ("set-flags-rw", 2) => set_flags(arg(1), true),
        // SAFETY: getsid(2), getpid(2) on this process.
        ("own-session", 1) => match unsafe { libc::getsid(0) == libc::getpid() } {
            true => Ok(()),
            false => Err(std::io::Error::from_raw_os_error(libc::ESRCH)),
        },
        ("sigio-own-child", 1) => sigio_own_child(),
        ("key-add", 1) => return key_add(),
        ("key-read", 2) => key_read(arg(1)),
        ("netlink-protocol", 2) => arg(1)
            .parse()
            .map_err(std::io::Error::other)
            .and_then(|protocol| socket(libc::AF_NETLINK, libc::SOCK_DGRAM, protocol)),
        ("inotify", 2) => inotify(arg(1)),
        ("mq-open", 2) => mq_open(arg(1)),
        ("sock-diag", 1) => sock_diag(),
        ("set-acl", 2) => set_acl(arg(1)),
        ("acct", 2) => acct(arg(1)),
        ("pidfd", 2) => pidfd(arg(1), false),
        ("pidfd-signal", 2) => pidfd(arg(1), true),
        ("pidfd-own-child", 1) => on_own_child(|pid| pidfd(pid, false)),
        ("task-change", 3) => task_change(arg(1), arg(2)),
        ("sysv-shm-create", 2) => return sysv_shm_create(arg(1)),
        ("sysv-shm-get", 2) => sysv_shm(arg(1), "get"),
        ("sysv-shm-attach", 2) => sysv_shm(arg(1), "attach"),
        ("sysv-shm-rmid", 2) => sysv_shm(arg(1), "rmid"),
        ("task-change-own-child", 2) => on_own_child(match arg(1) {
            "nice" => |pid| task_change("nice", pid),
            "ioprio" => |pid| task_change("ioprio", pid),
            "affinity" => |pid| task_change("affinity", pid),
            _ => |pid| task_change("prlimit", pid),
        }),
        ("ptrace-own-child", 1) => on_own_child(ptrace),
        ("connect-storm", 5) => return connect_storm(arg(1), arg(2), arg(3), arg(4), "0"),
        ("connect-storm", 6) => return connect_storm(arg(1), arg(2), arg(3), arg(4), arg(5)),
        ("time-open", 3) => return time_open(arg(1), arg(2)),
        ("exec-landlock", n) if n >= 4 => return exec_landlock(arg(1), &args[2..]),
        ("time-open-landlock", n) if n >= 4 => {
            if let Err(err) = landlock_read_only(&args[3..]) {
                eprintln!("probe: landlock: {err}");
                return ExitCode::from(3);
            }
            return time_open(arg(1), arg(2));
        }
        _ => {
            eprintln!("usage: claw-vmtest {USAGE}");
            return ExitCode::from(2);
        }
    };
    exit_with(result)
}

fn exit_with(result: std::io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("probe: {err}");
            ExitCode::from(u8::try_from(err.raw_os_error().unwrap_or(255)).unwrap_or(255))
        }
    }
}

fn open(path: &str, how: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    match how {
        "w" => options.write(true),
        "rw" => options.read(true).write(true),
        "create" => options.write(true).create(true),
        "t" => options.read(true).custom_flags(libc::O_TRUNC),
        // Access mode 3 (neither read nor write, for ioctls), which std will not ask for.
        "3" => {
            return path_call(path, |p| {
                // SAFETY: open(2) with a valid C string; the descriptor is closed at once.
                let fd = unsafe { libc::open(p, libc::O_RDWR | libc::O_WRONLY) };
                if fd >= 0 {
                    unsafe { libc::close(fd) };
                }
                fd.min(0)
            });
        }
        _ => options.read(true),
    };
    options.open(path).map(drop)
}

/// Offers the kernel a module image that is not one: it checks the caller's right to load
/// modules (EPERM) before it reads the image (ENOEXEC).
fn init_module() -> std::io::Result<()> {
    let image = [0u8; 64];
    let params = c"";
    // SAFETY: init_module(2) reads `image.len()` bytes of `image` and the NUL-terminated params.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_init_module,
            image.as_ptr(),
            image.len(),
            params.as_ptr(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn path_call(
    path: &str,
    call: impl FnOnce(*const libc::c_char) -> libc::c_int,
) -> std::io::Result<()> {
    let path = CString::new(path)?;
    if call(path.as_ptr()) == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn exec(argv: &[String]) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt as _;
    // Returns only on failure.
    Err(std::process::Command::new(&argv[0]).args(&argv[1..]).exec())
}

/// An O_PATH descriptor needs no permission to open; reopening it for reading through
/// /proc/self/fd must meet the file's own rules.
fn reopen(path: &str) -> std::io::Result<()> {
    let path = CString::new(std::path::Path::new(path).as_os_str().as_bytes())?;
    // SAFETY: open(2) with a valid C string.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    std::fs::File::open(format!("/proc/self/fd/{fd}")).map(drop)
}

/// Holds PATH by an O_PATH descriptor (no open decision), creates MARKER, waits (up to 60 s)
/// until MARKER is gone — the case replaces the file meanwhile — and opens the held file for
/// reading through /proc/self/fd.
fn hold_then_reopen(path: &str, marker: &str) -> std::io::Result<()> {
    let c_path = CString::new(path)?;
    // SAFETY: open(2) with a valid C string.
    let fd = unsafe { libc::open(c_path.as_ptr(), libc::O_PATH) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    std::fs::write(marker, b"")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::path::Path::new(marker).exists() {
        if std::time::Instant::now() > deadline {
            return Err(std::io::Error::from_raw_os_error(libc::ETIMEDOUT));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::File::open(format!("/proc/self/fd/{fd}")).map(drop)
}

/// Maps a file executable, directly or by mprotect after a plain mapping.
fn map_exec(path: &str, via_mprotect: bool) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    map_executable(Some(file.as_raw_fd()), via_mprotect)
}

/// Executable memory with no file behind it, directly or by mprotect.
fn anonymous_exec(via_mprotect: bool) -> std::io::Result<()> {
    map_executable(None, via_mprotect)
}

/// Maps one page of `fd` (anonymous memory without one) executable: with PROT_EXEC at once, or
/// writable first and then mprotect'ed to executable.
fn map_executable(fd: Option<RawFd>, via_mprotect: bool) -> std::io::Result<()> {
    let first = if via_mprotect {
        libc::PROT_READ
    } else {
        libc::PROT_READ | libc::PROT_EXEC
    };
    let flags = match fd {
        Some(_) => libc::MAP_PRIVATE,
        None => libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
    };
    // SAFETY: one page, checked, unmapped before return.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            4096,
            first,
            flags,
            fd.unwrap_or(-1),
            0,
        );
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let protected = if via_mprotect {
            libc::mprotect(addr, 4096, libc::PROT_READ | libc::PROT_EXEC)
        } else {
            0
        };
        let err = std::io::Error::last_os_error();
        libc::munmap(addr, 4096);
        if protected != 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// bind(2) of the inherited IPv4 socket FD to IPV4:PORT.
fn bind_fd(fd: &str, address: &str) -> std::io::Result<()> {
    let fd: RawFd = fd.parse().map_err(std::io::Error::other)?;
    let SocketAddr::V4(address) = socket_address(address)? else {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: a zeroed sockaddr_in filled in, and bind(2) with its size.
    unsafe {
        let mut raw: libc::sockaddr_in = std::mem::zeroed();
        raw.sin_family = libc::AF_INET as libc::sa_family_t;
        raw.sin_port = address.port().to_be();
        raw.sin_addr.s_addr = u32::from_ne_bytes(address.ip().octets());
        last_result(
            libc::bind(
                fd,
                (&raw const raw).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
            .into(),
        )
    }
}

/// Maps the first page of `path` private and writable, writes to it (the page is copied), and
/// then, with `make_executable`, mprotects it executable.
fn written_mapping(path: &str, make_executable: bool) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    // SAFETY: one page, checked, written within, unmapped before return.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        );
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let byte = addr.cast::<u8>();
        byte.write_volatile(byte.read_volatile() ^ 0xff);
        let result = if make_executable
            && libc::mprotect(addr, 4096, libc::PROT_READ | libc::PROT_EXEC) != 0
        {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        };
        libc::munmap(addr, 4096);
        result
    }
}

/// Maps the first page of `path` private, writable and executable at once — or, with `later`,
/// writable first and then mprotect'ed writable and executable.
fn writable_executable(path: &str, later: bool) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    let rwx = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;
    let first = if later {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        rwx
    };
    // SAFETY: one page, checked, unmapped before return.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            4096,
            first,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        );
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let result = if later && libc::mprotect(addr, 4096, rwx) != 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        };
        libc::munmap(addr, 4096);
        result
    }
}

/// A child asks to be traced by this process (PTRACE_TRACEME); exits with its errno.
fn traceme() -> std::io::Result<()> {
    // SAFETY: the child only calls async-signal-safe functions (ptrace, _exit) before ending.
    unsafe {
        let child = libc::fork();
        if child < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if child == 0 {
            let traced = libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
            let code = if traced == 0 {
                0
            } else {
                *libc::__errno_location()
            };
            libc::_exit(code);
        }
        let mut status = 0;
        if libc::waitpid(child, &mut status, 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        match libc::WEXITSTATUS(status) {
            0 => Ok(()),
            errno => Err(std::io::Error::from_raw_os_error(errno)),
        }
    }
}

/// personality(READ_IMPLIES_EXEC), then brk() grows the heap — executable with that personality.
/// ENOMEM when the heap did not grow. The personality is put back before anything else is
/// allocated (the probe's own allocations would be refused with it too).
fn executable_heap() -> std::io::Result<()> {
    const READ_IMPLIES_EXEC: libc::c_ulong = 0x0040_0000;
    // SAFETY: personality(2) and brk(2) on this process; the break is only moved, never used.
    unsafe {
        let previous = libc::personality(0xffff_ffff);
        if libc::personality(READ_IMPLIES_EXEC) == -1 {
            return Err(std::io::Error::last_os_error());
        }
        let current = libc::syscall(libc::SYS_brk, 0);
        let wanted = current + (1 << 20);
        let grown = libc::syscall(libc::SYS_brk, wanted);
        libc::syscall(libc::SYS_brk, current);
        libc::personality(previous as libc::c_ulong);
        if grown == wanted {
            Ok(())
        } else {
            Err(std::io::Error::from_raw_os_error(libc::ENOMEM))
        }
    }
}

fn socket_address(text: &str) -> std::io::Result<SocketAddr> {
    text.parse()
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// Success, or ECONNREFUSED (nothing listens, but the kernel let the connect through), or the
/// errno of a refusal.
fn connect(address: &str) -> std::io::Result<()> {
    TcpStream::connect_timeout(&socket_address(address)?, Duration::from_secs(2)).map(drop)
}

fn sendto(address: &str) -> std::io::Result<()> {
    let address = socket_address(address)?;
    let bind: SocketAddr = if address.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    UdpSocket::bind(bind)?.send_to(b"claw", address).map(drop)
}

/// Asks SERVER for NAME's A records, as a stub resolver would (UDP: an unconnected socket, as
/// musl's); prints `from=ADDRESS rcode=CODE answers=A,B`.
fn dns_query(server: &str, name: &str, tcp: bool) -> std::io::Result<()> {
    use std::io::{Read as _, Write as _};

    use hickory_proto::{
        op::{Message, MessageType, OpCode, Query},
        rr::{Name, RData, RecordType},
    };
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    let server = socket_address(server)?;
    // Not Message::query(): its random id needs the kernel's entropy pool, which a freshly
    // booted VM may not have yet (the probe panicked there).
    let mut query = Message::new(std::process::id() as u16, MessageType::Query, OpCode::Query);
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(
        Name::from_ascii(name).map_err(|e| invalid(e.to_string()))?,
        RecordType::A,
    ));
    let bytes = query.to_vec().map_err(|e| invalid(e.to_string()))?;
    let (reply, from) = if tcp {
        let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(3))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(&(bytes.len() as u16).to_be_bytes())?;
        stream.write_all(&bytes)?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len)?;
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut reply)?;
        (reply, stream.peer_addr()?)
    } else {
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        let socket = UdpSocket::bind(bind)?;
        socket.set_read_timeout(Some(Duration::from_secs(5)))?;
        socket.send_to(&bytes, server)?;
        let mut reply = vec![0u8; 4096];
        let (len, from) = socket.recv_from(&mut reply)?;
        reply.truncate(len);
        (reply, from)
    };
    let reply = Message::from_vec(&reply).map_err(|e| invalid(e.to_string()))?;
    let answers: Vec<String> = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    println!(
        "from={from} rcode={} answers={}",
        u16::from(reply.metadata.response_code),
        answers.join(",")
    );
    Ok(())
}

/// Opens ALLOWED and OTHER COUNT times each, printing one line of counts per outcome, so a case
/// can check that every decision was the old rule's or the new rule's.
fn open_loop(allowed: &str, other: &str, count: &str) -> ExitCode {
    let count: usize = count.parse().unwrap_or(0);
    let mut outcomes = std::collections::BTreeMap::<(&str, i32), usize>::new();
    for _ in 0..count {
        for (label, path) in [("allowed", allowed), ("other", other)] {
            let code = match std::fs::File::open(path) {
                Ok(_) => 0,
                Err(err) => err.raw_os_error().unwrap_or(-1),
            };
            *outcomes.entry((label, code)).or_default() += 1;
        }
    }
    for ((label, code), n) in outcomes {
        println!("{label} {code} {n}");
    }
    ExitCode::SUCCESS
}

/// Connects to HOST:PORT for PORT in FIRST..FIRST+PORTS, round and round, until COUNT attempts or
/// SECONDS have passed, at most PER_SECOND a second (0: as fast as it can); prints
/// `denied N other M` (EPERM, any other outcome).
fn connect_storm(host: &str, ports: &str, count: &str, seconds: &str, rate: &str) -> ExitCode {
    let Some((host, first)) = host.rsplit_once(':') else {
        eprintln!("probe: connect-storm wants HOST:FIRST_PORT");
        return ExitCode::from(2);
    };
    let (first, ports, count, seconds): (u16, u16, u64, u64) =
        match (first.parse(), ports.parse(), count.parse(), seconds.parse()) {
            (Ok(a), Ok(b), Ok(c), Ok(d)) if b > 0 => (a, b, c, d),
            _ => {
                eprintln!(
                    "probe: connect-storm HOST:FIRST_PORT PORTS COUNT SECONDS [PER_SECOND], numbers"
                );
                return ExitCode::from(2);
            }
        };
    let Ok(rate) = rate.parse::<u64>() else {
        eprintln!("probe: connect-storm: PER_SECOND `{rate}` is not a number");
        return ExitCode::from(2);
    };
    let start = std::time::Instant::now();
    let Ok(ip) = host.parse::<std::net::IpAddr>() else {
        eprintln!("probe: connect-storm: `{host}` is not an address");
        return ExitCode::from(2);
    };
    let deadline = start + Duration::from_secs(seconds);
    let (mut denied, mut other) = (0u64, 0u64);
    for attempt in 0..count {
        if attempt % 256 == 0 && std::time::Instant::now() > deadline {
            break;
        }
        if rate > 0 {
            let due = start + Duration::from_secs_f64(attempt as f64 / rate as f64);
            std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        }
        let port = first.wrapping_add((attempt % u64::from(ports)) as u16);
        match TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_secs(1)) {
            Err(err) if err.raw_os_error() == Some(libc::EPERM) => denied += 1,
            _ => other += 1,
        }
    }
    println!("denied {denied} other {other}");
    ExitCode::SUCCESS
}

/// SIGCONT (harmless) to PID: 0 or the errno.
fn signal(pid: &str) -> std::io::Result<()> {
    let pid: i32 = pid.parse().map_err(std::io::Error::other)?;
    // SAFETY: kill(2) with a harmless signal.
    if unsafe { libc::kill(pid, libc::SIGCONT) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// FS_IOC_SETFLAGS on PATH (opened read-only, or read-write), to the flags it has.
fn set_flags(path: &str, write: bool) -> std::io::Result<()> {
    const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
    const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)?;
    let mut flags: libc::c_long = 0;
    // SAFETY: both ioctls read or write one long of ours.
    unsafe {
        libc::ioctl(file.as_raw_fd(), FS_IOC_GETFLAGS, &mut flags);
        last_result(libc::ioctl(file.as_raw_fd(), FS_IOC_SETFLAGS, &flags).into())
    }
}

/// A new pseudo-terminal made this process's controlling terminal, then a byte pushed into its
/// input (TIOCSTI).
fn tiocsti() -> std::io::Result<()> {
    // SAFETY: posix_openpt(3) and friends on descriptors this process owns; setsid(2) and
    // TIOCSCTTY make the terminal its own; TIOCSTI reads one byte from us.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        if master < 0 || libc::grantpt(master) != 0 || libc::unlockpt(master) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let name = libc::ptsname(master);
        if name.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        libc::setsid();
        let slave = libc::open(name, libc::O_RDWR);
        if slave < 0 {
            return Err(std::io::Error::last_os_error());
        }
        last_result(libc::ioctl(slave, libc::TIOCSCTTY, 0).into())?;
        let byte = b'x';
        last_result(libc::ioctl(slave, libc::TIOCSTI, &byte).into())
    }
}

/// Makes PID the owner of a pipe's read end with O_ASYNC, then writes to the pipe: the kernel
/// sends the owner SIGIO (whose default action ends it). Succeeds whether or not it arrives.
fn sigio(pid: &str) -> std::io::Result<()> {
    let pid: libc::c_int = pid.parse().map_err(std::io::Error::other)?;
    let mut fds = [0; 2];
    // SAFETY: pipe(2), fcntl(2), write(2) and close(2) on the descriptors it made.
    unsafe {
        if libc::pipe(fds.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let result = (|| {
            last_result(libc::fcntl(fds[0], libc::F_SETOWN, pid).into())?;
            last_result(
                libc::fcntl(fds[0], libc::F_SETFL, libc::O_ASYNC | libc::O_NONBLOCK).into(),
            )?;
            last_result(libc::write(fds[1], b"x".as_ptr().cast(), 1) as libc::c_long)
        })();
        libc::close(fds[0]);
        libc::close(fds[1]);
        result
    }
}

/// `sigio` aimed at a child of its own: succeeds when the child ended by SIGIO.
fn sigio_own_child() -> std::io::Result<()> {
    use std::os::unix::process::ExitStatusExt as _;
    let mut child = std::process::Command::new("/usr/bin/claw-vmtest")
        .args(["probe", "sleep", "30"])
        .spawn()?;
    let sent = sigio(&child.id().to_string());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    sent?;
    match status {
        Some(status) if status.signal() == Some(libc::SIGIO) => Ok(()),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            Err(std::io::Error::from_raw_os_error(libc::ESRCH))
        }
    }
}

/// Adds a key to the caller's user keyring (root's, run as root) and prints its serial.
fn key_add() -> ExitCode {
    const KEY_SPEC_USER_KEYRING: libc::c_long = -4;
    let payload = b"claw-secret";
    // SAFETY: add_key(2) with NUL-terminated type and description and a payload we own.
    let serial = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            c"user".as_ptr(),
            c"claw-test".as_ptr(),
            payload.as_ptr(),
            payload.len(),
            KEY_SPEC_USER_KEYRING,
        )
    };
    if serial < 0 {
        return exit_with(Err(std::io::Error::last_os_error()));
    }
    println!("{serial}");
    ExitCode::SUCCESS
}

/// keyctl(KEYCTL_READ) of the key SERIAL.
fn key_read(serial: &str) -> std::io::Result<()> {
    const KEYCTL_READ: libc::c_long = 11;
    let serial: libc::c_long = serial.parse().map_err(std::io::Error::other)?;
    let mut buffer = [0u8; 64];
    // SAFETY: keyctl(2) writes at most the buffer's length into it.
    let read = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_READ,
            serial,
            buffer.as_mut_ptr(),
            buffer.len(),
        )
    };
    last_result(read)
}

/// Asks sock_diag for the node's TCP sockets, as `ss` does (the kernel loads inet_diag for it
/// if it is not loaded).
fn sock_diag() -> std::io::Result<()> {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 0x1;
    const NLM_F_DUMP: u16 = 0x300;
    // nlmsghdr (16 bytes), then inet_diag_req_v2: family, protocol, ext, pad, states, and a
    // 48-byte socket id of zeros.
    let mut message = Vec::with_capacity(72);
    message.extend_from_slice(&72u32.to_ne_bytes());
    message.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    message.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    message.extend_from_slice(&[0; 8]);
    message.extend_from_slice(&[libc::AF_INET as u8, libc::IPPROTO_TCP as u8, 0, 0]);
    message.extend_from_slice(&u32::MAX.to_ne_bytes());
    message.extend_from_slice(&[0; 48]);
    // SAFETY: socket(2), sendto(2) of a buffer we own to the kernel's address, close(2).
    unsafe {
        let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM, libc::NETLINK_SOCK_DIAG);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let sent = libc::sendto(
            fd,
            message.as_ptr().cast(),
            message.len(),
            0,
            (&raw const kernel).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        );
        let result = last_result(sent as libc::c_long);
        libc::close(fd);
        result
    }
}

/// mq_open(3) of the POSIX message queue NAME, made if missing; then closed and removed.
fn mq_open(name: &str) -> std::io::Result<()> {
    let name = CString::new(name)?;
    // SAFETY: mq_open(3) with a valid name and no attributes; mq_close, mq_unlink.
    unsafe {
        let queue = libc::mq_open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_CREAT,
            0o600,
            std::ptr::null_mut::<libc::mq_attr>(),
        );
        if queue < 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::mq_close(queue);
        libc::mq_unlink(name.as_ptr());
    }
    Ok(())
}

/// inotify_add_watch(2) on PATH.
fn inotify(path: &str) -> std::io::Result<()> {
    let path = CString::new(path)?;
    // SAFETY: inotify_init1(2), inotify_add_watch(2) with a valid C string, close(2).
    unsafe {
        let fd = libc::inotify_init1(libc::IN_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let watch = libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_ACCESS);
        let result = last_result(watch.into());
        libc::close(fd);
        result
    }
}

/// Sets a POSIX access ACL on PATH (the one its mode already says: owner rw, group and others r).
fn set_acl(path: &str) -> std::io::Result<()> {
    // posix_acl_xattr: version 2, then (tag u16, perm u16, id u32) entries.
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm) in [(0x01u16, 6u16), (0x04, 4), (0x20, 4)] {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&u32::MAX.to_le_bytes());
    }
    path_call(path, |p| {
        // SAFETY: setxattr(2) with valid C strings and a buffer we own.
        unsafe {
            libc::setxattr(
                p,
                c"system.posix_acl_access".as_ptr(),
                acl.as_ptr().cast(),
                acl.len(),
                0,
            )
        }
    })
}

/// Turns process accounting on into PATH, and at once off again.
fn acct(path: &str) -> std::io::Result<()> {
    path_call(path, |p| {
        // SAFETY: acct(2) with a valid C string, then with NULL (off).
        unsafe {
            let on = libc::acct(p);
            if on == 0 {
                libc::acct(std::ptr::null());
            }
            on
        }
    })
}

/// pidfd_open(2) on PID; with `send`, SIGCONT through it (pidfd_send_signal).
fn pidfd(pid: &str, send: bool) -> std::io::Result<()> {
    let pid: libc::pid_t = pid.parse().map_err(std::io::Error::other)?;
    // SAFETY: pidfd_open(2), pidfd_send_signal(2) and close(2) on the descriptor it returned.
    unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let sent = if send {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                libc::SIGCONT,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        } else {
            0
        };
        let result = last_result(sent);
        libc::close(fd as libc::c_int);
        result
    }
}

fn last_result(rc: libc::c_long) -> std::io::Result<()> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Changes how PID is scheduled or limited, harmlessly: `nice` (setpriority to 0), `ioprio`
/// (best-effort, level 4), `affinity` (every CPU), `prlimit` (RLIMIT_NOFILE set to what it is).
fn task_change(what: &str, pid: &str) -> std::io::Result<()> {
    let pid: i32 = pid.parse().map_err(std::io::Error::other)?;
    // SAFETY: each call gets valid arguments and memory of its own.
    let rc = unsafe {
        match what {
            "nice" => libc::c_long::from(libc::setpriority(libc::PRIO_PROCESS, pid as u32, 0)),
            "ioprio" => libc::syscall(libc::SYS_ioprio_set, 1, pid, (2 << 13) | 4),
            "affinity" => {
                let mut all: libc::cpu_set_t = std::mem::zeroed();
                for cpu in 0..libc::CPU_SETSIZE as usize {
                    libc::CPU_SET(cpu, &mut all);
                }
                libc::c_long::from(libc::sched_setaffinity(
                    pid,
                    size_of::<libc::cpu_set_t>(),
                    &all,
                ))
            }
            "prlimit" => {
                let mut limit = libc::rlimit64 {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::prlimit64(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::c_long::from(libc::prlimit64(
                    pid,
                    libc::RLIMIT_NOFILE,
                    &limit,
                    std::ptr::null_mut(),
                ))
            }
            other => return Err(std::io::Error::other(format!("no task change {other}"))),
        }
    };
    last_result(rc)
}

/// Makes a System V shared memory segment under KEY (hex) and prints its id.
fn sysv_shm_create(key: &str) -> ExitCode {
    let key = i32::from_str_radix(key.trim_start_matches("0x"), 16).unwrap_or(0);
    // SAFETY: shmget(2) with plain arguments.
    let id = unsafe { libc::shmget(key, 4096, libc::IPC_CREAT | 0o666) };
    if id < 0 {
        return exit_with(Err(std::io::Error::last_os_error()));
    }
    println!("{id}");
    ExitCode::SUCCESS
}

/// `get` the segment under KEY (hex), or `attach` / `rmid` the segment with id KEY.
fn sysv_shm(key: &str, what: &str) -> std::io::Result<()> {
    // SAFETY: shmget, shmat (detached at once) and shmctl with plain arguments.
    let rc = unsafe {
        match what {
            "get" => {
                let key = i32::from_str_radix(key.trim_start_matches("0x"), 16)
                    .map_err(std::io::Error::other)?;
                libc::c_long::from(libc::shmget(key, 0, 0))
            }
            "attach" => {
                let id: i32 = key.parse().map_err(std::io::Error::other)?;
                let at = libc::shmat(id, std::ptr::null(), libc::SHM_RDONLY);
                if at as isize == -1 {
                    -1
                } else {
                    libc::c_long::from(libc::shmdt(at))
                }
            }
            _ => {
                let id: i32 = key.parse().map_err(std::io::Error::other)?;
                libc::c_long::from(libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()))
            }
        }
    };
    last_result(rc)
}

/// PTRACE_SEIZE on PID, then detaching: 0 or the errno.
fn ptrace(pid: &str) -> std::io::Result<()> {
    let pid: i32 = pid.parse().map_err(std::io::Error::other)?;
    // SAFETY: seizing does not stop the tracee; it is released at once.
    unsafe {
        if libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
    }
    Ok(())
}

/// Does `act` to a child of this process (in its cgroup), which is then ended.
fn on_own_child(act: fn(&str) -> std::io::Result<()>) -> std::io::Result<()> {
    let mut child = std::process::Command::new("/usr/bin/claw-vmtest")
        .args(["probe", "sleep", "30"])
        .spawn()?;
    let result = act(&child.id().to_string());
    child.kill()?;
    child.wait()?;
    result
}

/// Opens PATH COUNT times and prints the average nanoseconds per open.
fn time_open(path: &str, count: &str) -> ExitCode {
    let count: u32 = count.parse().unwrap_or(1).max(1);
    let start = std::time::Instant::now();
    for _ in 0..count {
        if let Err(err) = std::fs::File::open(path) {
            eprintln!("probe: open {path}: {err}");
            return exit_with(Err(err));
        }
    }
    println!("{}", start.elapsed().as_nanos() / u128::from(count));
    ExitCode::SUCCESS
}

/// Runs PROGRAM under a Landlock ruleset made of RULES: `none` (no ruleset), or `;`-separated
/// `KIND:PATH,PATH...` with KIND `read` (read files, list directories), `write` (the write
/// rights), `exec` (execute, read) or `libraries` (read) — claw's rule kinds as Landlock has
/// them. Paths that do not exist are left out (as claw's rules for them match nothing).
fn exec_landlock(rules: &str, program: &[String]) -> ExitCode {
    use std::os::unix::process::CommandExt as _;
    if rules != "none" {
        if let Err(err) = landlock_rules(rules) {
            eprintln!("probe: landlock: {err}");
            return ExitCode::from(3);
        }
    }
    let err = std::process::Command::new(&program[0])
        .args(&program[1..])
        .exec();
    eprintln!("probe: exec {}: {err}", program[0]);
    ExitCode::from(4)
}

fn landlock_rules(rules: &str) -> Result<(), landlock::RulesetError> {
    use landlock::{
        path_beneath_rules, Access as _, AccessFs, Ruleset, RulesetAttr as _,
        RulesetCreatedAttr as _, ABI,
    };
    let abi = ABI::V2;
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))?
        .create()?;
    for rule in rules.split(';') {
        let (kind, paths) = rule.split_once(':').unwrap_or((rule, ""));
        let access = match kind {
            "read" => AccessFs::ReadFile | AccessFs::ReadDir,
            "write" => AccessFs::from_write(abi),
            "exec" => AccessFs::Execute | AccessFs::ReadFile,
            _ => AccessFs::ReadFile.into(),
        };
        let existing: Vec<&str> = paths
            .split(',')
            .filter(|p| !p.is_empty() && std::path::Path::new(p).exists())
            .collect();
        ruleset = ruleset.add_rules(path_beneath_rules(existing, access))?;
    }
    ruleset.restrict_self()?;
    Ok(())
}

/// Restricts this process with Landlock to reading beneath `prefixes`.
fn landlock_read_only(prefixes: &[String]) -> Result<(), landlock::RulesetError> {
    use landlock::{
        path_beneath_rules, Access as _, AccessFs, Ruleset, RulesetAttr as _,
        RulesetCreatedAttr as _, ABI,
    };
    let abi = ABI::V1;
    Ruleset::default()
        .handle_access(AccessFs::from_all(abi))?
        .create()?
        .add_rules(path_beneath_rules(prefixes, AccessFs::from_read(abi)))?
        .restrict_self()?;
    Ok(())
}

fn socket(family: libc::c_int, kind: libc::c_int, protocol: libc::c_int) -> std::io::Result<()> {
    // SAFETY: socket(2) and close(2) on the descriptor it returns.
    let fd = unsafe { libc::socket(family, kind, protocol) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    unsafe { libc::close(fd) };
    Ok(())
}

fn bind_mount(from: &str, to: &str) -> std::io::Result<()> {
    let (from, to) = (CString::new(from)?, CString::new(to)?);
    // SAFETY: mount(2) with valid C strings and no data.
    let ret = unsafe {
        libc::mount(
            from.as_ptr(),
            to.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `@name` is an abstract socket.
fn unix_connect(path: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt as _;
    let address = match path.strip_prefix('@') {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name)?,
        None => std::os::unix::net::SocketAddr::from_pathname(path)?,
    };
    std::os::unix::net::UnixStream::connect_addr(&address).map(drop)
}

fn bpf_next_map_id() -> std::io::Result<()> {
    const BPF_MAP_GET_NEXT_ID: libc::c_long = 12;
    let mut attr = [0u8; 16];
    // SAFETY: bpf(2) with a zeroed attribute buffer of the size passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_GET_NEXT_ID,
            attr.as_mut_ptr(),
            attr.len(),
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn setxattr(path: &str, name: &str) -> std::io::Result<()> {
    let (path, name) = (CString::new(path)?, CString::new(name)?);
    // SAFETY: setxattr(2) with valid C strings and a one-byte value.
    let ret = unsafe { libc::setxattr(path.as_ptr(), name.as_ptr(), b"v".as_ptr().cast(), 1, 0) };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// clone3(CLONE_INTO_CGROUP) into `cgroup`, as claw starts tool calls and supervised
/// processes (`spawn`); the child, this probe with no probe to run, exits at once.
fn clone_into_cgroup(cgroup: &str) -> std::io::Result<()> {
    use claw_agent::supervise::spawn::{self, SpawnError};
    let spec = spawn::Spec {
        command: vec![std::env::current_exe()?.display().to_string()],
        ..spawn::Spec::default()
    };
    match spawn::spawn(std::path::Path::new(cgroup), &spec) {
        Ok(child) => spawn::wait(&child).map(drop),
        Err(SpawnError::Syscall { source, .. } | SpawnError::Cgroup { source, .. }) => Err(source),
        Err(other) => Err(std::io::Error::other(other)),
    }
}

/// Leaves a child sleeping SECONDS behind and prints its pid: what a tool call that daemonises
/// leaves when its command exits.
fn background_sleep(seconds: &str) -> std::io::Result<()> {
    let seconds: u32 = seconds
        .parse()
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: fork(2); the child only sleeps and exits.
    match unsafe { libc::fork() } {
        0 => unsafe {
            libc::sleep(seconds);
            libc::_exit(0)
        },
        -1 => Err(std::io::Error::last_os_error()),
        child => {
            println!("{child}");
            Ok(())
        }
    }
}

/// Allocates and touches MEBIBYTES of memory, a mebibyte at a time (an OOM kill ends it first
/// when the cgroup's memory.max is lower).
fn hog(mebibytes: &str) -> std::io::Result<()> {
    let mebibytes: usize = mebibytes
        .parse()
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut held: Vec<Vec<u8>> = Vec::with_capacity(mebibytes);
    for _ in 0..mebibytes {
        held.push(vec![1u8; 1 << 20]);
    }
    println!("{}", held.len());
    Ok(())
}

/// Forks children that wait until the parent cannot fork any more, prints how many it made,
/// then ends them all.
fn fork_bomb() -> ExitCode {
    let mut children = Vec::new();
    loop {
        // SAFETY: fork(2); the child only pauses until it is killed.
        match unsafe { libc::fork() } {
            0 => loop {
                unsafe { libc::pause() };
            },
            -1 => break,
            child => children.push(child),
        }
        if children.len() > 10_000 {
            break;
        }
    }
    println!("{}", children.len());
    for child in &children {
        // SAFETY: killing and reaping our own children.
        unsafe {
            libc::kill(*child, libc::SIGKILL);
            libc::waitpid(*child, std::ptr::null_mut(), 0);
        }
    }
    ExitCode::SUCCESS
}

/// Prints /proc/self/cgroup: the first thing the process does in main.
fn print_cgroup() -> ExitCode {
    match std::fs::read_to_string("/proc/self/cgroup") {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => exit_with(Err(err)),
    }
}
