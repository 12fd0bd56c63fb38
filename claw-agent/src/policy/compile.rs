//! The policy compiler: a parsed policy in, the exact entries of the kernel's maps out. Pure (no
//! I/O), so every rule's meaning in the kernel is unit-tested here.
//!
//! Entries carry no ruleset id: the installer assigns a fresh one per agent on each apply, so that
//! the new rules sit complete in the maps before the agent's cgroup is switched to them.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use aya::maps::lpm_trie::Key;
use claw_common::{
    access, NetRuleKey, NetRuleValue, PathRuleKey, PortRangeEntry, Redirect, MAX_PORT_RANGES,
    PROTO_TCP, PROTO_UDP, RULE_PATH_BYTES,
};

use crate::policy::{
    devices,
    limits::Limits,
    rules::{ConnectRule, Host, PortRange, Protocols, RedirectRule, RulePath},
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

/// What a write rule grants: connecting to a Unix socket is writing to it, as far as a rule
/// says.
const WRITING: u32 = access::WRITE | access::CONNECT;

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
fn redirects(rules: &[RedirectRule]) -> Result<Vec<RedirectEntry>, String> {
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

/// One entry of the FILE_RULES trie: the bytes a path must start with and the access granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRule {
    /// A directory rule ends in `/`; an exact-path rule ends in NUL, so it cannot match a longer
    /// path.
    pub prefix: Vec<u8>,
    pub access: u32,
}

impl FileRule {
    pub fn key(&self, ruleset: u32) -> Key<PathRuleKey> {
        let mut path = [0u8; RULE_PATH_BYTES];
        path[..self.prefix.len()].copy_from_slice(&self.prefix);
        Key::new(
            (32 + 8 * self.prefix.len()) as u32,
            PathRuleKey {
                ruleset: ruleset.to_be_bytes(),
                path,
            },
        )
    }
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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agent `{agent}`: {message}")]
pub struct CompileError {
    pub agent: String,
    pub message: String,
}

/// What no wider rule reaches: credential stores, networks an agent must name to reach, and
/// claw-agent's own sockets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guards {
    pub credentials: Vec<RulePath>,
    /// (address, prefix length), as NET_RULES holds them.
    pub networks: Vec<([u8; 16], u8)>,
    /// The directories of claw-agent's sockets (`/run/claw/`): no agent writes there, and a
    /// write rule inside one is refused.
    pub socket_directories: Vec<RulePath>,
    /// The one socket there agents may connect to: it answers them about their own events.
    pub agent_socket: Option<RulePath>,
}

/// Where claw-agent serves: the control socket (root, outside every agent) and the agent socket
/// (processes inside agents, about their own events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sockets {
    pub control: PathBuf,
    pub agent: PathBuf,
}

impl Default for Sockets {
    fn default() -> Self {
        Self::beside(PathBuf::from(crate::defaults::CONTROL_SOCKET), None)
    }
}

impl Sockets {
    /// `control`, and `agent` or else the agent socket in the control socket's directory.
    pub fn beside(control: PathBuf, agent: Option<PathBuf>) -> Self {
        let agent =
            agent.unwrap_or_else(|| control.with_file_name(crate::defaults::AGENT_SOCKET_NAME));
        Self { control, agent }
    }

    /// The paths as the kernel resolves them (symbolic links in their directories followed),
    /// which is how the programs match them against rules.
    pub fn resolved(&self) -> Self {
        let resolve = |path: &Path| match (path.parent(), path.file_name()) {
            (Some(dir), Some(name)) => {
                std::fs::canonicalize(dir).map_or_else(|_| path.to_path_buf(), |dir| dir.join(name))
            }
            _ => path.to_path_buf(),
        };
        Self {
            control: resolve(&self.control),
            agent: resolve(&self.agent),
        }
    }
}

