//! Who the kernel's records are about: every ruleset id the daemon installed, and the tool
//! calls' cgroups.

use std::collections::{HashMap, VecDeque};

use crate::events::event::Event;

/// Who a ruleset id belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    pub name: String,
    pub cgroup: String,
    pub cgroup_id: u64,
}

/// A tool call: its agent, its id, its cgroup (relative to the cgroup v2 mount).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallIdentity {
    pub agent: String,
    pub call: String,
    pub cgroup: String,
}

/// Calls that ended, still known so that their last events (read from the kernel after the end)
/// are attributed.
const ENDED_CALLS_KEPT: usize = 4096;

/// Who the kernel's records are about: every ruleset id the daemon has installed, old ones
/// included (events may arrive after an apply replaced them), and the tool calls' cgroups.
#[derive(Debug, Clone, Default)]
pub struct Identities {
    rulesets: HashMap<u32, AgentIdentity>,
    /// Each agent's rules as reasons quote them, by agent name.
    summaries: HashMap<String, std::sync::Arc<crate::policy::reason::Summary>>,
    calls: HashMap<u64, CallIdentity>,
    ended: VecDeque<u64>,
}

impl Identities {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, ruleset: u32, identity: AgentIdentity) {
        self.rulesets.insert(ruleset, identity);
    }

    pub fn get(&self, ruleset: &u32) -> Option<&AgentIdentity> {
        self.rulesets.get(ruleset)
    }

    pub fn values(&self) -> impl Iterator<Item = &AgentIdentity> {
        self.rulesets.values()
    }

    pub fn call_started(&mut self, cgroup_id: u64, call: CallIdentity) {
        self.calls.insert(cgroup_id, call);
    }

    pub fn call_ended(&mut self, cgroup_id: u64) {
        self.ended.push_back(cgroup_id);
        while self.ended.len() > ENDED_CALLS_KEPT {
            if let Some(oldest) = self.ended.pop_front() {
                self.calls.remove(&oldest);
            }
        }
    }

    pub fn call(&self, cgroup_id: u64) -> Option<&CallIdentity> {
        self.calls.get(&cgroup_id)
    }

    /// The rules of the enforced policy's agents, for the reasons of their denials.
    pub fn set_summaries(
        &mut self,
        summaries: impl IntoIterator<Item = crate::policy::reason::Summary>,
    ) {
        self.summaries = summaries
            .into_iter()
            .map(|s| (s.agent.clone(), std::sync::Arc::new(s)))
            .collect();
    }

    /// Why `event` (a denial) was denied, if its agent is known.
    pub fn reason(&self, event: &Event) -> Option<String> {
        let summary = self.summaries.get(&event.agent)?;
        Some(crate::policy::reason::explain(
            summary,
            &event.op,
            event.access.as_deref().unwrap_or(""),
            event.object().unwrap_or(""),
        ))
    }
}
