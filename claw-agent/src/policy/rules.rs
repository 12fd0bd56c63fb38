//! The values a rule names — paths and network destinations — validated as they are read, so
//! that an error points at the offending scalar.

use std::{
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
};

use serde::{Deserialize, Deserializer};

use crate::policy::invalid;

/// Longest path a file rule may name: the kernel's rule key holds 252 bytes, and an exact-file
/// rule needs one more byte for its terminating NUL.
pub const MAX_RULE_PATH: usize = claw_common::RULE_PATH_BYTES - 1;

/// Trees no agent may write in, and why: where claw's own enforcement lives — the cgroup tree
/// (writing `cgroup.procs` moves a process out of its agent, `rmdir` removes an agent's cgroup)
/// and the BPF filesystem (pinned programs and maps) — and /proc (a process's memory through
/// /proc/PID/mem, which the kernel lets a process write in its own threads without asking any
/// LSM, so code would run that no exec rule named; and the kernel's settings). No policy lets
/// an agent write there: a write rule inside is refused, a wider one stops short of them.
pub const PROTECTED: [(&str, &str); 3] = [
    ("/sys/fs/cgroup/", "claw's own enforcement lives there"),
    ("/sys/fs/bpf/", "claw's own enforcement lives there"),
    (
        "/proc/",
        "processes' memory (/proc/PID/mem) and the kernel's settings live there",
    ),
];

/// The protected tree `path` lies in, if any (the tree's own directory included).
pub fn protected_tree(path: &str) -> Option<&'static str> {
    PROTECTED
        .into_iter()
        .map(|(tree, _)| tree)
        .find(|tree| path.starts_with(tree) || path == tree.trim_end_matches('/'))
}

/// Why no agent may write in the protected `tree`.
pub fn why_protected(tree: &str) -> &'static str {
    PROTECTED
        .into_iter()
        .find(|(t, _)| *t == tree)
        .map_or("", |(_, why)| why)
}

/// Credential stores in a home directory: no directory rule reaches into them; only a rule
/// naming one lets an agent in.
pub const HOME_CREDENTIALS: &[&str] = &[
    ".ssh/",
    ".aws/",
    ".azure/",
    ".config/gcloud/",
    ".config/gh/",
    ".kube/",
    ".docker/config.json",
    ".gnupg/",
    ".netrc",
    ".git-credentials",
    ".npmrc",
    ".pypirc",
    // Model hubs' and model servers' keys, on the nodes claw is for.
    ".cache/huggingface/token",
    ".huggingface/token",
    ".ollama/id_ed25519",
    // Secrets typed at a shell, and desktop keyrings.
    ".bash_history",
    ".zsh_history",
    ".python_history",
    ".local/share/keyrings/",
    ".password-store/",
];

/// Further stores in root's home, the administrator's: its tools' configuration and caches hold
/// tokens of every kind (registries, clouds, CLIs), and an agent has no business there.
pub const ROOT_CREDENTIALS: &[&str] = &[".config/", ".local/", ".cache/"];

/// Credential stores of the machine, guarded the same way. Where the list comes from
/// (docs/policy.md says it too): the files Debian's passwd, login and libpam-pwquality
/// (pam_pwhistory's opasswd), openssh-server, ssl-cert, krb5, wireguard-tools, network-manager
/// and certbot packages keep secrets in; RHEL's /etc/pki/tls/private; the layouts kubeadm, k3s and
/// RKE2 document for cluster credentials and the kubelet's; cloud-init's and Azure's agent's
/// state (user data, provisioning secrets); mounted secrets (service account tokens). Falco's
/// `sensitive_file_names` names /etc/shadow; its other entries are configuration, not secrets.
pub const MACHINE_CREDENTIALS: &[&str] = &[
    "/run/secrets/",
    "/var/run/secrets/",
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/security/opasswd",
    "/etc/ssh/ssh_host_rsa_key",
    "/etc/ssh/ssh_host_ecdsa_key",
    "/etc/ssh/ssh_host_ed25519_key",
    "/etc/ssh/ssh_host_dsa_key",
    "/etc/ssl/private/",
    "/etc/pki/tls/private/",
    "/etc/krb5.keytab",
    "/etc/wireguard/",
    "/etc/NetworkManager/system-connections/",
    "/etc/letsencrypt/",
    "/etc/kubernetes/",
    "/var/lib/kubelet/pki/",
    "/var/lib/kubelet/kubeconfig",
    // Every pod's volumes: service account tokens, mounted secrets.
    "/var/lib/kubelet/pods/",
    "/etc/rancher/",
    "/var/lib/rancher/k3s/server/",
    "/var/lib/rancher/rke2/server/",
    "/var/lib/rancher/k3s/agent/",
    "/var/lib/rancher/rke2/agent/",
    // systemd's LoadCredential= and SetCredential= for services.
    "/run/credentials/",
    "/var/lib/cloud/instance/",
    "/var/lib/cloud/instances/",
    "/var/lib/waagent/",
];

