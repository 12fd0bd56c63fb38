//! Kernel: everything that touches BPF and the cgroup tree — loading claw's programs with
//! offsets from BTF, filling and switching the rule maps, attaching programs and pinning links,
//! tool-call cgroups, grants, and the live status of it all. `catalogue` is the one table of
//! programs every other part reads.
//!
//! One owner holds the `Enforcer`; nothing else loads programs or writes maps. It may use
//! `policy` (the compiled rules it installs), `defaults` and claw-common; nothing above.

mod attach;
pub mod baseline;
pub mod btf;
pub mod calls;
pub mod catalogue;
pub mod cgroupfs;
pub mod enforcer;
mod grants;
pub mod handover;
pub mod load;
pub mod lsm;
mod maps;
pub use maps::insert_batched;
mod object;
pub use object::release_object_pages;
pub mod pins;
pub mod preflight;
pub mod status;
pub mod tracefs;
