//! Grants: an operator's exception for exactly one object of one cgroup (`clawctl allow`),
//! with a lifetime and a use count the programs spend.

use aya::maps::HashMap;
use claw_common::{Grant, GrantKey};

use crate::kernel::{
    catalogue::maps,
    enforcer::{map_error, Enforcer, EnforcerError},
    object::map_mut,
};

impl Enforcer {
    /// Lets the object of `key` through for its cgroup, as `grant` says.
    pub fn grant(&mut self, key: GrantKey, grant: Grant) -> Result<(), EnforcerError> {
        let mut grants: HashMap<_, GrantKey, Grant> =
            HashMap::try_from(map_mut(&mut self.ebpf, maps::GRANTS)?)
                .map_err(map_error(maps::GRANTS))?;
        grants
            .insert(key, grant, 0)
            .map_err(map_error(maps::GRANTS))
    }

    /// Removes the grants made to a cgroup that is gone.
    pub(super) fn remove_grants_of(&mut self, cgroup_id: u64) -> Result<(), EnforcerError> {
        let mut grants: HashMap<_, GrantKey, Grant> =
            HashMap::try_from(map_mut(&mut self.ebpf, maps::GRANTS)?)
                .map_err(map_error(maps::GRANTS))?;
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
            HashMap::try_from(map_mut(&mut self.ebpf, maps::GRANTS)?)
                .map_err(map_error(maps::GRANTS))?;
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
}
