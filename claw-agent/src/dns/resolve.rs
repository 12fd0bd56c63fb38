//! Hostnames in connect rules become the addresses they resolve to now, with the time those
//! answers expire (their TTL), after which claw-agent resolves them again.
//!
//! hickory-resolver rather than the C library's getaddrinfo: it reports TTLs, reads /etc/hosts
//! and /etc/resolv.conf itself, and works in a statically linked daemon.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use hickory_resolver::{
    config::{ResolveHosts, ResolverConfig, ResolverOpts},
    net::runtime::TokioRuntimeProvider,
    TokioResolver,
};

use crate::policy::{
    compile::{self, Compiled},
    rules::{ConnectRule, Host},
    Policy,
};

/// Why hostnames could not be resolved, or their rules compiled.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot set up name resolution: {0}")]
    Setup(String),
    #[error(
        "cannot resolve `{name}` (in `{rule}`): {reason} — fix the name or the node's DNS, or use an address"
    )]
    Lookup {
        name: String,
        rule: String,
        reason: String,
    },
    #[error("starting the resolver: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("{file}: {source}")]
    Compile {
        file: String,
        #[source]
        source: compile::CompileError,
    },
    #[error("{file}: agent `{agent}`: {reason}")]
    Agent {
        file: String,
        agent: String,
        reason: String,
    },
}

/// Address rules for every hostname rule, and when the earliest answer expires.
pub struct Resolved {
    pub rules: Vec<ConnectRule>,
    pub expires: Option<Instant>,
}

/// The node's resolver configuration, or (where the node has none) the hosts file alone.
fn resolver() -> Result<TokioResolver, ResolveError> {
    let builder = match TokioResolver::builder_tokio() {
        Ok(builder) => builder,
        Err(_) => {
            let mut options = ResolverOpts::default();
            options.use_hosts_file = ResolveHosts::Always;
            TokioResolver::builder_with_config(
                ResolverConfig::default(),
                TokioRuntimeProvider::default(),
            )
            .with_options(options)
        }
    };
    builder
        .build()
        .map_err(|err| ResolveError::Setup(err.to_string()))
}

pub async fn resolve(rules: &[ConnectRule], max_ttl: Duration) -> Result<Resolved, ResolveError> {
    let mut out = Resolved {
        rules: Vec::new(),
        expires: None,
    };
    if !rules.iter().any(|r| matches!(r.host, Host::Name(_))) {
        return Ok(out);
    }
    let resolver = resolver()?;
    for rule in rules {
        // A pattern (`*.github.com`) has no address: only the agent's resolver answers names
        // under it.
        let Host::Name(name) = &rule.host else {
            continue;
        };
        if name.starts_with('*') {
            continue;
        }
        let answer =
            resolver
                .lookup_ip(name.as_str())
                .await
                .map_err(|err| ResolveError::Lookup {
                    name: name.clone(),
                    rule: rule.to_string(),
                    reason: err.to_string(),
                })?;
        let expires = answer.valid_until().min(Instant::now() + max_ttl);
        out.expires = Some(out.expires.map_or(expires, |e| e.min(expires)));
        for address in answer.iter() {
            let host = match address {
                IpAddr::V4(v4) => Host::ipv4(v4, 32),
                IpAddr::V6(v6) => Host::Network {
                    address: v6.octets(),
                    prefix_len: 128,
                },
            };
            out.rules.push(ConnectRule {
                host,
                ..rule.clone()
            });
        }
    }
    Ok(out)
}
/// Compiles `policy` with its hostnames resolved now, into address rules: for tool calls with
/// narrowed rules, which the agents' resolvers do not answer for. Blocks while resolving: call
/// it off the async runtime.
pub fn compile_resolved(
    policy: Policy,
    max_ttl: Duration,
    sockets: &compile::Sockets,
) -> Result<Compiled, ResolveError> {
    let file = policy.file.display().to_string();
    let guards = compile::Guards::of_this_machine(sockets);
    let mut compiled =
        compile::compile_guarding(&policy, &guards).map_err(|source| ResolveError::Compile {
            file: file.clone(),
            source,
        })?;
    let in_agent = |agent: &str| {
        let (file, agent) = (file.clone(), agent.to_owned());
        move |reason: String| ResolveError::Agent {
            file,
            agent,
            reason,
        }
    };
    if compiled.agents.iter().any(|a| !a.hostname_rules.is_empty()) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ResolveError::Runtime)?;
        for (agent, source) in compiled.agents.iter_mut().zip(&policy.agents) {
            let resolved = runtime
                .block_on(resolve(&agent.hostname_rules, max_ttl))
                .map_err(|err| in_agent(&agent.name)(err.to_string()))?;
            // Address rules again, so that ports inherited across both are merged in one pass.
            // An answer in a guarded network opens nothing (a name may be made to resolve to
            // the metadata service): only a rule naming the address does.
            let mut rules: Vec<_> = resolved
                .rules
                .into_iter()
                .filter(|rule| match rule.host {
                    crate::policy::rules::Host::Network { address, .. } => {
                        !compile::is_guarded(&address, &guards.networks)
                    }
                    crate::policy::rules::Host::Name(_) => false,
                })
                .collect();
            rules.extend(source.rules.connect.iter().cloned());
            agent.net_rules =
                compile::net_rules(&rules, &guards.networks).map_err(in_agent(&agent.name))?;
        }
    }
    Ok(compiled)
}
