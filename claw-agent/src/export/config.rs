//! claw-agent's own configuration file (`--config`, YAML): where events go beyond the node
//! (SIEM forwarders) and the metrics endpoint. Like a policy, it is checked whole before the
//! daemon starts, and every error is placed (file:line:col).

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{de, Deserialize, Deserializer};

use crate::policy::{from_yaml, PolicyError};

#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Prometheus endpoint; off when absent.
    #[serde(default)]
    pub metrics: Option<Metrics>,
    #[serde(default)]
    pub forward: Vec<Forward>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

fn default_metrics_listen() -> SocketAddr {
    crate::defaults::METRICS_LISTEN
        .parse()
        .expect("a literal address")
}

/// One SIEM destination: syslog (RFC 5424) over TCP, TLS or UDP.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    pub name: ForwarderName,
    /// `tcp://HOST:PORT` (octet-counting framing, RFC 6587), `tls://HOST:PORT` (the same over
    /// TLS), or `udp://HOST:PORT` (one datagram per record; no delivery guarantee).
    pub address: Target,
    #[serde(default)]
    pub format: Format,
    /// Directory of the on-disk spool [default: /var/lib/claw/spool/NAME].
    #[serde(default)]
    pub spool: Option<PathBuf>,
    /// Records waiting for the collector at most, in MiB; beyond, new records are counted as
    /// lost (stage `forward`) instead of spooled.
    #[serde(default = "default_spool_mib")]
    pub spool_max_mib: u64,
    /// PEM file of the CA certificates that sign the collector's certificate (TLS only)
    /// [default: /etc/ssl/certs/ca-certificates.crt].
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The name the collector's certificate must carry (TLS only) [default: the address's host].
    #[serde(default)]
    pub server_name: Option<String>,
}

fn default_spool_mib() -> u64 {
    64
}

impl Forward {
    pub fn spool_dir(&self) -> PathBuf {
        self.spool
            .clone()
            .unwrap_or_else(|| Path::new(crate::defaults::SPOOL_DIR).join(&self.name.0))
    }
}

/// Payload of each syslog record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// claw's event, as `clawctl deny-log --json` prints it.
    #[default]
    Json,
    /// ArcSight Common Event Format.
    Cef,
    /// Open Cybersecurity Schema Framework (JSON).
    Ocsf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Tls,
    Udp,
    /// A local datagram socket: the node's syslog socket, /dev/log (journald, rsyslog).
    Unix,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub transport: Transport,
    pub host: String,
    pub port: u16,
}

crate::policy::schema::scalar_schema!(
    Target,
    "Target",
    ["string"],
    "tcp://HOST:PORT, tls://HOST:PORT, udp://HOST:PORT, or unix:///dev/log (the node's syslog socket: the journal)"
);
crate::policy::schema::scalar_schema!(
    ForwarderName,
    "ForwarderName",
    ["string"],
    "the forwarder's name, in its spool directory and metrics"
);

/// The configuration file's schema (`clawctl policy schema --config`).
pub fn schema() -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(Config)).expect("a schema is JSON");
    schema["title"] = "claw-agent configuration".into();
    schema
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.transport {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Udp => "udp",
            Transport::Unix => return write!(f, "unix://{}", self.host),
        };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let how = "write tcp://HOST:PORT, tls://HOST:PORT, udp://HOST:PORT or unix:///dev/log";
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("address `{text}` has no scheme — {how}"))?;
        if scheme == "unix" {
            if !rest.starts_with('/') {
                return Err(format!(
                    "address `{text}`: a unix socket is named by its absolute path — {how}"
                ));
            }
            return Ok(Self {
                transport: Transport::Unix,
                host: rest.to_owned(),
                port: 0,
            });
        }
        let transport = match scheme {
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            "udp" => Transport::Udp,
            other => return Err(format!("unknown scheme `{other}` — {how}")),
        };
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("address `{text}` has no port — {how}"))?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("port `{port}` is not 1-65535 — {how}"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("address `{text}` has no host — {how}"));
        }
        Ok(Self {
            transport,
            host: host.to_owned(),
            port,
        })
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(de::Error::custom)
    }
}

/// Names a forwarder in metrics, logs and its spool directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwarderName(pub String);

impl<'de> Deserialize<'de> for ForwarderName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(de::Error::custom(format!(
                "forwarder name `{name}` — use 1-64 lowercase letters, digits and dashes"
            )));
        }
        Ok(Self(name))
    }
}

/// Reads and checks the configuration file.
pub fn load(path: &Path) -> Result<Config, PolicyError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|err| PolicyError {
        file: file.clone(),
        line: 0,
        column: 0,
        message: format!("cannot read the configuration: {err}"),
        snippet: String::new(),
    })?;
    parse(&file, &text)
}

pub fn parse(file: &str, text: &str) -> Result<Config, PolicyError> {
    let config: Config = if text.trim().is_empty() {
        Config::default()
    } else {
        from_yaml(file, text)?
    };
    let unplaced = |message: String| PolicyError {
        file: file.to_owned(),
        line: 0,
        column: 0,
        message,
        snippet: String::new(),
    };
    for (index, forward) in config.forward.iter().enumerate() {
        if config.forward[..index]
            .iter()
            .any(|f| f.name == forward.name)
        {
            return Err(unplaced(format!(
                "two forwarders are named `{}` — give each its own name (it names its spool)",
                forward.name.0
            )));
        }
        let tls_only = forward.ca.is_some() || forward.server_name.is_some();
        if tls_only && forward.address.transport != Transport::Tls {
            return Err(unplaced(format!(
                "forwarder `{}`: `ca` and `server_name` apply to tls:// addresses only — use tls://{}:{} or remove them",
                forward.name.0, forward.address.host, forward.address.port
            )));
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forwarders_and_metrics() {
        let config = parse(
            "claw.yaml",
            "metrics: {}\nforward:\n  - name: siem\n    address: tls://siem.example:6514\n    format: ocsf\n    ca: /etc/claw/ca.pem\n  - name: local\n    address: udp://127.0.0.1:514\n",
        )
        .unwrap();
        assert_eq!(
            config.metrics.unwrap().listen,
            "127.0.0.1:9464".parse().unwrap()
        );
        assert_eq!(config.forward[0].address.transport, Transport::Tls);
        assert_eq!(config.forward[0].format, Format::Ocsf);
        assert_eq!(config.forward[1].format, Format::Json);
        assert_eq!(
            config.forward[1].spool_dir(),
            Path::new("/var/lib/claw/spool/local")
        );
    }

    #[test]
    fn errors_are_placed_and_say_how_to_fix() {
        let err = parse(
            "claw.yaml",
            "forward:\n  - name: siem\n    address: http://x:1\n",
        )
        .unwrap_err();
        assert_eq!((err.line, err.column), (3, 14), "{err}");
        assert!(err.message.contains("tcp://HOST:PORT"), "{err}");
        let err = parse(
            "claw.yaml",
            "forward:\n  - name: Siem\n    address: tcp://x:1\n",
        )
        .unwrap_err();
        assert_eq!(err.line, 2, "{err}");
        let err = parse("claw.yaml", "metric: {}\n").unwrap_err();
        assert_eq!(err.line, 1, "{err}");
        let err = parse(
            "claw.yaml",
            "forward:\n  - name: a\n    address: tcp://x:1\n    ca: /ca.pem\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("tls:// addresses only"), "{err}");
        let err = parse(
            "claw.yaml",
            "forward:\n  - {name: a, address: \"tcp://x:1\"}\n  - {name: a, address: \"udp://x:1\"}\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("two forwarders"), "{err}");
    }
}
