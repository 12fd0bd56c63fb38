//! The kernel catalogue: one row per program of claw-ebpf — how it is attached, what it
//! enforces, which policy line kinds it decides, what it denies every agent by default, and the
//! operations its events report. Attaching, `status`, `clawctl explain` (its mechanism column
//! and its "denied by default" list) and the test that every compiled program is attached all
//! read these rows; adding a hook is one row here plus its eBPF function.
//!
//! A leaf: it uses claw-common only.

use claw_common::op;

/// Names shared with claw-ebpf (its `#[map]` statics).
pub mod maps {
    pub const AGENTS: &str = "AGENTS";
    pub const AGENT_LEVELS: &str = "AGENT_LEVELS";
    pub const FILE_RULES: &str = "FILE_RULES";
    pub const NET_RULES: &str = "NET_RULES";
    pub const EVENTS: &str = "EVENTS";
    pub const CPU_STATE: &str = "CPU_STATE";
    pub const DEVICE_RULES: &str = "DEVICE_RULES";
    pub const AGENT_EVENTS: &str = "AGENT_EVENTS";
    pub const THROTTLE: &str = "THROTTLE";
    pub const REPORTED: &str = "REPORTED";
    pub const GRANTS: &str = "GRANTS";
    pub const REDIRECTS: &str = "REDIRECTS";
    pub const ENV_RULES: &str = "ENV_RULES";
    pub const GRACE_PERIOD: &str = "GRACE_PERIOD";
    pub const DNS_ALLOW: &str = "DNS_ALLOW";
    pub const SIGNAL_OWNERS: &str = "SIGNAL_OWNERS";
}

/// Maps pinned, so that rules, counts and waiting events outlive the daemon.
pub const PINNED_MAPS: &[&str] = &[
    maps::AGENTS,
    maps::AGENT_LEVELS,
    maps::FILE_RULES,
    maps::NET_RULES,
    maps::DEVICE_RULES,
    maps::EVENTS,
    maps::CPU_STATE,
    maps::AGENT_EVENTS,
    maps::THROTTLE,
    maps::REPORTED,
    maps::GRANTS,
    maps::REDIRECTS,
    maps::ENV_RULES,
    maps::DNS_ALLOW,
    maps::SIGNAL_OWNERS,
];

/// Kernel struct members the programs read: (global in claw-ebpf, struct, member).
pub const OFFSETS: &[(&str, &str, &str)] = &[
    ("FILE_F_PATH", "file", "f_path"),
    ("FILE_F_MODE", "file", "f_mode"),
    ("FILE_F_FLAGS", "file", "f_flags"),
    ("BPRM_FILE", "linux_binprm", "file"),
    ("BPRM_P", "linux_binprm", "p"),
    ("BPRM_ARGC", "linux_binprm", "argc"),
    ("BPRM_ENVC", "linux_binprm", "envc"),
    ("VMA_VM_FILE", "vm_area_struct", "vm_file"),
    ("PATH_MNT", "path", "mnt"),
    ("PATH_DENTRY", "path", "dentry"),
    ("DENTRY_D_PARENT", "dentry", "d_parent"),
    ("DENTRY_D_NAME", "dentry", "d_name"),
    ("QSTR_NAME", "qstr", "name"),
    ("QSTR_LEN", "qstr", "len"),
    ("VFSMOUNT_MNT_ROOT", "vfsmount", "mnt_root"),
    ("MOUNT_MNT", "mount", "mnt"),
    ("MOUNT_MNT_PARENT", "mount", "mnt_parent"),
    ("MOUNT_MNT_MOUNTPOINT", "mount", "mnt_mountpoint"),
    ("TASK_FS", "task_struct", "fs"),
    ("FS_ROOT", "fs_struct", "root"),
    ("UNIX_SOCK_PATH", "unix_sock", "path"),
    ("SOCKET_SK", "socket", "sk"),
    ("TASK_CGROUPS", "task_struct", "cgroups"),
    ("TASK_TGID", "task_struct", "tgid"),
    ("CSS_SET_DFL_CGRP", "css_set", "dfl_cgrp"),
    ("CGROUP_KN", "cgroup", "kn"),
    ("CGROUP_LEVEL", "cgroup", "level"),
    ("CGROUP_ANCESTORS", "cgroup", "ancestors"),
    ("KERNFS_NODE_ID", "kernfs_node", "id"),
    ("SOCK_FAMILY", "sock_common", "skc_family"),
    ("SOCK_PROTOCOL", "sock", "sk_protocol"),
    ("SOCK_NUM", "sock_common", "skc_num"),
    ("SOCK_RCV_SADDR", "sock_common", "skc_rcv_saddr"),
    ("SOCK_V6_RCV_SADDR", "sock_common", "skc_v6_rcv_saddr"),
    ("VMA_ANON_VMA", "vm_area_struct", "anon_vma"),
    ("TASK_PERSONALITY", "task_struct", "personality"),
    ("FILE_F_OWNER", "file", "f_owner"),
    ("VFSMOUNT_MNT_SB", "vfsmount", "mnt_sb"),
    ("DENTRY_D_SB", "dentry", "d_sb"),
    ("IATTR_IA_VALID", "iattr", "ia_valid"),
    ("MOUNT_MNT_NS", "mount", "mnt_ns"),
];

