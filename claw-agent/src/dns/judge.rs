//! Judging an agent's DNS question: which names its connect rules name (patterns included), and
//! which addresses an answer opens for which ports until when. Pure.

use std::{collections::BTreeMap, time::Duration};

use claw_common::{Resolved, ResolvedKey, PROTO_TCP, PROTO_UDP};
use hickory_proto::{
    op::{Message, MessageType, OpCode},
    rr::RData,
};

use crate::policy::{
    compile::{is_guarded, merge, NetRule},
    rules::{name_covers, ConnectRule, Host, PortRange, Protocols},
};

/// An answer with a shorter TTL still opens its addresses this long: a client connects after
/// the answer arrives, not within its TTL of zero.
pub const MIN_TTL: Duration = Duration::from_secs(5);

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
    pub(super) fn get(&self, name: &str) -> Option<BTreeMap<u8, Vec<PortRange>>> {
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
