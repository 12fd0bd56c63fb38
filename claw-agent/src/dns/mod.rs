//! The resolver claw-agent runs for each agent. The kernel sends the agent's DNS here, whatever
//! server it was addressed to (net.rs); a name its connect rules name is asked of the node's
//! resolvers, and the addresses answered go into DNS_ALLOW for the agent, with their TTL, for the
//! ports those rules allow. Any other name is refused (DNS is also a way out: a query can carry
//! data to whoever serves the name), and the refusal reported as a `deny` event.
//!
//! Answers are passed on as the node's resolver gave them; only the question is checked here.
//!
//! `judge` decides (pure), `serve` answers, `upstream` asks the node's resolvers, and `resolve`
//! resolves the hostnames of narrowed tool calls. It may use `events` (to report refusals),
//! `kernel` (the DNS_ALLOW map handed over), `policy` and `defaults`.

pub mod resolve;

mod judge;
mod serve;
#[cfg(test)]
mod tests;
mod upstream;

use std::{
    collections::HashMap as StdHashMap,
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use aya::maps::{HashMap, MapData};
use claw_common::{Resolved, ResolvedKey};
pub use judge::{judge, openings, Names, Verdict, MIN_TTL};
pub use serve::for_udp;
use serve::{serve_tcp, serve_udp};
use tokio::{
    net::{TcpListener, UdpSocket},
    task::JoinHandle,
};
pub use upstream::nameservers;

use crate::{
    events::{bus::Bus, event::boot_time_ns},
    kernel::enforcer::Coverage,
    policy::rules::ConnectRule,
};

/// Who a resolver answers for.
#[derive(Debug, Clone)]
struct Client {
    agent: String,
    /// Relative to the cgroup v2 mount.
    cgroup: String,
    /// 0 until the agent's cgroup is installed: its answers open nothing before.
    cgroup_id: u64,
    names: Names,
    /// Networks no answer opens (compile::Compiled::guarded).
    guarded: Arc<Vec<([u8; 16], u8)>>,
}

struct Running {
    port: u16,
    client: Arc<RwLock<Client>>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

type AllowMap = Arc<Mutex<HashMap<MapData, ResolvedKey, Resolved>>>;

/// Shared by every resolver task.
#[derive(Clone)]
struct Context {
    allow: AllowMap,
    bus: Arc<Bus>,
    coverage: Coverage,
    max_ttl: Duration,
    resolv_conf: Arc<PathBuf>,
}

/// One resolver per agent, on 127.0.0.1 (UDP and TCP on one port).
pub struct Resolvers {
    context: Context,
    running: StdHashMap<String, Running>,
}

/// An agent as the resolvers see it: its name, cgroup (and id, once installed), hostname rules.
pub struct Agent<'a> {
    pub name: &'a str,
    pub cgroup: &'a str,
    pub cgroup_id: u64,
    pub hostname_rules: &'a [ConnectRule],
}

impl Resolvers {
    /// Spawns, on the current runtime, a task that removes expired answers each second.
    pub fn new(
        allow: HashMap<MapData, ResolvedKey, Resolved>,
        bus: Arc<Bus>,
        coverage: Coverage,
        max_ttl: Duration,
        resolv_conf: PathBuf,
    ) -> Self {
        let allow = Arc::new(Mutex::new(allow));
        tokio::spawn(prune_expired(allow.clone()));
        Self {
            context: Context {
                allow,
                bus,
                coverage,
                max_ttl,
                resolv_conf: Arc::new(resolv_conf),
            },
            running: StdHashMap::new(),
        }
    }

    /// The port of each agent's resolver, starting those of agents new to it. Their names take
    /// effect with `commit`, once the policy is installed: until then a new resolver refuses
    /// everything and a running one keeps its agent's previous names.
    pub fn ports(&mut self, agents: &[&str]) -> std::io::Result<StdHashMap<String, u16>> {
        for agent in agents {
            if !self.running.contains_key(*agent) {
                let running = self.start(agent)?;
                self.running.insert((*agent).to_owned(), running);
            }
        }
        Ok(agents
            .iter()
            .filter_map(|a| Some(((*a).to_owned(), self.running.get(*a)?.port)))
            .collect())
    }

    /// Puts the installed policy's names in force and stops the resolvers of agents it lacks.
    /// `guarded`: networks no answer opens (the policy's guarded networks).
    pub fn commit(&mut self, agents: &[Agent<'_>], guarded: &[([u8; 16], u8)]) {
        self.running
            .retain(|name, _| agents.iter().any(|a| a.name == name));
        let guarded = Arc::new(guarded.to_vec());
        for agent in agents {
            if let Some(running) = self.running.get(agent.name) {
                *running.client.write().unwrap_or_else(|p| p.into_inner()) = Client {
                    agent: agent.name.to_owned(),
                    cgroup: agent.cgroup.to_owned(),
                    cgroup_id: agent.cgroup_id,
                    names: Names::of(agent.hostname_rules),
                    guarded: guarded.clone(),
                };
            }
        }
    }

    /// Binds (std sockets: this runs outside async code, on the runtime) and spawns the tasks.
    fn start(&self, agent: &str) -> std::io::Result<Running> {
        let client = Arc::new(RwLock::new(Client {
            agent: agent.to_owned(),
            cgroup: String::new(),
            cgroup_id: 0,
            names: Names::default(),
            guarded: Arc::default(),
        }));
        // UDP and TCP on one port: the kernel redirects both to it. A port free for UDP may be
        // taken for TCP; another is tried then.
        let mut last_error = None;
        for _ in 0..16 {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
            let port = udp.local_addr()?.port();
            match std::net::TcpListener::bind(("127.0.0.1", port)) {
                Ok(tcp) => {
                    udp.set_nonblocking(true)?;
                    tcp.set_nonblocking(true)?;
                    let udp = UdpSocket::from_std(udp)?;
                    let tcp = TcpListener::from_std(tcp)?;
                    let udp_task = tokio::spawn(serve_udp(
                        Arc::new(udp),
                        client.clone(),
                        self.context.clone(),
                    ));
                    let tcp_task =
                        tokio::spawn(serve_tcp(tcp, client.clone(), self.context.clone()));
                    tracing::info!(agent, port, "resolver listening on 127.0.0.1");
                    return Ok(Running {
                        port,
                        client,
                        tasks: [udp_task, tcp_task],
                    });
                }
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| std::io::Error::other("no port free")))
    }
}

async fn prune_expired(allow: AllowMap) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticks.tick().await;
        let now = boot_time_ns();
        let mut allow = allow.lock().unwrap_or_else(|p| p.into_inner());
        let expired: Vec<ResolvedKey> = allow
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, value)| value.expires_ns <= now)
            .map(|(key, _)| key)
            .collect();
        for key in expired {
            let _ = allow.remove(&key);
        }
    }
}
