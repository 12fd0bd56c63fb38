//! What would step around the path and network rules, denied to agents outright: sockets but
//! TCP, UDP, Unix and netlink (hand-made packets and other protocols skip connect/sendmsg), mounts (a bind mount gives a file an allowed
//! name), chroot and pivot_root (paths are resolved from the process's root), and Unix sockets
//! but those whose file the agent may write (a socket such as /var/run/docker.sock is a door
//! out); and acting on processes outside the agent: signals, ptrace, their scheduling and
//! limits.

use aya_ebpf::{
    helpers::generated::bpf_get_func_arg, macros::lsm, programs::LsmContext, EbpfContext as _,
};
use claw_common::{access, agent_flags, op, op::task_change, record, AgentEntry, NetRecord};

use crate::{
    decide::{
        agent_of_task, current_agent, emit, file_verdict, header, outcome, refuse, report_file,
        resolve_path_walk, scratch, Reported, Resolved,
    },
    kernel::{offset, read, read_ptr, value},
    mounts::change_verdict,
};

const AF_UNIX: i32 = 1;
const AF_INET: i32 = 2;
const AF_INET6: i32 = 10;
const AF_NETLINK: i32 = 16;
const NETLINK_ROUTE: i32 = 0;
const NETLINK_SOCK_DIAG: i32 = 4;
const NETLINK_KOBJECT_UEVENT: i32 = 15;
const NETLINK_GENERIC: i32 = 16;
const SOCK_STREAM: i32 = 1;
const SOCK_DGRAM: i32 = 2;
const IPPROTO_TCP: i32 = 6;
const IPPROTO_UDP: i32 = 17;
/// The socket type is in the low bits; SOCK_NONBLOCK and SOCK_CLOEXEC ride above.
const SOCK_TYPE_MASK: i32 = 0xf;

#[lsm(hook = "socket_create")]
pub fn socket_create(ctx: LsmContext) -> i32 {
    let family: i32 = ctx.arg(0);
    let kind: i32 = ctx.arg(1);
    let protocol: i32 = ctx.arg(2);
    let kern: i32 = ctx.arg(3);
    let kind = kind & SOCK_TYPE_MASK;
    // Over IPv4 and IPv6 the connect and listen rules describe TCP and UDP (protocol 0 picks
    // them for a stream and a datagram socket): raw sockets (hand-made packets), ICMP "ping",
    // SCTP, MPTCP and UDP-Lite would carry data where no rule looks. Other families than Unix
    // and netlink likewise (vsock to the hypervisor, AF_PACKET, AF_ALG, Bluetooth, CAN, XDP...).
    let described = match family {
        AF_INET | AF_INET6 => {
            (kind == SOCK_STREAM && (protocol == 0 || protocol == IPPROTO_TCP))
                || (kind == SOCK_DGRAM && (protocol == 0 || protocol == IPPROTO_UDP))
        }
        AF_UNIX => true,
        // Netlink to the kernel: routes and addresses, sockets (sock_diag), device events,
        // generic families. Not NETLINK_USERSOCK, which carries data between processes (other
        // agents, the host) past every rule, nor audit records and the rest.
        AF_NETLINK => {
            protocol == NETLINK_ROUTE
                || protocol == NETLINK_SOCK_DIAG
                || protocol == NETLINK_KOBJECT_UEVENT
                || protocol == NETLINK_GENERIC
        }
        _ => false,
    };
    if kern != 0 || described {
        return 0;
    }
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    let (decision, ret) = outcome(agent);
    emit(NetRecord {
        header: header(record::NET, op::SOCKET, cgroup_id, agent, decision, 0),
        address: [0; 16],
        port: kind as u16,
        protocol: protocol as u8,
        family: family as u8,
        _pad: 0,
    });
    ret
}

/// Capabilities agents may not use (bit N = capability N), from claw-agent: loading modules,
/// raw I/O, system administration (mount namespaces, swap, xattrs of the security namespace),
/// network administration (NAT, routes), device nodes, immutable flags, BPF, perf, and the like.
#[no_mangle]
static DENIED_CAPABILITIES: u64 = 0;
const CAP_OPT_NOAUDIT: u32 = 1 << 1;

