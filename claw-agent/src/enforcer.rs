//! The kernel side of the daemon: loads claw's programs, installs compiled policies into their
//! maps (atomically per agent), attaches them, and reads their counters. One owner holds it;
//! nothing else touches BPF.

use std::{
    collections::HashMap as StdHashMap,
    fs::File,
    io,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, ArrayOfMaps, HashMap, LpmTrie, MapData, PerCpuArray, RingBuf},
    programs::{
        links::{CgroupAttachMode, FdLink, PinnedLink},
        CgroupDevice, CgroupSockAddr, Lsm, ProgramError, TracePoint,
    },
    Ebpf, EbpfLoader,
};
use claw_common::{
    agent_flags, counter, mode, AgentEntry, CpuState, DeviceKey, Grant, GrantKey, NetRuleKey,
    NetRuleValue, PathRuleKey, Redirect, Resolved, ResolvedKey,
};

use crate::{
    btf::{Btf, BtfError},
    cgroupfs::{self, CgroupError},
    compile::{Compiled, CompiledAgent, FileRule, NetRule, RedirectEntry},
    devices,
    ingest::{KernelEvents, ReportLimits},
    pins::{self, PinError, Pins},
    policy::Mode,
    protocol::{Counters, ProgramStatus},
    tracefs::{self, TracefsError},
};

/// claw's kernel programs, built by build.rs from claw-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/claw"));

/// Names shared with claw-ebpf (its `#[map]` statics).
pub mod names {
    pub const AGENTS: &str = "AGENTS";
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
}

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
    ("KERNFS_NODE_ID", "kernfs_node", "id"),
];

