//! Grants, as the owner makes them: exactly the object of one logged denial, for its agent or
//! its live tool call, within a lifetime (`clawctl allow`).

use super::owner::Owner;
use crate::{
    control::{
        grant,
        grant::GrantError,
        protocol::{ErrorKind, Failure},
    },
    events::{
        audit,
        event::{self, Decision, Event, Kind},
    },
    kernel::enforcer::EnforcerError,
    policy::compile::{self},
};

/// Why a denial's object was not granted.
#[derive(Debug, thiserror::Error)]
pub enum AllowError {
    #[error(
        "no event {seq} in the audit log — give the `seq` of a denial (clawctl deny-log --json shows it)"
    )]
    NoEvent { seq: u64 },
    #[error(
        "event {seq} is not from a tool call — leave out --call-only to grant it to agent `{agent}`"
    )]
    NotFromCall { seq: u64, agent: String },
    #[error("tool call `{call}` has ended — grant it to agent `{agent}` (leave out --call-only)")]
    CallEnded { call: String, agent: String },
    #[error("agent `{0}` is not in the enforced policy")]
    NoAgent(String),
    #[error(
        "event {seq}: no grant may let an agent into {directory}, where claw-agent's sockets are"
    )]
    SocketDirectory { seq: u64, directory: String },
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error(transparent)]
    Kernel(#[from] EnforcerError),
}

impl From<AllowError> for Failure {
    fn from(err: AllowError) -> Self {
        let kind = match &err {
            AllowError::NoEvent { .. } | AllowError::CallEnded { .. } | AllowError::NoAgent(_) => {
                ErrorKind::NotFound
            }
            AllowError::NotFromCall { .. } | AllowError::Grant(GrantError::NoLifetime) => {
                ErrorKind::BadRequest
            }
            AllowError::SocketDirectory { .. } | AllowError::Grant(_) => ErrorKind::Refused,
            AllowError::Kernel(_) => ErrorKind::Failed,
        };
        Failure::new(kind, err.to_string())
    }
}

impl Owner {
    /// Grants the object of logged denial `seq` to its agent (or, `call_only`, its live call).
    pub(super) async fn allow(
        &mut self,
        seq: u64,
        lifetime: grant::Lifetime,
        call_only: bool,
    ) -> Result<String, AllowError> {
        let denial = audit::find(self.audit_log.clone(), seq)
            .await
            .ok_or(AllowError::NoEvent { seq })?;
        let (cgroup_id, whom) = if call_only {
            let call = denial
                .call
                .as_deref()
                .ok_or_else(|| AllowError::NotFromCall {
                    seq,
                    agent: denial.agent.clone(),
                })?;
            let live = self
                .calls
                .iter()
                .find(|(_, c)| c.call == call && c.agent == denial.agent)
                .ok_or_else(|| AllowError::CallEnded {
                    call: call.to_owned(),
                    agent: denial.agent.clone(),
                })?;
            (
                *live.0,
                format!("tool call `{call}` of agent `{}`", denial.agent),
            )
        } else {
            let agent = self
                .enforcer
                .installed()
                .iter()
                .find(|a| a.name == denial.agent)
                .ok_or_else(|| AllowError::NoAgent(denial.agent.clone()))?;
            (agent.cgroup_id, format!("agent `{}`", denial.agent))
        };
        let guards = compile::Guards::of_this_machine(&self.sockets);
        if let Some(directory) = denial
            .path
            .as_deref()
            .and_then(|p| guards.socket_directory_of(p))
        {
            return Err(AllowError::SocketDirectory {
                seq,
                directory: directory.0.clone(),
            });
        }
        let (key, entry) = grant::entry(&denial, cgroup_id, lifetime, event::boot_time_ns())?;
        self.enforcer.grant(key, entry)?;
        let object = denial.object().unwrap_or("-").to_owned();
        let how = match (lifetime.uses, lifetime.seconds) {
            (Some(uses), Some(s)) => format!("{uses} use(s) within {s} s"),
            (None, Some(s)) => format!("for {s} s"),
            (Some(uses), None) => format!("{uses} use(s)"),
            (None, None) => "until revoked".to_owned(),
        };
        let message = format!(
            "{} {object}{} granted to {whom}: {how}",
            denial.op,
            denial
                .access
                .as_deref()
                .map(|a| format!(" ({a})"))
                .unwrap_or_default()
        );
        let mut event = Event::about(
            Kind::Grant,
            &denial.agent,
            &denial.cgroup,
            "allow",
            self.coverage,
        );
        event.call = call_only.then(|| denial.call.clone()).flatten();
        event.path = denial.path.clone();
        event.destination = denial.destination.clone();
        event.access = denial.access.clone();
        event.decision = Decision::Allow;
        event.details = Some(serde_json::json!({
            "event": seq,
            "uses": lifetime.uses,
            "seconds": lifetime.seconds,
        }));
        self.bus.publish(event);
        tracing::info!("{message}");
        Ok(message)
    }
}