/// Fields of the tracepoint records the degraded-mode programs read: (global, category, name,
/// field).
pub const TRACEPOINT_FIELDS: &[(&str, &str, &str, &str)] = &[
    (
        "EXEC_FILENAME_LOC",
        "sched",
        "sched_process_exec",
        "filename",
    ),
    (
        "OPENAT_FILENAME",
        "syscalls",
        "sys_enter_openat",
        "filename",
    ),
    ("OPENAT_FLAGS", "syscalls", "sys_enter_openat", "flags"),
];

/// Capabilities agents may not use, whatever their uid: each would step around the rules
/// (modules and raw I/O reach the kernel and the disk, sysadmin and netadmin change mount
/// namespaces, swap, NAT and routes, mknod makes devices, setfcap and mac_* change privileges).
pub const DENIED_CAPABILITIES: &[(u32, &str)] = &[
    (2, "CAP_DAC_READ_SEARCH"),
    (9, "CAP_LINUX_IMMUTABLE"),
    (12, "CAP_NET_ADMIN"),
    (13, "CAP_NET_RAW"),
    (16, "CAP_SYS_MODULE"),
    (17, "CAP_SYS_RAWIO"),
    (20, "CAP_SYS_PACCT"),
    (21, "CAP_SYS_ADMIN"),
    (22, "CAP_SYS_BOOT"),
    (25, "CAP_SYS_TIME"),
    (27, "CAP_MKNOD"),
    (30, "CAP_AUDIT_CONTROL"),
    (31, "CAP_SETFCAP"),
    (32, "CAP_MAC_OVERRIDE"),
    (33, "CAP_MAC_ADMIN"),
    (34, "CAP_SYSLOG"),
    (37, "CAP_AUDIT_READ"),
    (38, "CAP_PERFMON"),
    (39, "CAP_BPF"),
    (40, "CAP_CHECKPOINT_RESTORE"),
];

/// How a program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// A BPF LSM hook of the same name: attached once for the whole node (it looks the task's
    /// cgroup up), pinned. Needs BPF LSM.
    Lsm,
    /// A cgroup sock_addr program (its attach type is its name): attached to each agent's
    /// cgroup. Needs no BPF LSM.
    CgroupSockAddr,
    /// The cgroup device program: attached to each agent's cgroup. Needs no BPF LSM.
    CgroupDevice,
    /// A BPF trampoline at a kernel function's entry, with the LSM programs (full coverage
    /// only): it decides nothing, it records what an LSM program needs. Attached once, pinned.
    Fentry { function: &'static str },
    /// A tracepoint, in degraded mode only (no BPF LSM): it reports, it never enforces.
    Tracepoint {
        category: &'static str,
        name: &'static str,
    },
}

/// One program of claw-ebpf.
#[derive(Debug)]
pub struct Program {
    /// Its name in claw-ebpf; an LSM program is named after its hook.
    pub name: &'static str,
    pub attach: Attach,
    /// What it enforces (or, a tracepoint, reports), for status and explain.
    pub enforces: &'static str,
    /// The policy line kinds (`describe::RuleLine::kind`) it decides, for explain.
    pub rule_kinds: &'static [&'static str],
    /// What it denies every agent unless a rule names it, for explain. Rows that share a
    /// denial share its text; the list shows it once.
    pub denied_by_default: &'static [&'static str],
    /// The operations its events report (claw_common::op).
    pub ops: &'static [u32],
}

impl Program {
    /// The hook as status and explain show it: `lsm/file_open`, `cgroup/connect4`,
    /// `cgroup/dev`, `tracepoint/sched/sched_process_exec`.
    pub fn hook(&self) -> String {
        match self.attach {
            Attach::Lsm => format!("lsm/{}", self.name),
            Attach::Fentry { function } => format!("fentry/{function}"),
            Attach::CgroupSockAddr => format!("cgroup/{}", self.name),
            Attach::CgroupDevice => "cgroup/dev".to_owned(),
            Attach::Tracepoint { category, name } => format!("tracepoint/{category}/{name}"),
        }
    }

    /// The operations' names, as events show them.
    pub fn op_names(&self) -> Vec<&'static str> {
        self.ops.iter().map(|code| op::name(*code)).collect()
    }
}

const TRACING: &str =
    "tracing or writing into the agent's own processes (ptrace attach, PTRACE_TRACEME, process_vm_writev) unless jit: true: the kernel's forced writes would run code the agent wrote";
const TERMINALS: &str =
    "pushing input into a terminal (TIOCSTI) or the console's selection tricks (TIOCLINUX)";
const SIGNALS: &str =
    "signalling processes outside the agent (claw-agent, other agents, the host), also through a file's I/O-signal owner (F_SETOWN and the like)";
const TASK_CHANGES: &str =
    "changing other processes' priority, I/O priority, scheduler, CPU affinity, memory placement or resource limits (outside the agent)";
const SYSV_IPC: &str =
    "System V IPC: message queues, semaphores, shared memory (keyed node-wide; an object made inside may not be used either)";