#[lsm(hook = "capable")]
pub fn capable(ctx: LsmContext) -> i32 {
    let capability: i32 = ctx.arg(2);
    let opts: u32 = ctx.arg(3);
    // SAFETY: reading a plain static (a frozen global the verifier sees as a constant).
    let denied = unsafe { core::ptr::read_volatile(&DENIED_CAPABILITIES) };
    if !(0..64).contains(&capability) || denied & (1 << capability) == 0 {
        return 0;
    }
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    let (decision, ret) = outcome(agent);
    // The kernel also asks "would it be allowed?" without acting (NOAUDIT): answer, don't report.
    if opts & CAP_OPT_NOAUDIT == 0 {
        emit(NetRecord {
            header: header(record::NET, op::CAPABILITY, cgroup_id, agent, decision, 0),
            address: [0; 16],
            port: capability as u16,
            protocol: 0,
            family: 0,
            _pad: 0,
        });
    }
    ret
}

/// The bpf() syscall: an agent could otherwise rewrite claw's own maps or detach its programs.
#[lsm(hook = "bpf")]
pub fn bpf(_ctx: LsmContext) -> i32 {
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    refuse(cgroup_id, agent, op::BPF)
}

/// Extended attributes outside `user.*` carry privileges (security.capability), labels and ACLs
/// (system.posix_acl_*): agents may not set or remove them. `user.*` ones are the file's data's
/// kin: set or removed only where the agent may write (the path through the mount the call took
/// write access to: mounts.rs).
#[inline(always)]
fn xattr(dentry: *const u8, name: *const u8) -> i32 {
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    // SAFETY: a checked kernel read of the attribute name's first bytes.
    if unsafe { read::<[u8; 5]>(name, 0) } == Some(*b"user.") {
        return change_verdict(cgroup_id, agent, op::XATTR, access::WRITE, dentry);
    }
    refuse(cgroup_id, agent, op::XATTR)
}

// (idmap or user namespace, dentry, name, ...) on 6.1 and 6.12 alike.

#[lsm(hook = "inode_setxattr")]
pub fn inode_setxattr(ctx: LsmContext) -> i32 {
    xattr(ctx.arg(1), ctx.arg(2))
}

#[lsm(hook = "inode_removexattr")]
pub fn inode_removexattr(ctx: LsmContext) -> i32 {
    xattr(ctx.arg(1), ctx.arg(2))
}

/// Where inode_setattr's dentry is: argument 0 before 6.8, 1 since (the mount's idmap came in
/// front). claw-agent sets it from the kernel's BTF.
#[no_mangle]
static INODE_SETATTR_DENTRY_ARG: u64 = 0;

const ATTR_MODE: u32 = 1 << 0;
const ATTR_UID: u32 = 1 << 1;
const ATTR_GID: u32 = 1 << 2;
const ATTR_SIZE: u32 = 1 << 3;
const ATTR_ATIME: u32 = 1 << 4;
const ATTR_MTIME: u32 = 1 << 5;

/// A file's access and modification times (utimensat, futimens, utime): set only where the
/// agent may write. Mode, owner and size changes are decided at lsm/path_chmod, path_chown and
/// path_truncate, which have the path.
#[lsm(hook = "inode_setattr")]
pub fn inode_setattr(ctx: LsmContext) -> i32 {
    // Read through the helper, which checks the index against the hook's own argument count: a
    // context load at an offset chosen at run time is refused by the verifier.
    let first = value(&INODE_SETATTR_DENTRY_ARG) as u32;
    let (mut dentry, mut attr) = (0u64, 0u64);
    // SAFETY: the helper writes one u64 into each local.
    unsafe {
        if bpf_get_func_arg(ctx.as_ptr(), first, &mut dentry) != 0
            || bpf_get_func_arg(ctx.as_ptr(), first + 1, &mut attr) != 0
        {
            // A hook whose arguments are not where BTF said: nothing can be judged; an agent's
            // change is refused.
            return match current_agent() {
                Some((cgroup_id, agent)) => {
                    file_verdict(cgroup_id, agent, op::TIMES, access::WRITE, None)
                }
                None => 0,
            };
        }
    }
    let (dentry, attr) = (dentry as *const u8, attr as *const u8);
    // SAFETY: a checked read of the hook's iattr.
    let valid = unsafe { read::<u32>(attr, offset!(IATTR_IA_VALID)) }.unwrap_or(0);
    if valid & (ATTR_ATIME | ATTR_MTIME) == 0
        || valid & (ATTR_MODE | ATTR_UID | ATTR_GID | ATTR_SIZE) != 0
    {
        return 0;
    }
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    change_verdict(cgroup_id, agent, op::TIMES, access::WRITE, dentry)
}

