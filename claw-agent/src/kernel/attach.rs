//! Attaching: the LSM programs once for the node (or, degraded, the reporting tracepoints), the
//! network and device programs to each agent's cgroup; every link pinned so that enforcement
//! outlives the daemon.

use std::{fs::File, os::fd::AsFd as _};

use aya::programs::links::{CgroupAttachMode, FdLink, PinnedLink};

use crate::kernel::{
    catalogue,
    enforcer::{Coverage, Enforcer, EnforcerError, InstalledAgent},
    object::{device_program, fentry_program, lsm_program, net_program, tracepoint_program},
    pins,
};

/// The kernel's BPF_CGROUP_DEVICE attach type.
const BPF_CGROUP_DEVICE: u32 = 6;

impl Enforcer {
    /// Pins a link this daemon attached, so that it outlives the daemon.
    pub(super) fn pin(&self, link: FdLink, name: &str) -> Result<PinnedLink, EnforcerError> {
        let path = self.pins.link(name);
        link.pin(&path).map_err(|err| EnforcerError::PinLink {
            what: name.to_owned(),
            path,
            reason: err.to_string(),
        })
    }

    pub(super) fn attach_net(&mut self, agents: &[InstalledAgent]) -> Result<(), EnforcerError> {
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
            for program in catalogue::net_programs() {
                let (hook, program) = (program.hook(), program.name);
                // Through a BPF link (kernels >= 5.7), which stacks with other programs on the
                // cgroup (an earlier claw-agent's, during a restart) and must be created
                // without attach flags.
                let attached = net_program(&mut self.ebpf, program).and_then(|prog| {
                    let id = prog
                        .attach(&cgroup, CgroupAttachMode::Single)
                        .map_err(attach_error(hook.clone()))?;
                    let link = prog.take_link(id).map_err(attach_error(hook.clone()))?;
                    FdLink::try_from(link).map_err(|err| EnforcerError::PinLink {
                        what: hook.clone(),
                        path: path.clone(),
                        reason: err.to_string(),
                    })
                });
                let pinned = attached
                    .and_then(|link| self.pin(link, &format!("{program}@{}", agent.cgroup_id)));
                match pinned {
                    Ok(link) => links.push((program, link)),
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
                .map_err(attach_error(catalogue::device_program().hook()))?;
            pins::link_and_pin(program.as_fd(), cgroup.as_fd(), BPF_CGROUP_DEVICE, &pin).map_err(
                |err| EnforcerError::PinLink {
                    what: format!(
                        "{} to {}",
                        catalogue::device_program().hook(),
                        path.display()
                    ),
                    path: pin.clone(),
                    reason: err.to_string(),
                },
            )?;
            self.device_links.insert(agent.link_key(), pin);
        }
        Ok(())
    }

    /// Unpins (so detaches) the links of cgroups no longer in the policy.
    pub(super) fn detach_net_except(&mut self, keep: &[String]) {
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
            for program in catalogue::tracepoint_programs() {
                let catalogue::Attach::Tracepoint { category, name } = program.attach else {
                    continue;
                };
                tracepoint_program(&mut self.ebpf, program.name)?
                    .attach(category, name)
                    .map_err(|source| EnforcerError::Attach {
                        program: program.hook(),
                        source,
                    })?;
                self.attached.push(program.name);
            }
        } else {
            for program in catalogue::fentry_programs() {
                let name = program.name;
                let attach_error = |source| EnforcerError::Attach {
                    program: program.hook(),
                    source,
                };
                let prog = fentry_program(&mut self.ebpf, name)?;
                let id = prog.attach().map_err(attach_error)?;
                let link = FdLink::from(prog.take_link(id).map_err(attach_error)?);
                let pinned = self.pin(link, name)?;
                self.lsm_links.push(pinned);
                self.attached.push(name);
            }
            for program in catalogue::lsm_programs() {
                let hook = program.name;
                if self.absent_hooks.contains(&hook) {
                    continue;
                }
                let attach_error = |source| EnforcerError::Attach {
                    program: program.hook(),
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
}
