//! The policy compiler: a parsed policy in, the exact entries of the kernel's maps out. Pure (no
//! I/O), so every rule's meaning in the kernel is unit-tested here.
//!
//! Entries carry no ruleset id: the installer assigns a fresh one to each agent whose rules changed
//! on an apply, so that the new rules sit complete in the maps before the agent's cgroup is
//! switched to them (an agent whose rules did not change keeps its ruleset).

mod files;
mod guards;
mod net;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use claw_common::access;
pub use files::FileRule;
use files::{
    guard_credentials, inherit_directory_grants, prefixes_of, reserve_sockets,
    stop_writes_short_of_protected_trees, WRITING,
};
pub use guards::{unescape_mountinfo, Guards, Sockets};
use net::redirects;
pub use net::{is_guarded, listen_rules, merge, net_rules, NetRule, RedirectEntry};

use crate::policy::{
    devices,
    limits::Limits,
    rules::{ConnectRule, Host},
    Mode, Policy, RunSpec,
};

/// What the daemon needs to install one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    pub agents: Vec<CompiledAgent>,
    /// The guarded networks it was compiled with: DNS answers never open an address in one.
    pub guarded: Vec<([u8; 16], u8)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledAgent {
    pub name: String,
    /// Relative to the cgroup v2 mount.
    pub cgroup: String,
    pub mode: Mode,
    /// May create executable memory without a file.
    pub jit: bool,
    pub limits: Limits,
    pub gpu: bool,
    pub run: Option<RunSpec>,
    pub file_rules: Vec<FileRule>,
    pub net_rules: Vec<NetRule>,
    /// Connect rules naming a host: the daemon resolves them and adds their addresses.
    pub hostname_rules: Vec<ConnectRule>,
    pub redirects: Vec<RedirectEntry>,
    /// ENV_RULES entries: `NAME=` of each preload variable the agent's programs may not get.
    pub env_rules: Vec<FileRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agent `{agent}`: {message}")]
pub struct CompileError {
    pub agent: String,
    pub message: String,
}

/// How d_path names a pidfd's file (pidfs), NUL-terminated as exact FILE_RULES entries are.
pub const PIDFD_FILE: &[u8] = b"anon_inode:[pidfd]\0";

/// Compiles `policy` with this machine's guards and claw-agent's default sockets.
pub fn compile(policy: &Policy) -> Result<Compiled, CompileError> {
    compile_guarding(policy, &Guards::of_this_machine(&Sockets::default()))
}

/// `compile`, with the guards given.
pub fn compile_guarding(policy: &Policy, guards: &Guards) -> Result<Compiled, CompileError> {
    let credentials = &guards.credentials;
    let agents = in_parallel(&policy.agents, |agent| {
        let rules = &agent.rules;
        let mut prefixes: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
        let grants = [
            (&rules.files.read, access::READ),
            (&rules.files.write, WRITING),
            // The kernel opens and maps a program it executes; an interpreter reads its
            // script by name.
            (&rules.exec, access::READ | access::EXEC | access::MAP),
            // The loader opens a library, then maps it executable.
            (&rules.libraries, access::READ | access::MAP),
        ];
        for (paths, bits) in grants {
            for path in paths {
                for prefix in prefixes_of(path) {
                    *prefixes.entry(prefix).or_default() |= bits;
                }
            }
        }
        if agent.devices.gpu {
            for prefix in devices::GPU_PATH_PREFIXES {
                *prefixes.entry(prefix.to_vec()).or_default() |= access::READ | access::WRITE;
            }
        }
        let named: Vec<Vec<u8>> = prefixes.keys().cloned().collect();
        inherit_directory_grants(&mut prefixes);
        stop_writes_short_of_protected_trees(&mut prefixes);
        guard_credentials(&mut prefixes, &named, credentials);
        let error = |message| CompileError {
            agent: agent.name.0.clone(),
            message,
        };
        reserve_sockets(&mut prefixes, &rules.files.write, guards).map_err(error)?;
        // pidfd_open(2) opens a pidfs file on 6.9 and later (read-write, named
        // `anon_inode:[pidfd]`): a handle on a process, not a file of the node. What is done
        // with it meets the signal and ptrace decisions (pidfd_send_signal, pidfd_getfd).
        *prefixes.entry(PIDFD_FILE.to_vec()).or_default() |= access::READ | access::WRITE;
        let hostname_rules = rules
            .connect
            .iter()
            .filter(|r| matches!(r.host, Host::Name(_)))
            .cloned()
            .collect();
        let mut net_rules = net_rules(&rules.connect, &guards.networks).map_err(error)?;
        net_rules.extend(listen_rules(&rules.listen).map_err(error)?);
        let redirects = redirects(&rules.redirect).map_err(error)?;
        Ok(CompiledAgent {
            name: agent.name.0.clone(),
            cgroup: agent.cgroup.0.clone(),
            mode: agent.mode,
            jit: agent.jit,
            limits: agent.limits.clone(),
            gpu: agent.devices.gpu,
            run: agent.run.clone(),
            file_rules: prefixes
                .into_iter()
                .map(|(prefix, access)| FileRule { prefix, access })
                .collect(),
            net_rules,
            hostname_rules,
            redirects,
            env_rules: crate::policy::rules::PRELOAD_VARIABLES
                .iter()
                .filter(|name| !agent.allow_env.iter().any(|a| a.0 == **name))
                .map(|name| FileRule {
                    prefix: format!("{name}=").into_bytes(),
                    access: access::EXEC,
                })
                .collect(),
        })
    })
    .into_iter()
    .collect::<Result<_, _>>()?;
    Ok(Compiled {
        agents,
        guarded: guards.networks.clone(),
    })
}

/// `compile` of every item, in order, the items split between the machine's CPUs: agents
/// compile independently, and a policy of 100 agents with 10,000 rules each takes a noticeable
/// part of a second per core. (A few scoped threads per apply; a thread pool crate would keep
/// its threads for the daemon's whole life.)
fn in_parallel<T: Sync, R: Send>(items: &[T], compile: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus == 1 || items.len() < 2 {
        return items.iter().map(&compile).collect();
    }
    let chunk = items.len().div_ceil(cpus);
    let compile = &compile;
    std::thread::scope(|scope| {
        let parts: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(compile).collect::<Vec<R>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|part| {
                part.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}