impl Guards {
    /// This machine's: the credential stores of its users (/etc/passwd) and its own, the
    /// link-local and cloud metadata networks, the node's own addresses, and `sockets`.
    pub fn of_this_machine(sockets: &Sockets) -> Self {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let mut networks = crate::policy::rules::guarded_networks();
        networks.extend(crate::policy::rules::node_addresses());
        let resolved = sockets.resolved();
        let directory = |socket: &Path| {
            let dir = socket.parent()?.to_str()?;
            RulePath::parse(&format!("{}/", dir.trim_end_matches('/'))).ok()
        };
        // The paths as given too: a symbolic link on the way (/var/run) must stay in place.
        let mut socket_directories: Vec<RulePath> = [
            &resolved.control,
            &resolved.agent,
            &sockets.control,
            &sockets.agent,
        ]
        .into_iter()
        .filter_map(|s| directory(s))
        .collect();
        socket_directories.sort();
        socket_directories.dedup();
        Self {
            credentials: crate::policy::rules::credential_paths(&passwd),
            networks,
            socket_directories,
            agent_socket: resolved
                .agent
                .to_str()
                .and_then(|p| RulePath::parse(p).ok()),
        }
    }

    /// The socket directory `path` is in (the directory itself included), if any.
    pub fn socket_directory_of(&self, path: &str) -> Option<&RulePath> {
        self.socket_directories
            .iter()
            .find(|d| path.starts_with(d.0.as_str()) || path == d.0.trim_end_matches('/'))
    }
}

/// Compiles `policy` with this machine's guards and claw-agent's default sockets.
pub fn compile(policy: &Policy) -> Result<Compiled, CompileError> {
    compile_guarding(policy, &Guards::of_this_machine(&Sockets::default()))
}

