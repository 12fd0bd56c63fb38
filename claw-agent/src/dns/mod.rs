//! The resolver claw-agent runs for each agent. The kernel sends the agent's DNS here, whatever
//! server it was addressed to (net.rs); a name its connect rules name is asked of the node's
//! resolvers, and the addresses answered go into DNS_ALLOW for the agent, with their TTL, for the
//! ports those rules allow. Any other name is refused (DNS is also a way out: a query can carry
//! data to whoever serves the name), and the refusal reported as a `deny` event.
//!
//! Answers are passed on as the node's resolver gave them; only the question is checked here.

pub mod resolve;

use std::{
    collections::{BTreeMap, HashMap as StdHashMap},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use aya::maps::{HashMap, MapData};
use claw_common::{Resolved, ResolvedKey, PROTO_TCP, PROTO_UDP};
use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::RData,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    task::JoinHandle,
};

use crate::{
    events::{
        bus::Bus,
        event::{boot_time_ns, Decision, Event, Kind},
    },
    kernel::enforcer::Coverage,
    policy::{
        compile::{is_guarded, merge, NetRule},
        rules::{name_covers, ConnectRule, Host, PortRange, Protocols},
    },
};

/// An answer with a shorter TTL still opens its addresses this long: a client connects after
/// the answer arrives, not within its TTL of zero.
pub const MIN_TTL: Duration = Duration::from_secs(5);

/// How long the node's resolver has to answer one query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// The names an agent's connect rules name (lower case, no final dot; `*.example.com` for every
/// name below example.com), with per protocol the ports they allow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names(BTreeMap<String, BTreeMap<u8, Vec<PortRange>>>);

impl Names {
    pub fn of(rules: &[ConnectRule]) -> Self {
        let mut names: BTreeMap<String, BTreeMap<u8, Vec<PortRange>>> = BTreeMap::new();
        for rule in rules {
            let Host::Name(name) = &rule.host else {
                continue;
            };
            let protocols: &[u8] = match rule.protocols {
                Protocols::Tcp => &[PROTO_TCP],
                Protocols::Udp => &[PROTO_UDP],
                Protocols::Both => &[PROTO_TCP, PROTO_UDP],
            };
            let entry = names.entry(canonical(name)).or_default();
            for protocol in protocols {
                entry.entry(*protocol).or_default().push(rule.ports);
            }
        }
        for ports in names.values_mut().flat_map(|p| p.values_mut()) {
            *ports = merge(std::mem::take(ports));
        }
        Self(names)
    }

    /// The ports `name` may reach, per protocol: those of the rule naming it and of every
    /// `*.` rule covering it.
    fn get(&self, name: &str) -> Option<BTreeMap<u8, Vec<PortRange>>> {
        let name = canonical(name);
        let mut found: Option<BTreeMap<u8, Vec<PortRange>>> = None;
        for (_, protocols) in self.0.iter().filter(|(rule, _)| name_covers(rule, &name)) {
            let ports = found.get_or_insert_default();
            for (protocol, ranges) in protocols {
                ports.entry(*protocol).or_default().extend(ranges);
            }
        }
        found.map(|mut ports| {
            for ranges in ports.values_mut() {
                *ranges = merge(std::mem::take(ranges));
            }
            ports
        })
    }