const FILE_WRITES: &str =
    "creating, removing, renaming, linking, truncating, chmod/chown of anything not under files.write";
const CONNECTS: &str =
    "connecting (TCP, connected UDP) or sending UDP datagrams anywhere not under connect";
const UNIX_SOCKETS: &str = "connecting or sending to a Unix socket whose file is not under files.write (claw-agent's agent socket excepted: it answers an agent about its own events); abstract Unix sockets";
const MOUNTS: &str = "mount, bind mount (the old and the new mount API)";
const ROOTS: &str = "chroot, pivot_root";
const XATTRS: &str = "setting or removing extended attributes other than user.*, and POSIX ACLs";
const WRITE: &[&str] = &["write"];
const NETWORK: &[&str] = &["connect", "connect-name", "redirect"];
const NETWORK_SEND: &[&str] = &["connect", "connect-name"];
const RESOLVER: &[&str] = &["connect-name"];
const LISTENING: &[&str] = &["listen"];
const LISTENS: &str =
    "binding a port or listening (TCP) anywhere not under listen; binding port 0 for a client's ephemeral port stays allowed";

/// LSM hooks that not every supported kernel has (6.1 lacks them): loaded where the kernel has
/// them. On a kernel without one, the operation it decides reaches an attached hook instead —
/// POSIX ACLs are extended attributes there (`inode_setxattr`, `inode_removexattr`).
pub const NEWER_HOOKS: &[&str] = &["inode_set_acl", "inode_remove_acl"];

