//! `run:` of an agent: the process claw-agent starts and supervises in the agent's cgroup.

use std::{collections::BTreeMap, path::PathBuf};

use serde::Deserialize;

/// `run:` of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A user from /etc/passwd; claw-agent's own (root) when absent.
    pub user: Option<String>,
    pub workdir: Option<PathBuf>,
    #[serde(default)]
    pub restart: Restart,
    /// First delay before a restart, doubled after each one up to `restart_delay_max_ms`.
    #[serde(default = "default_delay")]
    pub restart_delay_ms: u64,
    #[serde(default = "default_delay_max")]
    pub restart_delay_max_ms: u64,
    /// Restarts in a row (no run lasting a minute in between) before claw-agent gives up.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
}

fn default_delay() -> u64 {
    1000
}
fn default_delay_max() -> u64 {
    30_000
}
fn default_max_restarts() -> u32 {
    5
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    Always,
    #[default]
    OnFailure,
    Never,
}