/// The credential stores to guard on a machine with these /etc/passwd contents: those under the
/// home directory of each user who can log in (root's, and any under /home/, included), and the
/// machine's. Service accounts (a nologin or false shell) have no stores of their own.
pub fn credential_paths(passwd: &str) -> Vec<RulePath> {
    let mut homes: Vec<String> = passwd
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let (home, shell) = (*fields.get(5)?, *fields.get(6).unwrap_or(&""));
            let logs_in = !shell.ends_with("nologin") && !shell.ends_with("false");
            (logs_in || home.starts_with("/home/")).then_some(home)
        })
        .chain(["/root"])
        .filter(|home| home.len() > 1 && !home.starts_with("/nonexistent"))
        .map(|home| format!("{}/", home.trim_end_matches('/')))
        .filter(|home| RulePath::parse(home).is_ok())
        .collect();
    homes.sort();
    homes.dedup();
    homes
        .iter()
        .flat_map(|home| {
            let root = if home == "/root/" {
                ROOT_CREDENTIALS
            } else {
                &[]
            };
            HOME_CREDENTIALS
                .iter()
                .chain(root)
                .map(move |c| format!("{home}{c}"))
        })
        .chain(MACHINE_CREDENTIALS.iter().map(|c| (*c).to_owned()))
        .filter_map(|path| RulePath::parse(&path).ok())
        .collect()
}

/// Variables that make a program run code its caller chose — the dynamic loader's preload and
/// audit libraries, and interpreters' preload options — refused at exec unless `allow_env`
/// names them. NODE_OPTIONS and the like are refused whole: claw does not parse each
/// interpreter's option syntax in the kernel.
pub const PRELOAD_VARIABLES: &[&str] = &[
    "LD_PRELOAD",
    "LD_AUDIT",
    "NODE_OPTIONS",
    "PYTHONSTARTUP",
    "BUN_OPTIONS",
    "PERL5OPT",
    "RUBYOPT",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "BASH_ENV",
];

/// A preload variable an agent may pass (`allow_env:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvName(pub String);

crate::policy::schema::scalar_schema!(
    EnvName,
    "EnvName",
    ["string"],
    "a preload variable claw refuses at exec unless named: LD_PRELOAD, LD_AUDIT, NODE_OPTIONS, PYTHONSTARTUP, BUN_OPTIONS, PERL5OPT, RUBYOPT, JAVA_TOOL_OPTIONS, _JAVA_OPTIONS, BASH_ENV"
);
crate::policy::schema::scalar_schema!(
    RulePath,
    "RulePath",
    ["string"],
    "an absolute, normalised path: ending in `/` a directory and all below it, else exactly that path"
);
crate::policy::schema::scalar_schema!(
    ConnectRule,
    "ConnectRule",
    ["string"],
    "ADDRESS[/LEN]:PORT[-PORT][/tcp|/udp], [IPv6][/LEN]:PORT..., or HOSTNAME:PORT... (`*.example.com` for its subdomains)"
);
crate::policy::schema::scalar_schema!(
    ListenRule,
    "ListenRule",
    ["string"],
    "ADDRESS:PORT[-PORT][/tcp|/udp] a local address and ports the agent may bind and listen on"
);
crate::policy::schema::scalar_schema!(
    ProxyAddress,
    "ProxyAddress",
    ["string"],
    "the local proxy's ADDRESS:PORT"
);

