//! Resource limits of an agent's cgroup (cgroup v2): what the policy says, and writing it.
//!
//! memory.high throttles and reclaims; memory.max is the hard limit at which the kernel's OOM
//! killer picks a victim inside the cgroup; pids.max stops fork bombs; cpu.max caps CPU time.

use std::{fmt, path::Path};

use serde::{Deserialize, Deserializer};

use crate::policy::invalid;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct Limits {
    /// Hard memory limit: above it the kernel OOM-kills a process of the agent.
    pub memory_max: Option<Bytes>,
    /// Soft memory limit: above it the agent is throttled and reclaimed.
    pub memory_high: Option<Bytes>,
    /// At most this many tasks (processes and threads).
    pub pids_max: Option<u64>,
    /// At most this many CPUs' worth of time, e.g. "4" or "0.5".
    pub cpu_max: Option<Cpus>,
}

/// A size in bytes, written `64M`, `24G`, `512K` or a plain number (binary units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

/// CPU time as a number of CPUs, kept in microseconds per 100 ms period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpus {
    pub quota_us: u64,
}

/// cgroup v2 accounts CPU time over periods of this length.
pub const CPU_PERIOD_US: u64 = 100_000;

crate::policy::schema::scalar_schema!(
    Bytes,
    "Bytes",
    ["string", "integer"],
    "a size in bytes: a whole number with an optional K, M, G or T (binary), e.g. `24G`"
);
crate::policy::schema::scalar_schema!(
    Cpus,
    "Cpus",
    ["string", "number"],
    "a number of CPUs, e.g. \"4\" or \"0.5\" (at least 0.01)"
);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let (digits, unit) = text.split_at(text.trim_end_matches(['K', 'M', 'G', 'T']).len());
        let multiplier: u64 = match unit {
            "" => 1,
            "K" => 1 << 10,
            "M" => 1 << 20,
            "G" => 1 << 30,
            "T" => 1 << 40,
            _ => 0,
        };
        digits
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0 && multiplier > 0)
            .and_then(|n| n.checked_mul(multiplier))
            .map(Bytes)
            .ok_or_else(|| {
                invalid(format_args!(
                    "`{text}` is not a size — write a whole number with an optional K, M, G or T, e.g. `24G`"
                ))
            })
    }
}

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let cpus: f64 = text.parse().unwrap_or(f64::NAN);
        let quota_us = (cpus * CPU_PERIOD_US as f64).round();
        if !(1000.0..=1e12).contains(&quota_us) {
            return Err(invalid(format_args!(
                "cpu_max `{text}` is not a number of CPUs — write e.g. \"4\" or \"0.5\" (at least 0.01)"
            )));
        }
        Ok(Self {
            quota_us: quota_us as u64,
        })
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [
            (1u64 << 40, "T"),
            (1 << 30, "G"),
            (1 << 20, "M"),
            (1 << 10, "K"),
        ];
        match units.iter().find(|(size, _)| self.0.is_multiple_of(*size)) {
            Some((size, unit)) => write!(f, "{}{unit}", self.0 / size),
            None => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.quota_us as f64 / CPU_PERIOD_US as f64)
    }
}

/// The cgroup controller a limit needs.
pub fn controller(limit: &str) -> &'static str {
    match limit {
        "memory_max" | "memory_high" => "memory",
        "pids_max" => "pids",
        _ => "cpu",
    }
}

impl Limits {
    /// (limit name, cgroup file, value to write) for every limit; unset ones are written "max" so
    /// that removing a limit from the policy removes it from the cgroup.
    pub fn files(&self) -> [(&'static str, &'static str, String); 4] {
        let or_max = |value: Option<String>| value.unwrap_or_else(|| "max".to_owned());
        [
            (
                "memory_max",
                "memory.max",
                or_max(self.memory_max.map(|b| b.0.to_string())),
            ),
            (
                "memory_high",
                "memory.high",
                or_max(self.memory_high.map(|b| b.0.to_string())),
            ),
            (
                "pids_max",
                "pids.max",
                or_max(self.pids_max.map(|n| n.to_string())),
            ),
            (
                "cpu_max",
                "cpu.max",
                format!(
                    "{} {CPU_PERIOD_US}",
                    or_max(self.cpu_max.map(|c| c.quota_us.to_string()))
                ),
            ),
        ]
    }

    /// The limits the policy sets, by name.
    pub fn set(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        if self.memory_max.is_some() {
            set.push("memory_max");
        }
        if self.memory_high.is_some() {
            set.push("memory_high");
        }
        if self.pids_max.is_some() {
            set.push("pids_max");
        }
        if self.cpu_max.is_some() {
            set.push("cpu_max");
        }
        set
    }
}

/// Controllers the cgroup v2 root offers (its `cgroup.controllers`).
pub fn available_controllers(root: &Path) -> std::io::Result<Vec<String>> {
    Ok(std::fs::read_to_string(root.join("cgroup.controllers"))?
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse;

    fn limits(text: &str) -> Limits {
        let policy = parse(
            "p.yaml",
            &format!("agents:\n  - name: a\n    cgroup: claw/a\n    limits: {text}\n"),
        )
        .unwrap();
        policy.agents[0].limits.clone()
    }

    #[test]
    fn parses_sizes_pids_and_cpus() {
        let l = limits("{ memory_max: 24G, memory_high: 512M, pids_max: 512, cpu_max: \"0.5\" }");
        assert_eq!(l.memory_max, Some(Bytes(24 << 30)));
        assert_eq!(l.memory_high, Some(Bytes(512 << 20)));
        assert_eq!(l.pids_max, Some(512));
        assert_eq!(l.cpu_max, Some(Cpus { quota_us: 50_000 }));
        let files = l.files();
        assert_eq!(files[0].2, (24u64 << 30).to_string());
        assert_eq!(files[3].2, "50000 100000");
        assert_eq!(
            l.set(),
            ["memory_max", "memory_high", "pids_max", "cpu_max"]
        );
    }

    #[test]
    fn unset_limits_are_written_as_max() {
        let files = Limits::default().files();
        assert_eq!(files.map(|f| f.2), ["max", "max", "max", "max 100000"]);
    }

    #[test]
    fn bad_values_are_placed_and_explained() {
        for (text, want) in [
            ("{ memory_max: 24X }", "is not a size"),
            ("{ memory_max: 0 }", "is not a size"),
            ("{ cpu_max: \"lots\" }", "is not a number of CPUs"),
            ("{ cpu_max: \"0.001\" }", "is not a number of CPUs"),
            ("{ swap_max: 1G }", "unknown field `swap_max`"),
        ] {
            let err = parse(
                "p.yaml",
                &format!("agents:\n  - name: a\n    cgroup: claw/a\n    limits: {text}\n"),
            )
            .unwrap_err();
            assert_eq!(err.line, 4, "{text}: {err}");
            assert!(err.message.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn sizes_display_in_their_unit() {
        assert_eq!(Bytes(64 << 20).to_string(), "64M");
        assert_eq!(Bytes(1000).to_string(), "1000");
    }
}
