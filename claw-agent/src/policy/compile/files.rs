//! File rules: a policy's paths as FILE_RULES prefixes — directory grants inherited, writes
//! stopped short of claw's own trees, credential stores guarded, claw-agent's sockets reserved.

use std::collections::BTreeMap;

use aya::maps::lpm_trie::Key;
use claw_common::{access, PathRuleKey, RULE_PATH_BYTES};

use super::Guards;
use crate::policy::rules::RulePath;

/// What a write rule grants: connecting to a Unix socket is writing to it, as far as a rule
/// says.
pub(super) const WRITING: u32 = access::WRITE | access::CONNECT;

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

/// The trie answers with the longest matching prefix only, so every entry carries the grants of
/// each directory rule that covers it: with `read: [/w/]` and `write: [/w/out/]`, `/w/out/x` is
/// readable and writable.
pub(super) fn inherit_directory_grants(prefixes: &mut BTreeMap<Vec<u8>, u32>) {
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
pub(super) fn stop_writes_short_of_protected_trees(prefixes: &mut BTreeMap<Vec<u8>, u32>) {
    for (tree, _) in crate::policy::rules::PROTECTED {
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
pub(super) fn guard_credentials(
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
pub(super) fn keep_directories_in_place(
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
pub(super) fn reserve_sockets(
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
pub(super) fn covering_directory(
    prefixes: &BTreeMap<Vec<u8>, u32>,
    path: &[u8],
) -> Option<Vec<u8>> {
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
pub(super) fn prefixes_of(path: &RulePath) -> Vec<Vec<u8>> {
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
