//! Tool calls: each gets a cgroup of its own under its agent's, held to the agent's rules or to
//! narrowed ones before any process is in it; ended calls are killed and removed, and calls an
//! earlier claw-agent left are ended.

use std::io;

use crate::{
    kernel::{
        cgroupfs,
        enforcer::{Enforcer, EnforcerError, InstalledAgent, InstalledCall},
    },
    policy::{compile::CompiledAgent, devices},
};

/// Prefix of a tool call's cgroup name under its agent's.
pub const CALL_CGROUP_PREFIX: &str = "call-";

impl Enforcer {
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
    pub(super) fn remove_leftover_calls(&self) -> Vec<u64> {
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
}
