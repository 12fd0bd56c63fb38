//! The preflight (`claw-agent --check`): what this machine offers claw — kernel BTF, BPF LSM built
//! and active (and the boot parameter that activates it), BPF trampolines, cgroup v2 and its
//! controllers, the cgroup programs, Landlock, bpffs — found without pinning, attaching, mounting
//! or creating anything; then the coverage claw-agent would run with and what enforces each kind
//! of rule. [`Facts::of_this_machine`] gathers; [`Report::of`] judges (pure, unit-tested).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{
    kernel::{
        btf::Btf,
        cgroupfs,
        enforcer::{Coverage, EnforcerError},
        load, lsm,
    },
    policy::limits,
};

/// Where the BPF filesystem is expected (claw-agent mounts it there when nothing is).
const BPFFS: &str = "/sys/fs/bpf";
/// The LSM hook whose BTF function exists only in kernels built with CONFIG_BPF_LSM.
const BPF_LSM_PROBE_FUNCTION: &str = "bpf_lsm_file_open";
/// The controllers claw's `limits:` use.
const LIMIT_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// What was found on the machine.
#[derive(Debug, Clone)]
pub struct Facts {
    pub kernel: String,
    /// Running as root: loading programs needs it (nothing is tried otherwise).
    pub root: bool,
    /// In the host's cgroup namespace (claw-agent refuses to start in another), or why not.
    pub host_cgroup_namespace: Result<(), String>,
    /// The kernel's BTF, or why it cannot be read.
    pub btf: Result<(), String>,
    /// Whether the kernel was built with BPF LSM (None: no BTF to tell).
    pub bpf_lsm_built: Option<bool>,
    /// The active LSMs in boot order, or why they cannot be read.
    pub active_lsms: Result<Vec<String>, String>,
    /// Whether claw's LSM programs load (trampolines allowed), or the kernel's refusal; None
    /// when not tried (no BTF, or no BPF LSM built).
    pub lsm_programs: Option<Result<(), String>>,
    /// Whether claw's cgroup device and socket-address programs load (None: not tried).
    pub cgroup_programs: Option<Result<(), String>>,
    pub cgroup: CgroupFacts,
    /// The Landlock ABI version, or why there is none.
    pub landlock: Result<u32, String>,
    pub bpffs_mounted: bool,
    pub boot: BootLoader,
}

#[derive(Debug, Clone, Default)]
pub struct CgroupFacts {
    /// The cgroup2 mount, if any.
    pub mount: Option<PathBuf>,
    /// cgroup v1 hierarchies are mounted beside it (systemd's "hybrid" mode).
    pub v1_beside: bool,
    /// What its root's cgroup.controllers offers.
    pub controllers: Vec<String>,
}

/// Where the kernel command line is set, for the fix that activates BPF LSM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootLoader {
    /// /etc/default/grub (Debian, Ubuntu: update-grub; Fedora, RHEL: grub2-mkconfig).
    Grub,
    /// grubby manages the entries (Fedora, RHEL, Azure Linux).
    Grubby,
    /// A WSL2 kernel: .wslconfig's kernelCommandLine.
    Wsl,
    Unknown,
}

/// One finding of the preflight.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    /// `ok`, `fail` (full enforcement needs it) or `info` (claw runs either way).
    pub verdict: &'static str,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// What enforces one kind of rule, or that it is not enforced.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Enforcement {
    pub rules: &'static str,
    pub enforced: bool,
    pub by: String,
}

/// The preflight's verdicts.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub kernel: String,
    pub checks: Vec<Check>,
    /// `full`, `degraded` (network rules only: claw-agent needs --degraded) or `none`.
    pub coverage: &'static str,
    pub enforcement: Vec<Enforcement>,
    /// Full enforcement is possible (the exit code says the same).
    pub full: bool,
}

