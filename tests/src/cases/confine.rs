//! What would step around the rules, denied to agents: raw and packet sockets, mounts, chroot,
//! and Unix sockets but those whose file the agent may write.

use std::{
    os::{
        linux::net::SocketAddrExt as _,
        unix::net::{SocketAddr, UnixDatagram, UnixListener},
    },
    path::Path,
};

use anyhow::{ensure, Context as _};
use claw_tests::harness::{expect, in_cgroup_if, probe, VMTEST};

use super::{named, runtime, tools, Runner, AGENT_SOCKET, ALLOWED_FILE, CGROUP_ROOT, EPERM};

/// A `probe sleep` the case started (outside agents or in `cgroup`), ended by pid when dropped.
pub(super) struct Sleeper(std::process::Child);

impl Sleeper {
    pub(super) fn start(cgroup: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let mut command = std::process::Command::new(VMTEST);
        command.args(["probe", "sleep", "120"]);
        let (mut command, _procs) = in_cgroup_if(command, cgroup)?;
        let child = command.spawn()?;
        Ok(Self(child))
    }

    pub(super) fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Root in an agent may signal its own processes, and nothing else: not claw-agent, not another
/// agent's, not the host's. It may trace its own only with `jit: true` (tracing writes code):
/// tools has `jit: false`, runtime `jit: true`.
fn signals_and_ptrace(agent: &std::path::Path) -> anyhow::Result<()> {
    let inside = Some(agent);
    let host = Sleeper::start(None)?;
    let other_agent = Sleeper::start(Some(&runtime()))?;
    for target in [&host, &other_agent] {
        expect(&["signal", &target.pid()], inside, EPERM)?;
        expect(&["ptrace", &target.pid()], inside, EPERM)?;
    }
    expect(&["signal-own-child"], inside, 0)?;
    expect(&["ptrace-own-child"], inside, EPERM)?;
    expect(&["traceme"], inside, EPERM)?;
    expect(&["ptrace-own-child"], Some(&runtime()), 0)?;
    expect(&["traceme"], Some(&runtime()), 0)?;
    expect(&["traceme"], None, 0)?;
    expect(&["signal", &host.pid()], None, 0)?;
    expect(&["ptrace", &host.pid()], None, 0)
}

/// An agent whose policy writes everywhere (`write: [/]`) still cannot touch the cgroup tree
/// (leave its cgroup, make or remove cgroups, change limits), claw's pinned BPF objects, or /proc.
fn cgroup_and_bpf_files(broad: &Path) -> anyhow::Result<()> {
    let inside = Some(broad);
    let root = Path::new(CGROUP_ROOT);
    // /proc is protected as the cgroup tree is: /proc/PID/mem would write into a process's
    // code without any LSM asking (its own threads), and the kernel's settings live there.
    expect(&["open", "/proc/self/mem", "w"], inside, EPERM)?;
    expect(&["create", "/tmp/broad-wrote-this"], inside, 0)?;
    std::fs::remove_file("/tmp/broad-wrote-this")?;
    for file in [
        root.join("cgroup.procs"),
        broad.join("cgroup.procs"),
        tools().join("pids.max"),
    ] {
        expect(&["open", &file.to_string_lossy(), "w"], inside, EPERM)?;
    }
    let child = broad.join("escape");
    expect(&["mkdir", &child.to_string_lossy()], inside, EPERM)?;
    ensure!(!child.exists(), "the agent made a cgroup");
    expect(&["rmdir", &tools().to_string_lossy()], inside, EPERM)?;
    let pinned = std::fs::read_dir("/sys/fs/bpf/claw")?
        .next()
        .context("nothing pinned under /sys/fs/bpf/claw")??
        .path();
    expect(&["unlink", &pinned.to_string_lossy()], inside, EPERM)?;
    ensure!(pinned.exists(), "{} was unpinned", pinned.display());
    expect(&["mkdir", "/sys/fs/bpf/claw/planted"], inside, EPERM)?;
    // The same writes outside agents go through.
    let outside = root.join("claw-probe-outside");
    expect(&["mkdir", &outside.to_string_lossy()], None, 0)?;
    expect(&["rmdir", &outside.to_string_lossy()], None, 0)
}

/// Module loading and unloading, and unmounting, are refused inside any agent.
fn modules_and_umount(broad: &Path) -> anyhow::Result<()> {
    let inside = Some(broad);
    expect(&["init-module"], inside, EPERM)?;
    expect(&["delete-module", "claw_no_such_module"], inside, EPERM)?;
    let (_, code) = probe(&["init-module"], None)?;
    ensure!(
        code != EPERM && code != 0,
        "outside agents, a bogus module image got exit {code}: want the image refused, not the caller"
    );
    expect(
        &["delete-module", "claw_no_such_module"],
        None,
        libc::ENOENT,
    )?;
    let mountpoint = "/tmp/claw-umount";
    std::fs::create_dir_all(mountpoint)?;
    let target = std::ffi::CString::new(mountpoint)?;
    // SAFETY: mounting a fresh tmpfs on a directory this test made.
    let rc = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    ensure!(rc == 0, "mount tmpfs: {}", std::io::Error::last_os_error());
    let refused = expect(&["umount", mountpoint], inside, EPERM);
    let unmounted = expect(&["umount", mountpoint], None, 0);
    refused.and(unmounted)
}

pub fn run(runner: &mut Runner) {
    let broad = named("broad");
    runner.check(
        "cgroup_and_bpf_files_cannot_be_changed_even_with_write_everywhere",
        cgroup_and_bpf_files(&broad),
    );
    runner.check(
        "modules_cannot_be_loaded_or_removed_nor_filesystems_unmounted",
        modules_and_umount(&broad),
    );
    let agent = tools();
    let inside = Some(agent.as_path());
    runner.check("system_v_ipc_is_refused_to_agents", sysv_ipc(&agent));
    runner.check(
        "task_changes_reach_only_the_agents_own_processes",
        task_changes(&agent),
    );
    runner.check(
        "signals_and_ptrace_reach_only_the_agents_own_processes",
        signals_and_ptrace(&agent),
    );
    runner.check("pidfds_and_ps_work_in_an_agent", pidfds_and_ps(&agent));
    runner.check(
        "raw_and_packet_sockets_are_eperm",
        (|| {
            expect(&["raw-socket"], inside, EPERM)?;
            expect(&["packet-socket"], inside, EPERM)?;
            expect(&["raw-socket"], None, 0)
        })(),
    );
    runner.check(
        "socket_families_the_rules_do_not_describe_are_eperm",
        (|| {
            let follower = claw_tests::harness::Follower::start(&[
                "--json", "--agent", "tools", "--op", "socket",
            ])?;
            expect(&["vsock-socket"], inside, EPERM)?;
            follower
                .line_within(std::time::Duration::from_secs(20), |line| {
                    line.contains("\"deny\"") && line.contains("socket family 40")
                })
                .context("no socket deny event for vsock")?;
            expect(&["alg-socket"], inside, EPERM)?;
            // IPv4 and IPv6 protocols no connect or listen rule describes.
            expect(&["sctp-socket"], inside, EPERM)?;
            expect(&["mptcp-socket"], inside, EPERM)?;
            expect(&["unix-socket"], inside, 0)?;
            expect(&["tcp-socket"], inside, 0)?;
            expect(&["netlink-socket"], inside, 0)?;
            // NETLINK_USERSOCK carries data between processes past every rule.
            expect(&["netlink-protocol", "2"], inside, EPERM)?;
            // Outside agents the kernel answers as it would (a family may not be built).
            expect(&["netlink-protocol", "2"], None, 0)?;
            for family in ["vsock-socket", "alg-socket", "sctp-socket", "mptcp-socket"] {
                let (_, code) = claw_tests::harness::probe(&[family], None)?;
                ensure!(code != EPERM, "{family} outside agents: EPERM");
            }
            Ok(())
        })(),
    );
    runner.check(
        "bind_mount_and_chroot_are_eperm",
        (|| {
            std::fs::create_dir_all("/workspace/mnt")?;
            expect(&["bind-mount", "/etc", "/workspace/mnt"], inside, EPERM)?;
            ensure!(
                !std::path::Path::new("/workspace/mnt/secret").exists(),
                "/etc got bound"
            );
            expect(&["chroot", "/workspace"], inside, EPERM)
        })(),
    );
    runner.check(
        "unix_sockets_need_write_on_their_file",
        (|| {
            let _allowed = UnixListener::bind("/workspace/ok.sock")?;
            let _other = UnixListener::bind("/tmp/other.sock")?;
            let _abstract = UnixListener::bind_addr(&SocketAddr::from_abstract_name("claw-test")?)?;
            let _datagram = UnixDatagram::bind("/tmp/other-dgram.sock")?;
            expect(&["unix-connect", "/workspace/ok.sock"], inside, 0)?;
            expect(&["unix-connect", "/tmp/other.sock"], inside, EPERM)?;
            expect(&["unix-connect", "/run/claw/claw.sock"], inside, EPERM)?;
            expect(&["unix-connect", "@claw-test"], inside, EPERM)?;
            expect(&["unix-sendto", "/tmp/other-dgram.sock"], inside, EPERM)?;
            expect(&["unix-connect", "/tmp/other.sock"], None, 0)?;
            expect(&["unix-connect", "@claw-test"], None, 0)?;
            for path in [
                "/workspace/ok.sock",
                "/tmp/other.sock",
                "/tmp/other-dgram.sock",
            ] {
                std::fs::remove_file(path)?;
            }
            Ok(())
        })(),
    );
    runner.check(
        "agents_reach_the_agent_socket_and_nothing_else_of_claw_agents",
        (|| {
            let broad = named("broad");
            // `broad` may write anywhere (`write: [/]`), but not beside claw-agent's sockets.
            expect(&["unix-connect", AGENT_SOCKET], inside, 0)?;
            expect(&["unix-connect", AGENT_SOCKET], Some(&broad), 0)?;
            expect(
                &["unix-connect", "/run/claw/claw.sock"],
                Some(&broad),
                EPERM,
            )?;
            expect(&["unlink", AGENT_SOCKET], Some(&broad), EPERM)?;
            expect(
                &["rename", "/run/claw", "/run/claw-moved"],
                Some(&broad),
                EPERM,
            )?;
            expect(&["create", "/run/claw/planted.sock"], Some(&broad), EPERM)?;
            expect(&["create", "/run/broad-was-here"], Some(&broad), 0)?;
            std::fs::remove_file("/run/broad-was-here")?;
            ensure!(
                std::path::Path::new(AGENT_SOCKET).exists()
                    && std::path::Path::new("/run/claw/claw.sock").exists(),
                "a socket went"
            );
            Ok(())
        })(),
    );
    runner.check(
        "device_nodes_cannot_be_made",
        (|| {
            expect(&["mknod-device", "/workspace/null"], inside, EPERM)?;
            ensure!(
                !std::path::Path::new("/workspace/null").exists(),
                "device node made"
            );
            expect(&["mknod-device", "/workspace/null"], None, 0)?;
            std::fs::remove_file("/workspace/null")?;
            Ok(())
        })(),
    );
    runner.check(
        "bpf_syscall_is_eperm",
        (|| {
            expect(&["bpf"], inside, EPERM)?;
            expect(&["bpf"], None, 0)
        })(),
    );
    runner.check(
        "denied_capabilities_are_eperm",
        (|| {
            expect(&["sethostname", "agent-was-here"], inside, EPERM)?;
            expect(&["unshare-mount"], inside, EPERM)?;
            // CAP_SYS_PACCT: acct() would write a record of every process of the node.
            let follower = claw_tests::harness::Follower::start(&[
                "--json",
                "--agent",
                "tools",
                "--op",
                "capability",
            ])?;
            expect(&["acct", "/workspace/acct"], inside, EPERM)?;
            follower
                .line_within(std::time::Duration::from_secs(20), |line| {
                    line.contains("\"deny\"") && line.contains("CAP_SYS_PACCT")
                })
                .context("no capability deny event for acct")?;
            let (_, code) = probe(&["acct", "/tmp/claw-acct"], None)?;
            ensure!(code != EPERM, "acct outside agents: EPERM");
            expect(&["ping-socket"], inside, EPERM)
        })(),
    );
    runner.check("kernel_keys_are_refused_to_agents", kernel_keys(&agent));
    runner.check(
        "io_signals_reach_only_the_agent_that_set_the_owner",
        io_signals(&agent),
    );
    runner.check(
        "module_loads_on_an_agents_behalf_are_refused",
        module_requests(&agent),
    );
    runner.check(
        "pushing_input_into_a_terminal_is_refused",
        (|| {
            // devuser may open /dev/: a terminal of its own, made its controlling one. The VM's
            // /dev has no devpts mounted: pseudo-terminals need it.
            if !Path::new("/dev/pts/ptmx").exists() {
                std::fs::create_dir_all("/dev/pts")?;
                // SAFETY: mount(2) with valid C strings, in the VM, outside agents.
                let mounted = unsafe {
                    libc::mount(
                        c"devpts".as_ptr(),
                        c"/dev/pts".as_ptr(),
                        c"devpts".as_ptr(),
                        0,
                        c"ptmxmode=0666".as_ptr().cast(),
                    )
                };
                ensure!(
                    mounted == 0,
                    "mounting devpts: {}",
                    std::io::Error::last_os_error()
                );
            }
            let devuser = named("devuser");
            let follower = claw_tests::harness::Follower::start(&[
                "--json", "--agent", "devuser", "--op", "terminal",
            ])?;
            let (_, code) = probe(&["tiocsti"], Some(&devuser))?;
            ensure!(code == EPERM, "TIOCSTI inside an agent: exit {code}");
            follower
                .line_within(std::time::Duration::from_secs(20), |line| {
                    line.contains("\"deny\"")
                })
                .context("no terminal deny event for devuser")?;
            expect(&["tiocsti"], None, 0)
        })(),
    );
    runner.check(
        "posix_message_queues_meet_the_file_rules",
        (|| {
            // A queue is a file of the mqueue filesystem, named `/NAME`: no rule of tools
            // names it, so it is neither made nor opened inside; outside the kernel allows it.
            let follower = claw_tests::harness::Follower::start(&[
                "--json", "--agent", "tools", "--op", "open",
            ])?;
            expect(&["mq-open", "/claw-mq"], inside, EPERM)?;
            follower
                .line_within(std::time::Duration::from_secs(20), |line| {
                    line.contains("\"deny\"") && line.contains("claw-mq")
                })
                .context("no open deny event for the queue")?;
            expect(&["mq-open", "/claw-mq"], None, 0)
        })(),
    );
    runner.check(
        "posix_acls_are_refused_to_agents",
        (|| {
            let follower = claw_tests::harness::Follower::start(&[
                "--json", "--agent", "tools", "--op", "xattr",
            ])?;
            expect(&["set-acl", ALLOWED_FILE], inside, EPERM)?;
            let (_, code) = probe(&["set-acl", ALLOWED_FILE], None)?;
            ensure!(code != EPERM, "an ACL outside agents: EPERM");
            follower
                .line_within(std::time::Duration::from_secs(20), |line| {
                    line.contains("\"deny\"")
                })
                .context("no xattr deny event for the ACL")?;
            Ok(())
        })(),
    );
    runner.check(
        "only_user_xattrs_may_be_set",
        (|| {
            // tmpfs takes user.* attributes from 6.6 on: before, the filesystem refuses, not claw.
            let (_, code) = probe(&["setxattr", ALLOWED_FILE, "user.note"], inside)?;
            ensure!(
                code == 0 || code == libc::EOPNOTSUPP,
                "user.note: exit {code}"
            );
            expect(&["setxattr", ALLOWED_FILE, "security.claw"], inside, EPERM)?;
            expect(&["setxattr", ALLOWED_FILE, "trusted.claw"], inside, EPERM)?;
            expect(&["setxattr", ALLOWED_FILE, "security.claw"], None, 0)
        })(),
    );
    runner.check(
        "o_trunc_and_ioctl_only_opens_need_write",
        (|| {
            let before = std::fs::metadata("/usr/bin/true")?.len();
            expect(&["open", "/usr/bin/true", "t"], inside, EPERM)?;
            expect(&["open", "/usr/bin/true", "3"], inside, EPERM)?;
            ensure!(
                std::fs::metadata("/usr/bin/true")?.len() == before,
                "/usr/bin/true was truncated"
            );
            expect(&["open", ALLOWED_FILE, "3"], inside, 0)
        })(),
    );
    runner.check(
        "anonymous_executable_memory_needs_the_jit_switch",
        (|| {
            expect(&["anon-exec"], inside, EPERM)?;
            expect(&["anon-mprotect"], inside, EPERM)?;
            let runtime = runtime();
            expect(&["anon-exec"], Some(&runtime), 0)?;
            expect(&["anon-mprotect"], Some(&runtime), 0)?;
            expect(&["anon-exec"], None, 0)
        })(),
    );
    runner.check(
        "a_child_cannot_be_started_in_another_cgroup",
        (|| {
            expect(&["clone-into-cgroup", "/sys/fs/cgroup"], inside, EPERM)?;
            expect(&["clone-into-cgroup", "/sys/fs/cgroup"], None, 0)
        })(),
    );
}

/// Changing another process's priority, I/O priority, CPU affinity or resource limits: within
/// the agent only, each refusal a deny event.
fn task_changes(agent: &Path) -> anyhow::Result<()> {
    let inside = Some(agent);
    let host = Sleeper::start(None)?;
    let follower = claw_tests::harness::Follower::start(&["--json", "--agent", "tools"])?;
    for what in ["nice", "ioprio", "affinity", "prlimit"] {
        expect(&["task-change", what, &host.pid()], inside, EPERM)?;
        expect(&["task-change-own-child", what], inside, 0)?;
        expect(&["task-change", what, &host.pid()], None, 0)?;
    }
    let pid: i64 = host.pid().parse()?;
    let line = follower
        .line_within(std::time::Duration::from_secs(20), |line| {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                return false;
            };
            event["op"] == "task-change" && event["details"]["target_pid"] == pid
        })
        .with_context(|| format!("no task-change deny event about pid {pid}"))?;
    let event: serde_json::Value = serde_json::from_str(&line)?;
    ensure!(
        event["kind"] == "deny" && event["agent"] == "tools",
        "{line}"
    );
    Ok(())
}