/// Every program claw loads, LSM programs in attach order.
pub const PROGRAMS: &[Program] = &[
    Program {
        name: "file_open",
        attach: Attach::Lsm,
        enforces: "files.read, files.write (open); libraries and exec (the kernel's exec opens)",
        rule_kinds: &["read", "write", "exec", "libraries", "devices"],
        denied_by_default: &[
            "opening any file not under files.read / files.write (O_TRUNC and ioctl-only opens need write)",
            "credential stores (~/.ssh, ~/.aws, ~/.config/gcloud, ~/.kube, ~/.docker/config.json, ~/.netrc, /run/secrets, /etc/shadow, ...) even under a wider rule, unless a rule names them",
            "writing in claw-agent's socket directory (/run/claw/), whatever a wider write rule says; connecting to its control socket",
        ],
        ops: &[op::OPEN],
    },
    Program {
        name: "bprm_check_security",
        attach: Attach::Lsm,
        enforces: "exec (programs and scripts)",
        rule_kinds: &["exec"],
        denied_by_default: &[
            "executing any program not under exec (scripts: the interpreter too; the ld.so trick included)",
        ],
        ops: &[op::EXEC],
    },
    Program {
        name: "bprm_committed_creds",
        attach: Attach::Lsm,
        enforces: "preload variables at exec (LD_PRELOAD, LD_AUDIT, NODE_OPTIONS, ...) unless allow_env",
        rule_kinds: &["allow_env"],
        denied_by_default: &[
            "starting a program with LD_PRELOAD, LD_AUDIT, NODE_OPTIONS, PYTHONSTARTUP, BASH_ENV, ... set, unless allow_env names it (killed before its first instruction)",
        ],
        ops: &[op::PRELOAD],
    },
    Program {
        name: "mmap_file",
        attach: Attach::Lsm,
        enforces: "libraries, exec (mapping a file executable)",
        rule_kinds: &["exec", "libraries"],
        denied_by_default: &[
            "mapping executable any file not under libraries / exec; executable memory without a file unless jit: true",
        ],
        ops: &[op::MMAP],
    },
    Program {
        name: "file_mprotect",
        attach: Attach::Lsm,
        enforces: "libraries, exec (making a file mapping executable); a private file mapping written to (copied on write) counts as memory without a file",
        rule_kinds: &["libraries"],
        denied_by_default: &[
            "making memory executable later (mprotect) unless it maps a file under libraries / exec and was never written, or jit: true",
        ],
        ops: &[op::MPROTECT],
    },
    Program {
        name: "mmap_addr",
        attach: Attach::Lsm,
        enforces: "new memory (mmap, brk) refused to a process whose personality makes all readable memory executable (READ_IMPLIES_EXEC), unless jit: true",
        rule_kinds: &[],
        denied_by_default: &[
            "memory for a process with personality READ_IMPLIES_EXEC (an executable heap), unless jit: true",
        ],
        ops: &[op::MMAP],
    },
    Program {
        name: "path_mknod",
        attach: Attach::Lsm,
        enforces: "files.write (create)",
        rule_kinds: WRITE,
        denied_by_default: &[FILE_WRITES],
        ops: &[op::MKNOD],
    },
    Program {
        name: "path_mkdir",
        attach: Attach::Lsm,
        enforces: "files.write (mkdir)",
        rule_kinds: WRITE,
        denied_by_default: &[FILE_WRITES],
        ops: &[op::MKDIR],
    },
    Program {
        name: "path_unlink",
        attach: Attach::Lsm,
        enforces: "files.write (unlink)",
        rule_kinds: WRITE,
        denied_by_default: &[FILE_WRITES],
        ops: &[op::UNLINK],
    },
    Program {
        name: "path_rmdir",
        attach: Attach::Lsm,
        enforces: "files.write (rmdir)",
        rule_kinds: WRITE,
        denied_by_default: &[FILE_WRITES],
        ops: &[op::RMDIR],
    },
    Program {
        name: "path_symlink",
        attach: Attach::Lsm,
        enforces: "files.write (symlink)",
        rule_kinds: WRITE,
        denied_by_default: &[FILE_WRITES],
        ops: &[op::SYMLINK],
    },
    Program {
        name: "path_link",
        attach: Attach::Lsm,
        enforces: "files.write (hard link: both names)",
        rule_kinds: WRITE,
        denied_by_default: &[FILE_WRITES],
        ops: &[op::LINK],
    },
    Program {
        name: "path_rename",
        attach: Attach::Lsm,
        enforces: "files.write (rename: both ends)",
        rule_kinds: WRITE,
        denied_by_default: &[FILE_WRITES],
        ops: &[op::RENAME],
    },
    Program {
        name: "path_truncate",
        attach: Attach::Lsm,
        enforces: "files.write (truncate)",
        rule_kinds: WRITE,
        denied_by_default: &[FILE_WRITES],
        ops: &[op::TRUNCATE],
    },
    Program {
        name: "path_chmod",
        attach: Attach::Lsm,
        enforces: "files.write (chmod)",
        rule_kinds: WRITE,
        denied_by_default: &[FILE_WRITES],
        ops: &[op::CHMOD],
    },
    Program {
        name: "path_chown",
        attach: Attach::Lsm,
        enforces: "files.write (chown)",
        rule_kinds: WRITE,
        denied_by_default: &[FILE_WRITES],
        ops: &[op::CHOWN],
    },
    Program {
        name: "unix_stream_connect",
        attach: Attach::Lsm,
        enforces: "files.write (connecting to a Unix socket's file); abstract sockets denied",
        rule_kinds: WRITE,
        denied_by_default: &[UNIX_SOCKETS],
        ops: &[op::UNIX_CONNECT],
    },
    Program {
        name: "unix_may_send",
        attach: Attach::Lsm,
        enforces: "files.write (sending to a Unix socket's file); abstract sockets denied",
        rule_kinds: WRITE,
        denied_by_default: &[UNIX_SOCKETS],
        ops: &[op::UNIX_CONNECT],
    },
    Program {
        name: "socket_create",
        attach: Attach::Lsm,
        enforces: "sockets but TCP, UDP, Unix and kernel netlink (route, sock_diag, uevent, generic) denied (they would skip the connect and listen rules)",
        rule_kinds: &[],
        denied_by_default: &[
            "raw, packet and ping sockets; over IPv4 and IPv6 every protocol but TCP and UDP (SCTP, MPTCP, UDP-Lite)",
            "socket families the rules do not describe (vsock, AF_ALG, Bluetooth, CAN, XDP, ...): only Unix, IPv4, IPv6 and netlink — of netlink, route, sock_diag, uevents and generic (not NETLINK_USERSOCK, a channel between processes; not audit)",
        ],
        ops: &[op::SOCKET],
    },
    Program {
        name: "socket_listen",
        attach: Attach::Lsm,
        enforces: "listen (TCP listen on the socket's bound address and port)",
        rule_kinds: LISTENING,
        denied_by_default: &[LISTENS],
        ops: &[op::LISTEN],
    },
    Program {
        name: "socket_bind",
        attach: Attach::Lsm,
        enforces: "listen (binding a port), where BPF LSM runs: also sockets made outside the agent and handed in; cgroup/bind4 and bind6 decide without it",
        rule_kinds: LISTENING,
        denied_by_default: &[LISTENS],
        ops: &[op::BIND],
    },
    Program {
        name: "sb_mount",
        attach: Attach::Lsm,
        enforces: "mounts denied (a bind mount would give a file an allowed name)",
        rule_kinds: &[],
        denied_by_default: &[MOUNTS],
        ops: &[op::MOUNT],
    },
    Program {
        name: "move_mount",
        attach: Attach::Lsm,
        enforces: "mounts denied (the new mount API)",
        rule_kinds: &[],
        denied_by_default: &[MOUNTS],
        ops: &[op::MOUNT],
    },
    Program {
        name: "sb_pivotroot",
        attach: Attach::Lsm,
        enforces: "pivot_root denied (paths are seen from the root)",
        rule_kinds: &[],
        denied_by_default: &[ROOTS],
        ops: &[op::CHROOT],
    },
    Program {
        name: "path_chroot",
        attach: Attach::Lsm,
        enforces: "chroot denied (paths are seen from the root)",
        rule_kinds: &[],
        denied_by_default: &[ROOTS],
        ops: &[op::CHROOT],
    },
    Program {
        name: "bpf",
        attach: Attach::Lsm,
        enforces: "the bpf() syscall denied (claw's own maps and programs)",
        rule_kinds: &[],
        denied_by_default: &["the bpf() syscall"],
        ops: &[op::BPF],
    },
    Program {
        name: "capable",
        attach: Attach::Lsm,
        enforces: "capabilities on the deny list refused (modules, raw I/O, sysadmin, netadmin, ...)",
        rule_kinds: &[],
        denied_by_default: &[
            "capabilities that step around rules (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_SYS_MODULE, ...)",
        ],
        ops: &[op::CAPABILITY],
    },
    Program {
        name: "inode_setxattr",
        attach: Attach::Lsm,
        enforces: "files.write (user.* extended attributes); others may not be set",
        rule_kinds: &["write"],
        denied_by_default: &[XATTRS],
        ops: &[op::XATTR],
    },
    Program {
        name: "inode_removexattr",
        attach: Attach::Lsm,
        enforces: "files.write (user.* extended attributes); others may not be removed",
        rule_kinds: &["write"],
        denied_by_default: &[XATTRS],
        ops: &[op::XATTR],
    },
    Program {
        name: "inode_setattr",
        attach: Attach::Lsm,
        enforces: "files.write (a file's access and modification times: utimensat, futimens)",
        rule_kinds: &["write"],
        denied_by_default: &[],
        ops: &[op::TIMES],
    },
    Program {
        name: "task_alloc",
        attach: Attach::Lsm,
        enforces: "clone3(CLONE_INTO_CGROUP) denied: a child may not start outside the agent",
        rule_kinds: &[],
        denied_by_default: &["starting a child in another cgroup (clone3 with CLONE_INTO_CGROUP)"],
        ops: &[op::CLONE_INTO_CGROUP],
    },
    Program {
        name: "task_kill",
        attach: Attach::Lsm,
        enforces: "signals to processes outside the agent denied (claw-agent, other agents, the host)",
        rule_kinds: &[],
        denied_by_default: &[SIGNALS],
        ops: &[op::SIGNAL],
    },
    Program {
        name: "ptrace_access_check",
        attach: Attach::Lsm,
        enforces: "tracing processes outside the agent denied; attaching (ptrace, /proc/PID/mem, process_vm_writev) within it only with jit: true",
        rule_kinds: &[],
        denied_by_default: &[
            "other processes' /proc/PID/environ, mem, maps (ptrace read access, outside the agent's own cgroup); tracing them",
            TRACING,
        ],
        ops: &[op::PTRACE],
    },
    Program {
        name: "ptrace_traceme",
        attach: Attach::Lsm,
        enforces: "PTRACE_TRACEME: a parent in another agent may not become the tracer, nor one in the agent unless jit: true",
        rule_kinds: &[],
        denied_by_default: &[TRACING],
        ops: &[op::PTRACE],
    },
    Program {
        name: "task_setnice",
        attach: Attach::Lsm,
        enforces: "setpriority on processes outside the agent denied",
        rule_kinds: &[],
        denied_by_default: &[TASK_CHANGES],
        ops: &[op::TASK_CHANGE],
    },
    Program {
        name: "task_setioprio",
        attach: Attach::Lsm,
        enforces: "ioprio_set on processes outside the agent denied",
        rule_kinds: &[],
        denied_by_default: &[TASK_CHANGES],
        ops: &[op::TASK_CHANGE],
    },
    Program {
        name: "task_setscheduler",
        attach: Attach::Lsm,
        enforces: "sched_setscheduler, sched_setattr, sched_setaffinity on processes outside the agent denied",
        rule_kinds: &[],
        denied_by_default: &[TASK_CHANGES],
        ops: &[op::TASK_CHANGE],
    },
    Program {
        name: "task_movememory",
        attach: Attach::Lsm,
        enforces: "migrate_pages, move_pages on processes outside the agent denied",
        rule_kinds: &[],
        denied_by_default: &[TASK_CHANGES],
        ops: &[op::TASK_CHANGE],
    },
    Program {
        name: "task_setrlimit",
        attach: Attach::Lsm,
        enforces: "prlimit on processes outside the agent denied",
        rule_kinds: &[],
        denied_by_default: &[TASK_CHANGES],
        ops: &[op::TASK_CHANGE],
    },
    Program {
        name: "ipc_permission",
        attach: Attach::Lsm,
        enforces: "System V IPC denied: msgget, msgsnd, msgrcv, semget, semop, shmget, shmat on an existing object",
        rule_kinds: &[],
        denied_by_default: &[SYSV_IPC],
        ops: &[op::SYSV_IPC],
    },
    Program {
        name: "msg_queue_msgctl",
        attach: Attach::Lsm,
        enforces: "System V IPC denied: msgctl on a queue",
        rule_kinds: &[],
        denied_by_default: &[SYSV_IPC],
        ops: &[op::SYSV_IPC],
    },
    Program {
        name: "sem_semctl",
        attach: Attach::Lsm,
        enforces: "System V IPC denied: semctl on a semaphore set",
        rule_kinds: &[],
        denied_by_default: &[SYSV_IPC],
        ops: &[op::SYSV_IPC],
    },
    Program {
        name: "shm_shmctl",
        attach: Attach::Lsm,
        enforces: "System V IPC denied: shmctl on a segment",
        rule_kinds: &[],
        denied_by_default: &[SYSV_IPC],
        ops: &[op::SYSV_IPC],
    },
    Program {
        name: "inode_set_acl",
        attach: Attach::Lsm,
        enforces: "POSIX ACLs may not be set (6.2 and later; before, they are extended attributes)",
        rule_kinds: &[],
        denied_by_default: &[XATTRS],
        ops: &[op::XATTR],
    },
    Program {
        name: "inode_remove_acl",
        attach: Attach::Lsm,
        enforces: "POSIX ACLs may not be removed (6.2 and later; before, they are extended attributes)",
        rule_kinds: &[],
        denied_by_default: &[XATTRS],
        ops: &[op::XATTR],
    },
    Program {
        name: "key_permission",
        attach: Attach::Lsm,
        enforces: "kernel keys and keyrings denied (shared by uid with the rest of the node)",
        rule_kinds: &[],
        denied_by_default: &["kernel keys and keyrings (keyctl, request_key, add_key): shared by uid with processes outside the agent"],
        ops: &[op::KEY],
    },
    Program {
        name: "kernel_module_request",
        attach: Attach::Lsm,
        enforces: "modules the kernel would load on an agent's behalf denied",
        rule_kinds: &[],
        denied_by_default: &["kernel modules loaded on an agent's behalf (a socket protocol, line discipline or algorithm not yet loaded): the operation fails as without the module"],
        ops: &[op::MODULE_REQUEST],
    },
    Program {
        name: "path_notify",
        attach: Attach::Lsm,
        enforces: "files.read (watching a path: inotify, fanotify, dnotify)",
        rule_kinds: &["read"],
        denied_by_default: &[],
        ops: &[op::NOTIFY],
    },
    Program {
        name: "file_fcntl",
        attach: Attach::Lsm,
        enforces: "I/O-signal owners and signals an agent sets (F_SETOWN, F_SETOWN_EX, F_SETSIG, O_ASYNC) recorded before they are set",
        rule_kinds: &[],
        denied_by_default: &[SIGNALS],
        ops: &[op::SIGNAL],
    },
    Program {
        name: "file_ioctl",
        attach: Attach::Lsm,
        enforces: "I/O-signal owners an agent sets (FIOSETOWN, SIOCSPGRP, FIOASYNC) recorded before they are set; terminal input injection (TIOCSTI, TIOCLINUX) denied",
        rule_kinds: &[],
        denied_by_default: &[SIGNALS, TERMINALS],
        ops: &[op::SIGNAL, op::TERMINAL],
    },
    Program {
        name: "file_ioctl_compat",
        attach: Attach::Lsm,
        enforces: "I/O-signal owners an agent sets from a 32-bit process recorded before they are set",
        rule_kinds: &[],
        denied_by_default: &[SIGNALS, TERMINALS],
        ops: &[op::SIGNAL, op::TERMINAL],
    },
    Program {
        name: "file_set_fowner",
        attach: Attach::Lsm,
        enforces: "I/O-signal owners recorded (an agent's) or forgotten (set outside agents)",
        rule_kinds: &[],
        denied_by_default: &[SIGNALS],
        ops: &[op::SIGNAL],
    },
    Program {
        name: "file_free_security",
        attach: Attach::Lsm,
        enforces: "a freed file's I/O-signal owner record removed",
        rule_kinds: &[],
        denied_by_default: &[SIGNALS],
        ops: &[op::SIGNAL],
    },
    Program {
        name: "file_send_sigiotask",
        attach: Attach::Lsm,
        enforces: "signals a file sends (SIGIO, SIGURG) reach only the agent whose process set its owner",
        rule_kinds: &[],
        denied_by_default: &[SIGNALS],
        ops: &[op::SIGNAL],
    },
    Program {
        name: "mnt_want_write",
        attach: Attach::Fentry {
            function: "mnt_want_write",
        },
        enforces: "records the mount an agent's thread writes through, for lsm/inode_setattr, inode_setxattr and inode_removexattr (which get no mount)",
        rule_kinds: &["write"],
        denied_by_default: &[],
        ops: &[],
    },
    Program {
        name: "mnt_want_write_file",
        attach: Attach::Fentry {
            function: "mnt_want_write_file",
        },
        enforces: "records the mount of a file an agent's thread writes through (futimens, fsetxattr), as mnt_want_write",
        rule_kinds: &["write"],
        denied_by_default: &[],
        ops: &[],
    },
    Program {
        name: "connect4",
        attach: Attach::CgroupSockAddr,
        enforces: "connect (TCP, and connected UDP), IPv4",
        rule_kinds: NETWORK,
        denied_by_default: &[
            CONNECTS,
            "cloud metadata, link-local and the node's own addresses under a wider connect rule, unless a rule names them",
        ],
        ops: &[op::CONNECT],
    },
    Program {
        name: "connect6",
        attach: Attach::CgroupSockAddr,
        enforces: "connect (TCP, and connected UDP), IPv6 and IPv4-mapped",
        rule_kinds: NETWORK,
        denied_by_default: &[CONNECTS],
        ops: &[op::CONNECT],
    },
    Program {
        name: "sendmsg4",
        attach: Attach::CgroupSockAddr,
        enforces: "UDP sendto/sendmsg to an unconnected destination, IPv4",
        rule_kinds: NETWORK_SEND,
        denied_by_default: &[CONNECTS],
        ops: &[op::SENDMSG],
    },
    Program {
        name: "sendmsg6",
        attach: Attach::CgroupSockAddr,
        enforces: "UDP sendto/sendmsg to an unconnected destination, IPv6 and IPv4-mapped",
        rule_kinds: NETWORK_SEND,
        denied_by_default: &[CONNECTS],
        ops: &[op::SENDMSG],
    },
    Program {
        name: "bind4",
        attach: Attach::CgroupSockAddr,
        enforces: "listen (binding a port), IPv4, where BPF LSM does not run (lsm/socket_bind decides where it does)",
        rule_kinds: LISTENING,
        denied_by_default: &[LISTENS],
        ops: &[op::BIND],
    },
    Program {
        name: "bind6",
        attach: Attach::CgroupSockAddr,
        enforces: "listen (binding a port), IPv6 and IPv4-mapped, where BPF LSM does not run (lsm/socket_bind decides where it does)",
        rule_kinds: LISTENING,
        denied_by_default: &[LISTENS],
        ops: &[op::BIND],
    },
    Program {
        name: "recvmsg4",
        attach: Attach::CgroupSockAddr,
        enforces: "UDP answers to DNS sent to the agent's resolver show the server it was sent to, IPv4",
        rule_kinds: RESOLVER,
        denied_by_default: &[],
        ops: &[],
    },
    Program {
        name: "recvmsg6",
        attach: Attach::CgroupSockAddr,
        enforces: "UDP answers to DNS sent to the agent's resolver show the server it was sent to, IPv6",
        rule_kinds: RESOLVER,
        denied_by_default: &[],
        ops: &[],
    },
    Program {
        name: "getpeername4",
        attach: Attach::CgroupSockAddr,
        enforces: "a socket connected to the agent's resolver shows the DNS server it addressed, IPv4",
        rule_kinds: RESOLVER,
        denied_by_default: &[],
        ops: &[],
    },
    Program {
        name: "getpeername6",
        attach: Attach::CgroupSockAddr,
        enforces: "a socket connected to the agent's resolver shows the DNS server it addressed, IPv6",
        rule_kinds: RESOLVER,
        denied_by_default: &[],
        ops: &[],
    },
    Program {
        name: "device_access",
        attach: Attach::CgroupDevice,
        enforces: "devices: the base set for every agent, GPU nodes with devices.gpu; all others denied",
        rule_kinds: &["devices"],
        denied_by_default: &["device nodes but the base set (null, zero, random, tty, ...); GPU nodes unless devices.gpu"],
        ops: &[op::DEVICE],
    },
    Program {
        name: "audit_exec",
        attach: Attach::Tracepoint {
            category: "sched",
            name: "sched_process_exec",
        },
        enforces: "exec outside exec rules, reported only (degraded: not enforced)",
        rule_kinds: &[],
        denied_by_default: &[],
        ops: &[op::EXEC],
    },
    Program {
        name: "audit_openat",
        attach: Attach::Tracepoint {
            category: "syscalls",
            name: "sys_enter_openat",
        },
        enforces: "opens outside files rules, reported only, paths as passed (degraded: not enforced)",
        rule_kinds: &[],
        denied_by_default: &[],
        ops: &[op::OPEN],
    },
];