impl Facts {
    /// Looks at the running machine. Loads claw's programs to see whether the kernel takes them,
    /// with maps that are not pinned and programs that are never attached.
    pub fn of_this_machine(vmlinux_btf: &Path, lsm_list: &Path) -> Facts {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|err| format!("unknown ({err})"), |r| r.trim().to_owned());
        let btf = Btf::from_file(vmlinux_btf);
        let bpf_lsm_built = btf
            .as_ref()
            .ok()
            .map(|btf| btf.parameter_count(BPF_LSM_PROBE_FUNCTION).is_ok());
        let btf = btf.map(drop).map_err(|err| err.to_string());
        // SAFETY: geteuid(2) has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let (lsm_programs, cgroup_programs) = if btf.is_ok() && root {
            let probe = load::probe(vmlinux_btf, lsm_list);
            (
                (bpf_lsm_built == Some(true)).then(|| programs_loaded(probe.lsm)),
                Some(probe.cgroup_programs.map_err(|err| err.to_string())),
            )
        } else {
            (None, None)
        };
        let host_cgroup_namespace =
            cgroupfs::check_host_namespace(Path::new(cgroupfs::OWN_CGROUP_NAMESPACE))
                .map_err(|err| err.to_string());
        let cgroup = cgroup_facts();
        Facts {
            boot: boot_loader(&kernel),
            kernel,
            root,
            host_cgroup_namespace,
            btf,
            bpf_lsm_built,
            active_lsms: lsm::active(lsm_list).map_err(|err| err.to_string()),
            lsm_programs,
            cgroup_programs,
            cgroup,
            landlock: landlock_abi(),
            bpffs_mounted: crate::kernel::pins::is_bpffs(Path::new(BPFFS)),
        }
    }
}

/// The LSM programs' part of the probe: loaded, or the kernel's refusal. That the LSM list
/// lacks `bpf` is its own check, not a refusal to load.
fn programs_loaded(lsm: Result<(), EnforcerError>) -> Result<(), String> {
    match lsm {
        Ok(())
        | Err(EnforcerError::LsmInactive { .. } | EnforcerError::LsmListUnreadable { .. }) => {
            Ok(())
        }
        Err(EnforcerError::LsmRefused { hook, reason }) => {
            Err(format!("loading lsm/{hook}: {reason}"))
        }
        Err(err) => Err(err.to_string()),
    }
}

fn cgroup_facts() -> CgroupFacts {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return CgroupFacts::default();
    };
    let mount = cgroupfs::cgroup2_mount(&table);
    let v1_beside = table.lines().any(|line| {
        line.split_once(" - ")
            .and_then(|(_, after)| after.split_whitespace().next())
            == Some("cgroup")
    });
    let controllers = mount
        .as_deref()
        .and_then(|root| limits::available_controllers(root).ok())
        .unwrap_or_default();
    CgroupFacts {
        mount,
        v1_beside,
        controllers,
    }
}

/// The Landlock ABI version (landlock_create_ruleset with LANDLOCK_CREATE_RULESET_VERSION).
pub fn landlock_abi() -> Result<u32, String> {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: with no attributes and the version flag, the kernel only returns a number.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if abi >= 0 {
        return Ok(abi as u32);
    }
    let err = std::io::Error::last_os_error();
    Err(match err.raw_os_error() {
        Some(libc::ENOSYS) => "not built into this kernel".to_owned(),
        Some(libc::EOPNOTSUPP) => "built, but not enabled at boot (not in lsm=)".to_owned(),
        _ => err.to_string(),
    })
}

fn boot_loader(kernel: &str) -> BootLoader {
    if kernel.contains("microsoft") || kernel.contains("WSL") {
        BootLoader::Wsl
    } else if Path::new("/usr/sbin/grubby").exists() || Path::new("/sbin/grubby").exists() {
        BootLoader::Grubby
    } else if Path::new("/etc/default/grub").exists() {
        BootLoader::Grub
    } else {
        BootLoader::Unknown
    }
}

/// How to put `parameter` on the kernel command line with `boot`.
fn boot_fix(boot: BootLoader, parameter: &str) -> String {
    match boot {
        BootLoader::Grub => format!(
            "add `{parameter}` to GRUB_CMDLINE_LINUX in /etc/default/grub, run `update-grub` \
             (Debian, Ubuntu; `grub2-mkconfig -o /boot/grub2/grub.cfg` on Fedora and RHEL) and \
             reboot"
        ),
        BootLoader::Grubby => {
            format!("run `grubby --update-kernel=ALL --args=\"{parameter}\"` and reboot")
        }
        BootLoader::Wsl => format!(
            "in %UserProfile%\\.wslconfig, under [wsl2], set `kernelCommandLine = {parameter}`, \
             then `wsl --shutdown`"
        ),
        BootLoader::Unknown => {
            format!("add `{parameter}` to the kernel command line in your boot loader and reboot")
        }
    }
}

