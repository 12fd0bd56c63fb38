//! Loading: claw's programs into the kernel, verified but not attached, with struct offsets
//! from BTF; the maps pinned (or adopted from an earlier claw-agent); BPF LSM checked usable
//! and active where the coverage needs it.

use std::{
    collections::HashMap as StdHashMap,
    path::{Path, PathBuf},
};

use aya::{Ebpf, EbpfLoader};

use crate::kernel::{
    btf::Btf,
    catalogue::{self, maps, DENIED_CAPABILITIES, OFFSETS, PINNED_MAPS, TRACEPOINT_FIELDS},
    enforcer::{Coverage, Enforcer, EnforcerError, GracePeriod},
    handover::ReportLimits,
    lsm,
    object::{
        device_program, fentry_program, lsm_program, net_program, refusal_reason,
        tracepoint_program, OBJECT,
    },
    pins::Pins,
    tracefs,
};

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

impl Enforcer {
    /// Loads the programs into the kernel (verified, not attached), with struct offsets read from
    /// `vmlinux_btf`. With `Coverage::Full`, refuses unless BPF LSM is usable and active.
    ///
    /// Maps pinned by an earlier claw-agent are adopted (its rules stay in force meanwhile);
    /// otherwise new maps are pinned, and removed again if loading fails.
    pub fn load(options: LoadOptions) -> Result<Self, EnforcerError> {
        let pins = Pins::open(&options.pins)?;
        // An earlier claw-agent's rules are pinned when its AGENTS map is. An earlier version may
        // lack maps added since (created and pinned now): its pins are adopted all the same, and
        // never removed when this load fails — that would detach what enforces today.
        let adopting = pins.has_maps(&[maps::AGENTS]);
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
        let mut ebpf = object_with_globals(
            &vmlinux_btf,
            coverage,
            report_limits,
            ring_buffer_bytes,
            Some(&pins),
        )?;
        let absent_hooks = load_programs(&mut ebpf, coverage, &lsm_list)?;
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
            absent_hooks,
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
}

/// claw's object with the kernel's struct offsets (from `vmlinux_btf`), the report limits, the
/// ring buffer's size and, degraded, the tracepoints' field offsets set; its maps pinned (or
/// adopted) in `pins`, if given. Nothing is loaded into the kernel yet but the maps.
fn object_with_globals(
    vmlinux_btf: &Path,
    coverage: Coverage,
    report_limits: ReportLimits,
    ring_buffer_bytes: u32,
    pins: Option<&Pins>,
) -> Result<Ebpf, EnforcerError> {
    let btf = Btf::from_file(vmlinux_btf)?;
    let mut offsets = Vec::new();
    for (global, strukt, member) in OFFSETS {
        offsets.push((*global, u64::from(btf.member_offset(strukt, member)?)));
    }
    let denied_capabilities: u64 = DENIED_CAPABILITIES
        .iter()
        .fold(0, |bits, (cap, _)| bits | 1 << cap);
    let mut loader = EbpfLoader::new();
    loader.map_max_entries(maps::EVENTS, ring_buffer_bytes);
    if let Some(pins) = pins {
        for name in PINNED_MAPS {
            loader.map_pin_path(name, pins.map(name));
        }
    }
    for (global, offset) in &offsets {
        loader.override_global(global, offset, true);
    }
    loader.override_global("DENIED_CAPABILITIES", &denied_capabilities, true);
    // A file's I/O-signal owner: held in struct file before 6.12, allocated and pointed to (and
    // pointing back to its file) since.
    let owner_is_pointer = btf.member_is_pointer("file", "f_owner")?;
    let fown_file = if owner_is_pointer {
        u64::from(btf.member_offset("fown_struct", "file")?)
    } else {
        0
    };
    let owner_is_pointer = u64::from(owner_is_pointer);
    loader.override_global("FILE_F_OWNER_IS_POINTER", &owner_is_pointer, true);
    loader.override_global("FOWN_FILE", &fown_file, true);
    // inode_setattr gained the mount's idmap in front of its dentry in 6.8. Only the LSM
    // programs read it; a kernel without BPF LSM has no such function.
    let setattr_dentry_arg = if coverage.has_bpf_lsm() {
        u64::from(btf.parameter_count("bpf_lsm_inode_setattr")? == 3)
    } else {
        0
    };
    loader.override_global("INODE_SETATTR_DENTRY_ARG", &setattr_dentry_arg, true);
    let bind_decided_by_lsm = u64::from(coverage.has_bpf_lsm());
    loader.override_global("BIND_DECIDED_BY_LSM", &bind_decided_by_lsm, true);
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
    if !coverage.has_bpf_lsm() {
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
    loader.load(OBJECT).map_err(EnforcerError::Object)
}

/// Loads (verifies) the programs `coverage` calls for, in catalogue order; with full coverage,
/// refuses a kernel whose BPF LSM is not usable or not active. Returns the hooks of
/// `catalogue::NEWER_HOOKS` this kernel does not have (not loaded).
fn load_programs(
    ebpf: &mut Ebpf,
    coverage: Coverage,
    lsm_list: &Path,
) -> Result<Vec<&'static str>, EnforcerError> {
    let mut absent = Vec::new();
    if !coverage.has_bpf_lsm() {
        for program in catalogue::tracepoint_programs() {
            tracepoint_program(ebpf, program.name)?
                .load()
                .map_err(|err| EnforcerError::Load {
                    program: program.hook(),
                    reason: refusal_reason(&err),
                })?;
        }
    }
    if coverage.has_bpf_lsm() {
        absent = load_lsm_programs(ebpf, lsm_list)?;
    }
    load_cgroup_programs(ebpf)?;
    Ok(absent)
}

/// Loads the LSM and fentry programs and checks that BPF LSM is active. Returns the hooks of
/// `catalogue::NEWER_HOOKS` this kernel does not have (not loaded).
fn load_lsm_programs(ebpf: &mut Ebpf, lsm_list: &Path) -> Result<Vec<&'static str>, EnforcerError> {
    let mut absent = Vec::new();
    let kernel_btf = aya::Btf::from_sys_fs().map_err(EnforcerError::KernelBtf)?;
    for program in catalogue::lsm_programs() {
        let hook = format!("bpf_lsm_{}", program.name);
        if catalogue::NEWER_HOOKS.contains(&program.name)
            && kernel_btf
                .id_by_type_name_kind(&hook, aya_obj::btf::BtfKind::Func)
                .is_err()
        {
            tracing::info!(
                hook = program.name,
                "this kernel has no such LSM hook: what it decides on newer kernels passes an attached hook here"
            );
            absent.push(program.name);
            continue;
        }
        lsm_program(ebpf, program.name)?
            .load(program.name, &kernel_btf)
            .map_err(|err| EnforcerError::LsmRefused {
                hook: program.name,
                reason: refusal_reason(&err),
            })?;
    }
    for program in catalogue::fentry_programs() {
        let catalogue::Attach::Fentry { function } = program.attach else {
            continue;
        };
        fentry_program(ebpf, program.name)?
            .load(function, &kernel_btf)
            .map_err(|err| EnforcerError::Load {
                program: program.hook(),
                reason: refusal_reason(&err),
            })?;
    }
    check_lsm_active(lsm_list)?;
    Ok(absent)
}