    pub fn list(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

fn canonical(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Ask the node's resolver: the agent may resolve this name.
    Forward(String),
    /// Answer REFUSED; the name asked, if the query had one.
    Refuse(Option<String>),
}

/// One question, for a name the agent's rules name. Queries of several questions (which no stub
/// resolver sends) and other operations (updates, notifies) are refused.
pub fn judge(query: &Message, names: &Names) -> Verdict {
    if query.metadata.message_type != MessageType::Query || query.metadata.op_code != OpCode::Query
    {
        return Verdict::Refuse(None);
    }
    let [question] = query.queries.as_slice() else {
        return Verdict::Refuse(
            query
                .queries
                .first()
                .map(|q| canonical(&q.name().to_ascii())),
        );
    };
    let name = canonical(&question.name().to_ascii());
    // Labels of host names only: a label holding a dot (`x.github` `com`, written
    // `x\.github.com`) would otherwise pass for a name below github.com.
    let hostlike = question.name().iter().all(|label| {
        label
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    });
    if hostlike && names.get(&name).is_some() {
        Verdict::Forward(name)
    } else {
        Verdict::Refuse(Some(name))
    }
}

/// The DNS_ALLOW entries an answer for `name` opens: every A and AAAA record in it (the
/// addresses at the end of a CNAME chain too) outside the `guarded` networks, for the ports
/// `name`'s rules allow, until `now_ns` plus the record's TTL (at least MIN_TTL, at most
/// `max_ttl`). An address in a guarded network (metadata, loopback, the node's own) opens only
/// by a rule naming it: a name can be made to resolve to anything.
pub fn openings(
    answer: &Message,
    name: &str,
    names: &Names,
    guarded: &[([u8; 16], u8)],
    cgroup_id: u64,
    now_ns: u64,
    max_ttl: Duration,
) -> Vec<(ResolvedKey, Resolved)> {
    let Some(protocols) = names.get(name) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for record in &answer.answers {
        let address = match &record.data {
            RData::A(a) => a.0.to_ipv6_mapped().octets(),
            RData::AAAA(aaaa) => aaaa.0.octets(),
            _ => continue,
        };
        if is_guarded(&address, guarded) {
            continue;
        }
        let ttl = Duration::from_secs(u64::from(record.ttl)).clamp(MIN_TTL, max_ttl.max(MIN_TTL));
        for (&protocol, ports) in &protocols {
            let rule = NetRule {
                protocol,
                address,
                prefix_len: 128,
                ports: ports.clone(),
            };
            out.push((
                ResolvedKey {
                    cgroup_id,
                    protocol,
                    _pad: [0; 7],
                    address,
                },
                Resolved {
                    expires_ns: now_ns + ttl.as_nanos() as u64,
                    ports: rule.value(),
                    _pad: 0,
                },
            ));
        }
    }
    out
}

/// The nameservers of a resolv.conf, port 53 each.
pub fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

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

async fn serve_udp(socket: Arc<UdpSocket>, client: Arc<RwLock<Client>>, context: Context) {
    let mut buffer = vec![0u8; 65535];
    loop {
        let (len, peer) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(err) => {
                tracing::warn!("resolver: receiving: {err}");
                continue;
            }
        };
        let query = buffer[..len].to_vec();
        let (socket, client, context) = (socket.clone(), client.clone(), context.clone());
        tokio::spawn(async move {
            if let Some(reply) = answer(&query, &client, &context).await {
                let _ = socket.send_to(&for_udp(&query, reply), peer).await;
            }
        });
    }
}

/// `reply` as a datagram answering `query`: one larger than the client can take (512 bytes, or
/// what its EDNS record says) goes as its header and question with TC set, so that the client
/// asks again over TCP rather than reading a cut-off answer.
pub fn for_udp(query: &[u8], reply: Vec<u8>) -> Vec<u8> {
    let Ok(asked) = Message::from_vec(query) else {
        return reply;
    };
    if reply.len() <= usize::from(asked.max_payload()) {
        return reply;
    }
    let Ok(mut cut) = Message::from_vec(&reply) else {
        return reply;
    };
    cut.answers.clear();
    cut.authorities.clear();
    cut.additionals.clear();
    cut.signature = None;
    cut.metadata.truncation = true;
    cut.to_vec().unwrap_or(reply)
}

async fn serve_tcp(listener: TcpListener, client: Arc<RwLock<Client>>, context: Context) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_tcp_connection(
            stream,
            client.clone(),
            context.clone(),
        ));
    }
}

