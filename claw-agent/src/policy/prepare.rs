//! A policy file read, checked and compiled with this machine's guards: what `apply` installs
//! and `clawctl policy check` shows.

use std::path::Path;

use crate::policy::{
    self,
    compile::{self, Compiled},
    Policy, PolicyError,
};

/// Why a policy file cannot be installed: every error names the file and, where it can, the
/// line and column.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{file}: {source}")]
    Compile {
        file: String,
        #[source]
        source: compile::CompileError,
    },
}

/// A policy read, checked and compiled: ready to install.
pub struct Prepared {
    pub policy: Policy,
    pub compiled: Compiled,
}

/// Reads and compiles a policy file. Every error names the file and, where it can, the line and
/// column. An agent's hostname rules are kept by its resolver (dns.rs), not resolved here.
pub fn prepare(path: &Path, sockets: &compile::Sockets) -> Result<Prepared, PrepareError> {
    let policy = policy::load(path)?;
    let guards = compile::Guards::of_this_machine(sockets);
    let compiled =
        compile::compile_guarding(&policy, &guards).map_err(|source| PrepareError::Compile {
            file: policy.file.display().to_string(),
            source,
        })?;
    Ok(Prepared { policy, compiled })
}