/// `compile`, with the guards given.
pub fn compile_guarding(policy: &Policy, guards: &Guards) -> Result<Compiled, CompileError> {
    let credentials = &guards.credentials;
    let agents = policy
        .agents
        .iter()
        .map(|agent| {
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
            let hostname_rules = rules
                .connect
                .iter()
                .filter(|r| matches!(r.host, Host::Name(_)))
                .cloned()
                .collect();
            let net_rules = net_rules(&rules.connect, &guards.networks).map_err(error)?;
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
        .collect::<Result<_, _>>()?;
    Ok(Compiled {
        agents,
        guarded: guards.networks.clone(),
    })
}

/// The trie answers with the longest matching prefix only, so every entry carries the grants of
/// each directory rule that covers it: with `read: [/w/]` and `write: [/w/out/]`, `/w/out/x` is
/// readable and writable.
fn inherit_directory_grants(prefixes: &mut BTreeMap<Vec<u8>, u32>) {
    let directories: BTreeMap<Vec<u8>, u32> = prefixes
        .iter()
        .filter(|(prefix, _)| prefix.ends_with(b"/"))
        .map(|(prefix, bits)| (prefix.clone(), *bits))
        .collect();
    for (prefix, bits) in prefixes.iter_mut() {
        // The directories covering a prefix end at one of its slashes: look each up, rather than
        // test every directory (policies run to thousands of rules).
        for (at, _) in prefix.iter().enumerate().filter(|(_, b)| **b == b'/') {
            if let Some(granted) = directories.get(&prefix[..=at]) {
                *bits |= granted;
            }
        }
    }
}

/// A directory rule wider than a protected tree (`write: [/]`) grants everything it did, but
/// writing, inside the tree: the tree gets entries of its own (itself and below) without WRITE.
fn stop_writes_short_of_protected_trees(prefixes: &mut BTreeMap<Vec<u8>, u32>) {
    for tree in crate::policy::rules::PROTECTED {
        let covering = prefixes
            .iter()
            .filter(|(prefix, _)| prefix.ends_with(b"/") && tree.as_bytes().starts_with(prefix))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(0, |(_, bits)| *bits);
        if covering & WRITING == 0 {
            continue;
        }
        for own in prefixes_of(&RulePath(tree.to_owned())) {
            prefixes.insert(own, covering & !WRITING);
        }
    }
    // Entries inside a tree (a read rule there) inherited writing from the wider rule.
    for (prefix, bits) in prefixes.iter_mut() {
        let path = String::from_utf8_lossy(prefix);
        if crate::policy::rules::protected_tree(path.trim_end_matches('\0')).is_some() {
            *bits &= !WRITING;
        }
    }
}

/// A directory rule wider than a credential store (`read: [/home/]`) does not reach into it:
/// the store gets entries of its own without access. A rule naming the store itself (`named`,
/// the policy's own prefixes) lifts the guard; rules inside it still grant what they name.
fn guard_credentials(
    prefixes: &mut BTreeMap<Vec<u8>, u32>,
    named: &[Vec<u8>],
    credentials: &[RulePath],
) {
    for store in credentials {
        let own = prefixes_of(store);
        // Only the store's own rule lifts it (`/root/.ssh/`, not the exact `/root/.ssh`).
        if named.contains(&own[0]) {
            continue;
        }
        let bytes = store.0.as_bytes();
        let Some(covering) = covering_directory(prefixes, bytes) else {
            continue;
        };
        // A renamed home directory would take its store out from under the guard.
        keep_directories_in_place(prefixes, bytes, covering.len(), &own);
        for prefix in own {
            prefixes.entry(prefix).or_insert(0);
        }
    }
}

/// The directories of `path` below its covering rule (the first `covered` bytes) keep their
/// grants but writing: renaming one would move `path` out from under what guards it. `own`:
/// the entries of `path` itself, set apart.
fn keep_directories_in_place(
    prefixes: &mut BTreeMap<Vec<u8>, u32>,
    path: &[u8],
    covered: usize,
    own: &[Vec<u8>],
) {
    for (at, _) in path
        .iter()
        .enumerate()
        .skip(covered)
        .filter(|(_, b)| **b == b'/')
    {
        let directory = [&path[..at], b"\0"].concat();
        if prefixes.contains_key(&directory) || own.contains(&directory) {
            continue;
        }
        let bits = covering_directory(prefixes, &path[..at])
            .and_then(|d| prefixes.get(&d).copied())
            .unwrap_or(0);
        prefixes.insert(directory, bits & !access::WRITE);
    }
}

/// claw-agent's socket directories: a write rule inside one is refused; a wider one stops short
/// (no writing, no connecting there, the directories on the way from `/` kept in place), and the agent
/// socket alone may be connected to — so an agent reaches the endpoint that answers it about
/// its own events and can neither replace it nor reach the control socket.
fn reserve_sockets(
    prefixes: &mut BTreeMap<Vec<u8>, u32>,
    writes: &[RulePath],
    guards: &Guards,
) -> Result<(), String> {
    for directory in &guards.socket_directories {
        let own = prefixes_of(directory);
        let inside = |prefix: &[u8]| {
            prefix.starts_with(directory.0.as_bytes()) || own.iter().any(|o| o == prefix)
        };
        if let Some(rule) = writes
            .iter()
            .find(|w| prefixes_of(w).iter().any(|p| inside(p)))
        {
            return Err(format!(
                "files.write `{}` is inside {}, where claw-agent's sockets are — no agent may write there; remove the rule",
                rule.0, directory.0
            ));
        }
        // Directories on the way that the policy names itself (`write: [/var/lib/]` or
        // `[/var/lib]` makes `/var/lib` writable) may not be renamed.
        let dir = directory.0.as_bytes();
        for (at, _) in dir.iter().enumerate().skip(1).filter(|(_, b)| **b == b'/') {
            if let Some(bits) = prefixes.get_mut(&[&dir[..at], b"\0"].concat()) {
                *bits &= !access::WRITE;
            }
        }
        let Some(covering) = covering_directory(prefixes, dir) else {
            continue;
        };
        let bits = prefixes[&covering];
        if bits & WRITING == 0 {
            continue;
        }
        keep_directories_in_place(prefixes, dir, 1, &own);
        for prefix in &own {
            prefixes.insert(prefix.clone(), bits & !WRITING);
        }
        for (prefix, bits) in prefixes.iter_mut() {
            if inside(prefix) {
                *bits &= !WRITING;
            }
        }
    }
    if let Some(socket) = &guards.agent_socket {
        let bytes = socket.0.as_bytes();
        let around = covering_directory(prefixes, bytes)
            .and_then(|d| prefixes.get(&d).copied())
            .unwrap_or(0);
        prefixes.insert(
            [bytes, b"\0"].concat(),
            (around & !WRITING) | access::CONNECT,
        );
    }
    Ok(())
}

/// The longest directory entry that covers `path` and grants something.
fn covering_directory(prefixes: &BTreeMap<Vec<u8>, u32>, path: &[u8]) -> Option<Vec<u8>> {
    path.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'/')
        .map(|(at, _)| &path[..=at])
        .filter(|prefix| prefixes.get(*prefix).is_some_and(|bits| *bits != 0))
        .max_by_key(|prefix| prefix.len())
        .map(<[u8]>::to_vec)
}

/// `/dir/` grants everything below the directory and the directory itself (which the kernel
/// resolves as `/dir`); `/file` grants exactly that path.
fn prefixes_of(path: &RulePath) -> Vec<Vec<u8>> {
    let bytes = path.0.as_bytes();
    if !path.is_directory() {
        return vec![[bytes, b"\0"].concat()];
    }
    let mut prefixes = vec![bytes.to_vec()];
    if bytes.len() > 1 {
        prefixes.push([&bytes[..bytes.len() - 1], b"\0"].concat());
    }
    prefixes
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse;

    /// Without credential stores to guard (those have tests of their own).
    fn compiled(text: &str) -> Compiled {
        compile_guarding(&parse("p.yaml", text).unwrap(), &Guards::default()).unwrap()
    }

    fn agent(rules: &str) -> CompiledAgent {
        compiled(&format!(
            "agents:\n  - name: t\n    cgroup: claw/t\n{rules}"
        ))
        .agents
        .remove(0)
    }

    fn prefixes(agent: &CompiledAgent) -> Vec<(String, u32)> {
        agent
            .file_rules
            .iter()
            .map(|r| {
                (
                    String::from_utf8(r.prefix.clone())
                        .unwrap()
                        .replace('\0', "$"),
                    r.access,
                )
            })
            .collect()
    }

    #[test]
    fn directory_rules_cover_below_and_the_directory_itself() {
        let a = agent("    files:\n      read: [/workspace/]\n");
        assert_eq!(
            prefixes(&a),
            [
                ("/workspace$".into(), access::READ),
                ("/workspace/".into(), access::READ)
            ]
        );
    }

    #[test]
    fn file_rules_are_exact_and_root_is_one_prefix() {
        let a = agent("    files:\n      read: [/etc/hosts, /]\n");
        assert_eq!(
            prefixes(&a),
            [
                ("/".into(), access::READ),
                ("/etc/hosts$".into(), access::READ)
            ]
        );
    }

    #[test]
    fn access_bits_combine_per_prefix() {
        let a = agent(
            "    files:\n      read: [/w/]\n      write: [/w/]\n    exec: [/usr/bin/git]\n    libraries: [/usr/lib/]\n",
        );
        let bits: BTreeMap<_, _> = prefixes(&a).into_iter().collect();
        assert_eq!(bits["/w/"], access::READ | WRITING);
        assert_eq!(
            bits["/usr/bin/git$"],
            access::READ | access::EXEC | access::MAP
        );
        assert_eq!(bits["/usr/lib/"], access::READ | access::MAP);
    }

    #[test]
    fn nested_rules_keep_the_grants_of_covering_directories() {
        let a = agent("    files:\n      read: [/w/, /]\n      write: [/w/out/, /w/out/log]\n");
        let bits: BTreeMap<_, _> = prefixes(&a).into_iter().collect();
        assert_eq!(bits["/w/out/"], access::READ | WRITING);
        assert_eq!(bits["/w/out/log$"], access::READ | WRITING);
        assert_eq!(bits["/w/"], access::READ);
        // `/w/out` (the directory itself) is under `/w/` but not under `/w/out/`.
        assert_eq!(bits["/w/out$"], access::READ | WRITING);
    }

    fn with_sockets(rules: &str) -> Result<BTreeMap<String, u32>, CompileError> {
        let policy = parse(
            "p.yaml",
            &format!("agents:\n  - name: t\n    cgroup: claw/t\n{rules}"),
        )
        .unwrap();
        let guards = Guards {
            socket_directories: vec![RulePath("/run/claw/".to_owned())],
            agent_socket: Some(RulePath("/run/claw/agent.sock".to_owned())),
            ..Guards::default()
        };
        let mut compiled = compile_guarding(&policy, &guards)?;
        Ok(prefixes(&compiled.agents.remove(0)).into_iter().collect())
    }

    #[test]
    fn agents_connect_to_the_agent_socket_and_write_nowhere_beside_it() {
        let bits = with_sockets("    files:\n      read: [/]\n      write: [/]\n").unwrap();
        assert_eq!(bits["/"], access::READ | WRITING);
        for own in ["/run/claw/", "/run/claw$"] {
            assert_eq!(bits[own], access::READ, "{own}");
        }
        // Renaming /run would move the sockets.
        assert_eq!(bits["/run$"] & access::WRITE, 0);
        assert_eq!(
            bits["/run/claw/agent.sock$"],
            access::READ | access::CONNECT
        );
        let bits = with_sockets("    files:\n      read: [/run/]\n      write: [/]\n").unwrap();
        assert_eq!(bits["/run$"] & access::WRITE, 0);
        assert_eq!(bits["/run/"], access::READ | WRITING);
        assert_eq!(bits["/run/claw/"], access::READ);
        let bits = with_sockets("    files:\n      write: [/run]\n").unwrap();
        assert_eq!(bits["/run$"] & access::WRITE, 0);

        let bits = with_sockets("    files:\n      write: [/workspace/]\n").unwrap();
        assert_eq!(bits["/run/claw/agent.sock$"], access::CONNECT);
        assert!(!bits.contains_key("/run/claw/"), "{bits:?}");

        for inside in ["/run/claw/", "/run/claw/claw.sock", "/run/claw"] {
            let err = with_sockets(&format!("    files:\n      write: [{inside}]\n")).unwrap_err();
            assert!(
                err.message.contains("claw-agent's sockets") && err.message.contains(inside),
                "{err}"
            );
        }
    }

    #[test]
    fn wide_write_rules_stop_short_of_the_cgroup_and_bpf_trees() {
        let a = agent("    files:\n      read: [/, /sys/fs/bpf/claw/]\n      write: [/]\n");
        let bits: BTreeMap<_, _> = prefixes(&a).into_iter().collect();
        assert_eq!(bits["/"], access::READ | WRITING);
        assert_eq!(bits["/sys/fs/bpf/claw/"], access::READ);
        for tree in [
            "/sys/fs/cgroup/",
            "/sys/fs/cgroup$",
            "/sys/fs/bpf/",
            "/sys/fs/bpf$",
        ] {
            assert_eq!(bits[tree], access::READ, "{tree}");
        }
        let narrow = agent("    files:\n      write: [/workspace/]\n");
        assert_eq!(
            prefixes(&narrow).len(),
            2,
            "no entries for trees nothing covers"
        );
    }

    #[test]
    fn write_rules_inside_the_cgroup_and_bpf_trees_are_refused_at_the_rule() {
        for path in [
            "/sys/fs/cgroup/claw/t/cgroup.procs",
            "/sys/fs/bpf/",
            "/sys/fs/cgroup",
        ] {
            let text = format!(
                "agents:\n  - name: t\n    cgroup: claw/t\n    files:\n      write: [/tmp/, {path}]\n"
            );
            let err = parse("p.yaml", &text).unwrap_err().to_string();
            assert!(
                err.contains("p.yaml:5:") && err.contains("agents may never write there"),
                "{err}"
            );
        }
        assert!(parse(
            "p.yaml",
            "agents:\n  - name: t\n    cgroup: claw/t\n    files:\n      read: [/sys/fs/cgroup/]\n"
        )
        .is_ok());
    }

    fn guarded(rules: &str) -> Vec<(String, u32)> {
        let policy = parse(
            "p.yaml",
            &format!("agents:\n  - name: t\n    cgroup: claw/t\n{rules}"),
        )
        .unwrap();
        let passwd = "root:x:0:0:root:/root:/bin/bash\nu:x:1000:1000::/home/u:/bin/sh\n";
        let guards = Guards {
            credentials: crate::policy::rules::credential_paths(passwd),
            networks: Vec::new(),
            ..Guards::default()
        };
        let mut compiled = compile_guarding(&policy, &guards).unwrap();
        prefixes(&compiled.agents.remove(0))
    }

    #[test]
    fn wide_rules_do_not_reach_into_credential_stores() {
        let got = guarded("    files:\n      read: [/home/]\n");
        for store in [
            "/home/u/.ssh/",
            "/home/u/.aws/",
            "/home/u/.docker/config.json$",
        ] {
            assert!(got.contains(&(store.to_owned(), 0)), "{store} in {got:?}");
        }
        // The home directory cannot be renamed away from its stores (read stays).
        assert!(
            got.contains(&("/home/u$".to_owned(), access::READ)),
            "{got:?}"
        );
        // Other homes and machine-wide stores are not under the rule: nothing to carve there.
        assert!(!got
            .iter()
            .any(|(p, _)| p.starts_with("/root/") || p.starts_with("/run/")));
        let everything = guarded("    files:\n      read: [/]\n      write: [/]\n");
        for store in [
            "/root/.ssh/",
            "/run/secrets/",
            "/var/run/secrets/",
            "/etc/shadow$",
        ] {
            assert!(everything.contains(&(store.to_owned(), 0)), "{store}");
        }
    }

    #[test]
    fn a_rule_naming_a_store_lifts_its_guard_and_rules_inside_grant_what_they_name() {
        let got =
            guarded("    files:\n      read: [/home/, /home/u/.kube/, /home/u/.ssh/known_hosts]\n");
        assert!(
            got.contains(&("/home/u/.kube/".to_owned(), access::READ)),
            "{got:?}"
        );
        assert!(got.contains(&("/home/u/.ssh/".to_owned(), 0)), "{got:?}");
        assert!(got.contains(&("/home/u/.ssh/known_hosts$".to_owned(), access::READ)));
    }

    #[test]
    fn mode_and_policy_order_are_kept() {
        let c = compiled(
            "agents:\n  - name: a\n    cgroup: claw/a\n    mode: audit\n  - name: b\n    cgroup: claw/b\n",
        );
        assert_eq!(c.agents[0].mode, Mode::Audit);
        assert_eq!(c.agents[1].name, "b");
        assert!(c.agents[1].file_rules.is_empty() && c.agents[1].net_rules.is_empty());
    }

    #[test]
    fn file_key_carries_ruleset_then_path_and_counts_bits() {
        let rule = FileRule {
            prefix: b"/usr/".to_vec(),
            access: access::READ,
        };
        let key = rule.key(0x0102_0304);
        let prefix_len = key.prefix_len();
        assert_eq!(prefix_len, 32 + 5 * 8);
        let data = key.data();
        assert_eq!(data.ruleset, [1, 2, 3, 4]);
        assert_eq!(&data.path[..5], b"/usr/");
        assert!(data.path[5..].iter().all(|&b| b == 0));
    }

    type NetView = (u8, String, Vec<(u16, u16)>);

    fn net(agent: &CompiledAgent) -> Vec<NetView> {
        agent
            .net_rules
            .iter()
            .map(|r| {
                (
                    r.protocol,
                    crate::policy::rules::network_text(&r.address, r.prefix_len),
                    r.ports.iter().map(|p| (p.first, p.last)).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn connect_rules_become_per_protocol_entries() {
        let a =
            agent("    connect:\n      - 127.0.0.1:11434/tcp\n      - \"[2001:db8::]/32:443\"\n");
        assert_eq!(
            net(&a),
            [
                (PROTO_TCP, "127.0.0.1/32".into(), vec![(11434, 11434)]),
                (PROTO_TCP, "[2001:db8::]/32".into(), vec![(443, 443)]),
                (PROTO_UDP, "[2001:db8::]/32".into(), vec![(443, 443)]),
            ]
        );
    }

    #[test]
    fn longer_prefixes_inherit_the_ports_of_covering_ones() {
        let a = agent("    connect:\n      - 10.0.0.0/8:443/tcp\n      - 10.1.0.0/16:80/tcp\n      - 11.0.0.0/8:22/tcp\n");
        assert_eq!(
            net(&a),
            [
                (PROTO_TCP, "10.0.0.0/8".into(), vec![(443, 443)]),
                (PROTO_TCP, "10.1.0.0/16".into(), vec![(80, 80), (443, 443)]),
                (PROTO_TCP, "11.0.0.0/8".into(), vec![(22, 22)]),
            ]
        );
    }

    #[test]
    fn port_ranges_merge() {
        let a = agent("    connect:\n      - 10.0.0.1:80-90/udp\n      - 10.0.0.1:91/udp\n      - 10.0.0.1:85-100/udp\n      - 10.0.0.1:200/udp\n");
        assert_eq!(
            net(&a),
            [(PROTO_UDP, "10.0.0.1/32".into(), vec![(80, 100), (200, 200)])]
        );
    }

    #[test]
    fn too_many_port_ranges_is_an_error_naming_the_network() {
        let rules: String = (0..=MAX_PORT_RANGES)
            .map(|i| format!("      - 10.0.0.1:{}/tcp\n", 1000 + 2 * i))
            .collect();
        let policy = parse(
            "p.yaml",
            &format!("agents:\n  - name: t\n    cgroup: claw/t\n    connect:\n{rules}"),
        )
        .unwrap();
        let err = compile_guarding(&policy, &Guards::default()).unwrap_err();
        assert_eq!(err.agent, "t");
        assert!(err.message.contains("10.0.0.1/32"), "{err}");
        assert!(err.message.contains("at most 16"), "{err}");
    }

    #[test]
    fn wide_connect_rules_do_not_reach_metadata_link_local_or_the_node() {
        let policy = parse(
            "p.yaml",
            "agents:\n  - name: t\n    cgroup: claw/t\n    connect: [0.0.0.0/0:80/tcp, 10.0.0.9:22/tcp, 169.254.169.254/32:80/udp]\n",
        )
        .unwrap();
        let node = crate::policy::rules::Host::ipv4(std::net::Ipv4Addr::new(10, 0, 0, 9), 32);
        let crate::policy::rules::Host::Network {
            address,
            prefix_len,
        } = node
        else {
            unreachable!()
        };
        let mut networks = crate::policy::rules::guarded_networks();
        networks.push((address, prefix_len));
        let guards = Guards {
            credentials: Vec::new(),
            networks,
            ..Guards::default()
        };
        let agent = compile_guarding(&policy, &guards).unwrap().agents.remove(0);
        let view = net(&agent);
        // Link-local (metadata included) is closed to the wide TCP rule; UDP names the metadata
        // address itself, and no UDP rule covers link-local.
        assert!(
            view.contains(&(PROTO_TCP, "169.254.0.0/16".to_owned(), vec![])),
            "{view:?}"
        );
        assert!(!view
            .iter()
            .any(|(p, n, _)| *p == PROTO_UDP && n == "169.254.0.0/16"));
        assert!(view.contains(&(PROTO_UDP, "169.254.169.254/32".to_owned(), vec![(80, 80)])));
        // The node's own address: the rule naming it allows what it names, not the wide rule's
        // port too.
        assert!(view.contains(&(PROTO_TCP, "10.0.0.9/32".to_owned(), vec![(22, 22)])));
        // No IPv6 rule: nothing to carve there.
        assert!(!view.iter().any(|(_, n, _)| n.starts_with('[')));
    }

    #[test]
    fn inside_a_guarded_network_only_rules_inside_it_lend_their_ports() {
        let policy = parse(
            "p.yaml",
            "agents:\n  - name: t\n    cgroup: claw/t\n    connect: [0.0.0.0/0:80/tcp, 169.254.0.0/16:8000/tcp, 169.254.1.0/24:9000/tcp, 127.0.0.1:8080/tcp]\n",
        )
        .unwrap();
        let guards = Guards {
            networks: crate::policy::rules::guarded_networks(),
            ..Guards::default()
        };
        let agent = compile_guarding(&policy, &guards).unwrap().agents.remove(0);
        let view = net(&agent);
        for (network, ports) in [
            ("0.0.0.0/0", vec![(80, 80)]),
            ("169.254.0.0/16", vec![(8000, 8000)]),
            ("169.254.1.0/24", vec![(8000, 8000), (9000, 9000)]),
            ("127.0.0.1/32", vec![(8080, 8080)]),
        ] {
            assert!(
                view.contains(&(PROTO_TCP, network.to_owned(), ports.clone())),
                "{network} {ports:?} in {view:?}"
            );
        }
    }

    #[test]
    fn redirects_send_tcp_connects_of_a_network_to_the_proxy() {
        let agent =
            agent("    redirect:\n      - { to: 0.0.0.0/0:443/tcp, via: \"127.0.0.1:3128\" }\n");
        let [entry] = agent.redirects.as_slice() else {
            panic!("{:?}", agent.redirects)
        };
        assert_eq!(
            (
                entry.prefix_len,
                entry.ports.first,
                entry.ports.last,
                entry.proxy_port
            ),
            (96, 443, 443, 3128)
        );
        assert_eq!(&entry.proxy[10..], &[0xff, 0xff, 127, 0, 0, 1]);
        assert_eq!(entry.key(3).data().protocol, PROTO_TCP);
        for (rule, wanted) in [
            (
                "{ to: api.example.org:443, via: \"127.0.0.1:3128\" }",
                "names a host",
            ),
            (
                "{ to: 10.0.0.0/8:53/udp, via: \"127.0.0.1:3128\" }",
                "only TCP",
            ),
            (
                "{ to: 10.0.0.0/8:443, via: \"127.0.0.1:3128\" }, { to: 10.1.0.0/16:80, via: \"127.0.0.1:3129\" }",
                "may not nest",
            ),
            (
                "{ to: 10.1.2.3:80, via: \"127.0.0.1:3129\" }, { to: 10.0.0.0/8:443, via: \"127.0.0.1:3128\" }",
                "may not nest",
            ),
        ] {
            let policy = parse(
                "p.yaml",
                &format!("agents:\n  - name: t\n    cgroup: claw/t\n    redirect: [{rule}]\n"),
            )
            .unwrap();
            let err = compile_guarding(&policy, &Guards::default()).unwrap_err();
            assert!(err.message.contains(wanted), "{err}");
        }
        let err = parse(
            "p.yaml",
            "agents:\n  - name: t\n    cgroup: claw/t\n    redirect: [{ to: 10.0.0.1:80, via: proxy }]\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("ADDRESS:PORT"), "{err}");
    }

    #[test]
    fn preload_variables_are_refused_unless_allowed() {
        let names = |agent: &CompiledAgent| -> Vec<String> {
            agent
                .env_rules
                .iter()
                .map(|r| String::from_utf8(r.prefix.clone()).unwrap())
                .collect()
        };
        let all = names(&agent(""));
        for name in [
            "LD_PRELOAD=",
            "LD_AUDIT=",
            "NODE_OPTIONS=",
            "PYTHONSTARTUP=",
            "BUN_OPTIONS=",
        ] {
            assert!(all.iter().any(|n| n == name), "{name} in {all:?}");
        }
        let node = names(&agent("    allow_env: [NODE_OPTIONS]\n"));
        assert!(!node.iter().any(|n| n == "NODE_OPTIONS="));
        assert_eq!(node.len(), all.len() - 1);
        let err = parse(
            "p.yaml",
            "agents:\n  - name: t\n    cgroup: claw/t\n    allow_env: [NODE_OPTION]\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("NODE_OPTIONS"), "{err}");
    }

    #[test]
    fn hostnames_are_left_for_the_daemon() {
        let a = agent("    connect:\n      - api.example.org:443/tcp\n      - 10.0.0.1:80/tcp\n");
        assert_eq!(a.hostname_rules.len(), 1);
        assert_eq!(a.net_rules.len(), 1);
    }

    #[test]
    fn net_key_and_value_layout() {
        let rule = NetRule {
            protocol: PROTO_TCP,
            address: [7; 16],
            prefix_len: 120,
            ports: vec![PortRange {
                first: 80,
                last: 81,
            }],
        };
        let key = rule.key(9);
        let prefix_len = key.prefix_len();
        assert_eq!(prefix_len, 40 + 120);
        assert_eq!(key.data().ruleset, [0, 0, 0, 9]);
        let value = rule.value();
        let count = value.count;
        assert_eq!(count, 1);
        assert_eq!((value.ranges[0].first, value.ranges[0].last), (80, 81));
    }
}
