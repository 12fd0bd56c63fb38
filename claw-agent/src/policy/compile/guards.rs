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
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let credentials = with_other_names(
            crate::policy::rules::credential_paths(&passwd),
            &|path| resolve_existing(path),
            &parse_mountinfo(&mountinfo),
        );
        Self {
            credentials,
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

/// `guards` and every other name the kernel may resolve them to: the path with the symbolic
/// links on its way followed (`/home -> var/home`, as on Fedora Atomic: the programs match
/// resolved paths), and the same file through other mounts of its filesystem (a bind mount of
/// `/etc` elsewhere). `resolve` gives a path's resolved form.
pub fn with_other_names(
    guards: Vec<RulePath>,
    resolve: &dyn Fn(&str) -> Option<String>,
    mounts: &[Mount],
) -> Vec<RulePath> {
    let mut names: Vec<String> = Vec::new();
    for guard in &guards {
        let mut own = vec![guard.0.clone()];
        own.extend(resolve(&guard.0).filter(|r| *r != guard.0));
        for name in own.clone() {
            own.extend(mount_aliases(&name, mounts));
        }
        names.extend(own);
    }
    names.sort();
    names.dedup();
    names
        .iter()
        .filter_map(|n| RulePath::parse(n).ok())
        .collect()
}

/// `path` with the symbolic links of its longest existing ancestor followed (the rest may not
/// exist yet: a store made later is guarded where it will be); a trailing `/` kept.
fn resolve_existing(path: &str) -> Option<String> {
    let mut existing = Path::new(path.trim_end_matches('/'));
    let mut rest: Vec<&std::ffi::OsStr> = Vec::new();
    let resolved = loop {
        if let Ok(resolved) = std::fs::canonicalize(existing) {
            break resolved;
        }
        rest.push(existing.file_name()?);
        existing = existing.parent()?;
    };
    let joined = rest
        .iter()
        .rev()
        .fold(resolved, |path, name| path.join(name));
    let mut text = joined.to_str()?.to_owned();
    if path.ends_with('/') && !text.ends_with('/') {
        text.push('/');
    }
    Some(text)
}

/// One line of /proc/self/mountinfo: which directory of which filesystem is mounted where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the filesystem.
    pub device: String,
    /// The directory of the filesystem this mount shows (`/` but for bind mounts).
    pub root: String,
    pub mount_point: String,
}

/// The mounts of /proc/self/mountinfo text (fields: id, parent, major:minor, root, mount point,
/// ...; spaces and the like octal-escaped).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            Some(Mount {
                device: (*fields.get(2)?).to_owned(),
                root: unescape_mountinfo(fields.get(3)?),
                mount_point: unescape_mountinfo(fields.get(4)?),
            })
        })
        .collect()
}

/// Undoes mountinfo's escapes: space, tab, newline and backslash as three octal digits.
pub fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            let text = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What follows `dir` in `path` (`""` or from a `/`), if `path` is `dir` or below it.
fn below<'a>(path: &'a str, dir: &str) -> Option<&'a str> {
    if dir == "/" {
        return Some(path);
    }
    let rest = path.strip_prefix(dir)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// The other paths that name `path`'s file: through each other mount of the same filesystem
/// whose root holds it, and (a directory) each mount of part of it. `path` is resolved; the mount holding it is the one of longest mount
/// point (the last mounted, where several share it).
pub fn mount_aliases(path: &str, mounts: &[Mount]) -> Vec<String> {
    // max_by_key takes the last of equals: the mount on top.
    let Some((holder, rest)) = mounts
        .iter()
        .filter_map(|m| below(path, &m.mount_point).map(|rest| (m, rest)))
        .max_by_key(|(m, _)| m.mount_point.len())
    else {
        return Vec::new();
    };
    let in_filesystem = format!("{}{rest}", holder.root.trim_end_matches('/'));
    mounts
        .iter()
        .filter(|m| m.device == holder.device && m.mount_point != holder.mount_point)
        .filter_map(|m| {
            let mount_point = m.mount_point.trim_end_matches('/');
            if let Some(inside) = below(&in_filesystem, &m.root) {
                return Some(format!("{mount_point}{inside}"));
            }
            // A mount showing part of a guarded directory (/etc/kubernetes/pki bound elsewhere):
            // all of it is inside the store.
            let directory = in_filesystem.strip_suffix('/')?;
            below(&m.root, directory).map(|_| format!("{mount_point}/"))
        })
        .filter(|alias| alias != path)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 8:1 /etc /srv/host\\040etc rw,relatime shared:1 - ext4 /dev/sda1 rw
31 22 8:1 / /mnt/rootfs rw,relatime shared:1 - ext4 /dev/sda1 rw
32 22 8:2 / /var/home rw,relatime shared:2 - ext4 /dev/sda2 rw
33 22 8:2 /alice/.ssh /srv/alice-ssh rw,relatime shared:2 - ext4 /dev/sda2 rw
34 22 8:1 /etc/kubernetes/pki /srv/pki rw,relatime shared:1 - ext4 /dev/sda1 rw
";

    fn names(guards: &[&str], links: &[(&str, &str)]) -> Vec<String> {
        let links: Vec<(String, String)> = links
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        let resolve = move |path: &str| {
            links
                .iter()
                .find_map(|(link, target)| below(path, link).map(|rest| format!("{target}{rest}")))
        };
        let guards = guards.iter().map(|g| RulePath::parse(g).unwrap()).collect();
        with_other_names(guards, &resolve, &parse_mountinfo(MOUNTINFO))
            .into_iter()
            .map(|p| p.0)
            .collect()
    }

    /// A home reached through a symbolic link is guarded where the link leads, and every mount
    /// showing a store is guarded too: a bind mount of /etc, the root filesystem mounted again,
    /// a bind mount of the store itself.
    #[test]
    fn guards_hold_under_every_name_of_the_file() {
        let got = names(
            &["/etc/shadow", "/home/alice/.ssh/", "/etc/kubernetes/"],
            &[("/home", "/var/home")],
        );
        assert_eq!(
            got,
            [
                "/etc/kubernetes/",
                "/etc/shadow",
                "/home/alice/.ssh/",
                "/mnt/rootfs/etc/kubernetes/",
                "/mnt/rootfs/etc/shadow",
                "/mnt/rootfs/home/alice/.ssh/",
                "/srv/alice-ssh/",
                "/srv/host etc/kubernetes/",
                "/srv/host etc/shadow",
                "/srv/pki/",
                "/var/home/alice/.ssh/",
            ]
        );
    }

    #[test]
    fn mountinfo_fields_are_unescaped() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounts[1].mount_point, "/srv/host etc");
        assert_eq!(mounts[1].root, "/etc");
        assert_eq!(mounts.len(), 6);
    }
}
