//! Network rules: connect and listen rules as NET_RULES entries (ports of covering networks
//! merged in, as the trie answers with the longest match only; listen rules' protocol marked
//! LISTEN_RULE), and redirects as REDIRECTS entries.

use std::collections::BTreeMap;

use aya::maps::lpm_trie::Key;
use claw_common::{
    NetRuleKey, NetRuleValue, PortRangeEntry, Redirect, LISTEN_RULE, MAX_PORT_RANGES, PROTO_TCP,
    PROTO_UDP,
};

use crate::policy::rules::{ConnectRule, Host, ListenRule, PortRange, Protocols, RedirectRule};

/// One entry of the REDIRECTS trie: TCP connects to `ports` of the network go to the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectEntry {
    pub address: [u8; 16],
    pub prefix_len: u8,
    pub ports: PortRange,
    pub proxy: [u8; 16],
    pub proxy_port: u16,
}

impl RedirectEntry {
    pub fn key(&self, ruleset: u32) -> Key<NetRuleKey> {
        Key::new(
            40 + u32::from(self.prefix_len),
            NetRuleKey {
                ruleset: ruleset.to_be_bytes(),
                protocol: PROTO_TCP,
                address: self.address,
            },
        )
    }

    pub fn value(&self) -> Redirect {
        Redirect {
            first_port: self.ports.first,
            last_port: self.ports.last,
            proxy_port: self.proxy_port,
            _pad: 0,
            proxy: self.proxy,
        }
    }
}

/// The REDIRECTS entries of `rules`: one per network, TCP only, addresses only.
pub(super) fn redirects(rules: &[RedirectRule]) -> Result<Vec<RedirectEntry>, String> {
    let mut entries: Vec<RedirectEntry> = Vec::new();
    for rule in rules {
        let Host::Network {
            address,
            prefix_len,
        } = rule.to.host
        else {
            return Err(format!(
                "redirect `{rule}`: `to` names a host — name its address or network (the proxy sees the name in TLS SNI or the Host header)"
            ));
        };
        if rule.to.protocols == Protocols::Udp {
            return Err(format!(
                "redirect `{rule}`: only TCP connects can be redirected"
            ));
        }
        if entries
            .iter()
            .any(|e| e.address == address && e.prefix_len == prefix_len)
        {
            return Err(format!(
                "redirect `{rule}`: another redirect names the same network — one proxy per network"
            ));
        }
        // The kernel takes the longest match alone: the wider network's ports would not hold
        // inside the narrower one.
        let inside = |outer: ([u8; 16], u8), inner: ([u8; 16], u8)| {
            outer.1 <= inner.1 && crate::policy::rules::mask(&inner.0, outer.1) == outer.0
        };
        if let Some((other, _)) = rules.iter().zip(&entries).find(|(_, e)| {
            inside((e.address, e.prefix_len), (address, prefix_len))
                || inside((address, prefix_len), (e.address, e.prefix_len))
        }) {
            return Err(format!(
                "redirect `{rule}`: its network and that of `{other}` overlap — redirect networks may not nest; split the wider one around the narrower"
            ));
        }
        entries.push(RedirectEntry {
            address,
            prefix_len,
            ports: rule.to.ports,
            proxy: rule.via.address,
            proxy_port: rule.via.port,
        });
    }
    Ok(entries)
}

/// One entry of the NET_RULES trie: a protocol, an IPv6 (or IPv4-mapped) network, and every port
/// range allowed to it — its own and those of every shorter network that covers it, because the
/// trie answers with the longest match only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetRule {
    pub protocol: u8,
    pub address: [u8; 16],
    pub prefix_len: u8,
    pub ports: Vec<PortRange>,
}

impl NetRule {
    pub fn key(&self, ruleset: u32) -> Key<NetRuleKey> {
        Key::new(
            40 + u32::from(self.prefix_len),
            NetRuleKey {
                ruleset: ruleset.to_be_bytes(),
                protocol: self.protocol,
                address: self.address,
            },
        )
    }

    pub fn value(&self) -> NetRuleValue {
        let mut value = NetRuleValue {
            count: self.ports.len() as u32,
            ranges: [PortRangeEntry { first: 0, last: 0 }; MAX_PORT_RANGES],
        };
        for (slot, range) in value.ranges.iter_mut().zip(&self.ports) {
            *slot = PortRangeEntry {
                first: range.first,
                last: range.last,
            };
        }
        value
    }
}

