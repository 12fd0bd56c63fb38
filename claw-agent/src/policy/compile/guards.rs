//! Guards: what no wider rule reaches — credential stores, networks an agent must name, and
//! claw-agent's own sockets — as read from this machine.

use std::path::{Path, PathBuf};

use crate::policy::rules::RulePath;

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
