//! A policy file read, checked and compiled with this machine's guards: what `apply` installs
//! and `clawctl policy check` shows.

use std::path::Path;

use crate::policy::{
    self,
    compile::{self, Compiled},
    Policy,
};

/// A policy read, checked and compiled: ready to install.
pub struct Prepared {
    pub policy: Policy,
    pub compiled: Compiled,
}

/// Reads and compiles a policy file. Every error names the file and, where it can, the line and
/// column. An agent's hostname rules are kept by its resolver (dns.rs), not resolved here.
pub fn prepare(path: &Path, sockets: &compile::Sockets) -> Result<Prepared, String> {
    let policy = policy::load(path).map_err(|err| err.to_string())?;
    let guards = compile::Guards::of_this_machine(sockets);
    let compiled = compile::compile_guarding(&policy, &guards)
        .map_err(|err| format!("{}: {err}", policy.file.display()))?;
    Ok(Prepared { policy, compiled })
}