/// The programs attached one way, in catalogue order.
pub fn attached_as(matches: fn(&Attach) -> bool) -> impl Iterator<Item = &'static Program> {
    PROGRAMS.iter().filter(move |p| matches(&p.attach))
}

pub fn lsm_programs() -> impl Iterator<Item = &'static Program> {
    attached_as(|a| *a == Attach::Lsm)
}

pub fn fentry_programs() -> impl Iterator<Item = &'static Program> {
    attached_as(|a| matches!(a, Attach::Fentry { .. }))
}

pub fn net_programs() -> impl Iterator<Item = &'static Program> {
    attached_as(|a| *a == Attach::CgroupSockAddr)
}

pub fn device_program() -> &'static Program {
    attached_as(|a| *a == Attach::CgroupDevice)
        .next()
        .expect("the catalogue has the device program")
}

pub fn tracepoint_programs() -> impl Iterator<Item = &'static Program> {
    attached_as(|a| matches!(a, Attach::Tracepoint { .. }))
}

/// What a kind of policy line is enforced with: the programs that decide it (catalogue order)
/// and the map or file they consult.
pub fn mechanism(rule_kind: &str) -> (Vec<&'static Program>, &'static str) {
    let programs = PROGRAMS
        .iter()
        .filter(|p| p.rule_kinds.contains(&rule_kind))
        .collect();
    let consults = match rule_kind {
        "read" | "write" | "exec" | "libraries" => "FILE_RULES (LPM trie)",
        "connect" => "NET_RULES (LPM trie)",
        "listen" => "NET_RULES (LPM trie, listen entries)",
        "connect-name" => "DNS_ALLOW (hash: what the agent's resolver answered)",
        "allow_env" => "ENV_RULES (LPM trie)",
        "redirect" => "REDIRECTS (LPM trie)",
        "devices" => "DEVICE_RULES (hash)",
        "limit" => "the cgroup's memory.max, memory.high, pids.max, cpu.max",
        _ => "AGENTS (hash)",
    };
    (programs, consults)
}