/// Denies `op` to agents, reporting the path of the `struct path *` argument `target`.
#[inline(always)]
fn deny_with_path(target: *const u8, op: u32) -> i32 {
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    // SAFETY: checked kernel reads of the hook's `struct path` argument.
    let resolved = unsafe { resolve_path_walk(target) };
    file_verdict(cgroup_id, agent, op, access::ADMIN, resolved)
}

#[lsm(hook = "sb_mount")]
pub fn sb_mount(ctx: LsmContext) -> i32 {
    deny_with_path(ctx.arg(1), op::MOUNT)
}

#[lsm(hook = "move_mount")]
pub fn move_mount(ctx: LsmContext) -> i32 {
    deny_with_path(ctx.arg(1), op::MOUNT)
}

#[lsm(hook = "sb_pivotroot")]
pub fn sb_pivotroot(ctx: LsmContext) -> i32 {
    deny_with_path(ctx.arg(1), op::CHROOT)
}

#[lsm(hook = "path_chroot")]
pub fn path_chroot(ctx: LsmContext) -> i32 {
    deny_with_path(ctx.arg(0), op::CHROOT)
}

/// CONNECT on the file the Unix socket `unix_sock` is bound to; an abstract or unbound socket has
/// no file, so no rule can grant it.
#[inline(always)]
fn unix_peer(unix_sock: *const u8) -> i32 {
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    let path = unix_sock.wrapping_add(offset!(UNIX_SOCK_PATH));
    // SAFETY: checked kernel reads of the peer socket's bound path.
    let resolved = unsafe { resolve_path_walk(path) };
    file_verdict(
        cgroup_id,
        agent,
        op::UNIX_CONNECT,
        access::CONNECT,
        resolved,
    )
}

#[lsm(hook = "unix_stream_connect")]
pub fn unix_stream_connect(ctx: LsmContext) -> i32 {
    // (struct sock *sock, struct sock *other, struct sock *newsk): a unix_sock starts with its sock.
    unix_peer(ctx.arg(1))
}

#[lsm(hook = "unix_may_send")]
pub fn unix_may_send(ctx: LsmContext) -> i32 {
    // (struct socket *sock, struct socket *other)
    let other: *const u8 = ctx.arg(1);
    // SAFETY: a checked kernel read of the peer's `sk`.
    match unsafe { read_ptr(other, offset!(SOCKET_SK)) } {
        Some(sk) => unix_peer(sk),
        None => unix_peer(core::ptr::null()),
    }
}

/// clone3(CLONE_INTO_CGROUP) with a descriptor of another cgroup (an O_PATH open needs no rule)
/// would start a child outside the agent, where no rule holds it.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

#[lsm(hook = "task_alloc")]
pub fn task_alloc(ctx: LsmContext) -> i32 {
    let clone_flags: u64 = ctx.arg(1);
    if clone_flags & CLONE_INTO_CGROUP == 0 {
        return 0;
    }
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    refuse(cgroup_id, agent, op::CLONE_INTO_CGROUP)
}

/// An agent's process acting on `target` (signal, ptrace, its scheduling or limits): allowed
/// when the same registered cgroup holds both (the agent's, or one tool call's — whichever cgroup
/// below it either process is in), refused (reported with `op`, `detail`) otherwise —
/// claw-agent, other agents, the host, nested agents and tool calls (tracing one would run code
/// under its rules and grants), and for a tool call the agent's other processes and calls. A
/// target whose cgroup cannot be read is outside. `report`: false where the kernel only asks
/// whether it would be allowed.
#[inline(always)]
fn within_agent(target: *const u8, op: u32, detail: u16, report: bool) -> i32 {
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    // SAFETY: `target` is the hook's task_struct argument.
    let holder = unsafe { agent_of_task(target) }.map(|(_, entry)| entry.cgroup_id);
    if holder == Some(agent.cgroup_id) {
        return 0;
    }
    refuse_on(target, cgroup_id, agent, op, detail, report)
}