impl<'de> Deserialize<'de> for EnvName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        if PRELOAD_VARIABLES.contains(&name.as_str()) {
            Ok(Self(name))
        } else {
            Err(invalid(format!(
                "`{name}` is not a variable claw refuses — allow_env takes one of {}",
                PRELOAD_VARIABLES.join(", ")
            )))
        }
    }
}

/// Networks no wider connect rule reaches: IPv4 and IPv6 link-local (the cloud metadata service
/// 169.254.169.254 among them), AWS's IPv6 metadata address, loopback and the unspecified
/// addresses.
pub fn guarded_networks() -> Vec<([u8; 16], u8)> {
    let v4 = |a: Ipv4Addr, len: u8| (a.to_ipv6_mapped().octets(), 96 + len);
    let v6 = |a: Ipv6Addr, len: u8| (a.octets(), len);
    vec![
        v4(Ipv4Addr::new(169, 254, 0, 0), 16),
        v6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
        v6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254), 128),
        // The node itself beyond its interfaces' addresses: all of loopback, and the
        // unspecified addresses (a connect to 0.0.0.0 reaches whatever listens on any address).
        v4(Ipv4Addr::new(127, 0, 0, 0), 8),
        v4(Ipv4Addr::UNSPECIFIED, 32),
        v6(Ipv6Addr::UNSPECIFIED, 128),
    ]
}

/// The node's own addresses (every interface's, loopback's included), each as a single-address
/// network: a wide rule does not open the node's own services (kubelet, the inference server).
pub fn node_addresses() -> Vec<([u8; 16], u8)> {
    let mut addresses = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs(3) fills `list`, walked read-only below and freed once.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return addresses;
        }
        let mut entry = list;
        while let Some(ifa) = entry.as_ref() {
            if let Some(addr) = ifa.ifa_addr.as_ref() {
                match i32::from(addr.sa_family) {
                    libc::AF_INET => {
                        let v4 = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
                        addresses.push((ip.to_ipv6_mapped().octets(), 128));
                    }
                    libc::AF_INET6 => {
                        let v6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        addresses.push((v6.sin6_addr.s6_addr, 128));
                    }
                    _ => {}
                }
            }
            entry = ifa.ifa_next;
        }
        libc::freeifaddrs(list);
    }
    addresses.sort();
    addresses.dedup();
    addresses
}

/// An absolute, normalised path in a rule. A trailing `/` names a directory and everything below
/// it; otherwise exactly that path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RulePath(pub String);

impl RulePath {
    pub fn is_directory(&self) -> bool {
        self.0.ends_with('/')
    }

    pub fn parse(path: &str) -> Result<Self, String> {
        if !path.starts_with('/') {
            return Err(format!(
                "path `{path}` is relative — rules name absolute paths, e.g. `/workspace/`"
            ));
        }
        let inner = path.trim_start_matches('/');
        let inner = inner.strip_suffix('/').unwrap_or(inner);
        if path != "/"
            && inner
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == ".." || part.contains('\0'))
        {
            return Err(format!(
                "path `{path}` is not normalised — the kernel matches resolved paths, so write it without `//`, `.` or `..`"
            ));
        }
        if path.len() > MAX_RULE_PATH {
            return Err(format!(
                "path `{}…` is {} bytes long — rules hold at most {MAX_RULE_PATH} bytes; name a shorter parent directory ending in `/`",
                path.chars().take(40).collect::<String>(),
                path.len()
            ));
        }
        Ok(Self(path.to_owned()))
    }
}

impl<'de> Deserialize<'de> for RulePath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let path = String::deserialize(deserializer)?;
        Self::parse(&path).map_err(invalid)
    }
}