impl Report {
    pub fn of(facts: &Facts) -> Report {
        let mut checks = Vec::new();
        let mut check = |name, ok: bool, required: bool, detail: String, fix: Option<String>| {
            let verdict = match (ok, required) {
                (true, _) => "ok",
                (false, true) => "fail",
                (false, false) => "info",
            };
            checks.push(Check {
                name,
                verdict,
                detail,
                fix: fix.filter(|_| !ok),
            });
        };
        check("kernel", true, true, facts.kernel.clone(), None);
        check(
            "root",
            facts.root,
            true,
            if facts.root {
                "running as root".to_owned()
            } else {
                "not root: claw's programs cannot be loaded to check the kernel".to_owned()
            },
            Some("run `claw-agent --check` as root".to_owned()),
        );
        check(
            "cgroup namespace",
            facts.host_cgroup_namespace.is_ok(),
            true,
            ok_or_why(&facts.host_cgroup_namespace, "the host's"),
            Some(
                "run claw-agent in the host's cgroup namespace (a container needs --cgroupns=host)"
                    .to_owned(),
            ),
        );
        check(
            "kernel BTF",
            facts.btf.is_ok(),
            true,
            ok_or_why(&facts.btf, "present (struct offsets are read from it)"),
            Some("use a kernel built with CONFIG_DEBUG_INFO_BTF=y".to_owned()),
        );
        let built = facts.bpf_lsm_built == Some(true);
        check(
            "BPF LSM built",
            built,
            true,
            match facts.bpf_lsm_built {
                Some(true) => format!("yes ({BPF_LSM_PROBE_FUNCTION} is in the BTF)"),
                Some(false) => "no: this kernel was built without CONFIG_BPF_LSM".to_owned(),
                None => "unknown: no BTF".to_owned(),
            },
            Some(
                "use a kernel built with CONFIG_BPF_LSM=y (Debian's, Ubuntu's and Fedora's are)"
                    .to_owned(),
            ),
        );
        let active = facts
            .active_lsms
            .as_ref()
            .is_ok_and(|list| list.iter().any(|lsm| lsm == "bpf"));
        let (detail, fix) = match &facts.active_lsms {
            Ok(list) => {
                let with_bpf = format!("lsm={},bpf", list.join(","));
                (
                    format!("active LSMs: {}", list.join(",")),
                    Some(if built {
                        boot_fix(facts.boot, &with_bpf)
                    } else {
                        "BPF LSM must be built first (see above)".to_owned()
                    }),
                )
            }
            Err(err) => (err.clone(), None),
        };
        check("BPF LSM active", active, true, detail, fix);
        let trampolines = matches!(facts.lsm_programs, Some(Ok(())));
        check(
            "BPF trampolines",
            trampolines,
            true,
            match &facts.lsm_programs {
                Some(Ok(())) => "claw's LSM programs load".to_owned(),
                Some(Err(refusal)) => refusal.clone(),
                None => "not tried: no BPF LSM, no BTF, or not root".to_owned(),
            },
            Some(
                "the kernel refuses BPF trampoline programs: it needs CONFIG_BPF_JIT and \
                 CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS, no lockdown in confidentiality mode, and a \
                 hypervisor that lets the kernel patch its text"
                    .to_owned(),
            ),
        );
        let cgroup2 = facts.cgroup.mount.is_some();
        check(
            "cgroup v2",
            cgroup2,
            true,
            match &facts.cgroup.mount {
                Some(mount) if facts.cgroup.v1_beside => format!(
                    "hybrid: cgroup2 at {} beside cgroup v1 hierarchies; controllers: {}",
                    mount.display(),
                    controller_list(&facts.cgroup.controllers)
                ),
                Some(mount) => format!(
                    "unified at {}; controllers: {}",
                    mount.display(),
                    controller_list(&facts.cgroup.controllers)
                ),
                None => "no cgroup2 filesystem is mounted".to_owned(),
            },
            Some("boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1, the default of current distributions)".to_owned()),
        );
        let cgroup_programs = matches!(facts.cgroup_programs, Some(Ok(())));
        check(
            "cgroup programs",
            cgroup_programs,
            true,
            match &facts.cgroup_programs {
                Some(Ok(())) => "claw's device and socket-address programs load".to_owned(),
                Some(Err(err)) => err.clone(),
                None => "not tried: no BTF, or not root".to_owned(),
            },
            None,
        );
        check(
            "Landlock",
            facts.landlock.is_ok(),
            false,
            match &facts.landlock {
                Ok(abi) if *abi < crate::policy::landlock::MIN_ABI => format!(
                    "ABI {abi}: too old for claw's file layer (ABI {} checks truncation, Linux 6.2)",
                    crate::policy::landlock::MIN_ABI
                ),
                Ok(abi) => format!("ABI {abi}"),
                Err(why) => why.clone(),
            },
            None,
        );
        check(
            "bpffs",
            facts.bpffs_mounted,
            false,
            if facts.bpffs_mounted {
                format!("mounted at {BPFFS}")
            } else {
                format!("not mounted at {BPFFS}: claw-agent mounts it when it starts")
            },
            None,
        );

        let runs_here = facts.root && facts.host_cgroup_namespace.is_ok();
        let lsm = runs_here && facts.btf.is_ok() && built && active && trampolines;
        let network = runs_here && cgroup2 && cgroup_programs;
        let landlock = facts
            .landlock
            .as_ref()
            .ok()
            .copied()
            .filter(|abi| *abi >= crate::policy::landlock::MIN_ABI);
        let coverage = match (lsm && network, network, landlock) {
            (true, _, _) => Coverage::Full.as_str(),
            (false, true, Some(_)) => Coverage::Landlock.as_str(),
            (false, true, None) => Coverage::NetworkOnly.as_str(),
            (false, false, _) => "none",
        };
        let file_layer = (!lsm && network).then_some(landlock).flatten();
        Report {
            kernel: facts.kernel.clone(),
            checks,
            coverage,
            enforcement: enforcement(lsm, network, file_layer, &facts.cgroup.controllers),
            full: lsm && network,
        }
    }

