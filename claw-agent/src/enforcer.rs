//! The kernel side of the daemon: loads claw's programs, fills their maps from a compiled policy,
//! attaches them, and reads their counters. One owner holds it; nothing else touches BPF.

use std::{io, path::Path};

use aya::{
    maps::{HashMap, LpmTrie, MapData, PerCpuArray, RingBuf},
    programs::{Lsm, ProgramError},
    Ebpf, EbpfLoader,
};
use claw_common::{counter, PathRuleKey};

use crate::{
    btf::{Btf, BtfError},
    compile::Compiled,
    protocol::{Counters, ProgramStatus},
};

/// claw's kernel programs, built by build.rs from claw-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/claw"));

/// Names shared with claw-ebpf (its `#[map]` statics and program functions).
pub mod names {
    pub const AGENTS: &str = "AGENTS";
    pub const FILE_RULES: &str = "FILE_RULES";
    pub const EVENTS: &str = "EVENTS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const FILE_F_PATH_OFFSET: &str = "FILE_F_PATH_OFFSET";
}

/// A program of claw-ebpf and the LSM hook it enforces.
pub struct Hook {
    pub program: &'static str,
    pub lsm_hook: &'static str,
}

/// Every LSM program claw attaches, in attach order.
pub const HOOKS: &[Hook] = &[Hook {
    program: "file_open",
    lsm_hook: "file_open",
}];

/// Where the kernel lists its active LSMs.
pub const LSM_LIST: &str = "/sys/kernel/security/lsm";

