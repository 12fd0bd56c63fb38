//! An agent's rules as Landlock grants, for the processes claw starts where BPF LSM does not
//! run (or, stacked, where it does): which paths get which rights, what each grant must not
//! reach (credential stores, claw's own trees), and what Landlock cannot express for the agent.
//!
//! Pure: the grants are data; `supervise::landlock` opens the paths and builds the ruleset when
//! a process starts.
//!
//! Landlock only allows — it has no rule that denies below an allowed directory. Where a grant
//! covers a guarded path, claw narrows it (decided for issue 18): the directories on the way to
//! the guarded path keep listing only, and each of their other entries gets the grant on its
//! own, as the process starts. Entries made later in those directories are unreachable (fails
//! closed); the guarded path stays out of reach, and cannot be renamed or recreated because the
//! directories on its way grant no writing.

use serde::{Deserialize, Serialize};

use crate::policy::{
    compile::Guards,
    devices::GPU_PATH_PREFIXES,
    rules::{RulePath, PROTECTED},
    Agent, Mode,
};

/// What a grant allows, in claw's terms (mapped to Landlock's rights by `supervise::landlock`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// Open for reading; list a directory.
    pub read: bool,
    /// Open for writing, truncate; below a directory also create, remove, rename and link.
    pub write: bool,
    /// Execute (Landlock's execute also needs the file readable: exec implies read).
    pub execute: bool,
    /// Read, to be mapped by the loader; the ELF interpreters in it may also be executed.
    pub library: bool,
    /// ioctl on a device node (terminals, GPUs).
    pub ioctl: bool,
    /// Open device nodes for reading and writing, below a directory too, and list it — never
    /// create, remove or rename there (a driver's nodes: GPUs).
    #[serde(default)]
    pub device: bool,
}

impl Access {
    fn union(self, other: Access) -> Access {
        Access {
            read: self.read || other.read,
            write: self.write || other.write,
            execute: self.execute || other.execute,
            library: self.library || other.library,
            ioctl: self.ioctl || other.ioctl,
            device: self.device || other.device,
        }
    }
}

/// One path and what may be done at it (and below it, for a directory ending in `/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// A rule path; a last component ending in `*` stands for every entry of its directory
    /// whose name starts with what precedes the `*` (`/dev/nvidia*`).
    pub path: String,
    pub access: Access,
    /// Paths strictly below `path` the grant must not reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

/// The Landlock layer of one agent (or one tool call).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub grants: Vec<Grant>,
    /// Trees some agent may write: a symbolic link inside one is not followed when a grant's
    /// path is opened (an agent could point it anywhere before the next start).
    pub writable: Vec<String>,
    /// What Landlock cannot express for this agent, and what claw does instead.
    pub notes: Vec<String>,
    /// Keep the process in its cgroup and drop its capabilities: set where no BPF LSM hook
    /// stands behind Landlock (coverage `landlock`).
    #[serde(default)]
    pub contain: bool,
}

/// Terminals of the base device set (`policy::devices`): ioctls on them are allowed (a terminal
/// is of little use without them); opening them is the file rules' to allow, as in the kernel
/// programs.
const TERMINALS: &[&str] = &["/dev/tty", "/dev/ptmx", "/dev/pts/"];