    /// The report for a terminal: one line per check (with its fix), the coverage, and what
    /// enforces each kind of rule.
    pub fn render(&self) -> String {
        let mut out = format!("claw preflight, kernel {}\n", self.kernel);
        for check in self.checks.iter().skip(1) {
            out.push_str(&format!(
                "  {:<5} {:<16} {}\n",
                check.verdict, check.name, check.detail
            ));
            if let Some(fix) = &check.fix {
                out.push_str(&format!("        {:<16} fix: {fix}\n", ""));
            }
        }
        out.push_str(&format!("coverage: {}", self.coverage));
        out.push_str(match self.coverage {
            "full" => " — every rule kind is enforced in the kernel\n",
            "landlock" => {
                " — network rules for every process of an agent; file and exec rules by Landlock, for the processes claw starts only (run:, clawctl run); claw-agent refuses to start unless run with --degraded\n"
            }
            "degraded" => {
                " — network rules only; claw-agent refuses to start unless run with --degraded\n"
            }
            _ => " — claw cannot enforce on this machine\n",
        });
        for rule in &self.enforcement {
            out.push_str(&format!(
                "  {:<34} {}{}\n",
                rule.rules,
                if rule.enforced { "" } else { "NOT enforced: " },
                rule.by
            ));
        }
        out
    }
}

/// A check's detail: `ok` where the fact holds, otherwise why it does not.
fn ok_or_why(fact: &Result<(), String>, ok: &str) -> String {
    match fact {
        Ok(()) => ok.to_owned(),
        Err(why) => why.clone(),
    }
}

fn controller_list(controllers: &[String]) -> String {
    if controllers.is_empty() {
        "none".to_owned()
    } else {
        controllers.join(" ")
    }
}

