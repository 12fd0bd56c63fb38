//! The owner: the one task that holds the kernel objects and the enforced policy. Others ask it
//! through `Control`; `serve` dispatches each request to its method (tool calls and grants are
//! in `calls` and `grants`).

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{atomic::Ordering, Arc, RwLock},
    time::Duration,
};

use tokio::sync::mpsc;

use super::{calls::LiveCall, install::*};
use crate::{
    control::{
        protocol::{AgentStatus, ErrorKind, Failure, LimitStatus, Status, Usage},
        server::Control,
    },
    dns::Resolvers,
    events::{
        bus::{Bus, Stage},
        event::{self, Decision, Event, Kind},
        identities::Identities,
        watch,
    },
    kernel::{
        cgroupfs,
        enforcer::{Coverage, Enforcer, InstalledAgent},
    },
    policy::{
        self,
        compile::{self, Compiled, CompiledAgent},
        describe,
        landlock::{self, Plan},
        prepare::{prepare, PrepareError, Prepared},
        rules::RulePath,
        Policy, RunSpec,
    },
    supervise,
};

/// The one task that holds the kernel objects; others ask it through `Control`.
pub(super) struct Owner {
    pub(super) enforcer: Enforcer,
    pub(super) supervisors: HashMap<String, supervise::Supervisor>,
    pub(super) bus: Arc<Bus>,
    pub(super) coverage: Coverage,
    /// What the cgroup watchers know of the agents.
    pub(super) view: watch::Agents,
    pub(super) compiled: Compiled,
    pub(super) allow_missing_limits: bool,
    pub(super) unenforced: Unenforced,
    /// The enforced policy, as read (its hostnames are resolved again when their answers expire).
    pub(super) policy: Policy,
    pub(super) resolvers: Resolvers,
    /// Longest a hostname answer is trusted (the agents' resolvers, narrowed calls' rules).
    pub(super) max_ttl: Duration,
    pub(super) generation: u64,
    pub(super) identities: Arc<RwLock<Identities>>,
    /// Tool calls running, by cgroup id.
    pub(super) calls: HashMap<u64, LiveCall>,
    /// Calls ended whose processes had not gone yet: removed on a later tick.
    pub(super) ending: Vec<u64>,
    /// Where denials are looked up for `clawctl allow`.
    pub(super) audit_log: PathBuf,
    /// claw-agent's sockets, which every policy keeps agents out of but for the agent socket.
    pub(super) sockets: compile::Sockets,
    /// Whether the processes claw starts are file-confined by Landlock (coverage `landlock`,
    /// or stacked on BPF LSM).
    pub(super) landlock: bool,
}

/// Why a policy was not applied; the previous one stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error("{file}: not applied, the previous policy stays: {source}")]
    NotApplied {
        file: String,
        #[source]
        source: Box<InstallError>,
    },
}

impl From<ApplyError> for Failure {
    fn from(err: ApplyError) -> Self {
        let kind = match &err {
            ApplyError::Prepare(_) => ErrorKind::Refused,
            ApplyError::NotApplied { source, .. } => source.kind(),
        };
        Failure::new(kind, err.to_string())
    }
}

impl Owner {
    /// The Landlock layer for the processes claw starts as `agent` (its policy, narrowed for a
    /// tool call), or None where claw-agent runs without one or the agent is in audit mode.
    pub(super) fn landlock_plan(&self, agent: &policy::Agent) -> Option<Plan> {
        if !self.landlock {
            return None;
        }
        let writable: Vec<RulePath> = self
            .policy
            .agents
            .iter()
            .flat_map(|a| a.rules.files.write.iter().cloned())
            .collect();
        let contain = self.coverage == Coverage::Landlock;
        let mut plan = landlock::plan(
            agent,
            &compile::Guards::of_this_machine(&self.sockets),
            &writable,
            contain,
        )?;
        let abi = crate::kernel::preflight::landlock_abi().unwrap_or(0);
        plan.notes.extend(landlock::abi_notes(abi));
        Some(plan)
    }

    /// The Landlock layer of the enforced policy's agent `name`.
    pub(super) fn landlock_plan_of(&self, name: &str) -> Option<Plan> {
        let agent = self.policy.agents.iter().find(|a| a.name.0 == name)?;
        self.landlock_plan(agent)
    }