const EACCES: i32 = 13;

/// A file's I/O signal (SIGIO, which ends a process by default) aimed by an agent at a process
/// outside it is not delivered, and reported naming the target; aimed at its own child it is;
/// outside agents the kernel delivers it. The delivery has no caller to give an errno to: the
/// kernel drops the signal.
fn io_signals(agent: &Path) -> anyhow::Result<()> {
    let inside = Some(agent);
    // Its SIGIO action is the default from its first instruction (nothing changes it).
    let mut host = Sleeper::start(None)?;
    let follower =
        claw_tests::harness::Follower::start(&["--json", "--agent", "tools", "--op", "signal"])?;
    expect(&["sigio", &host.pid()], inside, 0)?;
    let pid: i64 = host.pid().parse()?;
    let line = follower
        .line_within(std::time::Duration::from_secs(20), |line| {
            serde_json::from_str::<serde_json::Value>(line)
                .is_ok_and(|event| event["details"]["target_pid"] == pid)
        })
        .with_context(|| format!("no signal deny event about pid {pid}"))?;
    ensure!(line.contains("\"deny\""), "{line}");
    ensure!(
        host.0.try_wait()?.is_none(),
        "the process outside agents got the agent's SIGIO"
    );
    expect(&["sigio-own-child"], inside, 0)?;
    expect(&["sigio", &host.pid()], None, 0)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while host.0.try_wait()?.is_none() {
        ensure!(
            std::time::Instant::now() < deadline,
            "SIGIO set up outside agents did not reach the sleeper"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

/// A key in root's user keyring, made outside agents, cannot be read from inside (root there
/// shares the keyring by uid); outside it can; the refusal is an event.
fn kernel_keys(agent: &Path) -> anyhow::Result<()> {
    let (code, serial) = claw_tests::harness::probe_output(&["key-add"], None)?;
    ensure!(code == 0, "adding a key outside agents: exit {code}");
    let serial = serial.trim().to_owned();
    let follower =
        claw_tests::harness::Follower::start(&["--json", "--agent", "tools", "--op", "key"])?;
    // Refused: EPERM where the key itself is asked about; ENOKEY where the kernel first searches
    // the caller's keyrings for it (the search is refused, so the key is not found).
    let (_, code) = probe(&["key-read", &serial], Some(agent))?;
    ensure!(
        [EPERM, EACCES, libc::ENOKEY].contains(&code),
        "reading root's key inside tools: exit {code}"
    );
    follower
        .line_within(std::time::Duration::from_secs(20), |line| {
            line.contains("\"deny\"")
        })
        .context("no key deny event for tools")?;
    expect(&["key-read", &serial], None, 0)
}

/// sock_diag asked about TCP sockets while inet_diag is not loaded (the VM loads no modules):
/// inside an agent the kernel's request for the module is refused, and reported naming it.
fn module_requests(agent: &Path) -> anyhow::Result<()> {
    let follower = claw_tests::harness::Follower::start(&[
        "--json",
        "--agent",
        "tools",
        "--op",
        "module-request",
    ])?;
    expect(&["sock-diag"], Some(agent), 0)?;
    let line = follower
        .line_within(std::time::Duration::from_secs(20), |line| {
            line.contains("\"deny\"")
        })
        .context("no module-request deny event for tools")?;
    ensure!(line.contains("net-pf-16-proto-4-type-2"), "{line}");
    Ok(())
}

/// pidfd_open works in an agent (on 6.12 its file passes the open hook), for its own children
/// and others — a signal through a pidfd to a process outside is still refused. Reading another
/// process's /proc/PID/stat, status and cmdline, as ps and top do, works (the kernel zeroes what
/// the ptrace check withholds) and reports nothing: the first ptrace event of `limited` (which
/// reads [/proc/]) is that of the environ read made after them.
fn pidfds_and_ps(agent: &Path) -> anyhow::Result<()> {
    let inside = Some(agent);
    let host = Sleeper::start(None)?;
    expect(&["pidfd-own-child"], inside, 0)?;
    expect(&["pidfd", &host.pid()], inside, 0)?;
    expect(&["pidfd-signal", &host.pid()], inside, EPERM)?;
    let limited = super::limited();
    let follower = claw_tests::harness::Follower::start(&["--json", "--agent", "limited"])?;
    for file in ["stat", "status", "cmdline"] {
        let path = format!("/proc/{}/{file}", host.pid());
        expect(&["read-file", &path], Some(&limited), 0)?;
    }
    let environ = format!("/proc/{}/environ", host.pid());
    expect(&["read-file", &environ], Some(&limited), EACCES)?;
    let line = follower
        .line_within(std::time::Duration::from_secs(20), |line| {
            line.contains("\"op\":\"ptrace\"")
        })
        .context("no ptrace deny event for the environ read")?;
    let event: serde_json::Value = serde_json::from_str(&line)?;
    let mode = event["details"]["mode"].as_u64().unwrap_or(0);
    ensure!(
        mode & 0x04 == 0,
        "a ptrace event of a check the kernel makes without auditing (mode {mode:#x}): {line}"
    );
    Ok(())
}

/// A System V shared memory segment the host made: inside an agent it cannot be found, attached
/// or removed (ipc_permission answers the first two, which the kernel reports as EACCES; shmctl
/// is refused with EPERM); outside it can; the refusal is a deny event.
fn sysv_ipc(agent: &Path) -> anyhow::Result<()> {
    let inside = Some(agent);
    let key = "434c4157";
    let (code, id) = claw_tests::harness::probe_output(&["sysv-shm-create", key], None)?;
    ensure!(code == 0, "making a segment outside agents: exit {code}");
    let id = id.trim().to_owned();
    let follower =
        claw_tests::harness::Follower::start(&["--json", "--agent", "tools", "--op", "sysv-ipc"])?;
    expect(&["sysv-shm-get", key], inside, EACCES)?;
    expect(&["sysv-shm-attach", &id], inside, EACCES)?;
    expect(&["sysv-shm-rmid", &id], inside, EPERM)?;
    follower
        .line_within(std::time::Duration::from_secs(20), |line| {
            line.contains("\"deny\"")
        })
        .context("no sysv-ipc deny event for agent tools")?;
    expect(&["sysv-shm-get", key], None, 0)?;
    expect(&["sysv-shm-attach", &id], None, 0)?;
    expect(&["sysv-shm-rmid", &id], None, 0)
}
