//! The benchmark's yardstick: claw-ebpf's `claw-baseline` program (cgroup lookup, path, one LPM
//! lookup, nothing else), which `cargo xtask bench` runs beside claw's own programs. claw-agent
//! never loads it.

pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/claw-baseline"));