/// Every BPF LSM program claw attaches, in attach order: (hook, what it enforces). Each program
/// of claw-ebpf is named after its hook.
pub const LSM_HOOKS: &[(&str, &str)] = &[
    (
        "file_open",
        "files.read, files.write (open); libraries and exec (the kernel's exec opens)",
    ),
    ("bprm_check_security", "exec (programs and scripts)"),
    (
        "bprm_committed_creds",
        "preload variables at exec (LD_PRELOAD, LD_AUDIT, NODE_OPTIONS, ...) unless allow_env",
    ),
    ("mmap_file", "libraries, exec (mapping a file executable)"),
    (
        "file_mprotect",
        "libraries, exec (making a file mapping executable)",
    ),
    ("path_mknod", "files.write (create)"),
    ("path_mkdir", "files.write (mkdir)"),
    ("path_unlink", "files.write (unlink)"),
    ("path_rmdir", "files.write (rmdir)"),
    ("path_symlink", "files.write (symlink)"),
    ("path_link", "files.write (hard link: both names)"),
    ("path_rename", "files.write (rename: both ends)"),
    ("path_truncate", "files.write (truncate)"),
    ("path_chmod", "files.write (chmod)"),
    ("path_chown", "files.write (chown)"),
    (
        "unix_stream_connect",
        "files.write (connecting to a Unix socket's file); abstract sockets denied",
    ),
    (
        "unix_may_send",
        "files.write (sending to a Unix socket's file); abstract sockets denied",
    ),
    (
        "socket_create",
        "raw and packet sockets denied (they would skip the connect rules)",
    ),
    (
        "sb_mount",
        "mounts denied (a bind mount would give a file an allowed name)",
    ),
    ("move_mount", "mounts denied (the new mount API)"),
    (
        "sb_pivotroot",
        "pivot_root denied (paths are seen from the root)",
    ),
    (
        "path_chroot",
        "chroot denied (paths are seen from the root)",
    ),
    (
        "bpf",
        "the bpf() syscall denied (claw's own maps and programs)",
    ),
    (
        "capable",
        "capabilities on the deny list refused (modules, raw I/O, sysadmin, netadmin, ...)",
    ),
    (
        "inode_setxattr",
        "extended attributes other than user.* may not be set",
    ),
    (
        "inode_removexattr",
        "extended attributes other than user.* may not be removed",
    ),
    (
        "task_alloc",
        "clone3(CLONE_INTO_CGROUP) denied: a child may not start outside the agent",
    ),
    (
        "task_kill",
        "signals to processes outside the agent denied (claw-agent, other agents, the host)",
    ),
    (
        "ptrace_access_check",
        "tracing processes outside the agent denied",
    ),
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

/// cgroup sock_addr programs, attached to each agent's cgroup: they need no BPF LSM.
pub const NET_PROGRAMS: &[(&str, &str)] = &[
    ("connect4", "connect (TCP, and connected UDP), IPv4"),
    (
        "connect6",
        "connect (TCP, and connected UDP), IPv6 and IPv4-mapped",
    ),
    (
        "sendmsg4",
        "UDP sendto/sendmsg to an unconnected destination, IPv4",
    ),
    (
        "sendmsg6",
        "UDP sendto/sendmsg to an unconnected destination, IPv6 and IPv4-mapped",
    ),
    (
        "recvmsg4",
        "UDP answers to DNS sent to the agent's resolver show the server it was sent to, IPv4",
    ),
    (
        "recvmsg6",
        "UDP answers to DNS sent to the agent's resolver show the server it was sent to, IPv6",
    ),
    (
        "getpeername4",
        "a socket connected to the agent's resolver shows the DNS server it addressed, IPv4",
    ),
    (
        "getpeername6",
        "a socket connected to the agent's resolver shows the DNS server it addressed, IPv6",
    ),
];

/// The cgroup device program, attached to each agent's cgroup: it needs no BPF LSM.
pub const DEVICE_PROGRAM: &str = "device_access";

/// Degraded mode's reporters, tracepoints that load without BPF LSM: (program, category, name,
/// what it reports).
pub const AUDIT_TRACEPOINTS: &[(&str, &str, &str, &str)] = &[
    (
        "audit_exec",
        "sched",
        "sched_process_exec",
        "exec outside exec rules, reported only (degraded: not enforced)",
    ),
    (
        "audit_openat",
        "syscalls",
        "sys_enter_openat",
        "opens outside files rules, reported only, paths as passed (degraded: not enforced)",
    ),
];

/// Fields of the tracepoint records those programs read: (global, category, name, field).
const TRACEPOINT_FIELDS: &[(&str, &str, &str, &str)] = &[
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

/// Where the kernel lists its active LSMs.
pub const LSM_LIST: &str = "/sys/kernel/security/lsm";

#[derive(Debug, thiserror::Error)]
pub enum EnforcerError {
    #[error("tool call `{call}`: {reason}")]
    Call { call: String, reason: String },
    #[error("reading kernel struct layout: {0}")]
    Btf(#[from] BtfError),
    #[error("loading claw's eBPF object: {0}")]
    Object(#[source] aya::EbpfError),
    #[error("claw's eBPF object has no {what} `{name}` (a build mismatch)")]
    Missing { what: &'static str, name: String },
    #[error("reading the kernel's BTF: {0}")]
    KernelBtf(#[source] aya::BtfError),
    #[error(
        "this kernel refuses BPF LSM programs: loading lsm/{hook} failed: {reason}. \
         claw enforces file and exec rules with BPF LSM and will not run without it; use a kernel \
         built with CONFIG_BPF_LSM=y that permits BPF trampolines (`bpf` in the lsm= boot \
         parameter), or start claw-agent with --degraded to enforce network rules only and audit \
         the rest"
    )]
    LsmRefused { hook: &'static str, reason: String },
    #[error(
        "BPF LSM is not active: the kernel's LSM list ({list}) has no `bpf`, so attached programs \
         would never run — add bpf to the lsm= boot parameter, e.g. lsm={list},bpf"
    )]
    LsmInactive { list: String },
    #[error(
        "cannot confirm that BPF LSM is active: reading {path}: {source} — mount securityfs \
         (`mount -t securityfs securityfs /sys/kernel/security`)"
    )]
    LsmListUnreadable {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("loading {program}: {reason}")]
    Load { program: String, reason: String },
    #[error("attaching {program}: {source}")]
    Attach {
        program: String,
        #[source]
        source: ProgramError,
    },
    #[error("opening cgroup {path}: {source}")]
    CgroupOpen {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error("pinning {what} at {path}: {reason}")]
    PinLink {
        what: String,
        path: PathBuf,
        reason: String,
    },
    #[error("map `{map}`: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

fn map_error(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> EnforcerError {
    move |source| EnforcerError::Map { map, source }
}

/// Which programs run: all of them, or (without BPF LSM) the network programs only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    Full,
    /// No BPF LSM: network rules enforced, file and exec rules not.
    NetworkOnly,
}

/// One agent as installed in the kernel.
#[derive(Debug, Clone)]
pub struct InstalledAgent {
    pub name: String,
    pub cgroup: String,
    pub cgroup_id: u64,
    pub ruleset: u32,
    pub mode: Mode,
    pub jit: bool,
    pub file_rules: Vec<FileRule>,
    pub net_rules: Vec<NetRule>,
    pub redirects: Vec<RedirectEntry>,
    /// ENV_RULES entries: the preload variables refused ("NAME=").
    pub env_rules: Vec<FileRule>,
    pub device_keys: Vec<DeviceKey>,
    /// The agent whose reports this cgroup's are counted with: `cgroup_id` itself for an agent,
    /// the agent's for a tool call.
    pub agent_cgroup_id: u64,
    /// The port of the agent's resolver on 127.0.0.1 (0: none).
    pub resolver_port: u16,
    /// Held to the agent's rules, so also to the addresses its resolver answered (DNS_ALLOW).
    pub resolved_names: bool,
}

/// A tool call's cgroup as installed: a child of its agent's, held to the agent's rules or to
/// narrower ones of its own.
#[derive(Debug, Clone)]
pub struct InstalledCall {
    pub call: String,
    /// `name` is the agent's, `cgroup` and `cgroup_id` the call's. Without rules of its own the
    /// rule lists are empty and `ruleset` is the agent's.
    pub entry: InstalledAgent,
    pub narrowed: bool,
}

/// Prefix of a tool call's cgroup name under its agent's.
pub const CALL_CGROUP_PREFIX: &str = "call-";

impl InstalledAgent {
    /// Names the cgroup the programs are attached to: its path and its id, because a cgroup
    /// removed and made again under the same path is a new cgroup, with nothing attached.
    fn link_key(&self) -> String {
        format!("{}@{}", self.cgroup, self.cgroup_id)
    }
}

pub struct Enforcer {
    ebpf: Ebpf,
    /// Keeps the kernel counting program runs and run time while claw-agent runs (the live proof
    /// `explain` shows); None where the kernel refused.
    _stats: Option<std::os::fd::OwnedFd>,
    coverage: Coverage,
    cgroup_root: PathBuf,
    /// LSM programs, or in degraded mode tracepoints, attached so far.
    attached: Vec<&'static str>,
    /// The LSM programs' links, pinned: they stay attached when claw-agent dies.
    lsm_links: Vec<PinnedLink>,
    /// Per agent cgroup (InstalledAgent::link_key): its network program links, pinned.
    net_links: StdHashMap<String, Vec<(&'static str, PinnedLink)>>,
    /// Per agent cgroup: where its device program's link is pinned.
    device_links: StdHashMap<String, PathBuf>,
    installed: Vec<InstalledAgent>,
    calls: Vec<InstalledCall>,
    next_ruleset: u32,
    pins: Pins,
    /// The maps were an earlier claw-agent's: the first apply also clears what it left.
    adopting: bool,
    grace_period: GracePeriod,
}

/// Waits until every program run that began before has ended: the kernel waits for an RCU grace
/// period after each update of a map of maps, and programs run inside RCU read sections.
struct GracePeriod {
    outer: ArrayOfMaps<MapData, Array<MapData, u32>>,
    inner: Array<MapData, u32>,
}

impl GracePeriod {
    fn new(ebpf: &mut Ebpf) -> Result<Self, EnforcerError> {
        let map = take_map(ebpf, names::GRACE_PERIOD)?;
        Ok(Self {
            outer: ArrayOfMaps::try_from(map).map_err(map_error(names::GRACE_PERIOD))?,
            inner: Array::create(1, 0).map_err(map_error(names::GRACE_PERIOD))?,
        })
    }

    fn wait(&mut self) -> Result<(), EnforcerError> {
        self.outer
            .set(0, &self.inner, 0)
            .map_err(map_error(names::GRACE_PERIOD))
    }
}

/// What loading needs.
pub struct LoadOptions {
    pub vmlinux_btf: PathBuf,
    pub lsm_list: PathBuf,
    pub coverage: Coverage,
    pub cgroup_root: PathBuf,
    pub report_limits: ReportLimits,
    pub ring_buffer_bytes: u32,
    /// Where maps and links are pinned (and found, after a restart).
    pub pins: PathBuf,
}

/// The kernel's BPF_CGROUP_DEVICE attach type.
const BPF_CGROUP_DEVICE: u32 = 6;

/// Maps pinned, so that rules, counts and waiting events outlive the daemon.
pub const PINNED_MAPS: &[&str] = &[
    names::AGENTS,
    names::FILE_RULES,
    names::NET_RULES,
    names::DEVICE_RULES,
    names::EVENTS,
    names::CPU_STATE,
    names::AGENT_EVENTS,
    names::THROTTLE,
    names::REPORTED,
    names::GRANTS,
    names::REDIRECTS,
    names::ENV_RULES,
    names::DNS_ALLOW,
];

impl Enforcer {
    /// Loads the programs into the kernel (verified, not attached), with struct offsets read from
    /// `vmlinux_btf`. With `Coverage::Full`, refuses unless BPF LSM is usable and active.
    ///
    /// Maps pinned by an earlier claw-agent are adopted (its rules stay in force meanwhile);
    /// otherwise new maps are pinned, and removed again if loading fails.
    pub fn load(options: LoadOptions) -> Result<Self, EnforcerError> {
        let pins = Pins::open(&options.pins)?;
        let adopting = pins.has_maps(PINNED_MAPS);
        let loaded = Self::load_pinned(options, pins.clone(), adopting);
        if loaded.is_err() && !adopting {
            let _ = Pins::remove_all(pins.dir());
        }
        loaded
    }

    fn load_pinned(
        options: LoadOptions,
        pins: Pins,
        adopting: bool,
    ) -> Result<Self, EnforcerError> {
        let LoadOptions {
            vmlinux_btf,
            lsm_list,
            coverage,
            cgroup_root,
            report_limits,
            ring_buffer_bytes,
            ..
        } = options;
        let btf = Btf::from_file(&vmlinux_btf)?;
        let mut offsets = Vec::new();
        for (global, strukt, member) in OFFSETS {
            offsets.push((*global, u64::from(btf.member_offset(strukt, member)?)));
        }
        let denied_capabilities: u64 = DENIED_CAPABILITIES
            .iter()
            .fold(0, |bits, (cap, _)| bits | 1 << cap);
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(names::EVENTS, ring_buffer_bytes);
        for name in PINNED_MAPS {
            loader.map_pin_path(name, pins.map(name));
        }
        for (global, offset) in &offsets {
            loader.override_global(global, offset, true);
        }
        loader.override_global("DENIED_CAPABILITIES", &denied_capabilities, true);
        loader.override_global(
            "IDENTICAL_PER_SECOND",
            &report_limits.identical_per_second,
            true,
        );
        loader.override_global(
            "AGENT_EVENTS_PER_SECOND",
            &report_limits.agent_per_second,
            true,
        );
        let mut fields = Vec::new();
        if coverage == Coverage::NetworkOnly {
            let tracefs = tracefs::ensure_mounted()?;
            for (global, category, name, field) in TRACEPOINT_FIELDS {
                fields.push((
                    *global,
                    tracefs::field_offset(tracefs, category, name, field)?,
                ));
            }
        }
        for (global, offset) in &fields {
            loader.override_global(global, offset, true);
        }
        let mut ebpf = loader.load(OBJECT).map_err(EnforcerError::Object)?;
        if coverage == Coverage::NetworkOnly {
            for (program, ..) in AUDIT_TRACEPOINTS {
                tracepoint_program(&mut ebpf, program)?
                    .load()
                    .map_err(|err| EnforcerError::Load {
                        program: (*program).to_owned(),
                        reason: refusal_reason(&err),
                    })?;
            }
        }
        if coverage == Coverage::Full {
            let kernel_btf = aya::Btf::from_sys_fs().map_err(EnforcerError::KernelBtf)?;
            for (hook, _) in LSM_HOOKS {
                lsm_program(&mut ebpf, hook)?
                    .load(hook, &kernel_btf)
                    .map_err(|err| EnforcerError::LsmRefused {
                        hook,
                        reason: refusal_reason(&err),
                    })?;
            }
            check_lsm_active(&lsm_list)?;
        }
        device_program(&mut ebpf)?
            .load()
            .map_err(|err| EnforcerError::Load {
                program: "cgroup/dev".to_owned(),
                reason: refusal_reason(&err),
            })?;
        for (program, _) in NET_PROGRAMS {
            net_program(&mut ebpf, program)?
                .load()
                .map_err(|err| EnforcerError::Load {
                    program: format!("cgroup/{program}"),
                    reason: refusal_reason(&err),
                })?;
        }
        let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .inspect_err(|err| tracing::warn!("program run counts unavailable: {err}"))
            .ok();
        let grace_period = GracePeriod::new(&mut ebpf)?;
        let mut enforcer = Self {
            ebpf,
            _stats: stats,
            coverage,
            cgroup_root,
            attached: Vec::new(),
            lsm_links: Vec::new(),
            net_links: StdHashMap::new(),
            device_links: StdHashMap::new(),
            installed: Vec::new(),
            calls: Vec::new(),
            next_ruleset: 1,
            pins,
            adopting,
            grace_period,
        };
        if adopting {
            enforcer.next_ruleset = enforcer.rulesets_in_maps()?.into_iter().max().unwrap_or(0) + 1;
            tracing::info!(
                pins = %enforcer.pins.dir().display(),
                "adopting the pinned rules of an earlier claw-agent: they stay enforced until this one's are in place"
            );
        }
        Ok(enforcer)
    }

    pub fn cgroup_root(&self) -> &Path {
        &self.cgroup_root
    }

    pub fn coverage(&self) -> Coverage {
        self.coverage
    }

    pub fn installed(&self) -> &[InstalledAgent] {
        &self.installed
    }

    /// Makes `compiled` the enforced policy. Every agent's new rules are complete in the maps
    /// before its cgroup switches to them (one map update per agent); on any error the previous
    /// policy stays fully in force.
    ///
    /// Live tool calls follow their agents: onto the new rules, or with `narrowed` (by call
    /// cgroup id) onto narrowed rules of their own compiled from the new policy.
    ///
    /// `resolvers`: agent name -> the port of its resolver on 127.0.0.1.
    pub fn apply(
        &mut self,
        compiled: &Compiled,
        narrowed: &StdHashMap<u64, CompiledAgent>,
        resolvers: &StdHashMap<String, u16>,
    ) -> Result<(), EnforcerError> {
        // Majors that GPU drivers registered when they loaded (none on a machine without them).
        let majors = devices::registered_majors(
            &std::fs::read_to_string("/proc/devices").unwrap_or_default(),
        );
        let mut staged = Vec::new();
        for agent in &compiled.agents {
            let cgroup_id = cgroupfs::ensure(&self.cgroup_root, &agent.cgroup)?;
            staged.push(InstalledAgent {
                name: agent.name.clone(),
                cgroup: agent.cgroup.clone(),
                cgroup_id,
                ruleset: self.next_ruleset,
                mode: agent.mode,
                jit: agent.jit,
                file_rules: agent.file_rules.clone(),
                net_rules: agent.net_rules.clone(),
                redirects: agent.redirects.clone(),
                env_rules: agent.env_rules.clone(),
                device_keys: {
                    let mut keys = devices::keys(devices::BASE, self.next_ruleset, &majors);
                    if agent.gpu {
                        keys.extend(devices::keys(devices::GPU, self.next_ruleset, &majors));
                    }
                    keys
                },
                agent_cgroup_id: cgroup_id,
                resolver_port: resolvers.get(&agent.name).copied().unwrap_or(0),
                resolved_names: true,
            });
            self.next_ruleset += 1;
        }
        let staged_calls: Vec<InstalledCall> = self
            .calls
            .clone()
            .iter()
            .map(|call| {
                let agent = staged.iter().find(|a| a.name == call.entry.name);
                self.stage_call(agent, call, narrowed.get(&call.entry.cgroup_id), &majors)
            })
            .collect();
        let mut entries = staged.clone();
        entries.extend(staged_calls.iter().map(|c| c.entry.clone()));
        if let Err(err) = self.insert_rules(&entries) {
            let _ = self.remove_rules(&entries);
            return Err(err);
        }
        if let Err(err) = self.attach_net(&staged) {
            self.detach_net_except(
                &self
                    .installed
                    .iter()
                    .map(InstalledAgent::link_key)
                    .collect::<Vec<_>>(),
            );
            let _ = self.remove_rules(&entries);
            return Err(err);
        }
        let first = self.installed.is_empty() && self.calls.is_empty();
        let mut previous = std::mem::take(&mut self.installed);
        let previous_agents = previous.len();
        previous.extend(self.calls.iter().map(|c| c.entry.clone()));
        if let Err(err) = self.switch(&entries, &previous) {
            // Put every cgroup back on its previous rules.
            let _ = self.switch(&previous, &entries);
            let _ = self.remove_rules(&entries);
            previous.truncate(previous_agents);
            self.installed = previous;
            return Err(err);
        }
        let keep: Vec<String> = staged.iter().map(InstalledAgent::link_key).collect();
        self.detach_net_except(&keep);
        // A program that read an agent's old ruleset id just before the switch still looks its
        // rules up under that id: they stay until such runs are over.
        match self.grace_period.wait() {
            Ok(()) => {
                if let Err(err) = self.remove_rules(&previous) {
                    tracing::warn!("removing the previous policy's rules: {err}");
                }
            }
            Err(err) => tracing::warn!("previous policy's rules left in the maps: {err}"),
        }
        self.installed = staged;
        self.calls = staged_calls;
        let unremovable = if first {
            self.remove_leftover_calls()
        } else {
            Vec::new()
        };
        if self.adopting {
            self.adopting = false;
            self.remove_foreign(&unremovable)?;
        }
        Ok(())
    }

    /// A call's entry for the rules of `agent` (as staged now): the agent's own ruleset, or with
    /// `own` a fresh ruleset of narrowed rules. A call without its agent, or whose narrowed
    /// rules are missing, gets ruleset 0, which holds no rules: everything is denied to it.
    fn stage_call(
        &mut self,
        agent: Option<&InstalledAgent>,
        call: &InstalledCall,
        own: Option<&CompiledAgent>,
        majors: &StdHashMap<String, u32>,
    ) -> InstalledCall {
        let mut entry = InstalledAgent {
            file_rules: Vec::new(),
            net_rules: Vec::new(),
            redirects: Vec::new(),
            env_rules: Vec::new(),
            device_keys: Vec::new(),
            ruleset: 0,
            ..call.entry.clone()
        };
        if let Some(agent) = agent {
            entry.mode = agent.mode;
            entry.jit = agent.jit;
            entry.agent_cgroup_id = agent.cgroup_id;
            entry.resolver_port = agent.resolver_port;
            entry.resolved_names = own.is_none() && !call.narrowed;
            match own {
                Some(own) => {
                    entry.ruleset = self.next_ruleset;
                    self.next_ruleset += 1;
                    entry.file_rules = own.file_rules.clone();
                    entry.net_rules = own.net_rules.clone();
                    entry.redirects = own.redirects.clone();
                    entry.env_rules = own.env_rules.clone();
                    entry.device_keys = devices::keys(devices::BASE, entry.ruleset, majors);
                    if own.gpu {
                        entry.device_keys.extend(devices::keys(
                            devices::GPU,
                            entry.ruleset,
                            majors,
                        ));
                    }
                }
                None if call.narrowed => {}
                None => entry.ruleset = agent.ruleset,
            }
        }
        InstalledCall {
            call: call.call.clone(),
            entry,
            narrowed: call.narrowed,
        }
    }

    pub fn calls(&self) -> &[InstalledCall] {
        &self.calls
    }

    /// Makes the cgroup of tool call `call` under agent `agent` and puts it under the agent's
    /// rules, or with `own` under narrowed rules of its own, before any process is in it.
    pub fn start_call(
        &mut self,
        agent: &str,
        call: &str,
        own: Option<&CompiledAgent>,
    ) -> Result<InstalledCall, EnforcerError> {
        let failed = |reason: String| EnforcerError::Call {
            call: call.to_owned(),
            reason,
        };
        let installed = self
            .installed
            .iter()
            .find(|a| a.name == agent)
            .cloned()
            .ok_or_else(|| failed(format!("no agent `{agent}` in the enforced policy")))?;
        let cgroup = format!("{}/{CALL_CGROUP_PREFIX}{call}", installed.cgroup);
        let path = self.cgroup_root.join(&cgroup);
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                return Err(failed(format!(
                    "a call with this id is running ({} exists) — give each call its own id",
                    path.display()
                )))
            }
            Err(err) => return Err(failed(format!("creating {}: {err}", path.display()))),
        }
        let cgroup_id = match std::fs::metadata(&path) {
            Ok(meta) => std::os::unix::fs::MetadataExt::ino(&meta),
            Err(err) => {
                let _ = std::fs::remove_dir(&path);
                return Err(failed(format!("reading {}: {err}", path.display())));
            }
        };
        let template = InstalledCall {
            call: call.to_owned(),
            entry: InstalledAgent {
                cgroup,
                cgroup_id,
                ..installed.clone()
            },
            narrowed: own.is_some(),
        };
        let majors = devices::registered_majors(
            &std::fs::read_to_string("/proc/devices").unwrap_or_default(),
        );
        let staged = self.stage_call(Some(&installed), &template, own, &majors);
        let entries = [staged.entry.clone()];
        let installed = self
            .insert_rules(&entries)
            .and_then(|()| self.switch(&entries, &[]));
        if let Err(err) = installed {
            let _ = self.remove_rules(&entries);
            let _ = std::fs::remove_dir(&path);
            return Err(err);
        }
        self.calls.push(staged.clone());
        Ok(staged)
    }

    /// Lets the object of `key` through for its cgroup, as `grant` says.
    pub fn grant(&mut self, key: GrantKey, grant: Grant) -> Result<(), EnforcerError> {
        let mut grants: HashMap<_, GrantKey, Grant> =
            HashMap::try_from(map_mut(&mut self.ebpf, names::GRANTS)?)
                .map_err(map_error(names::GRANTS))?;
        grants
            .insert(key, grant, 0)
            .map_err(map_error(names::GRANTS))
    }

    /// Removes the grants made to a cgroup that is gone.
    fn remove_grants_of(&mut self, cgroup_id: u64) -> Result<(), EnforcerError> {
        let mut grants: HashMap<_, GrantKey, Grant> =
            HashMap::try_from(map_mut(&mut self.ebpf, names::GRANTS)?)
                .map_err(map_error(names::GRANTS))?;
        let theirs: Vec<GrantKey> = grants
            .keys()
            .filter_map(Result::ok)
            .filter(|key| key.cgroup_id == cgroup_id)
            .collect();
        for key in &theirs {
            let _ = grants.remove(key);
        }
        Ok(())
    }

    /// Removes grants that expired before `now_ns` (CLOCK_BOOTTIME) or are used up; returns how
    /// many.
    pub fn prune_grants(&mut self, now_ns: u64) -> Result<usize, EnforcerError> {
        let mut grants: HashMap<_, GrantKey, Grant> =
            HashMap::try_from(map_mut(&mut self.ebpf, names::GRANTS)?)
                .map_err(map_error(names::GRANTS))?;
        let spent: Vec<GrantKey> = grants
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, g)| g.expires_ns <= now_ns || g.uses_left <= 0)
            .map(|(key, _)| key)
            .collect();
        for key in &spent {
            let _ = grants.remove(key);
        }
        Ok(spent.len())
    }

    /// Kills every process of the tool call whose cgroup is `cgroup_id`.
    pub fn kill_call(&self, cgroup_id: u64) -> Result<(), EnforcerError> {
        let Some(call) = self.calls.iter().find(|c| c.entry.cgroup_id == cgroup_id) else {
            return Ok(());
        };
        cgroupfs::write_file(&self.cgroup_root, &call.entry.cgroup, "cgroup.kill", "1")?;
        Ok(())
    }

    /// Removes an ended tool call once no process is left in it: its cgroup first (so that no
    /// process can be in it unheld), then its entry and rules. False while processes remain.
    pub fn remove_call(&mut self, cgroup_id: u64) -> Result<bool, EnforcerError> {
        let Some(index) = self
            .calls
            .iter()
            .position(|c| c.entry.cgroup_id == cgroup_id)
        else {
            return Ok(true);
        };
        let call = self.calls[index].clone();
        let path = self.cgroup_root.join(&call.entry.cgroup);
        match std::fs::remove_dir(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) => return Ok(false),
            Err(err) => {
                return Err(EnforcerError::Call {
                    call: call.call,
                    reason: format!("removing {}: {err}", path.display()),
                })
            }
        }
        let entries = [call.entry];
        self.switch(&[], &entries)?;
        self.remove_rules(&entries)?;
        self.remove_grants_of(cgroup_id)?;
        self.calls.remove(index);
        Ok(true)
    }

    /// Tool-call cgroups an earlier claw-agent left under the agents' cgroups: their processes
    /// are killed and the cgroups removed, since nobody waits for those calls. Returns the ids of
    /// those that could not be removed (their entries stay: held, not freed).
    fn remove_leftover_calls(&self) -> Vec<u64> {
        let mut unremovable = Vec::new();
        for agent in &self.installed {
            let dir = self.cgroup_root.join(&agent.cgroup);
            let Ok(children) = std::fs::read_dir(&dir) else {
                continue;
            };
            for child in children.filter_map(Result::ok) {
                let name = child.file_name().to_string_lossy().into_owned();
                if !name.starts_with(CALL_CGROUP_PREFIX) || !child.path().is_dir() {
                    continue;
                }
                let path = child.path();
                let id = std::fs::metadata(&path)
                    .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                    .unwrap_or(0);
                let _ = std::fs::write(path.join("cgroup.kill"), "1");
                let removed = (0..200).any(|_| {
                    std::fs::remove_dir(&path).is_ok() || {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        false
                    }
                });
                if removed {
                    tracing::warn!(cgroup = %path.display(), "ended a tool call an earlier claw-agent left running");
                } else {
                    tracing::error!(cgroup = %path.display(), "a left-over tool call could not be ended; it stays held by its last rules");
                    unremovable.push(id);
                }
            }
        }
        unremovable
    }

    /// Every ruleset id the rule maps and AGENTS hold.
    fn rulesets_in_maps(&mut self) -> Result<Vec<u32>, EnforcerError> {
        let mut rulesets = Vec::new();
        let agents: HashMap<_, u64, AgentEntry> =
            HashMap::try_from(map_mut(&mut self.ebpf, names::AGENTS)?)
                .map_err(map_error(names::AGENTS))?;
        rulesets.extend(agents.iter().filter_map(Result::ok).map(|(_, a)| a.ruleset));
        let files: LpmTrie<_, PathRuleKey, u32> =
            LpmTrie::try_from(map_mut(&mut self.ebpf, names::FILE_RULES)?)
                .map_err(map_error(names::FILE_RULES))?;
        rulesets.extend(
            files
                .keys()
                .filter_map(Result::ok)
                .map(|k| u32::from_be_bytes(k.data().ruleset)),
        );
        let nets: LpmTrie<_, NetRuleKey, NetRuleValue> =
            LpmTrie::try_from(map_mut(&mut self.ebpf, names::NET_RULES)?)
                .map_err(map_error(names::NET_RULES))?;
        rulesets.extend(
            nets.keys()
                .filter_map(Result::ok)
                .map(|k| u32::from_be_bytes(k.data().ruleset)),
        );
        let redirects: LpmTrie<_, NetRuleKey, Redirect> =
            LpmTrie::try_from(map_mut(&mut self.ebpf, names::REDIRECTS)?)
                .map_err(map_error(names::REDIRECTS))?;
        rulesets.extend(
            redirects
                .keys()
                .filter_map(Result::ok)
                .map(|k| u32::from_be_bytes(k.data().ruleset)),
        );
        let env: LpmTrie<_, PathRuleKey, u32> =
            LpmTrie::try_from(map_mut(&mut self.ebpf, names::ENV_RULES)?)
                .map_err(map_error(names::ENV_RULES))?;
        rulesets.extend(
            env.keys()
                .filter_map(Result::ok)
                .map(|k| u32::from_be_bytes(k.data().ruleset)),
        );
        let devices: HashMap<_, DeviceKey, u8> =
            HashMap::try_from(map_mut(&mut self.ebpf, names::DEVICE_RULES)?)
                .map_err(map_error(names::DEVICE_RULES))?;
        rulesets.extend(devices.keys().filter_map(Result::ok).map(|k| k.ruleset));
        rulesets.sort_unstable();
        rulesets.dedup();
        Ok(rulesets)
    }

    /// After adopting an earlier daemon's maps and installing this daemon's policy: removes the
    /// cgroups and rules it installed that this policy does not have.
    /// `unremovable`: cgroups of left-over tool calls whose entries stay.
    fn remove_foreign(&mut self, unremovable: &[u64]) -> Result<(), EnforcerError> {
        let ours: Vec<u32> = self.installed.iter().map(|a| a.ruleset).collect();
        let mut cgroups: Vec<u64> = self.installed.iter().map(|a| a.cgroup_id).collect();
        cgroups.extend(unremovable);
        let mut agents: HashMap<_, u64, AgentEntry> =
            HashMap::try_from(map_mut(&mut self.ebpf, names::AGENTS)?)
                .map_err(map_error(names::AGENTS))?;
        let stale: Vec<u64> = agents
            .keys()
            .filter_map(Result::ok)
            .filter(|id| !cgroups.contains(id))
            .collect();
        for id in &stale {
            let _ = agents.remove(id);
        }
        let mut files: LpmTrie<_, PathRuleKey, u32> =
            LpmTrie::try_from(map_mut(&mut self.ebpf, names::FILE_RULES)?)
                .map_err(map_error(names::FILE_RULES))?;
        let foreign: Vec<_> = files
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !ours.contains(&u32::from_be_bytes(k.data().ruleset)))
            .collect();
        for key in &foreign {
            let _ = files.remove(key);
        }
        let mut nets: LpmTrie<_, NetRuleKey, NetRuleValue> =
            LpmTrie::try_from(map_mut(&mut self.ebpf, names::NET_RULES)?)
                .map_err(map_error(names::NET_RULES))?;
        let foreign: Vec<_> = nets
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !ours.contains(&u32::from_be_bytes(k.data().ruleset)))
            .collect();
        for key in &foreign {
            let _ = nets.remove(key);
        }
        let mut redirects: LpmTrie<_, NetRuleKey, Redirect> =
            LpmTrie::try_from(map_mut(&mut self.ebpf, names::REDIRECTS)?)
                .map_err(map_error(names::REDIRECTS))?;
        let foreign: Vec<_> = redirects
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !ours.contains(&u32::from_be_bytes(k.data().ruleset)))
            .collect();
        for key in &foreign {
            let _ = redirects.remove(key);
        }
        let mut env: LpmTrie<_, PathRuleKey, u32> =
            LpmTrie::try_from(map_mut(&mut self.ebpf, names::ENV_RULES)?)
                .map_err(map_error(names::ENV_RULES))?;
        let foreign: Vec<_> = env
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !ours.contains(&u32::from_be_bytes(k.data().ruleset)))
            .collect();
        for key in &foreign {
            let _ = env.remove(key);
        }
        let mut devices: HashMap<_, DeviceKey, u8> =
            HashMap::try_from(map_mut(&mut self.ebpf, names::DEVICE_RULES)?)
                .map_err(map_error(names::DEVICE_RULES))?;
        let foreign: Vec<DeviceKey> = devices
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !ours.contains(&k.ruleset))
            .collect();
        for key in &foreign {
            let _ = devices.remove(key);
        }
        tracing::info!(
            cgroups = stale.len(),
            "adopted state reconciled with the policy file"
        );
        Ok(())
    }

    /// Pins a link this daemon attached, so that it outlives the daemon.
    fn pin(&self, link: FdLink, name: &str) -> Result<PinnedLink, EnforcerError> {
        let path = self.pins.link(name);
        link.pin(&path).map_err(|err| EnforcerError::PinLink {
            what: name.to_owned(),
            path,
            reason: err.to_string(),
        })
    }

    fn insert_rules(&mut self, agents: &[InstalledAgent]) -> Result<(), EnforcerError> {
        let mut files: LpmTrie<_, PathRuleKey, u32> =
            LpmTrie::try_from(map_mut(&mut self.ebpf, names::FILE_RULES)?)
                .map_err(map_error(names::FILE_RULES))?;
        for agent in agents {
            for rule in &agent.file_rules {
                files
                    .insert(&rule.key(agent.ruleset), rule.access, 0)
                    .map_err(map_error(names::FILE_RULES))?;
            }
        }
        let mut nets: LpmTrie<_, NetRuleKey, NetRuleValue> =
            LpmTrie::try_from(map_mut(&mut self.ebpf, names::NET_RULES)?)
                .map_err(map_error(names::NET_RULES))?;
        for agent in agents {
            for rule in &agent.net_rules {
                nets.insert(&rule.key(agent.ruleset), rule.value(), 0)
                    .map_err(map_error(names::NET_RULES))?;
            }
        }
        let mut redirects: LpmTrie<_, NetRuleKey, Redirect> =
            LpmTrie::try_from(map_mut(&mut self.ebpf, names::REDIRECTS)?)
                .map_err(map_error(names::REDIRECTS))?;
        for agent in agents {
            for entry in &agent.redirects {
                redirects
                    .insert(&entry.key(agent.ruleset), entry.value(), 0)
                    .map_err(map_error(names::REDIRECTS))?;
            }
        }
        let mut env: LpmTrie<_, PathRuleKey, u32> =
            LpmTrie::try_from(map_mut(&mut self.ebpf, names::ENV_RULES)?)
                .map_err(map_error(names::ENV_RULES))?;
        for agent in agents {
            for rule in &agent.env_rules {
                env.insert(&rule.key(agent.ruleset), rule.access, 0)
                    .map_err(map_error(names::ENV_RULES))?;
            }
        }
        let mut devices: HashMap<_, DeviceKey, u8> =
            HashMap::try_from(map_mut(&mut self.ebpf, names::DEVICE_RULES)?)
                .map_err(map_error(names::DEVICE_RULES))?;
        for agent in agents {
            for key in &agent.device_keys {
                devices
                    .insert(key, 1, 0)
                    .map_err(map_error(names::DEVICE_RULES))?;
            }
        }
        Ok(())
    }

    /// Removes rules of `agents`; entries already absent are no error.
    fn remove_rules(&mut self, agents: &[InstalledAgent]) -> Result<(), EnforcerError> {
        let mut files: LpmTrie<_, PathRuleKey, u32> =
            LpmTrie::try_from(map_mut(&mut self.ebpf, names::FILE_RULES)?)
                .map_err(map_error(names::FILE_RULES))?;
        for agent in agents {
            for rule in &agent.file_rules {
                let _ = files.remove(&rule.key(agent.ruleset));
            }
        }
        let mut nets: LpmTrie<_, NetRuleKey, NetRuleValue> =
            LpmTrie::try_from(map_mut(&mut self.ebpf, names::NET_RULES)?)
                .map_err(map_error(names::NET_RULES))?;
        for agent in agents {
            for rule in &agent.net_rules {
                let _ = nets.remove(&rule.key(agent.ruleset));
            }
        }
        let mut redirects: LpmTrie<_, NetRuleKey, Redirect> =
            LpmTrie::try_from(map_mut(&mut self.ebpf, names::REDIRECTS)?)
                .map_err(map_error(names::REDIRECTS))?;
        for agent in agents {
            for entry in &agent.redirects {
                let _ = redirects.remove(&entry.key(agent.ruleset));
            }
        }
        let mut env: LpmTrie<_, PathRuleKey, u32> =
            LpmTrie::try_from(map_mut(&mut self.ebpf, names::ENV_RULES)?)
                .map_err(map_error(names::ENV_RULES))?;
        for agent in agents {
            for rule in &agent.env_rules {
                let _ = env.remove(&rule.key(agent.ruleset));
            }
        }
        let mut devices: HashMap<_, DeviceKey, u8> =
            HashMap::try_from(map_mut(&mut self.ebpf, names::DEVICE_RULES)?)
                .map_err(map_error(names::DEVICE_RULES))?;
        for agent in agents {
            for key in &agent.device_keys {
                let _ = devices.remove(key);
            }
        }
        Ok(())
    }

    /// Points each cgroup of `agents` at its ruleset; drops cgroups of `previous` not in `agents`.
    fn switch(
        &mut self,
        agents: &[InstalledAgent],
        previous: &[InstalledAgent],
    ) -> Result<(), EnforcerError> {
        let mut map: HashMap<_, u64, AgentEntry> =
            HashMap::try_from(map_mut(&mut self.ebpf, names::AGENTS)?)
                .map_err(map_error(names::AGENTS))?;
        for agent in agents {
            let entry = AgentEntry {
                ruleset: agent.ruleset,
                mode: match agent.mode {
                    Mode::Enforce => mode::ENFORCE,
                    Mode::Audit => mode::AUDIT,
                },
                flags: [
                    (agent.jit, agent_flags::JIT),
                    (agent.resolved_names, agent_flags::RESOLVED_NAMES),
                ]
                .iter()
                .filter(|(on, _)| *on)
                .fold(0, |flags, (_, flag)| flags | flag),
                resolver_port: agent.resolver_port,
                _pad: 0,
                agent_cgroup_id: agent.agent_cgroup_id,
                cgroup_id: agent.cgroup_id,
            };
            map.insert(agent.cgroup_id, entry, 0)
                .map_err(map_error(names::AGENTS))?;
        }
        for gone in previous
            .iter()
            .filter(|p| !agents.iter().any(|a| a.cgroup_id == p.cgroup_id))
        {
            let _ = map.remove(&gone.cgroup_id);
        }
        Ok(())
    }

    fn attach_net(&mut self, agents: &[InstalledAgent]) -> Result<(), EnforcerError> {
        for agent in agents {
            if self.net_links.contains_key(&agent.link_key()) {
                continue;
            }
            let path = self.cgroup_root.join(&agent.cgroup);
            let cgroup = File::open(&path).map_err(|source| EnforcerError::CgroupOpen {
                path: path.clone(),
                source,
            })?;
            let attach_error = |program: String| {
                let path = path.clone();
                move |source| EnforcerError::Attach {
                    program: format!("{program} to {}", path.display()),
                    source,
                }
            };
            let mut links = Vec::new();
            for (program, _) in NET_PROGRAMS {
                // Through a BPF link (kernels >= 5.7), which stacks with other programs on the
                // cgroup (an earlier claw-agent's, during a restart) and must be created
                // without attach flags.
                let attached = net_program(&mut self.ebpf, program).and_then(|prog| {
                    let id = prog
                        .attach(&cgroup, CgroupAttachMode::Single)
                        .map_err(attach_error(format!("cgroup/{program}")))?;
                    let link = prog
                        .take_link(id)
                        .map_err(attach_error(format!("cgroup/{program}")))?;
                    FdLink::try_from(link).map_err(|err| EnforcerError::PinLink {
                        what: format!("cgroup/{program}"),
                        path: path.clone(),
                        reason: err.to_string(),
                    })
                });
                let pinned = attached
                    .and_then(|link| self.pin(link, &format!("{program}@{}", agent.cgroup_id)));
                match pinned {
                    Ok(link) => links.push((*program, link)),
                    Err(err) => {
                        self.net_links.insert(agent.link_key(), links);
                        return Err(err);
                    }
                }
            }
            self.net_links.insert(agent.link_key(), links);
            let pin = self.pins.link(&format!("dev@{}", agent.cgroup_id));
            let program = device_program(&mut self.ebpf)?
                .fd()
                .map_err(attach_error("cgroup/dev".to_owned()))?;
            pins::link_and_pin(program.as_fd(), cgroup.as_fd(), BPF_CGROUP_DEVICE, &pin).map_err(
                |err| EnforcerError::PinLink {
                    what: format!("cgroup/dev to {}", path.display()),
                    path: pin.clone(),
                    reason: err.to_string(),
                },
            )?;
            self.device_links.insert(agent.link_key(), pin);
        }
        Ok(())
    }

    /// Unpins (so detaches) the links of cgroups no longer in the policy.
    fn detach_net_except(&mut self, keep: &[String]) {
        let gone: Vec<String> = self
            .net_links
            .keys()
            .filter(|cgroup| !keep.contains(cgroup))
            .cloned()
            .collect();
        for cgroup in gone {
            for (_, link) in self.net_links.remove(&cgroup).unwrap_or_default() {
                if let Err(err) = link.unpin() {
                    tracing::warn!("detaching a network program from {cgroup}: {err}");
                }
            }
            if let Some(pin) = self.device_links.remove(&cgroup) {
                if let Err(err) = std::fs::remove_file(&pin) {
                    tracing::warn!("detaching the device program from {cgroup}: {err}");
                }
            }
        }
    }

    /// Attaches the LSM programs, or in degraded mode the reporting tracepoints (after the
    /// first `apply`, so they never run without rules); then unpins an earlier claw-agent's
    /// links, this daemon's now being in place. The LSM links are pinned; the tracepoints, which
    /// only report, live as long as the daemon.
    pub fn attach_programs(&mut self) -> Result<(), EnforcerError> {
        if self.coverage != Coverage::Full {
            for (program, category, name, _) in AUDIT_TRACEPOINTS {
                tracepoint_program(&mut self.ebpf, program)?
                    .attach(category, name)
                    .map_err(|source| EnforcerError::Attach {
                        program: format!("tracepoint/{category}/{name}"),
                        source,
                    })?;
                self.attached.push(program);
            }
        } else {
            for (hook, _) in LSM_HOOKS {
                let attach_error = |source| EnforcerError::Attach {
                    program: format!("lsm/{hook}"),
                    source,
                };
                let prog = lsm_program(&mut self.ebpf, hook)?;
                let id = prog.attach().map_err(attach_error)?;
                let link = FdLink::from(prog.take_link(id).map_err(attach_error)?);
                let pinned = self.pin(link, hook)?;
                self.lsm_links.push(pinned);
                self.attached.push(hook);
            }
        }
        let removed = self.pins.remove_older_links()?;
        if removed > 0 {
            tracing::info!(links = removed, "an earlier claw-agent's links removed");
        }
        Ok(())
    }

    /// The addresses the agents' resolvers answered, for the resolvers (dns.rs), which alone
    /// add and remove them.
    pub fn take_resolved_addresses(
        &mut self,
    ) -> Result<HashMap<MapData, ResolvedKey, Resolved>, EnforcerError> {
        let map = take_map(&mut self.ebpf, names::DNS_ALLOW)?;
        HashMap::try_from(map).map_err(map_error(names::DNS_ALLOW))
    }

    /// The event ring buffer and the report counts, for the one task that reads them.
    pub fn take_events(&mut self) -> Result<KernelEvents, EnforcerError> {
        let mut take = |name| take_map(&mut self.ebpf, name);
        let (ring, agent_events, throttle, reported) = (
            take(names::EVENTS)?,
            take(names::AGENT_EVENTS)?,
            take(names::THROTTLE)?,
            take(names::REPORTED)?,
        );
        Ok(KernelEvents {
            ring: RingBuf::try_from(ring).map_err(map_error(names::EVENTS))?,
            agent_events: HashMap::try_from(agent_events)
                .map_err(map_error(names::AGENT_EVENTS))?,
            throttle: HashMap::try_from(throttle).map_err(map_error(names::THROTTLE))?,
            reported: HashMap::try_from(reported).map_err(map_error(names::REPORTED))?,
        })
    }

    pub fn programs(&self) -> Vec<ProgramStatus> {
        let lsm = LSM_HOOKS.iter().map(|(hook, enforces)| {
            let info = program_info(&self.ebpf, hook);
            ProgramStatus {
                program: (*hook).to_owned(),
                hook: format!("lsm/{hook}"),
                attached: self.attached.contains(hook),
                id: info.as_ref().map(|i| i.id()),
                enforces: (*enforces).to_owned(),
                run_count: info.map_or(0, |i| i.run_count()),
            }
        });
        let net = NET_PROGRAMS.iter().map(|(program, enforces)| {
            let info = program_info(&self.ebpf, program);
            ProgramStatus {
                program: (*program).to_owned(),
                hook: format!("cgroup/{program}"),
                attached: !self.installed.is_empty()
                    && self.installed.iter().all(|a| {
                        self.net_links
                            .get(&a.link_key())
                            .is_some_and(|links| links.iter().any(|(p, _)| p == program))
                    }),
                id: info.as_ref().map(|i| i.id()),
                enforces: (*enforces).to_owned(),
                run_count: info.map_or(0, |i| i.run_count()),
            }
        });
        let tracepoints = AUDIT_TRACEPOINTS
            .iter()
            .filter(|_| self.coverage == Coverage::NetworkOnly)
            .map(|(program, category, name, reports)| {
                let info = program_info(&self.ebpf, program);
                ProgramStatus {
                    program: (*program).to_owned(),
                    hook: format!("tracepoint/{category}/{name}"),
                    attached: self.attached.contains(program),
                    id: info.as_ref().map(|i| i.id()),
                    enforces: (*reports).to_owned(),
                    run_count: info.map_or(0, |i| i.run_count()),
                }
            });
        let info = program_info(&self.ebpf, DEVICE_PROGRAM);
        let device = ProgramStatus {
            program: DEVICE_PROGRAM.to_owned(),
            hook: "cgroup/dev".to_owned(),
            attached: !self.installed.is_empty()
                && self
                    .installed
                    .iter()
                    .all(|a| self.device_links.contains_key(&a.link_key())),
            id: info.as_ref().map(|i| i.id()),
            enforces: "devices: the base set for every agent, GPU nodes with devices.gpu; all others denied".to_owned(),
            run_count: info.map_or(0, |i| i.run_count()),
        };
        lsm.chain(net).chain([device]).chain(tracepoints).collect()
    }

    /// True when every program the coverage calls for is attached for every agent.
    pub fn is_enforcing(&self) -> bool {
        self.programs().iter().all(|p| {
            p.attached || (self.coverage == Coverage::NetworkOnly && p.hook.starts_with("lsm/"))
        })
    }

    /// The kernel's counters summed over CPUs; `events_undecodable` is the daemon's to fill.
    pub fn counters(&self) -> Result<Counters, EnforcerError> {
        let map = self
            .ebpf
            .map(names::CPU_STATE)
            .ok_or(EnforcerError::Missing {
                what: "map",
                name: names::CPU_STATE.to_owned(),
            })?;
        let states: PerCpuArray<_, CpuState> =
            PerCpuArray::try_from(map).map_err(map_error(names::CPU_STATE))?;
        let per_cpu = states.get(&0, 0).map_err(map_error(names::CPU_STATE))?;
        let sum = |index: u32| -> u64 {
            per_cpu
                .iter()
                .map(|state| state.counters[index as usize])
                .sum()
        };
        Ok(Counters {
            allowed: sum(counter::ALLOWED),
            denied: sum(counter::DENIED),
            audited: sum(counter::AUDITED),
            events_lost_kernel: sum(counter::EVENTS_LOST),
            path_errors: sum(counter::PATH_ERRORS),
            ..Default::default()
        })
    }
}

