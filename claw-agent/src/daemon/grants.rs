//! Grants, as the owner makes them: exactly the object of one logged denial, for its agent or
//! its live tool call, within a lifetime (`clawctl allow`).

use crate::{
    control::grant,
    events::audit,
    events::event::{self, Event},
    policy::compile::{self},
};

use super::owner::Owner;

impl Owner {
    /// Grants the object of logged denial `seq` to its agent (or, `call_only`, its live call).
    pub(super) async fn allow(
        &mut self,
        seq: u64,
        lifetime: grant::Lifetime,
        call_only: bool,
    ) -> Result<String, String> {
        let denial = audit::find(self.audit_log.clone(), seq)
            .await
            .ok_or_else(|| {
                format!("no event {seq} in the audit log — give the `seq` of a denial (clawctl deny-log --json shows it)")
            })?;
        let (cgroup_id, whom) = if call_only {
            let call = denial
                .call
                .as_deref()
                .ok_or_else(|| format!("event {seq} is not from a tool call — leave out --call-only to grant it to agent `{}`", denial.agent))?;
            let live = self
                .calls
                .iter()
                .find(|(_, c)| c.call == call && c.agent == denial.agent)
                .ok_or_else(|| format!("tool call `{call}` has ended — grant it to agent `{}` (leave out --call-only)", denial.agent))?;
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
                .ok_or_else(|| format!("agent `{}` is not in the enforced policy", denial.agent))?;
            (agent.cgroup_id, format!("agent `{}`", denial.agent))
        };
        let guards = compile::Guards::of_this_machine(&self.sockets);
        if let Some(directory) = denial
            .path
            .as_deref()
            .and_then(|p| guards.socket_directory_of(p))
        {
            return Err(format!(
                "event {seq}: no grant may let an agent into {}, where claw-agent's sockets are",
                directory.0
            ));
        }
        let (key, entry) = grant::entry(&denial, cgroup_id, lifetime, event::boot_time_ns())?;
        self.enforcer
            .grant(key, entry)
            .map_err(|err| err.to_string())?;
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
            "grant",
            &denial.agent,
            &denial.cgroup,
            "allow",
            self.coverage_name,
        );
        event.call = call_only.then(|| denial.call.clone()).flatten();
        event.path = denial.path.clone();
        event.destination = denial.destination.clone();
        event.access = denial.access.clone();
        event.decision = "allow".to_owned();
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