/// Loads the cgroup device and socket-address programs (both coverages run them).
fn load_cgroup_programs(ebpf: &mut Ebpf) -> Result<(), EnforcerError> {
    device_program(ebpf)?
        .load()
        .map_err(|err| EnforcerError::Load {
            program: catalogue::device_program().hook(),
            reason: refusal_reason(&err),
        })?;
    for program in catalogue::net_programs() {
        net_program(ebpf, program.name)?
            .load()
            .map_err(|err| EnforcerError::Load {
                program: program.hook(),
                reason: refusal_reason(&err),
            })?;
    }
    Ok(())
}

/// What loading claw's programs on this kernel gives, tried without pinning, attaching or
/// mounting anything (the preflight's question).
pub struct LoadProbe {
    /// A full-coverage start: the LSM and fentry programs load and BPF LSM is active.
    pub lsm: Result<(), EnforcerError>,
    /// The programs a start loads besides: the cgroup programs — and where BPF LSM is not
    /// usable, as a `--degraded` start loads them, with its tracepoint programs (tried only where
    /// tracefs is mounted: claw-agent mounts it, the preflight does not).
    pub cgroup_programs: Result<(), EnforcerError>,
}

/// Loads claw's object as a start would, with maps that are neither pinned nor filled and
/// programs that are never attached; all of it is gone when this returns.
pub fn probe(vmlinux_btf: &Path, lsm_list: &Path) -> LoadProbe {
    // The smallest ring buffer the kernel takes: nothing is ever written to it.
    const PROBE_RING_BYTES: u32 = 1 << 16;
    let object = |coverage| {
        let limits = ReportLimits {
            identical_per_second: 0,
            agent_per_second: 0,
        };
        object_with_globals(vmlinux_btf, coverage, limits, PROBE_RING_BYTES, None)
    };
    let full = object(Coverage::Full).and_then(|mut ebpf| {
        load_lsm_programs(&mut ebpf, lsm_list)?;
        Ok(ebpf)
    });
    match full {
        Ok(mut ebpf) => LoadProbe {
            lsm: Ok(()),
            cgroup_programs: load_cgroup_programs(&mut ebpf),
        },
        Err(lsm) => {
            let cgroup_programs = if tracefs::find_mounted().is_some() {
                object(Coverage::NetworkOnly).and_then(|mut ebpf| {
                    load_programs(&mut ebpf, Coverage::NetworkOnly, lsm_list).map(drop)
                })
            } else {
                object(Coverage::Full).and_then(|mut ebpf| load_cgroup_programs(&mut ebpf))
            };
            LoadProbe {
                lsm: Err(lsm),
                cgroup_programs,
            }
        }
    }
}

/// Loaded programs on a kernel whose LSM list lacks `bpf` attach fine and never run: refuse that.
pub fn check_lsm_active(lsm_list: &Path) -> Result<(), EnforcerError> {
    let list = lsm::active(lsm_list)?;
    if list.iter().any(|lsm| lsm == "bpf") {
        Ok(())
    } else {
        Err(EnforcerError::LsmInactive {
            list: list.join(","),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::defaults;

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

    /// A program compiled into claw-ebpf but missing from the tables would never be attached.
    #[test]
    fn every_program_of_the_object_is_attached_by_a_table() {
        let object = aya_obj::Object::parse(OBJECT).expect("claw's eBPF object parses");
        let mut compiled: Vec<&str> = object.programs.keys().map(String::as_str).collect();
        compiled.sort_unstable();
        let mut tabled: Vec<&str> = catalogue::PROGRAMS.iter().map(|p| p.name).collect();
        tabled.sort_unstable();
        assert_eq!(compiled, tabled);
    }

    #[test]
    fn every_offset_exists_in_the_running_kernel() {
        let btf = Btf::from_file(Path::new(defaults::VMLINUX_BTF)).unwrap();
        for (global, strukt, member) in OFFSETS {
            btf.member_offset(strukt, member)
                .unwrap_or_else(|err| panic!("{global}: {err}"));
        }
    }
}