/// Trie entries for the address rules among `rules` (hostname rules: the addresses the agent's
/// resolver answers, in DNS_ALLOW). A wider rule does not reach into a `guarded`
/// network (metadata, link-local, the node's own addresses): it gets an entry without ports,
/// unless a rule names exactly it; rules inside it still allow what they name.
pub fn net_rules(
    rules: &[ConnectRule],
    guarded: &[([u8; 16], u8)],
) -> Result<Vec<NetRule>, String> {
    let mut own: BTreeMap<(u8, [u8; 16], u8), Vec<PortRange>> = BTreeMap::new();
    for rule in rules {
        let Host::Network {
            address,
            prefix_len,
        } = rule.host
        else {
            continue;
        };
        let protocols: &[u8] = match rule.protocols {
            Protocols::Tcp => &[PROTO_TCP],
            Protocols::Udp => &[PROTO_UDP],
            Protocols::Both => &[PROTO_TCP, PROTO_UDP],
        };
        for &protocol in protocols {
            own.entry((protocol, address, prefix_len))
                .or_default()
                .push(rule.ports);
        }
    }
    let lengths: std::collections::BTreeSet<u8> = own.keys().map(|&(_, _, len)| len).collect();
    // A name may resolve to anything (a rebinding attack answers with the metadata address):
    // with hostname rules every guarded network gets its entry.
    let names = rules.iter().any(|r| matches!(r.host, Host::Name(_)));
    let mut guards = Vec::new();
    for &(address, prefix_len) in guarded {
        for protocol in [PROTO_TCP, PROTO_UDP] {
            let covered = names
                || lengths.range(..prefix_len).any(|&len| {
                    own.get(&(protocol, crate::policy::rules::mask(&address, len), len))
                        .is_some_and(|ports| !ports.is_empty())
                });
            if covered && !own.contains_key(&(protocol, address, prefix_len)) {
                guards.push(NetRule {
                    protocol,
                    address,
                    prefix_len,
                    ports: Vec::new(),
                });
            }
        }
    }
    let mut entries: Vec<NetRule> = own.keys()
        .map(|&(protocol, address, prefix_len)| {
            // Inherit the ports of every network of the same protocol that contains this one
            // (one lookup per prefix length in use, rather than a test of every rule) — inside a
            // guarded network, only of those inside it too: a rule naming the node's address on
            // port 22 does not open it on the port 80 of `0.0.0.0/0:80`.
            let floor = guarded
                .iter()
                .filter(|&&(guard, length)| {
                    length <= prefix_len && crate::policy::rules::mask(&address, length) == guard
                })
                .map(|&(_, length)| length)
                .max()
                .unwrap_or(0);
            let ports: Vec<PortRange> = lengths
                .range(floor..=prefix_len)
                .filter_map(|&len| {
                    own.get(&(protocol, crate::policy::rules::mask(&address, len), len))
                })
                .flat_map(|ports| ports.iter().copied())
                .collect();
            let ports = merge(ports);
            if ports.len() > MAX_PORT_RANGES {
                return Err(format!(
                    "{} distinct port ranges apply to {} — at most {MAX_PORT_RANGES} fit; merge neighbouring ports into ranges (A-B)",
                    ports.len(),
                    crate::policy::rules::network_text(&address, prefix_len)
                ));
            }
            Ok(NetRule {
                protocol,
                address,
                prefix_len,
                ports,
            })
        })
        .collect::<Result<_, _>>()?;
    entries.extend(guards);
    entries.sort_by_key(|r| (r.protocol, r.address, r.prefix_len));
    entries.dedup_by_key(|r| (r.protocol, r.address, r.prefix_len));
    Ok(entries)
}

/// Trie entries for listen rules: as connect rules' (a wider network's ports reach the narrower
/// ones inside it), with no guarded networks — an agent's own local addresses are what it binds.
pub fn listen_rules(rules: &[ListenRule]) -> Result<Vec<NetRule>, String> {
    let as_networks: Vec<ConnectRule> = rules.iter().map(|r| r.0.clone()).collect();
    let mut entries = net_rules(&as_networks, &[]).map_err(|why| format!("listen: {why}"))?;
    for entry in &mut entries {
        entry.protocol |= LISTEN_RULE;
    }
    Ok(entries)
}

/// Whether `address` lies in one of the `guarded` networks.
pub fn is_guarded(address: &[u8; 16], guarded: &[([u8; 16], u8)]) -> bool {
    guarded
        .iter()
        .any(|&(network, length)| crate::policy::rules::mask(address, length) == network)
}

/// Sorted, with overlapping and touching ranges joined.
pub fn merge(mut ports: Vec<PortRange>) -> Vec<PortRange> {
    ports.sort();
    let mut merged: Vec<PortRange> = Vec::new();
    for range in ports {
        match merged.last_mut() {
            Some(last) if u32::from(range.first) <= u32::from(last.last) + 1 => {
                last.last = last.last.max(range.last);
            }
            _ => merged.push(range),
        }
    }
    merged
}