/// The Landlock layer for `agent` (after any tool-call narrowing), with this machine's
/// `guards`; `writable` are the write rules of every agent of the policy; `contain` where no
/// BPF LSM stands behind it. None for an audit-mode agent: Landlock has no permissive mode, so
/// its processes are not file-confined.
pub fn plan(agent: &Agent, guards: &Guards, writable: &[RulePath], contain: bool) -> Option<Plan> {
    if agent.mode == Mode::Audit {
        return None;
    }
    let rules = &agent.rules;
    let named: Vec<&str> = rules
        .files
        .read
        .iter()
        .chain(&rules.files.write)
        .chain(&rules.exec)
        .chain(&rules.libraries)
        .map(|p| p.0.as_str())
        .collect();
    let mut grants: Vec<Grant> = Vec::new();
    // Writing is a grant of its own: claw's trees are excepted from writing only, so a path
    // both read and written keeps reading there.
    let mut add = |path: &str, access: Access| match grants
        .iter_mut()
        .find(|g| g.path == path && g.access.write == access.write)
    {
        Some(grant) => grant.access = grant.access.union(access),
        None => grants.push(Grant {
            path: path.to_owned(),
            access,
            except: Vec::new(),
        }),
    };
    let of = |read, write, execute, library| Access {
        read,
        write,
        execute,
        library,
        ..Access::default()
    };
    for path in &rules.files.read {
        add(&path.0, of(true, false, false, false));
    }
    for path in &rules.files.write {
        add(&path.0, of(false, true, false, false));
    }
    for path in &rules.exec {
        add(&path.0, of(false, false, true, false));
    }
    for path in &rules.libraries {
        add(&path.0, of(false, false, false, true));
    }
    for path in TERMINALS {
        add(
            path,
            Access {
                ioctl: true,
                ..Access::default()
            },
        );
    }
    if agent.devices.gpu {
        for prefix in GPU_PATH_PREFIXES {
            let prefix = String::from_utf8_lossy(prefix);
            if prefix.ends_with('\0') {
                continue;
            }
            let path = if prefix.ends_with('/') {
                prefix.into_owned()
            } else {
                format!("{prefix}*")
            };
            add(
                &path,
                Access {
                    ioctl: true,
                    device: true,
                    ..Access::default()
                },
            );
        }
    }

    let mut notes = vec![
        "only processes claw starts (run:, clawctl run) are file-confined; others in the agent's cgroup are held to its network and device rules only".to_owned(),
        "network rules (addresses, ports, hostnames, UDP) stay with the cgroup programs, for every process of the agent".to_owned(),
        "exec rules also let the program's bytes be read (Landlock's execute needs read), and are no code boundary: the loader can run any readable file (ld.so FILE), and Landlock does not check mmap".to_owned(),
        "setuid programs run without their privileges (Landlock needs no_new_privs)".to_owned(),
        "chmod, chown, utime, extended attributes and ioctls on already-open files are not checked by Landlock".to_owned(),
    ];
    if contain {
        notes.push("the processes claw starts keep to their cgroup (a cgroup namespace) and hold no capabilities; as uid 0 they still own what root owns (chmod is not checked): run agents as a user (run.user)".to_owned());
    }
    if agent.jit {
        notes.push("jit: Landlock does not check executable memory either way".to_owned());
    } else {
        notes.push(
            "jit: false is not enforced: Landlock does not check executable memory or mmap"
                .to_owned(),
        );
    }
    for grant in &mut grants {
        if !grant.path.ends_with('/') {
            continue;
        }
        let credentials = guards
            .credentials
            .iter()
            .map(|c| c.0.as_str())
            .filter(|c| !named.contains(c));
        let written = grant.access.write;
        let claws = PROTECTED
            .iter()
            .map(|(tree, _)| *tree)
            .chain(guards.socket_directories.iter().map(|d| d.0.as_str()))
            .filter(|_| written);
        let mut except: Vec<String> = credentials
            .chain(claws)
            .filter(|guarded| guarded.len() > grant.path.len() && guarded.starts_with(&grant.path))
            .map(str::to_owned)
            .collect();
        except.sort();
        except.dedup();
        if !except.is_empty() {
            notes.push(format!(
                "{} narrowed around {}: the directories on the way keep listing only (names below them, the guarded ones' included, can be listed), their other entries are granted one by one as a process starts (entries made later are not reachable)",
                grant.path,
                except.join(", ")
            ));
        }
        grant.except = except;
    }
    let mut writable: Vec<String> = writable.iter().map(|w| w.0.clone()).collect();
    writable.sort();
    writable.dedup();
    Some(Plan {
        grants,
        writable,
        notes,
        contain,
    })
}

/// Lowest Landlock ABI claw confines with: below 3, truncation is not checked.
pub const MIN_ABI: u32 = 3;

