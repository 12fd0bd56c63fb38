//! claw's eBPF object: its bytes, and typed access to its maps and programs by name, each
//! error naming what is missing.

use aya::{
    programs::{CgroupDevice, CgroupSockAddr, FEntry, Lsm, ProgramError, TracePoint},
    Ebpf,
};

use crate::kernel::{catalogue, enforcer::EnforcerError};

/// claw's kernel programs, built by build.rs from claw-ebpf.
pub(super) static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/claw"));

/// Hands the object's pages back once the programs are loaded: read whole at load (some 6 MiB,
/// BTF and all), they would stay resident for the daemon's life. They are the binary's read-only
/// data: a later read faults them in again from the file.
pub fn release_object_pages() {
    // SAFETY: sysconf(3) has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let start = OBJECT.as_ptr() as usize;
    let first = start.div_ceil(page) * page;
    let end = (start + OBJECT.len()) / page * page;
    if end > first {
        // SAFETY: whole pages inside the object, which is read-only data of a private file
        // mapping: MADV_DONTNEED only drops them from this process's resident set.
        unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_DONTNEED) };
    }
}

/// A map of the object, taken out of it for a task of its own.
pub(super) fn take_map(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<aya::maps::Map, EnforcerError> {
    ebpf.take_map(name).ok_or(EnforcerError::Missing {
        what: "map",
        name: name.to_owned(),
    })
}

pub(super) fn map_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::maps::Map, EnforcerError> {
    ebpf.map_mut(name).ok_or(EnforcerError::Missing {
        what: "map",
        name: name.to_owned(),
    })
}

pub(super) fn fentry_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut FEntry, EnforcerError> {
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| EnforcerError::Missing {
            what: "fentry program",
            name: name.to_owned(),
        })
}

pub(super) fn lsm_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut Lsm, EnforcerError> {
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| EnforcerError::Missing {
            what: "LSM program",
            name: name.to_owned(),
        })
}

pub(super) fn tracepoint_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut TracePoint, EnforcerError> {
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| EnforcerError::Missing {
            what: "tracepoint program",
            name: name.to_owned(),
        })
}

pub(super) fn device_program(ebpf: &mut Ebpf) -> Result<&mut CgroupDevice, EnforcerError> {
    let name = catalogue::device_program().name;
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| EnforcerError::Missing {
            what: "cgroup device program",
            name: name.to_owned(),
        })
}

pub(super) fn net_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut CgroupSockAddr, EnforcerError> {
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| EnforcerError::Missing {
            what: "cgroup sock_addr program",
            name: name.to_owned(),
        })
}

pub(super) fn program_info(ebpf: &Ebpf, name: &str) -> Option<aya::programs::ProgramInfo> {
    ebpf.program(name).and_then(|p| p.info().ok())
}

/// The kernel says EPERM with an empty verifier log when it does not allow trampolines at all;
/// say that in words, and keep the verifier's own words otherwise.
pub(super) fn refusal_reason(err: &ProgramError) -> String {
    match err {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            if io_error.raw_os_error() == Some(libc::EPERM) && log.trim().is_empty() {
                format!("{io_error} (EPERM, no verifier log: the kernel does not allow BPF trampoline programs here)")
            } else {
                format!("{io_error}; verifier: {log}")
            }
        }
        other => other.to_string(),
    }
}