/// `ADDRESS[/LEN]:PORT[-PORT][/tcp|/udp]`, `[V6][/LEN]:PORT...`, or `HOSTNAME:PORT...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRule {
    pub host: Host,
    pub ports: PortRange,
    pub protocols: Protocols,
    /// As written, for messages and `explain`.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An IPv6 network; IPv4 networks are held as IPv4-mapped (`::ffff:a.b.c.d`), so that a
    /// connect to an IPv4-mapped IPv6 address meets the same rule as one to the IPv4 address.
    Network { address: [u8; 16], prefix_len: u8 },
    /// A name, or a pattern `*.example.com`: answered by the agent's resolver (dns.rs).
    Name(String),
}

/// Whether the name of a rule (`api.github.com`, or `*.github.com`: every name below github.com,
/// at any depth, not github.com itself) covers `name` (a name, or a pattern of the same form).
/// Both lower case, without a final dot.
pub fn name_covers(rule: &str, name: &str) -> bool {
    match rule.strip_prefix('*') {
        Some(below) => name.len() > below.len() && name.ends_with(below),
        None => rule == name,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    Tcp,
    Udp,
    Both,
}

impl Host {
    pub fn ipv4(address: Ipv4Addr, prefix_len: u8) -> Self {
        Host::Network {
            address: address.to_ipv6_mapped().octets(),
            prefix_len: 96 + prefix_len,
        }
    }
}

impl fmt::Display for ConnectRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl ConnectRule {
    pub fn parse(text: &str) -> Result<Self, String> {
        let usage = "write ADDRESS[/LEN]:PORT[-PORT][/tcp|/udp], e.g. `10.0.0.0/8:443/tcp`, `[2001:db8::]/32:443` or `api.example.org:443/tcp`";
        let (rest, protocols) = match text.rsplit_once('/') {
            Some((rest, "tcp")) => (rest, Protocols::Tcp),
            Some((rest, "udp")) => (rest, Protocols::Udp),
            Some((_, proto)) if proto.chars().all(|c| c.is_ascii_alphabetic()) && !proto.is_empty() => {
                return Err(format!(
                    "protocol `{proto}` in `{text}` is not supported — use /tcp or /udp, or leave it out for both"
                ))
            }
            _ => (text, Protocols::Both),
        };
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("`{text}` has no port — {usage}"))?;
        let ports = parse_ports(port).map_err(|why| format!("{why} in `{text}` — {usage}"))?;
        let host = parse_host(host).map_err(|why| format!("{why} in `{text}` — {usage}"))?;
        Ok(Self {
            host,
            ports,
            protocols,
            text: text.to_owned(),
        })
    }
}

fn parse_ports(port: &str) -> Result<PortRange, String> {
    if port == "*" {
        return Ok(PortRange {
            first: 1,
            last: u16::MAX,
        });
    }
    let one = |p: &str| -> Result<u16, String> {
        match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(format!(
                "port `{p}` is not a port (1-65535, a range A-B, or *)"
            )),
            Ok(n) => Ok(n),
        }
    };
    let (first, last) = match port.split_once('-') {
        Some((a, b)) => (one(a)?, one(b)?),
        None => (one(port)?, one(port)?),
    };
    if first > last {
        return Err(format!("port range `{port}` runs backwards"));
    }
    Ok(PortRange { first, last })
}