/// What this kernel's Landlock ABI leaves unchecked, beyond what every ABI does.
pub fn abi_notes(abi: u32) -> Vec<String> {
    let mut notes = vec![format!("Landlock ABI {abi}")];
    if abi < 5 {
        notes
            .push("ioctls on device nodes are not checked (Landlock ABI 5, Linux 6.10)".to_owned());
    }
    if abi < 6 {
        notes.push("signals to and abstract Unix sockets of other processes are not scoped (Landlock ABI 6, Linux 6.12)".to_owned());
    }
    if abi < 7 {
        notes.push(
            "Landlock's refusals are not reported as events (Landlock ABI 7, Linux 6.15)"
                .to_owned(),
        );
    }
    notes.push("connecting to a Unix socket by its path is not checked (the control socket refuses agents' processes itself)".to_owned());
    notes
}

/// The name a process claw starts has while it restricts itself — what the kernel's audit
/// record of its Landlock domain carries (`events::landlock`): its cgroup id (comm holds 15
/// bytes).
pub fn tag(cgroup_id: u64) -> String {
    format!("claw-{:x}", cgroup_id & 0xff_ffff_ffff)
}

/// The cgroup id a tag names.
pub fn tag_cgroup_id(comm: &str) -> Option<u64> {
    u64::from_str_radix(comm.strip_prefix("claw-")?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse;

    fn agent(yaml: &str) -> Agent {
        parse("p.yaml", yaml).unwrap().agents.remove(0)
    }

    fn guards() -> Guards {
        Guards {
            credentials: ["/root/.ssh/", "/etc/shadow", "/home/a/.aws/"]
                .iter()
                .map(|p| RulePath(p.to_string()))
                .collect(),
            socket_directories: vec![RulePath("/run/claw/".into())],
            ..Guards::default()
        }
    }

    fn grant<'a>(plan: &'a Plan, path: &str) -> &'a Grant {
        plan.grants
            .iter()
            .find(|g| g.path == path)
            .unwrap_or_else(|| panic!("no grant for {path}: {plan:#?}"))
    }

    #[test]
    fn rule_kinds_become_access() {
        let agent = agent(
            "agents:\n- name: t\n  cgroup: claw/t\n  files: {read: [/w/, /etc/hosts], write: [/w/out/]}\n  exec: [/usr/bin/git]\n  libraries: [/usr/lib/]\n",
        );
        let plan = plan(&agent, &guards(), &[], true).unwrap();
        assert!(grant(&plan, "/w/").access.read && !grant(&plan, "/w/").access.write);
        assert!(grant(&plan, "/w/out/").access.write && !grant(&plan, "/w/out/").access.read);
        assert!(grant(&plan, "/etc/hosts").access.read);
        assert!(grant(&plan, "/usr/bin/git").access.execute);
        assert!(grant(&plan, "/usr/lib/").access.library);
        // Devices are opened by file rules only; terminals' ioctls are allowed.
        assert!(plan.grants.iter().all(|g| g.path != "/dev/null"));
        let pts = grant(&plan, "/dev/pts/");
        assert!(pts.access.ioctl && !pts.access.read && !pts.access.write);
        assert!(grant(&plan, "/dev/pts/").access.ioctl);
        assert!(plan
            .grants
            .iter()
            .all(|g| !g.path.starts_with("/dev/nvidia")));
    }

    #[test]
    fn reading_and_writing_one_path_are_two_grants() {
        let agent = agent(
            "agents:\n- name: t\n  cgroup: claw/t\n  files: {read: [/, /w/], write: [/, /w/]}\n  exec: [/w/]\n",
        );
        let plan = plan(&agent, &guards(), &[], true).unwrap();
        let at =
            |path: &str| -> Vec<&Grant> { plan.grants.iter().filter(|g| g.path == path).collect() };
        let w = at("/w/");
        assert_eq!(w.len(), 2);
        assert!(w
            .iter()
            .any(|g| g.access.read && g.access.execute && !g.access.write));
        // Reading / keeps /proc/ and claw's trees; writing / does not reach them.
        let root = at("/");
        let reading = root.iter().find(|g| !g.access.write).unwrap();
        let writing = root.iter().find(|g| g.access.write).unwrap();
        assert!(!reading.except.iter().any(|e| e == "/proc/"), "{reading:?}");
        assert!(writing.except.iter().any(|e| e == "/proc/"), "{writing:?}");
    }

    #[test]
    fn wide_grants_do_not_reach_guarded_paths() {
        let agent = agent(
            "agents:\n- name: t\n  cgroup: claw/t\n  files: {read: [/], write: [/run/, /home/]}\n",
        );
        let plan = plan(&agent, &guards(), &[], true).unwrap();
        let root = grant(&plan, "/");
        // Reading: credential stores only; claw's trees may be read.
        assert_eq!(root.except, ["/etc/shadow", "/home/a/.aws/", "/root/.ssh/"]);
        // Writing: claw's socket directory too.
        assert_eq!(grant(&plan, "/run/").except, ["/run/claw/"]);
        assert_eq!(grant(&plan, "/home/").except, ["/home/a/.aws/"]);
        assert!(plan
            .notes
            .iter()
            .any(|n| n.starts_with("/run/ narrowed around /run/claw/")));
    }

    #[test]
    fn writing_stops_short_of_claws_own_trees() {
        let agent = agent("agents:\n- name: t\n  cgroup: claw/t\n  files: {write: [/sys/]}\n");
        let plan = plan(&agent, &guards(), &[], true).unwrap();
        assert_eq!(
            grant(&plan, "/sys/").except,
            ["/sys/fs/bpf/", "/sys/fs/cgroup/"]
        );
    }

    #[test]
    fn a_store_the_agent_names_is_not_excepted() {
        let agent =
            agent("agents:\n- name: t\n  cgroup: claw/t\n  files: {read: [/root/, /root/.ssh/]}\n");
        let plan = plan(&agent, &guards(), &[], true).unwrap();
        assert!(grant(&plan, "/root/").except.is_empty());
    }

    #[test]
    fn gpu_nodes_are_granted_by_prefix() {
        let agent = agent("agents:\n- name: t\n  cgroup: claw/t\n  devices: {gpu: true}\n");
        let plan = plan(&agent, &guards(), &[], true).unwrap();
        for path in ["/dev/nvidia*", "/dev/dri/"] {
            let access = grant(&plan, path).access;
            assert!(
                access.ioctl && access.device && !access.write,
                "{path}: {access:?}"
            );
        }
    }

    #[test]
    fn older_abis_say_what_they_leave_unchecked() {
        assert!(abi_notes(4).iter().any(|n| n.contains("ioctls")));
        assert!(!abi_notes(7)
            .iter()
            .any(|n| n.contains("ioctls") || n.contains("scoped")));
        assert!(abi_notes(6).iter().any(|n| n.contains("not reported")));
    }

    #[test]
    fn tags_name_the_cgroup() {
        assert_eq!(tag(0x1234), "claw-1234");
        assert!(tag(u64::MAX).len() <= 15);
        assert_eq!(tag_cgroup_id("claw-1234"), Some(0x1234));
        assert_eq!(tag_cgroup_id("bash"), None);
    }

    #[test]
    fn audit_mode_agents_get_no_landlock_layer() {
        let agent = agent("agents:\n- name: t\n  cgroup: claw/t\n  mode: audit\n");
        assert_eq!(plan(&agent, &guards(), &[], true), None);
    }

    #[test]
    fn the_plan_survives_the_control_socket() {
        let agent = agent("agents:\n- name: t\n  cgroup: claw/t\n  files: {read: [/]}\n");
        let plan = plan(&agent, &guards(), &[RulePath("/w/".into())], true).unwrap();
        let text = serde_json::to_string(&plan).unwrap();
        assert_eq!(serde_json::from_str::<Plan>(&text).unwrap(), plan);
        assert_eq!(plan.writable, ["/w/"]);
    }
}
