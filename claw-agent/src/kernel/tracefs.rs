//! tracefs: where it is (mounted if it is not), and field offsets from tracepoint format files —
//! the tracepoint programs of degraded mode read their records at these offsets.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("mounting tracefs on {path}: {source}")]
    Mount {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} has no field `{field}`")]
    NoField { path: PathBuf, field: String },
}

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// The tracefs mount, mounting it at /sys/kernel/tracing when no tracefs is mounted (as
/// tracing tools do; the mount changes nothing else).
pub fn ensure_mounted() -> Result<&'static Path, TracefsError> {
    if let Some(mounted) = find_mounted() {
        return Ok(mounted);
    }
    let target = std::ffi::CString::new(TRACEFS).expect("no NUL in a constant");
    let fstype = std::ffi::CString::new("tracefs").expect("no NUL in a constant");
    // SAFETY: mount(2) with valid C strings and no data.
    let ret = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret != 0 {
        return Err(TracefsError::Mount {
            path: TRACEFS,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(Path::new(TRACEFS))
}

/// The tracefs mount, if one is there.
pub fn find_mounted() -> Option<&'static Path> {
    [TRACEFS, DEBUGFS_TRACING]
        .into_iter()
        .map(Path::new)
        .find(|path| path.join("events").is_dir())
}

/// The offset of `field` in the records of tracepoint `category/name`.
pub fn field_offset(
    tracefs: &Path,
    category: &str,
    name: &str,
    field: &str,
) -> Result<u64, TracefsError> {
    let path = tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let format = std::fs::read_to_string(&path).map_err(|source| TracefsError::Read {
        path: path.clone(),
        source,
    })?;
    parse_offset(&format, field).ok_or(TracefsError::NoField {
        path,
        field: field.to_owned(),
    })
}

/// In `field:const char * filename;\toffset:24;\tsize:8;\tsigned:0;`, the 24 of `filename`.
fn parse_offset(format: &str, field: &str) -> Option<u64> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';');
        let declaration = parts.next()?.strip_prefix("field:")?;
        let declared = declaration.rsplit([' ', '*']).next()?;
        let declared = declared.split('[').next()?;
        if declared != field {
            return None;
        }
        parts.find_map(|part| part.trim().strip_prefix("offset:")?.parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENAT: &str = "\
name: sys_enter_openat
ID: 652
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int dfd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;
\tfield:int flags;\toffset:32;\tsize:8;\tsigned:0;
";

    #[test]
    fn finds_fields_of_a_format_file() {
        assert_eq!(parse_offset(OPENAT, "filename"), Some(24));
        assert_eq!(parse_offset(OPENAT, "flags"), Some(32));
        assert_eq!(parse_offset(OPENAT, "mode"), None);
        let exec = "\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n";
        assert_eq!(parse_offset(exec, "filename"), Some(8));
    }
}
