//! Installing a compiled policy: limits checked against the cgroup hierarchy, the kernel's
//! rules applied, the agents' resolvers given their names, the cgroups' limits written; and
//! what the rest of the daemon learns of the installed agents.

use std::{collections::HashMap, sync::RwLock};

use crate::{
    control::protocol::ErrorKind,
    dns::{self, Resolvers},
    events::{
        identities::{AgentIdentity, Identities},
        watch,
    },
    kernel::{
        cgroupfs,
        cgroupfs::CgroupError,
        enforcer::{Enforcer, EnforcerError},
    },
    policy::{
        compile::{Compiled, CompiledAgent},
        limits, reason, Policy,
    },
};

/// Limits, by agent, that the policy sets and the cgroup hierarchy cannot enforce.
pub type Unenforced = HashMap<String, Vec<&'static str>>;

/// Why a compiled policy could not be installed (the previous one stays).
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("reading {root}/cgroup.controllers: {source}")]
    Controllers {
        root: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "agent `{agent}`: {limit} cannot be enforced: the cgroup v2 hierarchy at {root} has no `{controller}` controller (it offers: {available}) — run claw on a unified cgroup v2 hierarchy with that controller, or start claw-agent with --allow-missing-limits to run the agent without the limit"
    )]
    LimitUnenforceable {
        agent: String,
        limit: &'static str,
        root: String,
        controller: &'static str,
        available: String,
    },
    #[error("starting the agents' resolvers: {0}")]
    Resolvers(#[source] std::io::Error),
    #[error(transparent)]
    Kernel(#[from] EnforcerError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("agent `{agent}`: {source}")]
    Limit {
        agent: String,
        #[source]
        source: CgroupError,
    },
}

impl InstallError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::LimitUnenforceable { .. } => ErrorKind::Refused,
            _ => ErrorKind::Failed,
        }
    }
}

/// Installs a compiled policy: its limits are checked first (one the hierarchy cannot enforce
/// refuses the policy, before anything changes, unless `allow_missing`), then the kernel's rules
/// are applied, then the cgroups' limits written (unset limits back to "max").
pub(super) fn install_policy(
    enforcer: &mut Enforcer,
    resolvers: &mut Resolvers,
    compiled: &Compiled,
    narrowed_calls: &HashMap<u64, CompiledAgent>,
    allow_missing: bool,
) -> Result<Unenforced, InstallError> {
    let root = enforcer.cgroup_root().to_path_buf();
    let available =
        limits::available_controllers(&root).map_err(|source| InstallError::Controllers {
            root: root.display().to_string(),
            source,
        })?;
    let mut unenforced = Unenforced::new();
    for agent in &compiled.agents {
        for limit in agent.limits.set() {
            let controller = limits::controller(limit);
            if available.iter().any(|c| c == controller) {
                continue;
            }
            if !allow_missing {
                return Err(InstallError::LimitUnenforceable {
                    agent: agent.name.clone(),
                    limit,
                    root: root.display().to_string(),
                    controller,
                    available: available.join(" "),
                });
            }
            tracing::warn!(agent = %agent.name, limit, controller, "limit NOT enforced: no such controller");
            unenforced
                .entry(agent.name.clone())
                .or_default()
                .push(limit);
        }
    }
    let names: Vec<&str> = compiled.agents.iter().map(|a| a.name.as_str()).collect();
    let ports = resolvers.ports(&names).map_err(InstallError::Resolvers)?;
    enforcer.apply(compiled, narrowed_calls, &ports)?;
    resolvers.commit(
        &compiled
            .agents
            .iter()
            .zip(enforcer.installed())
            .map(|(agent, installed)| dns::Agent {
                name: &agent.name,
                cgroup: &agent.cgroup,
                cgroup_id: installed.cgroup_id,
                hostname_rules: &agent.hostname_rules,
            })
            .collect::<Vec<_>>(),
        &compiled.guarded,
    );
    let usable: Vec<&str> = ["memory", "pids", "cpu"]
        .into_iter()
        .filter(|c| available.iter().any(|a| a == c))
        .collect();
    for agent in &compiled.agents {
        cgroupfs::enable_controllers(&root, &agent.cgroup, &usable)?;
        for (limit, file, value) in agent.limits.files() {
            if usable.contains(&limits::controller(limit)) {
                cgroupfs::write_file(&root, &agent.cgroup, file, &value).map_err(|source| {
                    InstallError::Limit {
                        agent: agent.name.clone(),
                        source,
                    }
                })?;
            }
        }
    }
    Ok(unenforced)
}

pub(super) fn agent_views(compiled: &Compiled) -> Vec<watch::AgentView> {
    compiled
        .agents
        .iter()
        .map(|a| watch::AgentView {
            name: a.name.clone(),
            cgroup: a.cgroup.clone(),
            memory_max: a.limits.memory_max.map(|b| b.0),
            pids_max: a.limits.pids_max,
        })
        .collect()
}

pub(super) fn record_identities(
    enforcer: &Enforcer,
    policy: &Policy,
    identities: &RwLock<Identities>,
) {
    let mut identities = identities.write().unwrap_or_else(|p| p.into_inner());
    identities.set_summaries(policy.agents.iter().map(reason::Summary::of));
    for agent in enforcer.installed() {
        identities.insert(
            agent.ruleset,
            AgentIdentity {
                name: agent.name.clone(),
                cgroup: agent.cgroup.clone(),
                cgroup_id: agent.cgroup_id,
            },
        );
    }
}