/// Refuses `op` on the task `target` (reported with its pid and `detail`, unless `report` is
/// false); allowed in audit mode.
#[inline(always)]
fn refuse_on(
    target: *const u8,
    cgroup_id: u64,
    agent: AgentEntry,
    op: u32,
    detail: u16,
    report: bool,
) -> i32 {
    // SAFETY: `target` is a hook's task_struct argument.
    let pid = unsafe { read::<i32>(target, offset!(TASK_TGID)) }.unwrap_or(0);
    let mut address = [0u8; 16];
    address[..4].copy_from_slice(&pid.to_ne_bytes());
    let (decision, ret) = outcome(agent);
    if !report {
        return ret;
    }
    emit(NetRecord {
        header: header(record::NET, op, cgroup_id, agent, decision, 0),
        address,
        port: detail,
        protocol: 0,
        family: 0,
        _pad: 0,
    });
    ret
}

#[lsm(hook = "task_kill")]
pub fn task_kill(ctx: LsmContext) -> i32 {
    let target: *const u8 = ctx.arg(0);
    let signal: i32 = ctx.arg(2);
    within_agent(target, op::SIGNAL, signal as u16, true)
}

const PTRACE_MODE_ATTACH: u32 = 0x02;
const PTRACE_MODE_NOAUDIT: u32 = 0x04;

#[lsm(hook = "ptrace_access_check")]
pub fn ptrace_access_check(ctx: LsmContext) -> i32 {
    let target: *const u8 = ctx.arg(0);
    let mode: u32 = ctx.arg(1);
    // Attaching (ptrace, /proc/PID/mem, process_vm_writev) writes into another process's code
    // as the kernel's forced writes do: in a `jit: false` agent, code it wrote would run — not
    // even within the agent.
    if mode & PTRACE_MODE_ATTACH != 0 {
        if let Some((cgroup_id, agent)) = current_agent() {
            if agent.flags & agent_flags::JIT == 0 {
                return refuse_on(target, cgroup_id, agent, op::PTRACE, mode as u16, true);
            }
        }
    }
    // /proc/PID/stat (ps, top) asks whether it could read the target, to show or zero a few
    // fields, with PTRACE_MODE_NOAUDIT: answered as any ptrace, not reported — otherwise every
    // ps in an agent would be a burst of denials.
    within_agent(
        target,
        op::PTRACE,
        mode as u16,
        mode & PTRACE_MODE_NOAUDIT == 0,
    )
}

/// PTRACE_TRACEME makes the parent the tracer, with no access check: allowed when the parent is
/// outside agents (the host may trace), refused when it is in another agent, and within the
/// agent only with `jit: true` (as attaching is).
#[lsm(hook = "ptrace_traceme")]
pub fn ptrace_traceme(ctx: LsmContext) -> i32 {
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    let parent: *const u8 = ctx.arg(0);
    // SAFETY: `parent` is the hook's task_struct argument.
    let holder = unsafe { agent_of_task(parent) }.map(|(_, entry)| entry.cgroup_id);
    let allowed = match holder {
        None => true,
        Some(holder) => holder == agent.cgroup_id && agent.flags & agent_flags::JIT != 0,
    };
    if allowed {
        return 0;
    }
    refuse_on(parent, cgroup_id, agent, op::PTRACE, 0, true)
}

// Changing how another process is scheduled or limited: within the agent only (its own
// processes: setpriority(0), sched_setaffinity(0), prlimit on itself).

#[lsm(hook = "task_setnice")]
pub fn task_setnice(ctx: LsmContext) -> i32 {
    within_agent(ctx.arg(0), op::TASK_CHANGE, task_change::NICE, true)
}

#[lsm(hook = "task_setioprio")]
pub fn task_setioprio(ctx: LsmContext) -> i32 {
    within_agent(ctx.arg(0), op::TASK_CHANGE, task_change::IOPRIO, true)
}

#[lsm(hook = "task_setscheduler")]
pub fn task_setscheduler(ctx: LsmContext) -> i32 {
    within_agent(ctx.arg(0), op::TASK_CHANGE, task_change::SCHEDULER, true)
}

#[lsm(hook = "task_movememory")]
pub fn task_movememory(ctx: LsmContext) -> i32 {
    within_agent(ctx.arg(0), op::TASK_CHANGE, task_change::MEMORY, true)
}

/// prlimit(2) on another process (setrlimit on oneself passes the caller as the target): a
/// RLIMIT_CPU set on claw-agent would have the kernel kill it.
#[lsm(hook = "task_setrlimit")]
pub fn task_setrlimit(ctx: LsmContext) -> i32 {
    within_agent(ctx.arg(0), op::TASK_CHANGE, task_change::RLIMIT, true)
}

