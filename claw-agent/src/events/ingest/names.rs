//! Naming the cgroup a record's process was in when it is below its agent's (or tool call's)
//! cgroup, not one claw made: a container's, a systemd scope's, a delegated subtree's. The kernel
//! reports only its id; the name is found once in the cgroup filesystem and kept.

use std::{collections::HashMap, path::PathBuf};

use crate::{
    events::{decode::unnamed, event::Event, identities::Identities},
    kernel::cgroupfs,
};

/// Names kept at most; past that the cache starts over (ids are never reused, so a name once
/// found stays right).
const NAMES_KEPT: usize = 4096;

pub struct CgroupNames {
    root: PathBuf,
    /// cgroup id -> its path relative to the root, or None where it was not found (gone).
    known: HashMap<u64, Option<String>>,
}

impl CgroupNames {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            known: HashMap::new(),
        }
    }

    /// Gives `event` (of a process in cgroup `id`, held by `ruleset`) the path of its process's
    /// cgroup where decoding knew only the id.
    pub fn name(&mut self, ruleset: u32, id: u64, identities: &Identities, event: &mut Event) {
        if event.cgroup != unnamed(id) {
            return;
        }
        let Some(agent) = identities.get(&ruleset) else {
            return;
        };
        if !self.known.contains_key(&id) && self.known.len() >= NAMES_KEPT {
            self.known.clear();
        }
        let root = &self.root;
        let found = self
            .known
            .entry(id)
            .or_insert_with(|| cgroupfs::find_below(root, &agent.cgroup, id));
        if let Some(path) = found {
            event.cgroup = format!("/{path}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;
    use crate::events::event::tests::{identities, sample};

    #[test]
    fn a_process_below_its_agents_cgroup_is_named_by_its_own_cgroup() {
        let root = tempfile::tempdir().unwrap();
        let container = root.path().join("claw/tools/pod/container");
        std::fs::create_dir_all(&container).unwrap();
        let id = std::fs::metadata(&container).unwrap().ino();
        let mut names = CgroupNames::new(root.path().to_owned());
        let mut event = sample("deny");
        event.cgroup = unnamed(id);
        names.name(5, id, &identities(), &mut event);
        assert_eq!(event.cgroup, "/claw/tools/pod/container");
        assert_eq!(event.agent, "tools");
        // Known cgroups are left as decoded.
        let mut known = sample("deny");
        names.name(5, id, &identities(), &mut known);
        assert_eq!(known.cgroup, "/claw/tools");
    }
}
