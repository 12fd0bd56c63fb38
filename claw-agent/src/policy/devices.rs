//! Device nodes agents may use: the harmless base set for every agent, GPU nodes for agents with
//! `devices.gpu`, nothing else (checked by the cgroup device program).

use std::collections::HashMap;

use claw_common::{device_kind, DeviceKey, ANY_MINOR};

/// A major number, fixed by the kernel or given out when a driver registers (/proc/devices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Major {
    Fixed(u32),
    Registered(&'static str),
}

/// A character device (or, with minor None, every minor of a major) an agent may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub major: Major,
    pub minor: Option<u32>,
    /// What it is, for `explain`.
    pub name: &'static str,
}

const fn char_device(major: u32, minor: Option<u32>, name: &'static str) -> DeviceRule {
    DeviceRule {
        major: Major::Fixed(major),
        minor,
        name,
    }
}

/// null, zero, full, random, urandom, tty, ptmx, and the pseudo-terminals.
pub const BASE: &[DeviceRule] = &[
    char_device(1, Some(3), "/dev/null"),
    char_device(1, Some(5), "/dev/zero"),
    char_device(1, Some(7), "/dev/full"),
    char_device(1, Some(8), "/dev/random"),
    char_device(1, Some(9), "/dev/urandom"),
    char_device(5, Some(0), "/dev/tty"),
    char_device(5, Some(2), "/dev/ptmx"),
    char_device(136, None, "/dev/pts/*"),
];

/// NVIDIA (major 195: /dev/nvidia0.., /dev/nvidiactl, /dev/nvidia-modeset), its UVM and caps
/// devices (majors given out at driver load), and DRI (major 226: /dev/dri/card*, renderD*).
pub const GPU: &[DeviceRule] = &[
    char_device(195, None, "/dev/nvidia*"),
    DeviceRule {
        major: Major::Registered("nvidia-uvm"),
        minor: None,
        name: "/dev/nvidia-uvm*",
    },
    DeviceRule {
        major: Major::Registered("nvidia-caps"),
        minor: None,
        name: "/dev/nvidia-caps/*",
    },
    char_device(226, None, "/dev/dri/*"),
];

/// Paths the GPU nodes live under, granted read and write with `devices.gpu` (as raw prefixes:
/// `/dev/nvidia` covers /dev/nvidia0, /dev/nvidiactl, /dev/nvidia-uvm and /dev/nvidia-caps/).
pub const GPU_PATH_PREFIXES: &[&[u8]] = &[b"/dev/nvidia", b"/dev/dri/", b"/dev/dri\0"];

/// The character-device majors drivers registered, by name, from /proc/devices.
pub fn registered_majors(proc_devices: &str) -> HashMap<String, u32> {
    proc_devices
        .lines()
        .skip_while(|l| !l.starts_with("Character devices"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty() && !l.starts_with("Block devices"))
        .filter_map(|l| {
            let (major, name) = l.trim().split_once(' ')?;
            Some((name.trim().to_owned(), major.parse().ok()?))
        })
        .collect()
}

/// The map keys of `rules` for `ruleset`; a rule whose driver is not loaded has none.
pub fn keys(rules: &[DeviceRule], ruleset: u32, majors: &HashMap<String, u32>) -> Vec<DeviceKey> {
    rules
        .iter()
        .filter_map(|rule| {
            let major = match rule.major {
                Major::Fixed(major) => major,
                Major::Registered(name) => *majors.get(name)?,
            };
            Some(DeviceKey {
                ruleset,
                kind: device_kind::CHAR,
                major,
                minor: rule.minor.unwrap_or(ANY_MINOR),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_DEVICES: &str = "Character devices:\n  1 mem\n195 nvidia-frontend\n235 nvidia-caps\n510 nvidia-uvm\n\nBlock devices:\n  8 sd\n";

    #[test]
    fn registered_majors_are_read_from_the_character_section() {
        let majors = registered_majors(PROC_DEVICES);
        assert_eq!(majors["nvidia-uvm"], 510);
        assert_eq!(majors["nvidia-caps"], 235);
        assert!(
            !majors.contains_key("sd"),
            "block devices are not character majors"
        );
    }

    #[test]
    fn gpu_keys_follow_the_loaded_driver() {
        let with = keys(GPU, 7, &registered_majors(PROC_DEVICES));
        assert_eq!(with.len(), 4);
        assert!(with.iter().all(|k| k.ruleset == 7 && k.minor == ANY_MINOR));
        assert!(with.iter().any(|k| k.major == 510));
        let without = keys(GPU, 7, &HashMap::new());
        assert_eq!(
            without.iter().map(|k| k.major).collect::<Vec<_>>(),
            [195, 226]
        );
    }

    #[test]
    fn base_keys_name_exact_devices_and_pts() {
        let base = keys(BASE, 1, &HashMap::new());
        assert!(base.contains(&DeviceKey {
            ruleset: 1,
            kind: device_kind::CHAR,
            major: 1,
            minor: 3
        }));
        assert!(base.contains(&DeviceKey {
            ruleset: 1,
            kind: device_kind::CHAR,
            major: 136,
            minor: ANY_MINOR
        }));
    }
}