/// Queries over TCP: each framed by its length in two bytes (RFC 1035 4.2.2).
async fn serve_tcp_connection(
    mut stream: TcpStream,
    client: Arc<RwLock<Client>>,
    context: Context,
) {
    loop {
        let Ok(len) = stream.read_u16().await else {
            return;
        };
        let mut query = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut query).await.is_err() {
            return;
        }
        let Some(reply) = answer(&query, &client, &context).await else {
            return;
        };
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return;
        };
        if stream.write_u16(reply_len).await.is_err() || stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}

/// The reply to one query: the node's resolver's answer, or REFUSED (reported). None for what
/// is not a DNS message.
async fn answer(query: &[u8], client: &RwLock<Client>, context: &Context) -> Option<Vec<u8>> {
    let message = Message::from_vec(query).ok()?;
    let client = client.read().unwrap_or_else(|p| p.into_inner()).clone();
    let refuse = |code: ResponseCode| {
        let mut reply = Message::error_msg(message.metadata.id, message.metadata.op_code, code);
        reply.queries = message.queries.clone();
        reply.to_vec().ok()
    };
    let name = match judge(&message, &client.names) {
        Verdict::Forward(name) if client.cgroup_id != 0 => name,
        Verdict::Forward(name) => {
            tracing::warn!(
                agent = client.agent,
                name,
                "resolver: agent not installed yet"
            );
            return refuse(ResponseCode::ServFail);
        }
        Verdict::Refuse(name) => {
            report_refusal(&client, name, context);
            return refuse(ResponseCode::Refused);
        }
    };
    let Some(reply) = ask_upstream(&context.resolv_conf, query).await else {
        return refuse(ResponseCode::ServFail);
    };
    if let Ok(parsed) = Message::from_vec(&reply) {
        let entries = openings(
            &parsed,
            &name,
            &client.names,
            &client.guarded,
            client.cgroup_id,
            boot_time_ns(),
            context.max_ttl,
        );
        let mut allow = context.allow.lock().unwrap_or_else(|p| p.into_inner());
        for (key, value) in entries {
            // An earlier answer that lasts longer keeps its expiry.
            let value = match allow.get(&key, 0) {
                Ok(old) if old.expires_ns > value.expires_ns => Resolved {
                    expires_ns: old.expires_ns,
                    ..value
                },
                _ => value,
            };
            if let Err(err) = allow.insert(key, value, 0) {
                tracing::warn!(
                    agent = client.agent,
                    name,
                    "resolver: DNS_ALLOW full? {err}"
                );
            }
        }
    }
    Some(reply)
}

fn report_refusal(client: &Client, name: Option<String>, context: &Context) {
    let mut event = Event::about(
        Kind::Deny,
        &client.agent,
        &client.cgroup,
        "dns",
        context.coverage,
    );
    event.decision = Decision::Deny;
    let allowed = client.names.list();
    event.reason = Some(match (&name, allowed.is_empty()) {
        (None, _) => format!("{} may send plain queries of one name only", client.agent),
        (Some(_), true) => format!(
            "{} may resolve no names: its connect rules name none",
            client.agent
        ),
        (Some(_), false) => format!(
            "{} may resolve only the names its connect rules name: {}",
            client.agent,
            allowed.join(", ")
        ),
    });
    event.name = name;
    context.bus.publish(event);
}

/// The node's resolvers (resolv.conf), each in turn, over UDP; over TCP when the answer was
/// truncated.
async fn ask_upstream(resolv_conf: &Path, query: &[u8]) -> Option<Vec<u8>> {
    let conf = tokio::fs::read_to_string(resolv_conf)
        .await
        .unwrap_or_default();
    let mut servers = nameservers(&conf);
    if servers.is_empty() {
        servers.push(SocketAddr::from(([127, 0, 0, 1], 53)));
    }
    for server in servers {
        let asked = tokio::time::timeout(UPSTREAM_TIMEOUT, ask(server, query)).await;
        match asked {
            Ok(Ok(reply)) => return Some(reply),
            Ok(Err(err)) => tracing::warn!(%server, "resolver: asking upstream: {err}"),
            Err(_) => tracing::warn!(%server, "resolver: upstream did not answer in time"),
        }
    }
    None
}

