//! Preload variables at exec: a program started with LD_PRELOAD, LD_AUDIT or an interpreter's
//! preload (NODE_OPTIONS, PYTHONSTARTUP, BASH_ENV, ...) runs code of the caller's choosing inside
//! an allowed program. Which variables an agent may not pass is data in ENV_RULES ("NAME=" per
//! ruleset); this program only looks each variable of the new program up.
//!
//! Checked once the exec is committed, on the new program's own copy of its environment (no
//! other thread can change it any more): the hook cannot fail the exec, so the process is killed
//! before its first instruction and the denial reported.

use aya_ebpf::{
    helpers::{
        bpf_send_signal,
        generated::{bpf_probe_read_kernel, bpf_probe_read_user_str},
    },
    macros::lsm,
    maps::lpm_trie::Key,
    programs::LsmContext,
};
use claw_common::{access, decision, mode, op, PathLookup, PathRuleKey, EVENT_PATH_BYTES};

use crate::{
    decide::{count, current_agent, report_file, scratch, Reported, Resolved},
    kernel::{offset, read},
    ENV_RULES,
};

const SIGKILL: u32 = 9;

/// Arguments and variables walked at most: an exec with more is refused, since a variable past
/// them could not be checked.
const MAX_STRINGS: u32 = 384;

/// Reads of the strings at most, a buffer's worth each: every string once, and 1.5 MiB of long
/// strings besides. The 6.1 verifier follows some nine branches per read along one path and
/// gives up past 8192.
const MAX_READS: u32 = 768;

/// Bytes of a variable compared with the rules (names are short).
const NAME_BYTES: usize = 64;

#[lsm(hook = "bprm_committed_creds")]
pub fn bprm_committed_creds(ctx: LsmContext) -> i32 {
    let Some((cgroup_id, agent)) = current_agent() else {
        return 0;
    };
    let bprm: *const u8 = ctx.arg(0);
    // SAFETY: checked kernel reads of the hook's linux_binprm.
    let (strings, argc, envc) = unsafe {
        (
            read::<u64>(bprm, offset!(BPRM_P)),
            read::<i32>(bprm, offset!(BPRM_ARGC)),
            read::<i32>(bprm, offset!(BPRM_ENVC)),
        )
    };
    let (Some(mut at), Some(argc), Some(envc)) = (strings, argc, envc) else {
        return refuse(cgroup_id, agent, None);
    };
    let Some(scratch) = scratch() else {
        return refuse(cgroup_id, agent, None);
    };
    let total = (argc as u32).saturating_add(envc as u32);
    if total > MAX_STRINGS {
        return refuse(cgroup_id, agent, None);
    }
    // The strings sit one after another from `p`: the arguments, then the variables. A string
    // longer than the buffer takes several reads; its name is in the first.
    let mut seen = 0u32;
    let mut continuing = false;
    for _ in 0..MAX_READS {
        if seen >= total {
            return 0;
        }
        // SAFETY: into this CPU's scratch buffer, at most its size; from the new program's stack.
        let len = unsafe {
            bpf_probe_read_user_str(
                scratch.path.as_mut_ptr().cast(),
                EVENT_PATH_BYTES as u32,
                at as *const _,
            )
        };
        if len <= 0 {
            return refuse(cgroup_id, agent, None);
        }
        let len = len as u64;
        if !continuing && seen >= argc as u32 && refused(scratch, agent.ruleset) {
            let variable = Resolved::at_start(scratch, len as usize);
            return refuse(cgroup_id, agent, Some(variable));
        }
        at += len;
        // The buffer filled up: the string continues in the next read (its last byte read is
        // the terminator the helper wrote, not the string's).
        continuing = len >= EVENT_PATH_BYTES as u64;
        if continuing {
            at -= 1;
        } else {
            seen += 1;
        }
    }
    refuse(cgroup_id, agent, None)
}

/// Whether ENV_RULES refuses the variable at the start of the scratch buffer to `ruleset`.
#[inline(always)]
fn refused(scratch: &mut claw_common::CpuState, ruleset: u32) -> bool {
    scratch.lookup.prefix_len = (32 + 8 * NAME_BYTES) as u32;
    scratch.lookup.key.ruleset = ruleset.to_be_bytes();
    // SAFETY: both buffers are this CPU's scratch memory, larger than the copy.
    let copied = unsafe {
        bpf_probe_read_kernel(
            scratch.lookup.key.path.as_mut_ptr().cast(),
            NAME_BYTES as u32,
            scratch.path.as_ptr().cast(),
        )
    };
    if copied != 0 {
        return true;
    }
    // SAFETY: PathLookup has the layout of aya's Key<PathRuleKey>, as in decide::granted.
    let lookup = unsafe { &*(&scratch.lookup as *const PathLookup as *const Key<PathRuleKey>) };
    ENV_RULES.get(lookup).is_some()
}

/// Reports the exec (naming `variable`; None when the environment could not be walked) and,
/// in enforce mode, kills the new program.
#[inline(always)]
fn refuse(cgroup_id: u64, agent: claw_common::AgentEntry, variable: Option<Resolved>) -> i32 {
    let reported = match variable {
        Some(variable) => Reported::Path(variable),
        None => Reported::Unresolved,
    };
    let enforce = agent.mode != mode::AUDIT;
    let decision = if enforce {
        count(claw_common::counter::DENIED);
        decision::DENY
    } else {
        count(claw_common::counter::AUDITED);
        decision::AUDIT
    };
    report_file(
        cgroup_id,
        agent,
        op::PRELOAD,
        access::EXEC,
        decision,
        reported,
    );
    if enforce {
        // SAFETY: helper without preconditions; signals the current task.
        unsafe { bpf_send_signal(SIGKILL) };
    }
    0
}
