//! What claw's black-box tests share: the in-VM runner (`claw-vmtest`) and the host tests in
//! `tests/` start real binaries in cgroups they create and remove.

pub mod harness;
pub mod upstream;