/// What enforces each kind of rule given what runs; `landlock`: the Landlock ABI file and exec
/// rules fall back to (no BPF LSM).
fn enforcement(
    lsm: bool,
    network: bool,
    landlock: Option<u32>,
    controllers: &[String],
) -> Vec<Enforcement> {
    let by_lsm = |rules| {
        Enforcement {
        rules,
        enforced: lsm || landlock.is_some(),
        by: match (lsm, landlock) {
            (true, _) => "BPF LSM".to_owned(),
            (false, Some(abi)) => format!(
                "Landlock (ABI {abi}), for the processes claw starts only — needs BPF LSM for every process"
            ),
            (false, None) => "needs BPF LSM".to_owned(),
        },
    }
    };
    let jit = Enforcement {
        rules: "jit (executable memory)",
        enforced: lsm,
        by: if lsm {
            "BPF LSM".to_owned()
        } else {
            "needs BPF LSM (Landlock does not check executable memory)".to_owned()
        },
    };
    let by_cgroup = |rules, programs: &str| Enforcement {
        rules,
        enforced: network,
        by: if network {
            programs.to_owned()
        } else {
            "needs cgroup v2 and its programs".to_owned()
        },
    };
    let mut kinds = vec![
        by_lsm("files (read, write)"),
        by_lsm("exec, libraries"),
        jit,
        by_cgroup(
            "connect, listen, redirect",
            "cgroup socket-address programs",
        ),
        by_cgroup("devices (GPUs)", "cgroup device program"),
    ];
    let missing: Vec<&str> = LIMIT_CONTROLLERS
        .iter()
        .copied()
        .filter(|name| !controllers.iter().any(|c| c == name))
        .collect();
    kinds.push(Enforcement {
        rules: "limits (memory, pids, cpu)",
        enforced: missing.is_empty(),
        by: if missing.is_empty() {
            "cgroup v2 controllers".to_owned()
        } else {
            format!(
                "cgroup v2 has no {} controller (agents with such limits are refused unless \
                 claw-agent runs with --allow-missing-limits)",
                missing.join(", ")
            )
        },
    });
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debian_node() -> Facts {
        Facts {
            kernel: "6.12.118+deb12-amd64".to_owned(),
            root: true,
            host_cgroup_namespace: Ok(()),
            btf: Ok(()),
            bpf_lsm_built: Some(true),
            active_lsms: Ok([
                "lockdown",
                "capability",
                "landlock",
                "yama",
                "apparmor",
                "bpf",
            ]
            .map(str::to_owned)
            .to_vec()),
            lsm_programs: Some(Ok(())),
            cgroup_programs: Some(Ok(())),
            cgroup: CgroupFacts {
                mount: Some("/sys/fs/cgroup".into()),
                v1_beside: false,
                controllers: ["cpuset", "cpu", "io", "memory", "pids"]
                    .map(str::to_owned)
                    .to_vec(),
            },
            landlock: Ok(6),
            bpffs_mounted: true,
            boot: BootLoader::Grub,
        }
    }

    fn verdict<'a>(report: &'a Report, name: &str) -> &'a Check {
        report.checks.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn a_node_with_bpf_lsm_active_gets_full_coverage() {
        let report = Report::of(&debian_node());
        assert!(report.full);
        assert_eq!(report.coverage, "full");
        assert!(
            report.checks.iter().all(|c| c.verdict == "ok"),
            "{report:?}"
        );
        assert!(report.enforcement.iter().all(|e| e.enforced), "{report:?}");
    }

    #[test]
    fn ubuntu_without_bpf_in_lsm_is_told_the_exact_boot_parameter_and_where() {
        let mut facts = debian_node();
        facts.active_lsms = Ok(["lockdown", "capability", "landlock", "yama", "apparmor"]
            .map(str::to_owned)
            .to_vec());
        let report = Report::of(&facts);
        assert!(!report.full);
        assert_eq!(report.coverage, "landlock");
        let active = verdict(&report, "BPF LSM active");
        assert_eq!(active.verdict, "fail");
        let fix = active.fix.as_deref().unwrap();
        assert!(
            fix.contains("`lsm=lockdown,capability,landlock,yama,apparmor,bpf`"),
            "{fix}"
        );
        assert!(
            fix.contains("/etc/default/grub") && fix.contains("update-grub"),
            "{fix}"
        );
        // Landlock takes over files and exec for the processes claw starts; jit stays open.
        let files = &report.enforcement[0];
        assert!(
            files.enforced
                && files
                    .by
                    .contains("Landlock (ABI 6), for the processes claw starts only"),
            "{files:?}"
        );
        assert!(
            !report.enforcement[2].enforced,
            "jit: {:?}",
            report.enforcement[2]
        );
        assert!(
            report.enforcement[3].enforced,
            "network rules still enforced"
        );
        assert!(report
            .render()
            .contains("NOT enforced: needs BPF LSM (Landlock does not check executable memory)"));
        // Without Landlock: network only.
        facts.landlock = Err("built, but not enabled at boot (not in lsm=)".into());
        let report = Report::of(&facts);
        assert_eq!(report.coverage, "degraded");
        let files = &report.enforcement[0];
        assert!(!files.enforced && files.by.contains("BPF LSM"), "{files:?}");
        assert!(report.render().contains("NOT enforced: needs BPF LSM"));
    }

    #[test]
    fn grubby_and_wsl_get_their_own_fix() {
        let mut facts = debian_node();
        facts.active_lsms = Ok(vec!["capability".to_owned(), "selinux".to_owned()]);
        facts.boot = BootLoader::Grubby;
        let report = Report::of(&facts);
        let fix = verdict(&report, "BPF LSM active").fix.clone().unwrap();
        assert!(fix.contains("grubby --update-kernel=ALL --args=\"lsm=capability,selinux,bpf\""));
        facts.boot = BootLoader::Wsl;
        let report = Report::of(&facts);
        let fix = verdict(&report, "BPF LSM active").fix.clone().unwrap();
        assert!(
            fix.contains("kernelCommandLine = lsm=capability,selinux,bpf"),
            "{fix}"
        );
    }

    #[test]
    fn refused_trampolines_leave_network_coverage_and_name_the_refusal() {
        let mut facts = debian_node();
        facts.lsm_programs = Some(Err("loading lsm/file_open: Operation not permitted".into()));
        let report = Report::of(&facts);
        assert_eq!(report.coverage, "landlock");
        let check = verdict(&report, "BPF trampolines");
        assert_eq!(check.verdict, "fail");
        assert!(check.detail.contains("Operation not permitted"));
    }

    #[test]
    fn a_kernel_without_bpf_lsm_or_cgroup2_cannot_enforce() {
        let mut facts = debian_node();
        facts.bpf_lsm_built = Some(false);
        facts.lsm_programs = None;
        facts.cgroup = CgroupFacts::default();
        let report = Report::of(&facts);
        assert_eq!(report.coverage, "none");
        assert_eq!(verdict(&report, "BPF LSM built").verdict, "fail");
        assert_eq!(verdict(&report, "cgroup v2").verdict, "fail");
        assert!(report.enforcement.iter().all(|e| !e.enforced));
    }

    #[test]
    fn missing_controllers_are_named_and_do_not_lower_coverage() {
        let mut facts = debian_node();
        facts.cgroup.controllers = vec!["cpu".to_owned()];
        facts.cgroup.v1_beside = true;
        let report = Report::of(&facts);
        assert!(report.full);
        assert!(verdict(&report, "cgroup v2").detail.starts_with("hybrid"));
        let limits = report.enforcement.last().unwrap();
        assert!(!limits.enforced && limits.by.contains("no memory, pids controller"));
    }

    #[test]
    fn not_root_or_in_a_container_s_cgroup_namespace_cannot_enforce() {
        let mut facts = debian_node();
        facts.root = false;
        facts.lsm_programs = None;
        facts.cgroup_programs = None;
        let report = Report::of(&facts);
        assert_eq!(report.coverage, "none");
        assert_eq!(verdict(&report, "root").verdict, "fail");
        let mut facts = debian_node();
        facts.host_cgroup_namespace = Err("in a cgroup namespace of its own".into());
        let report = Report::of(&facts);
        assert_eq!(report.coverage, "none");
        assert!(verdict(&report, "cgroup namespace")
            .fix
            .as_deref()
            .unwrap()
            .contains("--cgroupns=host"));
    }

    #[test]
    fn landlock_below_abi_3_is_no_file_layer() {
        let mut facts = debian_node();
        facts.lsm_programs = Some(Err("refused".into()));
        facts.landlock = Ok(2);
        let report = Report::of(&facts);
        assert_eq!(report.coverage, "degraded");
        assert!(verdict(&report, "Landlock").detail.contains("too old"));
    }

    #[test]
    fn landlock_and_bpffs_are_information_not_requirements() {
        let mut facts = debian_node();
        facts.landlock = Err("not built into this kernel".into());
        facts.bpffs_mounted = false;
        let report = Report::of(&facts);
        assert!(report.full);
        assert_eq!(verdict(&report, "Landlock").verdict, "info");
        assert_eq!(verdict(&report, "bpffs").verdict, "info");
    }
}