fn parse_host(host: &str) -> Result<Host, String> {
    if let Some(bracketed) = host.strip_prefix('[') {
        let (address, len) = match bracketed.split_once(']') {
            Some((address, "")) => (address, None),
            Some((address, len)) => (
                address,
                Some(len.strip_prefix('/').ok_or_else(|| {
                    format!("`{len}` after `]` is neither a prefix length `/LEN` nor empty")
                })?),
            ),
            None => return Err("`[` without `]`".to_owned()),
        };
        let address: Ipv6Addr = address
            .parse()
            .map_err(|_| format!("`{address}` is not an IPv6 address"))?;
        let prefix_len = prefix_len(len, 128)?;
        check_host_bits(&address.octets(), prefix_len, host)?;
        return Ok(Host::Network {
            address: address.octets(),
            prefix_len,
        });
    }
    if host.contains(':') {
        return Err(format!(
            "`{host}` looks like an IPv6 address — write it in brackets, e.g. `[{host}]:443`"
        ));
    }
    let (address, len) = match host.split_once('/') {
        Some((address, len)) => (address, Some(len)),
        None => (host, None),
    };
    if let Ok(v4) = address.parse::<Ipv4Addr>() {
        let prefix_len = prefix_len(len, 32)?;
        let mapped = Host::ipv4(v4, prefix_len);
        if let Host::Network {
            address: octets,
            prefix_len: bits,
        } = &mapped
        {
            check_host_bits(octets, *bits, host)?;
        }
        return Ok(mapped);
    }
    if len.is_some() || address.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!("`{host}` is not an IPv4 address or network"));
    }
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let domain = host.strip_prefix("*.").unwrap_or(host);
    if domain.contains('*') {
        return Err(format!(
            "`{host}`: `*` stands only as the whole first label — `*.example.com` names every host below example.com"
        ));
    }
    if host.len() > 253 || !domain.split('.').all(valid_label) {
        return Err(format!("`{host}` is not a valid hostname"));
    }
    if domain.len() < host.len() && !domain.contains('.') {
        return Err(format!(
            "`{host}` would name every host of a top-level domain — name a domain below it, e.g. `*.example.{domain}`"
        ));
    }
    Ok(Host::Name(host.to_ascii_lowercase()))
}

fn prefix_len(len: Option<&str>, max: u8) -> Result<u8, String> {
    match len {
        None => Ok(max),
        Some(len) => match len.parse::<u8>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(format!(
                "prefix length `/{len}` is not between /0 and /{max}"
            )),
        },
    }
}

fn check_host_bits(octets: &[u8; 16], prefix_len: u8, written: &str) -> Result<(), String> {
    let masked = mask(octets, prefix_len);
    if &masked != octets {
        return Err(format!(
            "`{written}` has bits set past its prefix length — write the network address, e.g. `{}`",
            network_text(&masked, prefix_len)
        ));
    }
    Ok(())
}

/// `octets` with every bit past `prefix_len` cleared.
pub fn mask(octets: &[u8; 16], prefix_len: u8) -> [u8; 16] {
    let mut out = *octets;
    for (i, byte) in out.iter_mut().enumerate() {
        let bits_here = (prefix_len as i32 - 8 * i as i32).clamp(0, 8);
        *byte &= (0xff_u16 << (8 - bits_here)) as u8;
    }
    out
}

/// An IPv6 network in its natural notation (IPv4 for mapped networks).
pub fn network_text(octets: &[u8; 16], prefix_len: u8) -> String {
    let v6 = Ipv6Addr::from(*octets);
    match v6.to_ipv4_mapped() {
        Some(v4) if prefix_len >= 96 => format!("{v4}/{}", prefix_len - 96),
        _ => format!("[{v6}]/{prefix_len}"),
    }
}

/// `ADDRESS[/LEN]:PORT[-PORT][/tcp|/udp]`: where an agent may bind a port and listen — the local
/// address as the socket is bound: `127.0.0.1:11434/tcp` is that address alone, `0.0.0.0:80/tcp`
/// every IPv4 address of the node (and only a rule naming it allows that), `[::]:80/tcp` every
/// IPv6 and, dual-stack, IPv4 address. A network (`0.0.0.0/0:8080`) holds every address in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenRule(pub ConnectRule);

impl ListenRule {
    pub fn parse(text: &str) -> Result<Self, String> {
        let rule = ConnectRule::parse(text)?;
        if let Host::Name(name) = &rule.host {
            return Err(format!(
                "listen rule `{text}` names a host (`{name}`) — name the address the agent binds, e.g. `127.0.0.1:8080/tcp`, or `0.0.0.0:8080/tcp` for every IPv4 address"
            ));
        }
        Ok(Self(rule))
    }
}

impl fmt::Display for ListenRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.text)
    }
}