/// System V IPC objects are keyed node-wide: an agent's process could read or change what the
/// host or another agent shares (a shared memory segment, a queue's messages). Every use is
/// refused to agents — attach, send, receive, operate, control; a new object may be made, and
/// then not used. `ipc_permission` is asked before each use hook (msgsnd, msgrcv, semop, shmat,
/// and associating a key).
#[lsm(hook = "ipc_permission")]
pub fn ipc_permission(_ctx: LsmContext) -> i32 {
    refuse_ipc()
}

#[lsm(hook = "msg_queue_msgctl")]
pub fn msg_queue_msgctl(ctx: LsmContext) -> i32 {
    ipc_control(&ctx)
}

#[lsm(hook = "sem_semctl")]
pub fn sem_semctl(ctx: LsmContext) -> i32 {
    ipc_control(&ctx)
}

#[lsm(hook = "shm_shmctl")]
pub fn shm_shmctl(ctx: LsmContext) -> i32 {
    ipc_control(&ctx)
}

/// msgctl, semctl, shmctl: on an object refused (IPC_RMID and IPC_SET check no permission
/// before this hook); without one (IPC_INFO, MSG_INFO...: counts only) allowed.
#[inline(always)]
fn ipc_control(ctx: &LsmContext) -> i32 {
    // (struct kern_ipc_perm *perm, int cmd)
    let perm: *const u8 = ctx.arg(0);
    if perm.is_null() {
        return 0;
    }
    refuse_ipc()
}

#[inline(always)]
fn refuse_ipc() -> i32 {
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    refuse(cgroup_id, agent, op::SYSV_IPC)
}

/// Kernel keys and keyrings are shared by uid across the node (root's user keyring is every
/// root process's): every use by an agent is refused — reading, searching, linking, writing,
/// creating into a keyring.
#[lsm(hook = "key_permission")]
pub fn key_permission(_ctx: LsmContext) -> i32 {
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    refuse(cgroup_id, agent, op::KEY)
}

/// A module the kernel would load because an agent asked for something not yet built in (a
/// socket protocol, a line discipline, a crypto algorithm): new kernel code reachable from inside
/// — refused; the operation fails as without the module. The event names the module.
#[lsm(hook = "kernel_module_request")]
pub fn kernel_module_request(ctx: LsmContext) -> i32 {
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    let name: *const u8 = ctx.arg(0);
    let (decision, ret) = outcome(agent);
    let reported = match scratch() {
        Some(scratch) => {
            // SAFETY: a checked read of the NUL-terminated name into this CPU's scratch buffer.
            let len = unsafe {
                aya_ebpf::helpers::generated::bpf_probe_read_kernel_str(
                    scratch.path.as_mut_ptr().cast(),
                    MODULE_NAME_BYTES,
                    name.cast(),
                )
            };
            if len > 0 {
                Reported::Path(Resolved::at_start(scratch, len as usize))
            } else {
                Reported::Unresolved
            }
        }
        None => Reported::Unresolved,
    };
    report_file(
        cgroup_id,
        agent,
        op::MODULE_REQUEST,
        access::ADMIN,
        decision,
        reported,
    );
    ret
}

/// Module names and aliases ("net-pf-16-proto-18") are short.
const MODULE_NAME_BYTES: u32 = 64;

/// Watching a path reveals the names and activity below it: only where the agent may read.
#[lsm(hook = "path_notify")]
pub fn path_notify(ctx: LsmContext) -> i32 {
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    // (const struct path *path, u64 mask, unsigned int obj_type)
    let watched: *const u8 = ctx.arg(0);
    // SAFETY: checked kernel reads of the hook's `struct path`.
    let resolved = unsafe { resolve_path_walk(watched) };
    file_verdict(cgroup_id, agent, op::NOTIFY, access::READ, resolved)
}

/// POSIX ACLs change who may use a file, as chmod does; since 6.2 they are set through their
/// own hooks, not inode_setxattr (6.12 has them, 6.1 reaches `inode_setxattr`): refused as the
/// other non-user.* attributes are.
#[lsm(hook = "inode_set_acl")]
pub fn inode_set_acl(_ctx: LsmContext) -> i32 {
    refuse_xattr()
}

#[lsm(hook = "inode_remove_acl")]
pub fn inode_remove_acl(_ctx: LsmContext) -> i32 {
    refuse_xattr()
}

#[inline(always)]
fn refuse_xattr() -> i32 {
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    refuse(cgroup_id, agent, op::XATTR)
}
