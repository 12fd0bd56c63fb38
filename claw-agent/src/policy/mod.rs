//! Policy: the policy file's language and everything derived from it without the kernel —
//! parsing (`document`), rule syntax (`rules`), limits, devices, `run:`, the compiler into map
//! entries (`compile`), tool-call narrowing (`call`), rule lines for check/diff/explain
//! (`describe`) and the reasons denials give (`reason`).
//!
//! Pure: no BPF, no sockets, no tasks. It may use claw-common and `defaults` only; every other
//! folder builds on it.

pub mod call;
pub mod compile;
pub mod describe;
pub mod devices;
mod document;
pub mod landlock;
pub mod limits;
pub mod prepare;
pub mod reason;
pub mod rules;
pub mod run;
pub mod schema;

pub(crate) use document::{from_yaml, invalid};
pub use document::{
    load, parse, Agent, AgentName, CgroupPath, Devices, Files, Mode, Policy, PolicyError, Rules,
};
pub use run::RunSpec;