/// What every agent is denied unless a rule names it: each row's denials, once each, in
/// catalogue order.
pub fn denied_by_default() -> Vec<&'static str> {
    let mut denials: Vec<&'static str> = Vec::new();
    for denial in PROGRAMS.iter().flat_map(|p| p.denied_by_default) {
        if !denials.contains(denial) {
            denials.push(denial);
        }
    }
    denials
}

/// The name of a denied capability (`CAP_SYS_ADMIN`), or its number.
pub fn capability_name(number: u16) -> String {
    DENIED_CAPABILITIES
        .iter()
        .find(|(cap, _)| u32::from(number) == *cap)
        .map_or_else(
            || format!("capability {number}"),
            |(_, name)| (*name).to_owned(),
        )
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, path::Path};

    use super::*;

    /// The decisions docs/lsm-hooks.md may give a hook.
    const DECISIONS: &[&str] = &["enforced", "denied", "allowed", "not controllable"];

    fn lines_of(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// docs/lsm-hooks.md has a row for every LSM hook of both kernels (docs/lsm-hooks/*.txt)
    /// and none for another; a hook the catalogue attaches is `enforced` or `denied` there, and
    /// only those; every such row names a VM case that exists; every other row says why.
    #[test]
    fn the_hook_table_decides_every_hook_and_agrees_with_the_catalogue() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut hooks = BTreeSet::new();
        for kernel in ["6.1", "6.12"] {
            let list = repo.join(format!("docs/lsm-hooks/{kernel}.txt"));
            hooks.extend(
                lines_of(&list)
                    .into_iter()
                    .filter(|l| !l.is_empty() && !l.starts_with('#')),
            );
        }
        assert!(
            hooks.len() > 200,
            "the hook lists hold {} hooks",
            hooks.len()
        );
        let mut cases = String::new();
        for entry in std::fs::read_dir(repo.join("tests/src/cases")).unwrap() {
            cases.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
        }
        let attached: BTreeSet<&str> = PROGRAMS
            .iter()
            .filter(|p| p.attach == Attach::Lsm)
            .map(|p| p.name)
            .collect();
        let mut problems = Vec::new();
        let mut rows = BTreeSet::new();
        for line in lines_of(&repo.join("docs/lsm-hooks.md")) {
            if !line.starts_with("| `") {
                continue;
            }
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let [hook, _kernels, decision, _by, why, case] = cells[..] else {
                problems.push(format!("not six columns: {line}"));
                continue;
            };
            let hook = hook.trim_matches('`').to_owned();
            if !hooks.contains(&hook) {
                problems.push(format!("{hook}: in neither kernel's hook list"));
            }
            if !DECISIONS.contains(&decision) {
                problems.push(format!(
                    "{hook}: decision `{decision}` is not one of {DECISIONS:?}"
                ));
            }
            let deciding = decision == "enforced" || decision == "denied";
            if deciding != attached.contains(hook.as_str()) {
                problems.push(format!(
                    "{hook}: `{decision}`, but the catalogue {} it",
                    if deciding {
                        "does not attach"
                    } else {
                        "attaches"
                    }
                ));
            }
            if deciding && (case == "-" || !cases.contains(&format!("\"{case}\""))) {
                problems.push(format!("{hook}: no VM case `{case}` in tests/src/cases"));
            }
            if why.is_empty() || why == "-" {
                problems.push(format!("{hook}: says not why"));
            }
            if !rows.insert(hook.clone()) {
                problems.push(format!("{hook}: more than one row"));
            }
        }
        for hook in hooks.difference(&rows) {
            problems.push(format!("{hook}: no row"));
        }
        assert!(
            problems.is_empty(),
            "docs/lsm-hooks.md:\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn every_rule_kind_that_the_kernel_decides_has_programs() {
        for kind in [
            "read",
            "write",
            "exec",
            "libraries",
            "connect",
            "connect-name",
            "listen",
            "redirect",
            "allow_env",
            "devices",
        ] {
            assert!(!mechanism(kind).0.is_empty(), "{kind}");
        }
        assert!(mechanism("limit").0.is_empty());
    }

    /// An enforcing program either decides a kind of rule or denies something by default:
    /// otherwise explain could not show what it is for.
    #[test]
    fn every_enforcing_program_says_what_it_is_for() {
        for program in PROGRAMS
            .iter()
            .filter(|p| !matches!(p.attach, Attach::Tracepoint { .. }))
        {
            assert!(
                !program.rule_kinds.is_empty() || !program.denied_by_default.is_empty(),
                "{}",
                program.name
            );
        }
    }

    /// Every operation an event can name is reported by some program, and every program's
    /// operations have names.
    #[test]
    fn every_operation_has_a_program_and_a_name() {
        for (code, name) in op::NAMES {
            assert!(
                PROGRAMS.iter().any(|p| p.ops.contains(&code)),
                "no program reports {name}"
            );
        }
        for program in PROGRAMS {
            for name in program.op_names() {
                assert_ne!(name, "unknown", "{}", program.name);
            }
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = PROGRAMS.iter().map(|p| p.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PROGRAMS.len());
    }
}