    /// Starts, restarts or stops supervised processes to match the installed policy.
    pub(super) async fn reconcile(&mut self) {
        let wanted: HashMap<String, (String, RunSpec, Option<Plan>)> = self
            .compiled
            .agents
            .iter()
            .filter_map(|a| {
                let plan = self.landlock_plan_of(&a.name);
                Some((a.name.clone(), (a.cgroup.clone(), a.run.clone()?, plan)))
            })
            .collect();
        // A changed Landlock layer restarts the process: a running one keeps the rules it
        // started with.
        let stale: Vec<String> = self
            .supervisors
            .iter()
            .filter(|(name, s)| {
                wanted
                    .get(*name)
                    .is_none_or(|(_, spec, plan)| *spec != s.spec || *plan != s.landlock)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(supervisor) = self.supervisors.remove(&name) {
                supervisor.stop().await;
            }
        }
        for (name, (cgroup, spec, landlock)) in wanted {
            if self.supervisors.contains_key(&name) {
                continue;
            }
            let agent = supervise::Agent {
                name: name.clone(),
                cgroup: format!("/{cgroup}"),
                cgroup_dir: self.enforcer.cgroup_root().join(&cgroup),
                coverage: self.coverage,
                landlock,
            };
            let supervisor = supervise::start(agent, spec, self.bus.clone());
            self.supervisors.insert(name, supervisor);
        }
    }

    pub(super) async fn serve(mut self, mut requests: mpsc::Receiver<Control>) {
        self.reconcile().await;
        while let Some(request) = requests.recv().await {
            match request {
                Control::Status(reply) => {
                    let _ = reply.send(self.status());
                }
                Control::Rules(reply) => {
                    // Made when asked: for 1,000,000 rules a quarter second no apply should wait.
                    let lines = describe::rule_lines(&self.policy);
                    let _ = reply.send((self.policy.file.display().to_string(), lines));
                }
                Control::Tick => self.tick(),
                Control::Shutdown(done) => {
                    for (_, supervisor) in self.supervisors.drain() {
                        supervisor.stop().await;
                    }
                    let _ = done.send(());
                }
                Control::Apply { policy, reply } => {
                    let _ = reply.send(self.apply(policy).await.map_err(Failure::from));
                }
                Control::Landlock { agent, reply } => {
                    let answer = match self.policy.agents.iter().find(|a| a.name.0 == agent) {
                        Some(found) => Ok(self.landlock_plan(found)),
                        None => Err(Failure::new(
                            ErrorKind::NotFound,
                            format!("no agent `{agent}` in the enforced policy"),
                        )),
                    };
                    let _ = reply.send(answer);
                }
                Control::StartCall {
                    agent,
                    call,
                    narrowing,
                    command,
                    reply,
                } => {
                    let started = self.start_call(agent, call, narrowing, command).await;
                    let _ = reply.send(started.map_err(Failure::from));
                }
                Control::Allow {
                    event,
                    lifetime,
                    call_only,
                    reply,
                } => {
                    let allowed = self.allow(event, lifetime, call_only).await;
                    let _ = reply.send(allowed.map_err(Failure::from));
                }
                Control::EndCall {
                    cgroup_id,
                    status,
                    reply,
                } => {
                    self.end_call(cgroup_id, status, "ended").await;
                    let _ = reply.send(());
                }
            }
        }
    }

    /// Applies the policy at `path` and publishes a `policy` event saying how it went.
    pub(super) async fn apply(&mut self, path: PathBuf) -> Result<(String, u64), ApplyError> {
        let result = self.try_apply(path.clone()).await;
        let mut event = Event::about(Kind::Policy, "-", "-", "apply", self.coverage);
        event.decision = if result.is_ok() {
            Decision::Applied
        } else {
            Decision::Rejected
        };
        event.path = Some(path.display().to_string());
        event.details = Some(match &result {
            Ok((_, generation)) => serde_json::json!({ "generation": generation }),
            Err(err) => {
                serde_json::json!({ "error": err.to_string(), "generation": self.generation })
            }
        });
        self.bus.publish(event);
        result
    }

    pub(super) async fn try_apply(&mut self, path: PathBuf) -> Result<(String, u64), ApplyError> {
        let started = std::time::Instant::now();
        let prepared = prepare(&path, &self.sockets)?;
        let prepared_in = started.elapsed();
        let narrowed = self.narrowed_calls(&prepared.policy).await;
        self.install(prepared, &narrowed)?;
        let installed_in = started.elapsed() - prepared_in;
        self.end_orphaned_calls().await;
        self.reconcile().await;
        self.generation += 1;
        tracing::info!(
            policy = %self.policy.file.display(), generation = self.generation,
            prepare_ms = prepared_in.as_millis(), install_ms = installed_in.as_millis(),
            total_ms = started.elapsed().as_millis(), "policy applied"
        );
        Ok((self.policy.file.display().to_string(), self.generation))
    }

    pub(super) fn install(
        &mut self,
        prepared: Prepared,
        narrowed: &HashMap<u64, CompiledAgent>,
    ) -> Result<(), ApplyError> {
        self.unenforced = install_policy(
            &mut self.enforcer,
            &mut self.resolvers,
            &prepared.compiled,
            narrowed,
            self.allow_missing_limits,
        )
        .map_err(|source| ApplyError::NotApplied {
            file: prepared.policy.file.display().to_string(),
            source: Box::new(source),
        })?;
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = agent_views(&prepared.compiled);
        record_identities(&self.enforcer, &prepared.policy, &self.identities);
        let replaced = (
            std::mem::replace(&mut self.compiled, prepared.compiled),
            std::mem::replace(&mut self.policy, prepared.policy),
        );
        // Freeing a large policy takes a noticeable part of an apply: done beside it (or here,
        // when the system refuses the thread: the refused closure is dropped on this one).
        let _ = std::thread::Builder::new().spawn(move || drop(replaced));
        Ok(())
    }

    /// Each second: ended calls' cgroups removed, spent grants pruned.
    pub(super) fn tick(&mut self) {
        self.remove_ended_calls();
        if let Err(err) = self.enforcer.prune_grants(event::boot_time_ns()) {
            tracing::warn!("removing spent grants: {err}");
        }
    }

    pub(super) fn agent_status(&self, installed: &InstalledAgent) -> AgentStatus {
        let root = self.enforcer.cgroup_root();
        let compiled = self
            .compiled
            .agents
            .iter()
            .find(|c| c.name == installed.name);
        let unenforced = self.unenforced.get(&installed.name);
        let limits = compiled
            .map(|c| {
                let set = c.limits.set();
                c.limits
                    .files()
                    .into_iter()
                    .filter(|(name, ..)| set.contains(name))
                    .map(|(name, _, value)| LimitStatus {
                        name: name.to_owned(),
                        value,
                        enforced: !unenforced.is_some_and(|u| u.contains(&name)),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let number = |file: &str| {
            cgroupfs::read_file(root, &installed.cgroup, file).and_then(|v| v.parse().ok())
        };
        let keyed = |file: &str, key: &str| {
            cgroupfs::read_file(root, &installed.cgroup, file).and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            })
        };
        let usage = Usage {
            memory_bytes: number("memory.current"),
            tasks: number("pids.current"),
            cpu_usec: keyed("cpu.stat", "usage_usec"),
            oom_kills: keyed("memory.events", "oom_kill"),
            processes: cgroupfs::read_file(root, &installed.cgroup, "cgroup.procs")
                .map(|t| t.lines().filter_map(|l| l.parse().ok()).collect())
                .unwrap_or_default(),
        };
        AgentStatus {
            name: installed.name.clone(),
            cgroup: format!("/{}", installed.cgroup),
            cgroup_id: installed.cgroup_id,
            mode: installed.mode.as_str().to_owned(),
            file_rules: installed.file_rules.len(),
            net_rules: installed.net_rules.len(),
            gpu: compiled.is_some_and(|c| c.gpu),
            restarts: self
                .supervisors
                .get(&installed.name)
                .map(|s| s.restarts.load(Ordering::Relaxed)),
            limits,
            usage,
        }
    }

    pub(super) fn status(&self) -> Status {
        let mut counters = self.enforcer.counters().unwrap_or_else(|err| {
            tracing::warn!("reading the kernel counters: {err}");
            Default::default()
        });
        counters.events_undecodable = self.bus.lost(Stage::Decode);
        counters.events_lost = Stage::ALL
            .iter()
            .map(|stage| (stage.name().to_owned(), self.bus.lost(*stage)))
            .collect();
        Status {
            enforcing: self.enforcer.is_enforcing(),
            coverage: self.enforcer.coverage(),
            landlock: self.landlock,
            policy: self.policy.file.display().to_string(),
            cgroup_root: self.enforcer.cgroup_root().display().to_string(),
            generation: self.generation,
            agents: self
                .enforcer
                .installed()
                .iter()
                .map(|a| self.agent_status(a))
                .collect(),
            programs: self.enforcer.programs(),
            counters,
        }
    }
}
