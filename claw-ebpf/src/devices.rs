//! The cgroup device program, attached to each agent's cgroup: an agent may open (or make) a
//! device node only if DEVICE_RULES lists it for the agent — the harmless base set for every
//! agent, GPU nodes for agents with `devices.gpu`. Loads without BPF LSM.

use core::ptr::read_volatile;

use aya_ebpf::{macros::cgroup_device, programs::DeviceContext};
use claw_common::{counter, op, record, DeviceKey, DeviceRecord, ANY_MINOR};

use crate::{
    decide::{count, current_agent_by_task, emit, header, outcome},
    DEVICE_RULES,
};

const ALLOW: i32 = 1;
const DENY: i32 = 0;

#[cgroup_device]
pub fn device_access(ctx: DeviceContext) -> i32 {
    // SAFETY: the context the kernel passed; each field read whole.
    let (access_type, major, minor) = unsafe {
        (
            read_volatile(&(*ctx.device).access_type),
            read_volatile(&(*ctx.device).major),
            read_volatile(&(*ctx.device).minor),
        )
    };
    let Some((cgroup_id, agent)) = current_agent_by_task() else {
        count(counter::DENIED);
        return DENY;
    };
    let kind = access_type & 0xffff;
    let mut key = DeviceKey {
        ruleset: agent.ruleset,
        kind,
        major,
        minor,
    };
    // SAFETY: the values are plain u32s copied out at once.
    let listed = unsafe { DEVICE_RULES.get(key) }.is_some() || {
        key.minor = ANY_MINOR;
        unsafe { DEVICE_RULES.get(key) }.is_some()
    };
    if listed {
        count(counter::ALLOWED);
        return ALLOW;
    }
    let (decision, ret) = outcome(agent);
    emit(DeviceRecord {
        header: header(record::DEVICE, op::DEVICE, cgroup_id, agent, decision, 0),
        kind,
        access: access_type >> 16,
        major,
        minor,
    });
    if ret == 0 {
        ALLOW
    } else {
        DENY
    }
}
