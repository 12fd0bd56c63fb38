//! Tool calls, as the owner runs them: started in a cgroup of their own under their agent's
//! (held to its rules, or to narrowed ones compiled with their hostnames resolved), ended when
//! their client says so or goes away, and followed across applies.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::owner::Owner;
use crate::{
    control::{
        protocol::{ErrorKind, Failure},
        server::CallStart,
    },
    dns::resolve::{compile_resolved, ResolveError},
    events::{
        event::{Event, Kind},
        identities::CallIdentity,
    },
    kernel::enforcer::EnforcerError,
    policy::{
        call,
        call::NarrowingError,
        compile::{self, CompiledAgent},
        Policy,
    },
};

/// Why a tool call was not started.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Narrowing(#[from] NarrowingError),
    #[error("no agent `{agent}` in the enforced policy (agents: {agents})")]
    NoAgent { agent: String, agents: String },
    #[error("no agent `{0}` in the policy")]
    NotInPolicy(String),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("compiling the call's rules failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    #[error(transparent)]
    Kernel(#[from] EnforcerError),
}

impl From<CallError> for Failure {
    fn from(err: CallError) -> Self {
        let kind = match &err {
            CallError::Narrowing(narrowing) if narrowing.is_malformed() => ErrorKind::BadRequest,
            CallError::Narrowing(_) | CallError::Resolve(_) => ErrorKind::Refused,
            CallError::NoAgent { .. } | CallError::NotInPolicy(_) => ErrorKind::NotFound,
            CallError::Kernel(EnforcerError::Call { .. }) => ErrorKind::Refused,
            CallError::Task(_) | CallError::Kernel(_) => ErrorKind::Failed,
        };
        Failure::new(kind, err.to_string())
    }
}

/// A tool call the daemon started and its client has not ended.
pub(super) struct LiveCall {
    pub(super) agent: String,
    pub(super) call: String,
    /// Relative to the cgroup v2 mount.
    pub(super) cgroup: String,
    pub(super) narrowing: Option<call::Parsed>,
    pub(super) started: Instant,
}

/// Longest the daemon waits, when a call ends, for its killed processes to go before it leaves
/// the removal of the cgroup to later ticks.
const CALL_END_WAIT: Duration = Duration::from_secs(1);

impl Owner {
    /// Starts tool call `call_id` of `agent`: its cgroup under the agent's, held to the agent's
    /// rules or to `narrowing` of them, before the client puts a process there.
    pub(super) async fn start_call(
        &mut self,
        agent: String,
        call_id: String,
        narrowing: call::Narrowing,
        command: Vec<String>,
    ) -> Result<CallStart, CallError> {
        call::check_id(&call_id)?;
        let Some(source) = self.policy.agents.iter().find(|a| a.name.0 == agent) else {
            let names: Vec<&str> = self
                .policy
                .agents
                .iter()
                .map(|a| a.name.0.as_str())
                .collect();
            return Err(CallError::NoAgent {
                agent,
                agents: names.join(", "),
            });
        };
        let parsed = if narrowing.is_empty() {
            None
        } else {
            let parsed = call::parse(&narrowing, source)?;
            call::check_guards(
                source,
                &parsed,
                &compile::Guards::of_this_machine(&self.sockets),
            )?;
            Some(parsed)
        };
        let landlock = match &parsed {
            Some(parsed) => self.landlock_plan(&call::narrow(source, parsed)),
            None => self.landlock_plan(source),
        };
        let own = match &parsed {
            Some(parsed) => Some(
                self.compile_narrowed(&agent, parsed, &self.policy.clone())
                    .await?,
            ),
            None => None,
        };
        let installed = self.enforcer.start_call(&agent, &call_id, own.as_ref())?;
        let entry = installed.entry;
        self.identities
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .call_started(
                entry.cgroup_id,
                CallIdentity {
                    agent: agent.clone(),
                    call: call_id.clone(),
                    cgroup: entry.cgroup.clone(),
                },
            );
        let mut event = Event::about(Kind::Call, &agent, &entry.cgroup, "start", self.coverage);
        event.call = Some(call_id.clone());
        event.details = Some(serde_json::json!({
            "command": command,
            "narrowing": narrowing,
            "cgroup_id": entry.cgroup_id,
        }));
        self.bus.publish(event);
        tracing::info!(
            agent,
            call = call_id,
            cgroup = entry.cgroup,
            "tool call started"
        );
        let path = self.enforcer.cgroup_root().join(&entry.cgroup);
        self.calls.insert(
            entry.cgroup_id,
            LiveCall {
                agent,
                call: call_id,
                cgroup: entry.cgroup,
                narrowing: parsed,
                started: Instant::now(),
            },
        );
        Ok(CallStart {
            cgroup: path.display().to_string(),
            cgroup_id: entry.cgroup_id,
            landlock,
        })
    }

    /// The narrowed rules of one call of `agent` in `policy`, compiled (hostnames resolved).
    pub(super) async fn compile_narrowed(
        &self,
        agent: &str,
        narrowing: &call::Parsed,
        policy: &Policy,
    ) -> Result<CompiledAgent, CallError> {
        let source = policy
            .agents
            .iter()
            .find(|a| a.name.0 == agent)
            .ok_or_else(|| CallError::NotInPolicy(agent.to_owned()))?;
        let narrowed = Policy {
            file: policy.file.clone(),
            agents: vec![call::narrow(source, narrowing)],
        };
        let max_ttl = self.max_ttl;
        let sockets = self.sockets.clone();
        let mut compiled =
            tokio::task::spawn_blocking(move || compile_resolved(narrowed, max_ttl, &sockets))
                .await
                .map_err(CallError::Task)??;
        Ok(compiled.agents.remove(0))
    }

    /// Every narrowed call's rules compiled against `policy`; a call whose rules cannot be
    /// compiled is left out, so it is held to no rules at all until it ends.
    pub(super) async fn narrowed_calls(&self, policy: &Policy) -> HashMap<u64, CompiledAgent> {
        let mut compiled = HashMap::new();
        let guards = compile::Guards::of_this_machine(&self.sockets);
        for (cgroup_id, live) in &self.calls {
            let Some(narrowing) = &live.narrowing else {
                continue;
            };
            let agent = policy.agents.iter().find(|a| a.name.0 == live.agent);
            if let Some(Err(err)) = agent.map(|a| call::check_guards(a, narrowing, &guards)) {
                tracing::warn!(call = live.call, "the call is denied everything: {err}");
                continue;
            }
            match self.compile_narrowed(&live.agent, narrowing, policy).await {
                Ok(rules) => {
                    compiled.insert(*cgroup_id, rules);
                }
                Err(err) => {
                    tracing::warn!(call = live.call, "the call is denied everything: {err}")
                }
            }
        }
        compiled
    }

    /// Ends the calls whose agent the enforced policy no longer has, or has moved to another
    /// cgroup (the call's cgroup would be under none of the agent's programs).
    pub(super) async fn end_orphaned_calls(&mut self) {
        let orphans: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| {
                !self.policy.agents.iter().any(|a| {
                    a.name.0 == c.agent && c.cgroup.starts_with(&format!("{}/", a.cgroup.0))
                })
            })
            .map(|(id, _)| *id)
            .collect();
        for cgroup_id in orphans {
            self.end_call(cgroup_id, None, "its agent left the policy")
                .await;
        }
    }

    /// Ends a call: kills what is left of it, removes its cgroup (or, if its processes take
    /// longer to go, leaves that to later ticks — its rules hold meanwhile) and reports the end.
    pub(super) async fn end_call(&mut self, cgroup_id: u64, status: Option<i32>, reason: &str) {
        let Some(live) = self.calls.remove(&cgroup_id) else {
            return;
        };
        if let Err(err) = self.enforcer.kill_call(cgroup_id) {
            tracing::warn!(call = live.call, "killing the call's processes: {err}");
        }
        let deadline = Instant::now() + CALL_END_WAIT;
        let removed = loop {
            match self.enforcer.remove_call(cgroup_id) {
                Ok(true) => break true,
                Ok(false) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Ok(false) => break false,
                Err(err) => {
                    tracing::warn!(call = live.call, "removing the call: {err}");
                    break false;
                }
            }
        };
        if !removed {
            self.ending.push(cgroup_id);
        }
        self.identities
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .call_ended(cgroup_id);
        let mut event = Event::about(Kind::Call, &live.agent, &live.cgroup, "end", self.coverage);
        event.call = Some(live.call.clone());
        event.details = Some(serde_json::json!({
            "status": status,
            "reason": if status.is_some() { reason } else if reason == "ended" { "its client went away" } else { reason },
            "duration_ms": live.started.elapsed().as_millis() as u64,
            "cgroup_removed": removed,
        }));
        self.bus.publish(event);
    }

    /// Removes the cgroups of ended calls whose processes have gone since.
    pub(super) fn remove_ended_calls(&mut self) {
        let enforcer = &mut self.enforcer;
        self.ending.retain(|cgroup_id| {
            let _ = enforcer.kill_call(*cgroup_id);
            !matches!(enforcer.remove_call(*cgroup_id), Ok(true))
        });
    }
}