#[derive(Debug, thiserror::Error)]
pub enum EnforcerError {
    #[error("reading kernel struct layout: {0}")]
    Btf(#[from] BtfError),
    #[error("loading claw's eBPF object: {0}")]
    Object(#[source] aya::EbpfError),
    #[error("claw's eBPF object has no {what} `{name}` (a build mismatch)")]
    Missing {
        what: &'static str,
        name: &'static str,
    },
    #[error("reading the kernel's BTF for hook `{hook}`: {source}")]
    KernelBtf {
        hook: &'static str,
        #[source]
        source: aya::BtfError,
    },
    #[error(
        "this kernel refuses BPF LSM programs: loading lsm/{hook} failed: {reason}. \
         claw enforces file rules with BPF LSM and will not run without it; use a kernel built \
         with CONFIG_BPF_LSM=y that permits BPF trampolines (`bpf` in the lsm= boot parameter)"
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
    #[error("attaching lsm/{hook}: {source}")]
    Attach {
        hook: &'static str,
        #[source]
        source: ProgramError,
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

/// An agent's cgroup as the kernel knows it.
pub struct AgentCgroup {
    pub agent_id: u32,
    pub cgroup_id: u64,
}

pub struct Enforcer {
    ebpf: Ebpf,
    attached: Vec<&'static str>,
}

impl Enforcer {
    /// Loads the programs into the kernel (verified, not attached), with struct offsets read from
    /// `vmlinux_btf`, and checks in `lsm_list` that the kernel will run them.
    pub fn load(vmlinux_btf: &Path, lsm_list: &Path) -> Result<Self, EnforcerError> {
        let f_path_offset =
            u64::from(Btf::from_file(vmlinux_btf)?.member_offset("file", "f_path")?);
        let mut ebpf = EbpfLoader::new()
            .override_global(names::FILE_F_PATH_OFFSET, &f_path_offset, true)
            .load(OBJECT)
            .map_err(EnforcerError::Object)?;
        let kernel_btf = aya::Btf::from_sys_fs().map_err(|source| EnforcerError::KernelBtf {
            hook: HOOKS[0].lsm_hook,
            source,
        })?;
        for hook in HOOKS {
            program(&mut ebpf, hook)?
                .load(hook.lsm_hook, &kernel_btf)
                .map_err(|err| EnforcerError::LsmRefused {
                    hook: hook.lsm_hook,
                    reason: refusal_reason(&err),
                })?;
        }
        check_lsm_active(lsm_list)?;
        Ok(Self {
            ebpf,
            attached: Vec::new(),
        })
    }

    /// Writes the policy into the maps. Called before `attach`, so the programs never run with
    /// a partial rule set.
    pub fn install(
        &mut self,
        compiled: &Compiled,
        cgroups: &[AgentCgroup],
    ) -> Result<(), EnforcerError> {
        let mut rules: LpmTrie<_, PathRuleKey, u32> =
            LpmTrie::try_from(self.ebpf.map_mut(names::FILE_RULES).ok_or(
                EnforcerError::Missing {
                    what: "map",
                    name: names::FILE_RULES,
                },
            )?)
            .map_err(map_error(names::FILE_RULES))?;
        for rule in compiled.agents.iter().flat_map(|a| &a.file_rules) {
            rules
                .insert(&rule.key(), rule.access, 0)
                .map_err(map_error(names::FILE_RULES))?;
        }
        let mut agents: HashMap<_, u64, u32> = HashMap::try_from(
            self.ebpf
                .map_mut(names::AGENTS)
                .ok_or(EnforcerError::Missing {
                    what: "map",
                    name: names::AGENTS,
                })?,
        )
        .map_err(map_error(names::AGENTS))?;
        for cgroup in cgroups {
            agents
                .insert(cgroup.cgroup_id, cgroup.agent_id, 0)
                .map_err(map_error(names::AGENTS))?;
        }
        Ok(())
    }

    pub fn attach(&mut self) -> Result<(), EnforcerError> {
        for hook in HOOKS {
            program(&mut self.ebpf, hook)?
                .attach()
                .map_err(|source| EnforcerError::Attach {
                    hook: hook.lsm_hook,
                    source,
                })?;
            self.attached.push(hook.program);
        }
        Ok(())
    }

    /// The deny ring buffer, for the one task that reads it.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, EnforcerError> {
        let map = self
            .ebpf
            .take_map(names::EVENTS)
            .ok_or(EnforcerError::Missing {
                what: "map",
                name: names::EVENTS,
            })?;
        RingBuf::try_from(map).map_err(map_error(names::EVENTS))
    }

    pub fn programs(&self) -> Vec<ProgramStatus> {
        HOOKS
            .iter()
            .map(|hook| ProgramStatus {
                program: hook.program.to_owned(),
                hook: format!("lsm/{}", hook.lsm_hook),
                attached: self.attached.contains(&hook.program),
            })
            .collect()
    }

    pub fn is_enforcing(&self) -> bool {
        self.attached.len() == HOOKS.len()
    }

    /// The kernel's counters summed over CPUs; `events_undecodable` is the daemon's to fill.
    pub fn counters(&self) -> Result<Counters, EnforcerError> {
        let map = self
            .ebpf
            .map(names::COUNTERS)
            .ok_or(EnforcerError::Missing {
                what: "map",
                name: names::COUNTERS,
            })?;
        let counters: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(map_error(names::COUNTERS))?;
        let sum = |index: u32| -> Result<u64, EnforcerError> {
            let values = counters
                .get(&index, 0)
                .map_err(map_error(names::COUNTERS))?;
            Ok(values.iter().sum())
        };
        Ok(Counters {
            allowed: sum(counter::ALLOWED)?,
            denied: sum(counter::DENIED)?,
            events_lost_kernel: sum(counter::EVENTS_LOST)?,
            path_errors: sum(counter::PATH_ERRORS)?,
            events_undecodable: 0,
        })
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, hook: &Hook) -> Result<&'a mut Lsm, EnforcerError> {
    let missing = EnforcerError::Missing {
        what: "program",
        name: hook.program,
    };
    ebpf.program_mut(hook.program)
        .ok_or(missing)?
        .try_into()
        .map_err(|_| EnforcerError::Missing {
            what: "LSM program",
            name: hook.program,
        })
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
}
