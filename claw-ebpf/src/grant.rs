//! Operator grants (`clawctl allow EVENT`): a denied object let through for one agent or tool
//! call, for a number of uses or until a time. Looked up only where a rule already said no, by
//! the key the denial was reported under; the object itself is then compared, since the key's
//! hash is easily collided on purpose.

use aya_ebpf::helpers::bpf_ktime_get_boot_ns;
use claw_common::{Grant, GrantKey, NetRecord, RULE_PATH_BYTES};

use crate::{task::task_cgroup_id, GRANTS};

/// The grant for (`op`, `access`, `object_hash`) to the calling task's tool call, or else to
/// its agent `cgroup_id`.
#[inline(always)]
fn find(cgroup_id: u64, op: u32, access: u32, object_hash: u64) -> Option<*mut Grant> {
    let mut key = GrantKey {
        cgroup_id: task_cgroup_id(),
        object_hash,
        op,
        access,
    };
    if let Some(grant) = GRANTS.get_ptr_mut(key) {
        return Some(grant);
    }
    key.cgroup_id = cgroup_id;
    GRANTS.get_ptr_mut(key)
}

/// Takes one use of `grant`, if it has not expired and has uses left.
///
/// # Safety
/// `grant` points into a GRANTS value.
#[inline(always)]
unsafe fn take(grant: *mut Grant) -> bool {
    // SAFETY: helper without preconditions; then the grant's own fields.
    unsafe {
        if bpf_ktime_get_boot_ns() >= (*grant).expires_ns {
            return false;
        }
        // Several CPUs may use a grant at once: exactly `uses_left` of them get through. The BPF
        // fetch-and-add written out, as in throttle::number.
        let mut previous: i64 = -1;
        core::arch::asm!(
            "{previous} = atomic_fetch_add((u64 *)({counter} + 0), {previous})",
            counter = in(reg) &raw mut (*grant).uses_left,
            previous = inout(reg) previous,
        );
        previous > 0
    }
}

/// Whether a grant lets a denied file operation through (taking one use): `path` holds the
/// `len` bytes (NUL included) the denial reports.
///
/// # Safety
/// `path` points to at least RULE_PATH_BYTES + 4 readable bytes.
#[inline(always)]
pub unsafe fn file(
    cgroup_id: u64,
    op: u32,
    access: u32,
    object_hash: u64,
    path: *const u8,
    len: usize,
) -> bool {
    let Some(grant) = find(cgroup_id, op, access, object_hash) else {
        return false;
    };
    // SAFETY: a GRANTS value, and the caller's path; both are read a word at a time within
    // 256 bytes (the grant's path is followed by its padding).
    unsafe {
        if (*grant).path_len as usize != len || len > RULE_PATH_BYTES {
            return false;
        }
        let ours = path.cast::<u64>();
        let granted = (&raw const (*grant).path).cast::<u64>();
        for i in 0..RULE_PATH_BYTES.div_ceil(8) {
            if i * 8 >= len {
                break;
            }
            let mut a = ours.add(i).read_unaligned();
            let mut b = granted.add(i).read_unaligned();
            let kept = len - i * 8;
            if kept < 8 {
                let mask = (1u64 << (kept * 8)) - 1;
                a &= mask;
                b &= mask;
            }
            if a != b {
                return false;
            }
        }
        take(grant)
    }
}

/// Whether a grant lets a denied connect or send to `record`'s destination through.
#[inline(always)]
pub fn net(cgroup_id: u64, op: u32, object_hash: u64, record: &NetRecord) -> bool {
    let Some(grant) = find(cgroup_id, op, 0, object_hash) else {
        return false;
    };
    // SAFETY: a GRANTS value.
    unsafe {
        (*grant).path_len == 0
            && (*grant).address == record.address
            && (*grant).port == record.port
            && (*grant).protocol == record.protocol
            && take(grant)
    }
}