impl<'de> Deserialize<'de> for ListenRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(invalid)
    }
}

/// `{ to: DESTINATIONS, via: ADDRESS:PORT }`: TCP connects to `to` go to the proxy at `via`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedirectRule {
    pub to: ConnectRule,
    pub via: ProxyAddress,
}

impl fmt::Display for RedirectRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} via {}", self.to, self.via.text)
    }
}

/// A local proxy's address and port (`127.0.0.1:3128`, `[::1]:3128`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyAddress {
    /// IPv6, or IPv4-mapped.
    pub address: [u8; 16],
    pub port: u16,
    pub text: String,
}

impl<'de> Deserialize<'de> for ProxyAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let address: std::net::SocketAddr = text.parse().map_err(|_| {
            invalid(format!(
                "proxy `{text}` is not ADDRESS:PORT — write e.g. `127.0.0.1:3128` or `[::1]:3128`"
            ))
        })?;
        let octets = match address.ip() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(v6) => v6.octets(),
        };
        if address.port() == 0 {
            return Err(invalid(format!(
                "proxy `{text}` has port 0 — name the port it listens on"
            )));
        }
        Ok(Self {
            address: octets,
            port: address.port(),
            text,
        })
    }
}

impl<'de> Deserialize<'de> for ConnectRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_rules_name_addresses_not_hosts() {
        let rule = ListenRule::parse("127.0.0.1:11434/tcp").unwrap();
        assert_eq!(rule.0.host, Host::ipv4(Ipv4Addr::LOCALHOST, 32));
        assert_eq!(rule.0.protocols, Protocols::Tcp);
        assert!(ListenRule::parse("[::]:80").is_ok());
        let err = ListenRule::parse("api.example.org:443/tcp").unwrap_err();
        assert!(
            err.contains("names a host") && err.contains("0.0.0.0:8080/tcp"),
            "{err}"
        );
        assert!(ListenRule::parse("127.0.0.1:0/tcp").is_err());
    }

    fn net(text: &str) -> (String, PortRange, Protocols) {
        let rule = ConnectRule::parse(text).unwrap();
        match rule.host {
            Host::Network {
                address,
                prefix_len,
            } => (
                network_text(&address, prefix_len),
                rule.ports,
                rule.protocols,
            ),
            Host::Name(name) => (name, rule.ports, rule.protocols),
        }
    }

    #[test]
    fn parses_the_issue_examples() {
        let port = |p| PortRange { first: p, last: p };
        assert_eq!(
            net("127.0.0.1:11434/tcp"),
            ("127.0.0.1/32".into(), port(11434), Protocols::Tcp)
        );
        assert_eq!(
            net("10.0.0.0/8:443/tcp"),
            ("10.0.0.0/8".into(), port(443), Protocols::Tcp)
        );
        assert_eq!(
            net("[2001:db8::]/32:443"),
            ("[2001:db8::]/32".into(), port(443), Protocols::Both)
        );
        assert_eq!(
            net("api.example.org:443/tcp"),
            ("api.example.org".into(), port(443), Protocols::Tcp)
        );
    }

    #[test]
    fn ranges_any_port_and_udp() {
        let (_, ports, protocols) = net("10.0.0.0/8:8000-8999/udp");
        assert_eq!(
            (ports.first, ports.last, protocols),
            (8000, 8999, Protocols::Udp)
        );
        let (_, ports, _) = net("[::1]:*");
        assert_eq!((ports.first, ports.last), (1, 65535));
    }

    #[test]
    fn ipv4_is_held_as_mapped_ipv6() {
        let rule = ConnectRule::parse("192.168.1.0/24:53").unwrap();
        let Host::Network {
            address,
            prefix_len,
        } = rule.host
        else {
            panic!()
        };
        assert_eq!(prefix_len, 120);
        assert_eq!(&address[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(&address[12..], &[192, 168, 1, 0]);
    }

    #[test]
    fn a_wildcard_names_every_host_below_its_domain() {
        let rule = ConnectRule::parse("*.GitHub.com:443/tcp").unwrap();
        assert_eq!(rule.host, Host::Name("*.github.com".to_owned()));
        for name in ["api.github.com", "a.b.github.com", "*.api.github.com"] {
            assert!(name_covers("*.github.com", name), "{name}");
        }
        for name in [
            "github.com",
            "evilgithub.com",
            "github.com.evil.net",
            "*.github.com.x",
        ] {
            assert!(!name_covers("*.github.com", name), "{name}");
        }
        assert!(name_covers("api.github.com", "api.github.com"));
        assert!(!name_covers("api.github.com", "x.api.github.com"));
    }

    #[test]
    fn errors_say_what_and_how() {
        let cases = [
            ("10.0.0.1", "has no port"),
            ("10.0.0.1:0", "is not a port"),
            ("10.0.0.1:70000", "is not a port"),
            ("10.0.0.1:90-80", "runs backwards"),
            ("10.0.0.1:80/sctp", "protocol `sctp`"),
            ("10.0.0.0/33:80", "not between /0 and /32"),
            ("10.1.2.3/8:80", "e.g. `10.0.0.0/8`"),
            ("2001:db8::1:443", "in brackets"),
            ("[2001:db8::]/129:443", "not between /0 and /128"),
            ("[nope]:443", "not an IPv6 address"),
            ("300.1.1.1:80", "not an IPv4 address"),
            ("bad_host!:80", "not a valid hostname"),
            ("*.com:443", "top-level domain"),
            ("a.*.example.com:443", "whole first label"),
            ("*:443", "whole first label"),
            ("*x.example.com:443", "whole first label"),
        ];
        for (text, want) in cases {
            let err = ConnectRule::parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn credential_stores_are_those_of_users_who_log_in_and_the_machines() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
            bin:x:2:2:bin:/bin:/usr/sbin/nologin\n\
            www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n\
            ollama:x:998:997::/usr/share/ollama:/bin/false\n\
            dev:x:1000:1000::/home/dev:/bin/bash\n\
            ci:x:1001:1001::/srv/ci:/bin/sh\n";
        let paths: Vec<String> = credential_paths(passwd).into_iter().map(|p| p.0).collect();
        for wanted in [
            "/root/.ssh/",
            "/home/dev/.aws/",
            "/srv/ci/.kube/",
            "/run/secrets/",
            "/etc/shadow",
            "/etc/shadow-",
            "/etc/ssh/ssh_host_ed25519_key",
            "/root/.config/",
            "/home/dev/.cache/huggingface/token",
        ] {
            assert!(paths.iter().any(|p| p == wanted), "{wanted} in {paths:?}");
        }
        assert!(!paths.iter().any(|p| p == "/home/dev/.config/"));
        assert!(!paths.iter().any(|p| p.starts_with("/bin/")
            || p.starts_with("/var/www/")
            || p.starts_with("/usr/share/ollama/")));
    }

    #[test]
    fn mask_clears_host_bits() {
        let octets = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1).octets();
        assert_eq!(
            Ipv6Addr::from(mask(&octets, 36)),
            Ipv6Addr::new(0x2001, 0xdb8, 0xf000, 0, 0, 0, 0, 0)
        );
        assert_eq!(mask(&octets, 0), [0; 16]);
        assert_eq!(mask(&octets, 128), octets);
    }

    #[test]
    fn rule_paths_are_validated() {
        assert!(RulePath::parse("/").is_ok());
        assert!(RulePath::parse("/usr/").unwrap().is_directory());
        assert!(!RulePath::parse("/etc/hosts").unwrap().is_directory());
        for (bad, want) in [
            ("etc/", "is relative"),
            ("/usr/../etc/", "not normalised"),
            ("/usr//lib/", "not normalised"),
            ("/./x", "not normalised"),
        ] {
            assert!(RulePath::parse(bad).unwrap_err().contains(want), "{bad}");
        }
        let long = format!("/{}", "a".repeat(MAX_RULE_PATH));
        assert!(RulePath::parse(&long)
            .unwrap_err()
            .contains("at most 251 bytes"));
    }
}