async fn ask(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buffer = vec![0u8; 65535];
    let len = socket.recv(&mut buffer).await?;
    buffer.truncate(len);
    let truncated = Message::from_vec(&buffer).is_ok_and(|m| m.metadata.truncation);
    if !truncated {
        return Ok(buffer);
    }
    let mut stream = TcpStream::connect(server).await?;
    let len = u16::try_from(query.len()).map_err(std::io::Error::other)?;
    stream.write_u16(len).await?;
    stream.write_all(query).await?;
    let reply_len = stream.read_u16().await?;
    let mut reply = vec![0u8; usize::from(reply_len)];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
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

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::Query,
        rr::{rdata, Name, RData, Record, RecordType},
    };

    use super::*;
    use crate::policy::rules::ConnectRule;

    fn names(rules: &[&str]) -> Names {
        let rules: Vec<ConnectRule> = rules
            .iter()
            .map(|r| ConnectRule::parse(r).unwrap())
            .collect();
        Names::of(&rules)
    }

    fn query(name: &str) -> Message {
        let mut message = Message::query();
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        message
    }

    #[test]
    fn only_names_the_rules_name_are_forwarded() {
        let names = names(&["api.github.com:443/tcp", "10.0.0.0/8:80/tcp"]);
        assert_eq!(
            judge(&query("API.GitHub.com."), &names),
            Verdict::Forward("api.github.com".to_owned())
        );
        assert_eq!(
            judge(&query("evil.example."), &names),
            Verdict::Refuse(Some("evil.example".to_owned()))
        );
        assert_eq!(
            judge(&query("x.api.github.com."), &names),
            Verdict::Refuse(Some("x.api.github.com".to_owned()))
        );
        let mut two = query("api.github.com.");
        two.add_query(Query::query(
            Name::from_ascii("evil.example.").unwrap(),
            RecordType::A,
        ));
        assert!(matches!(judge(&two, &names), Verdict::Refuse(_)));
        let mut update = query("api.github.com.");
        update.metadata.op_code = OpCode::Update;
        assert_eq!(judge(&update, &names), Verdict::Refuse(None));
    }

    #[test]
    fn a_pattern_answers_every_name_below_its_domain_with_the_ports_of_every_rule_covering_it() {
        let names = names(&["*.github.com:443/tcp", "api.github.com:22/tcp"]);
        for asked in ["api.github.com.", "codeload.github.com.", "a.b.github.com."] {
            assert!(
                matches!(judge(&query(asked), &names), Verdict::Forward(_)),
                "{asked}"
            );
        }
        let mut dotted = Message::query();
        let label_with_a_dot = Name::from_labels(vec![&b"x.github"[..], &b"com"[..]]).unwrap();
        dotted.add_query(Query::query(label_with_a_dot, RecordType::A));
        assert!(
            matches!(judge(&dotted, &names), Verdict::Refuse(_)),
            "a label holding a dot passed for a name below github.com"
        );
        for asked in ["github.com.", "evilgithub.com.", "github.com.evil.net."] {
            assert!(
                matches!(judge(&query(asked), &names), Verdict::Refuse(_)),
                "{asked}"
            );
        }
        let ports = |name: &str| -> Vec<(u16, u16)> {
            names.get(name).unwrap()[&PROTO_TCP]
                .iter()
                .map(|r| (r.first, r.last))
                .collect()
        };
        assert_eq!(ports("api.github.com"), [(22, 22), (443, 443)]);
        assert_eq!(ports("codeload.github.com"), [(443, 443)]);
    }

    #[test]
    fn an_answer_opens_its_addresses_for_the_names_ports_until_its_ttl() {
        let names = names(&[
            "svc.test:443/tcp",
            "svc.test:8000-8001/tcp",
            "other.test:53/udp",
        ]);
        let mut answer = query("svc.test.");
        let name = Name::from_ascii("svc.test.").unwrap();
        answer.add_answer(Record::from_rdata(
            name.clone(),
            60,
            RData::CNAME(rdata::CNAME(Name::from_ascii("edge.cdn.").unwrap())),
        ));
        answer.add_answer(Record::from_rdata(
            Name::from_ascii("edge.cdn.").unwrap(),
            60,
            RData::A(rdata::A([10, 1, 2, 3].into())),
        ));
        answer.add_answer(Record::from_rdata(
            Name::from_ascii("edge.cdn.").unwrap(),
            0,
            RData::AAAA(rdata::AAAA("2001:db8::1".parse().unwrap())),
        ));
        let got = openings(
            &answer,
            "svc.test",
            &names,
            &[],
            7,
            1_000,
            Duration::from_secs(30),
        );
        assert_eq!(got.len(), 2, "one entry per address, TCP only");
        let (key, value) = &got[0];
        assert_eq!(key.cgroup_id, 7);
        assert_eq!(key.protocol, PROTO_TCP);
        assert_eq!(key.address[10..], [0xff, 0xff, 10, 1, 2, 3]);
        assert_eq!(
            value.expires_ns,
            1_000 + 30_000_000_000,
            "capped at max_ttl"
        );
        assert_eq!(value.ports.count, 2);
        assert_eq!(
            (value.ports.ranges[0].first, value.ports.ranges[0].last),
            (443, 443)
        );
        assert_eq!(
            (value.ports.ranges[1].first, value.ports.ranges[1].last),
            (8000, 8001)
        );
        assert_eq!(
            got[1].1.expires_ns,
            1_000 + MIN_TTL.as_nanos() as u64,
            "a TTL of 0 still opens for MIN_TTL"
        );
        assert!(
            openings(
                &answer,
                "nope.test",
                &names,
                &[],
                7,
                0,
                Duration::from_secs(30)
            )
            .is_empty(),
            "an answer for a name no rule names opens nothing"
        );
        let guarded = crate::policy::rules::guarded_networks();
        let mut rebound = query("svc.test.");
        for address in [[169, 254, 169, 254], [127, 0, 0, 1], [10, 1, 2, 3]] {
            rebound.add_answer(Record::from_rdata(
                name.clone(),
                60,
                RData::A(rdata::A(address.into())),
            ));
        }
        let opened = openings(
            &rebound,
            "svc.test",
            &names,
            &guarded,
            7,
            0,
            Duration::from_secs(30),
        );
        assert!(
            opened
                .iter()
                .all(|(key, _)| key.address[12..] == [10, 1, 2, 3])
                && !opened.is_empty(),
            "answers in guarded networks open nothing"
        );
    }

    #[test]
    fn an_answer_too_large_for_the_clients_datagram_asks_it_to_use_tcp() {
        let asked = query("big.test.");
        let mut full = asked.clone();
        full.metadata.message_type = MessageType::Response;
        for last in 0..60u8 {
            full.add_answer(Record::from_rdata(
                Name::from_ascii("big.test.").unwrap(),
                60,
                RData::A(rdata::A([10, 0, 0, last].into())),
            ));
        }
        let full = full.to_vec().unwrap();
        assert!(full.len() > 512);
        let sent = Message::from_vec(&for_udp(&asked.to_vec().unwrap(), full.clone())).unwrap();
        assert!(sent.metadata.truncation && sent.answers.is_empty());
        assert_eq!(sent.queries, asked.queries);
        assert_eq!(sent.metadata.id, asked.metadata.id);
        // A client that said (EDNS) it takes 4096 bytes gets the whole answer.
        let mut roomy = asked.clone();
        let mut edns = hickory_proto::op::Edns::new();
        edns.set_max_payload(4096);
        roomy.edns = Some(edns);
        assert_eq!(for_udp(&roomy.to_vec().unwrap(), full.clone()), full);
    }

    #[test]
    fn nameservers_are_read_from_resolv_conf() {
        let conf = "# comment\nsearch example\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver bogus\n";
        assert_eq!(
            nameservers(conf),
            vec![
                "10.0.0.2:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }
}