/// A map of the object, taken out of it for a task of its own.
fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, EnforcerError> {
    ebpf.take_map(name).ok_or(EnforcerError::Missing {
        what: "map",
        name: name.to_owned(),
    })
}

fn map_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::maps::Map, EnforcerError> {
    ebpf.map_mut(name).ok_or(EnforcerError::Missing {
        what: "map",
        name: name.to_owned(),
    })
}

fn lsm_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Lsm, EnforcerError> {
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| EnforcerError::Missing {
            what: "LSM program",
            name: name.to_owned(),
        })
}

fn tracepoint_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut TracePoint, EnforcerError> {
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| EnforcerError::Missing {
            what: "tracepoint program",
            name: name.to_owned(),
        })
}

fn device_program(ebpf: &mut Ebpf) -> Result<&mut CgroupDevice, EnforcerError> {
    ebpf.program_mut(DEVICE_PROGRAM)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| EnforcerError::Missing {
            what: "cgroup device program",
            name: DEVICE_PROGRAM.to_owned(),
        })
}

fn net_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut CgroupSockAddr, EnforcerError> {
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| EnforcerError::Missing {
            what: "cgroup sock_addr program",
            name: name.to_owned(),
        })
}

fn program_info(ebpf: &Ebpf, name: &str) -> Option<aya::programs::ProgramInfo> {
    ebpf.program(name).and_then(|p| p.info().ok())
}

/// The kernel says EPERM with an empty verifier log when it does not allow trampolines at all;
/// say that in words, and keep the verifier's own words otherwise.
fn refusal_reason(err: &ProgramError) -> String {
    match err {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            if io_error.raw_os_error() == Some(libc::EPERM) && log.trim().is_empty() {
                format!("{io_error} (EPERM, no verifier log: the kernel does not allow BPF trampoline programs here)")
            } else {
                format!("{io_error}; verifier: {log}")
            }
        }
        other => other.to_string(),
    }
}

/// Loaded programs on a kernel whose LSM list lacks `bpf` attach fine and never run: refuse that.
pub fn check_lsm_active(lsm_list: &Path) -> Result<(), EnforcerError> {
    let list =
        std::fs::read_to_string(lsm_list).map_err(|source| EnforcerError::LsmListUnreadable {
            path: lsm_list.display().to_string(),
            source,
        })?;
    let list = list.trim();
    if list.split(',').any(|lsm| lsm == "bpf") {
        Ok(())
    } else {
        Err(EnforcerError::LsmInactive {
            list: list.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn list_file(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(contents.as_bytes()).unwrap();
        file
    }

    #[test]
    fn lsm_list_with_bpf_is_active() {
        let file = list_file("lockdown,capability,landlock,yama,apparmor,bpf\n");
        check_lsm_active(file.path()).unwrap();
    }

    #[test]
    fn lsm_list_without_bpf_is_refused_with_the_fix() {
        let file = list_file("lockdown,capability,apparmor");
        let err = check_lsm_active(file.path()).unwrap_err().to_string();
        assert!(err.contains("BPF LSM is not active"), "{err}");
        assert!(
            err.contains("lsm=lockdown,capability,apparmor,bpf"),
            "{err}"
        );
    }

    #[test]
    fn unreadable_lsm_list_says_how_to_mount_it() {
        let err = check_lsm_active(Path::new("/nonexistent/lsm"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mount -t securityfs"), "{err}");
    }

    /// A program compiled into claw-ebpf but missing from the tables would never be attached.
    #[test]
    fn every_program_of_the_object_is_attached_by_a_table() {
        let object = aya_obj::Object::parse(OBJECT).expect("claw's eBPF object parses");
        let mut compiled: Vec<&str> = object.programs.keys().map(String::as_str).collect();
        compiled.sort_unstable();
        let mut tabled: Vec<&str> = LSM_HOOKS
            .iter()
            .map(|(hook, _)| *hook)
            .chain(NET_PROGRAMS.iter().map(|(program, _)| *program))
            .chain(AUDIT_TRACEPOINTS.iter().map(|(program, ..)| *program))
            .chain([DEVICE_PROGRAM])
            .collect();
        tabled.sort_unstable();
        assert_eq!(compiled, tabled);
    }

    #[test]
    fn every_offset_exists_in_the_running_kernel() {
        let btf = Btf::from_file(Path::new(crate::btf::VMLINUX_BTF)).unwrap();
        for (global, strukt, member) in OFFSETS {
            btf.member_offset(strukt, member)
                .unwrap_or_else(|err| panic!("{global}: {err}"));
        }
    }
}
