//! What every hook shares: who the task is (an agent or not), the path an operation touches, the
//! rule lookup, the verdict (enforce or audit), and the report.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::path,
    helpers::{
        bpf_d_path, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_ktime_get_boot_ns, generated::bpf_probe_read_kernel,
    },
    maps::lpm_trie::Key,
};
use claw_common::{
    access, agent_flags, counter, decision, mode, record, AgentEntry, CpuState, DeviceRecord,
    FileRecord, NetRecord, PathLookup, PathRuleKey, RecordHeader, EVENT_PATH_BYTES,
    MAX_AGENT_LEVEL, RULE_PATH_BYTES, UNNUMBERED,
};

use crate::{
    grant,
    kernel::{offset, read, read_ptr},
    task::{ancestor_id, cgroup_id, cgroup_of, current_ancestor_cgroup_id, task_cgroup_id},
    throttle::{admit, count_lost, mix, number, HASH_SEED},
    AGENTS, AGENT_LEVELS, CPU_STATE, EVENTS, FILE_RULES,
};

pub const EPERM: i32 = 1;

/// Path components followed up from a dentry before giving up (and denying).
const MAX_DEPTH: usize = 48;

#[inline(always)]
pub fn count(index: u32) {
    if let Some(state) = scratch() {
        state.count(index);
    }
}

/// The calling task's agent: the cgroup claw manages (an agent's or a tool call's) that is the
/// task's own or, for a process in a cgroup below one (made by a container runtime, systemd, a
/// delegated subtree), its nearest such ancestor. Returns the agent's cgroup id, under which its
/// reports are counted, and the deciding cgroup's entry.
#[inline(always)]
pub fn current_agent() -> Option<(u64, AgentEntry)> {
    nearest_agent(task_cgroup_id(), current_ancestor_cgroup_id)
}

/// [`current_agent`] for cgroup device programs, which read the task's ancestors from its task
/// struct (no ancestor helper for them before 6.4).
#[inline(always)]
pub fn current_agent_by_task() -> Option<(u64, AgentEntry)> {
    // SAFETY: the helper returns the running task's struct.
    unsafe { agent_of_task(bpf_get_current_task() as *const u8) }
}

/// The agent holding `task` (another process), found as [`current_agent`] finds the caller's.
///
/// # Safety
/// `task` is a kernel pointer to a task_struct.
#[inline(always)]
pub unsafe fn agent_of_task(task: *const u8) -> Option<(u64, AgentEntry)> {
    // SAFETY: guaranteed by the caller; the cgroup read from it is a kernel pointer.
    let cgroup = unsafe { cgroup_of(task) }?;
    // SAFETY: as above.
    let own = unsafe { cgroup_id(cgroup) }?;
    // SAFETY: as above.
    nearest_agent(own, |level| {
        unsafe { ancestor_id(cgroup, level) }.unwrap_or(0)
    })
}

#[inline(always)]
fn nearest_agent(own: u64, ancestor_at: impl Fn(u16) -> u64) -> Option<(u64, AgentEntry)> {
    if let Some(found) = entry_of(own) {
        return Some(found);
    }
    let levels = AGENT_LEVELS.get(0).copied().unwrap_or(0);
    if levels == 0 {
        return None;
    }
    // Deepest first: the nearest registered ancestor decides (a tool call's cgroup before its
    // agent's, a nested agent's before its parent's). Only the levels in use are visited (one
    // or two on a node), not every level up to MAX_AGENT_LEVEL: this runs for every process
    // whose own cgroup is no agent's, unmanaged ones included.
    let mut remaining = levels & !1;
    for _ in 0..MAX_AGENT_LEVEL {
        if remaining == 0 {
            break;
        }
        let level = 63 - remaining.leading_zeros();
        remaining &= !(1u64 << level);
        let ancestor = ancestor_at(level as u16);
        if ancestor != 0 && ancestor != own {
            if let Some(found) = entry_of(ancestor) {
                return Some(found);
            }
        }
    }
    None
}

/// The entry of `cgroup_id` in AGENTS, as (its agent's cgroup id, the entry).
#[inline(always)]
pub fn entry_of(cgroup_id: u64) -> Option<(u64, AgentEntry)> {
    // An apply replaces entries while programs read them: an element read just as it was
    // recycled for another cgroup is read again (a second recycle in a row would need two
    // updates within these few instructions).
    for _ in 0..2 {
        // SAFETY: the value is copied out at once.
        let entry = unsafe { AGENTS.get(cgroup_id) }.copied()?;
        if entry.cgroup_id == cgroup_id {
            return Some((entry.agent_cgroup_id, entry));
        }
    }
    None
}

#[inline(always)]
pub fn scratch() -> Option<&'static mut Scratch> {
    // SAFETY: the per-CPU slot belongs to this program run until it returns.
    CPU_STATE.get_ptr_mut(0).map(|s| unsafe { &mut *s })
}

/// This CPU's state, as the programs use it.
pub type Scratch = CpuState;

pub trait Counting {
    fn count(&mut self, index: u32);
}

impl Counting for CpuState {
    #[inline(always)]
    fn count(&mut self, index: u32) {
        if let Some(counter) = self.counters.get_mut(index as usize) {
            *counter += 1;
        }
    }
}

/// A resolved path inside the scratch memory: `len` bytes (NUL included) from `start`.
#[derive(Clone, Copy)]
pub struct Resolved {
    start: *const u8,
    len: usize,
}

impl Resolved {
    /// The `len` bytes (NUL included) at the start of the scratch path buffer.
    #[inline(always)]
    pub fn at_start(scratch: &Scratch, len: usize) -> Self {
        Self {
            start: scratch.path.as_ptr(),
            len,
        }
    }
}

/// Resolves a `struct path` the verifier knows as such, with the kernel's d_path (allowed on
/// file_open, bprm_check_security and mmap_file).
///
/// # Safety
/// `kernel_path` points to a `struct path` inside a hook argument.
#[inline(always)]
pub unsafe fn resolve_d_path(scratch: &mut Scratch, kernel_path: *const u8) -> Option<Resolved> {
    // SAFETY: guaranteed by the caller; the buffer is ours and at least this large.
    let len = unsafe {
        bpf_d_path(
            kernel_path as *mut path,
            scratch.path.as_mut_ptr() as *mut _,
            EVENT_PATH_BYTES as u32,
        )
    };
    (len > 0).then(|| Resolved {
        start: scratch.path.as_ptr(),
        len: without_deleted(scratch, len as usize),
    })
}

/// d_path names a file that was removed or renamed over while held (`PATH (deleted)`): a
/// guarded file replaced as `passwd` replaces /etc/shadow, then reopened through an O_PATH
/// descriptor. The suffix is cut so that the file meets the rules of its name, not a wider rule
/// the longer name would fall through to. Returns the new length (NUL included).
#[inline(always)]
fn without_deleted(scratch: &mut Scratch, len: usize) -> usize {
    const SUFFIX: &[u8; 10] = b" (deleted)";
    if len < SUFFIX.len() + 2 || len > EVENT_PATH_BYTES {
        return len;
    }
    let at = (len - 1 - SUFFIX.len()) & (EVENT_PATH_BYTES - 1);
    let tail = scratch.path.as_mut_ptr().wrapping_add(at);
    // SAFETY: `at` < EVENT_PATH_BYTES and the buffer holds PATH_BUFFER (twice that) bytes.
    unsafe {
        let head = tail.cast::<u64>().read_unaligned();
        let end = tail.add(8).cast::<u16>().read_unaligned();
        if head != u64::from_ne_bytes(*b" (delete") || end != u16::from_ne_bytes(*b"d)") {
            return len;
        }
        *tail = 0;
    }
    len - SUFFIX.len()
}

/// Resolves (mount, dentry) by walking dentries up to the task's root, crossing mount points —
/// for hooks where d_path is not allowed (the path_* hooks on 6.1, file_mprotect). The dentry may
/// be a new, negative one: its name and parent are already set.
///
/// # Safety
/// `vfsmount` and `dentry` are kernel pointers.
#[inline(always)]
pub unsafe fn resolve_walk(
    scratch: &mut Scratch,
    vfsmount: *const u8,
    dentry: *const u8,
) -> Option<Resolved> {
    // SAFETY: only checked kernel reads below.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let fs = read_ptr(task, offset!(TASK_FS))?;
        let root_mnt = read_ptr(fs, offset!(FS_ROOT) + offset!(PATH_MNT))?;
        let root_dentry = read_ptr(fs, offset!(FS_ROOT) + offset!(PATH_DENTRY))?;

        let buffer = scratch.path.as_mut_ptr();
        // Built right to left, ending at the middle of the buffer so that whatever starts the
        // result has EVENT_PATH_BYTES readable bytes after it.
        let end = EVENT_PATH_BYTES;
        let mut pos = end - 1;
        *buffer.add(pos) = 0;
        let mut mount = vfsmount.wrapping_sub(offset!(MOUNT_MNT));
        let mut dentry = dentry;
        for _ in 0..MAX_DEPTH {
            let mnt_root = read_ptr(mount, offset!(MOUNT_MNT) + offset!(VFSMOUNT_MNT_ROOT))?;
            let at_root =
                dentry == root_dentry && mount.wrapping_add(offset!(MOUNT_MNT)) == root_mnt;
            if at_root {
                return Some(finish(buffer, pos, end));
            }
            if dentry == mnt_root {
                let parent = read_ptr(mount, offset!(MOUNT_MNT_PARENT))?;
                // The top of the mount tree without passing the task's root: outside it.
                if parent == mount {
                    return None;
                }
                dentry = read_ptr(mount, offset!(MOUNT_MNT_MOUNTPOINT))?;
                mount = parent;
                continue;
            }
            let parent = read_ptr(dentry, offset!(DENTRY_D_PARENT))?;
            // A filesystem root that is not the task's root nor mounted under it: the path
            // cannot be named from the task's root (d_path would not name it either).
            if parent == dentry {
                return None;
            }
            let name = read_ptr(dentry, offset!(DENTRY_D_NAME) + offset!(QSTR_NAME))?;
            let name_len =
                (read::<u32>(dentry, offset!(DENTRY_D_NAME) + offset!(QSTR_LEN))? as usize) & 0xff;
            if pos < name_len + 1 {
                return None;
            }
            // The masks restate, for the verifier, bounds the check above already guarantees;
            // black_box stops LLVM from dropping them as redundant.
            pos = core::hint::black_box(pos - name_len) & (EVENT_PATH_BYTES - 1);
            if bpf_probe_read_kernel(
                buffer.add(pos).cast::<c_void>(),
                name_len as u32,
                name.cast::<c_void>(),
            ) != 0
            {
                return None;
            }
            pos = core::hint::black_box(pos - 1) & (EVENT_PATH_BYTES - 1);
            *buffer.add(pos) = b'/';
            dentry = parent;
        }
        None
    }
}

/// Walks the `struct path` at `kernel_path` (its mount and dentry).
///
/// # Safety
/// `kernel_path` is a kernel pointer to a `struct path`.
#[inline(always)]
pub unsafe fn resolve_path_walk(kernel_path: *const u8) -> Option<Resolved> {
    // SAFETY: checked kernel reads, then the walk, as the caller guarantees.
    unsafe {
        let mnt = read_ptr(kernel_path, offset!(PATH_MNT))?;
        let dentry = read_ptr(kernel_path, offset!(PATH_DENTRY))?;
        resolve_walk(scratch()?, mnt, dentry)
    }
}

/// A record that names what its operation touched, so that repeats of it can be counted.
pub trait Report {
    fn header_mut(&mut self) -> &mut RecordHeader;
    fn object_hash(&self) -> u64;
}

impl Report for NetRecord {
    fn header_mut(&mut self) -> &mut RecordHeader {
        &mut self.header
    }

    #[inline(always)]
    fn object_hash(&self) -> u64 {
        let [high, low] = [&self.address[..8], &self.address[8..]]
            .map(|half| half.iter().fold(0u64, |word, b| word << 8 | u64::from(*b)));
        let rest =
            u64::from(self.port) | u64::from(self.protocol) << 16 | u64::from(self.family) << 24;
        mix(mix(mix(HASH_SEED, high), low), rest)
    }
}

impl Report for DeviceRecord {
    fn header_mut(&mut self) -> &mut RecordHeader {
        &mut self.header
    }

    #[inline(always)]
    fn object_hash(&self) -> u64 {
        let kind = u64::from(self.kind) << 32 | u64::from(self.access);
        let number = u64::from(self.major) << 32 | u64::from(self.minor);
        mix(mix(HASH_SEED, kind), number)
    }
}

/// Queues `record` for claw-agent unless it is throttled; counts it lost when the ring buffer is
/// full.
#[inline(always)]
pub fn emit<T: Report + 'static>(mut record: T) {
    let object_hash = record.object_hash();
    let header = record.header_mut();
    header.object_hash = object_hash;
    let (cgroup_id, op) = (header.cgroup_id, header.op);
    let Some(repeats_before) = admit(cgroup_id, op, object_hash) else {
        return;
    };
    header.repeats_before = repeats_before;
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            record.header_mut().record = number(cgroup_id);
            entry.write(record);
            entry.submit(0);
        }
        None => {
            count(counter::EVENTS_LOST);
            count_lost(cgroup_id);
        }
    }
}

/// Words of a reported path that tell it apart from others for counting repeats; longer paths
/// that share their first 512 bytes and their length are counted together.
const HASHED_PATH_WORDS: usize = 64;

/// The hash of the first `len` bytes of `path` (what the kernel wrote; bytes after are stale).
///
/// # Safety
/// `path` points to EVENT_PATH_BYTES readable bytes.
#[inline(always)]
unsafe fn path_hash(path: *const u8, len: usize) -> u64 {
    let words = path.cast::<u64>();
    let mut hash = mix(HASH_SEED, len as u64);
    for i in 0..HASHED_PATH_WORDS {
        if i * 8 >= len {
            break;
        }
        // SAFETY: i < 64 words stays inside the path, as the caller guarantees.
        let mut word = unsafe { words.add(i).read_unaligned() };
        let kept = len - i * 8;
        if kept < 8 {
            word &= (1u64 << (kept * 8)) - 1;
        }
        hash = mix(hash, word);
    }
    hash
}

/// The root itself is "/"; otherwise the components already start with "/".
///
/// # Safety
/// `buffer` is the scratch path buffer and `pos < end <= EVENT_PATH_BYTES`.
#[inline(always)]
unsafe fn finish(buffer: *mut u8, mut pos: usize, end: usize) -> Resolved {
    if pos == end - 1 {
        pos -= 1;
        // SAFETY: inside the buffer, as the caller guarantees.
        unsafe { *buffer.add(pos) = b'/' };
    }
    Resolved {
        // SAFETY: as above.
        start: unsafe { buffer.add(pos & (EVENT_PATH_BYTES - 1)) },
        len: end - pos,
    }
}

/// The access bits the agent's rules grant on `resolved`.
#[inline(always)]
pub fn granted(scratch: &mut Scratch, ruleset: u32, resolved: Resolved) -> u32 {
    let key_bytes = core::cmp::min(resolved.len, RULE_PATH_BYTES);
    scratch.lookup.prefix_len = (32 + 8 * key_bytes) as u32;
    scratch.lookup.key.ruleset = ruleset.to_be_bytes();
    // SAFETY: both buffers are this program's scratch memory, large enough for the copy.
    let copied = unsafe {
        bpf_probe_read_kernel(
            scratch.lookup.key.path.as_mut_ptr().cast::<c_void>(),
            RULE_PATH_BYTES as u32,
            resolved.start.cast::<c_void>(),
        )
    };
    if copied != 0 {
        return 0;
    }
    // SAFETY: PathLookup has the layout of aya's Key<PathRuleKey> (u32, then the key; no padding,
    // the key being bytes).
    let lookup = unsafe { &*(&scratch.lookup as *const PathLookup as *const Key<PathRuleKey>) };
    FILE_RULES.get(lookup).copied().unwrap_or(0)
}

/// A file operation's outcome: 0 when the rules grant `need`, or in audit mode; -EPERM otherwise.
/// Reports everything that is not granted.
#[inline(always)]
pub fn file_verdict(
    cgroup_id: u64,
    agent: AgentEntry,
    op: u32,
    need: u32,
    resolved: Option<Resolved>,
) -> i32 {
    match scratch() {
        Some(scratch) => file_verdict_in(scratch, cgroup_id, agent, op, need, resolved),
        // Unreachable in practice (index 0 of a one-entry array); still fail closed.
        None => outcome(agent).1,
    }
}

/// `file_verdict` with this CPU's state already in hand (the hot path's one lookup of it).
#[inline(always)]
pub fn file_verdict_in(
    scratch: &mut Scratch,
    cgroup_id: u64,
    agent: AgentEntry,
    op: u32,
    need: u32,
    resolved: Option<Resolved>,
) -> i32 {
    let has = match resolved {
        Some(resolved) => granted(scratch, agent.ruleset, resolved),
        None => {
            scratch.count(counter::PATH_ERRORS);
            0
        }
    };
    if has & need == need {
        scratch.count(counter::ALLOWED);
        return 0;
    }
    let reported = match resolved {
        Some(resolved) => Reported::Path(resolved),
        None => Reported::Unresolved,
    };
    if report_file(cgroup_id, agent, op, need, decision_of(agent), reported) {
        scratch.count(counter::ALLOWED);
        return 0;
    }
    outcome(agent).1
}

/// Executable memory without a file: only agents with the JIT switch may make it.
#[inline(always)]
pub fn anonymous_exec(cgroup_id: u64, agent: AgentEntry, op: u32) -> i32 {
    if agent.flags & agent_flags::JIT != 0 {
        count(counter::ALLOWED);
        return 0;
    }
    let (outcome, ret) = outcome(agent);
    report_file(
        cgroup_id,
        agent,
        op,
        access::MAP,
        outcome,
        Reported::Anonymous,
    );
    ret
}

/// What a file event names.
#[derive(Clone, Copy)]
pub enum Reported {
    Path(Resolved),
    /// The path could not be resolved.
    Unresolved,
    /// Memory that belongs to no file.
    Anonymous,
    /// The operation touches no file (bpf(), an extended attribute of an unnamed inode).
    Nothing,
}

/// For operations no rule can grant: denied (or, in audit mode, reported) outright.
#[inline(always)]
pub fn refuse(cgroup_id: u64, agent: AgentEntry, op: u32) -> i32 {
    let (outcome, ret) = outcome(agent);
    report_file(
        cgroup_id,
        agent,
        op,
        access::ADMIN,
        outcome,
        Reported::Nothing,
    );
    ret
}

/// The decision an operation no rule allows gets, uncounted.
#[inline(always)]
pub fn decision_of(agent: AgentEntry) -> u32 {
    if agent.mode == mode::AUDIT {
        decision::AUDIT
    } else {
        decision::DENY
    }
}

/// The decision for an operation no rule allows: (event decision, return value).
#[inline(always)]
pub fn outcome(agent: AgentEntry) -> (u32, i32) {
    if agent.mode == mode::AUDIT {
        count(counter::AUDITED);
        (decision::AUDIT, 0)
    } else {
        count(counter::DENIED);
        (decision::DENY, -EPERM)
    }
}

#[inline(always)]
pub fn header(
    kind: u32,
    op: u32,
    cgroup_id: u64,
    agent: AgentEntry,
    decision: u32,
    access: u32,
) -> RecordHeader {
    RecordHeader {
        kind,
        op,
        // SAFETY: helpers without preconditions.
        boot_time_ns: unsafe { bpf_ktime_get_boot_ns() },
        cgroup_id,
        task_cgroup_id: task_cgroup_id(),
        object_hash: 0,
        repeats_before: 0,
        record: UNNUMBERED,
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        ruleset: agent.ruleset,
        decision,
        access,
        comm: bpf_get_current_comm().unwrap_or_default(),
    }
}

/// Reports a file operation no rule allowed. A denial of a path an operator granted
/// (`clawctl allow`) is reported as granted instead, and true returned: let it through. (Without
/// room in the ring buffer the grant is not looked at: the denial stands, and is counted lost.)
#[inline(always)]
pub fn report_file(
    cgroup_id: u64,
    agent: AgentEntry,
    op: u32,
    need: u32,
    decision: u32,
    reported: Reported,
) -> bool {
    let Some(mut entry) = EVENTS.reserve::<FileRecord>(0) else {
        count(counter::EVENTS_LOST);
        count_lost(cgroup_id);
        return false;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: the reserved record is ours until submitted; the path copy is sized to the field
    // and reads from scratch memory that has that many bytes after `start`.
    unsafe {
        (*record).header = header(record::FILE, op, cgroup_id, agent, decision, need);
        (*record)._pad = 0;
        let object_hash = match reported {
            Reported::Path(resolved) => {
                let len = core::cmp::min(resolved.len, EVENT_PATH_BYTES);
                (*record).path_len = len as i32;
                bpf_probe_read_kernel(
                    (*record).path.as_mut_ptr().cast::<c_void>(),
                    EVENT_PATH_BYTES as u32,
                    resolved.start.cast::<c_void>(),
                );
                path_hash((*record).path.as_ptr(), len)
            }
            Reported::Unresolved => {
                (*record).path_len = -1;
                (*record).path[0] = 0;
                mix(HASH_SEED, 1)
            }
            Reported::Anonymous => {
                (*record).path_len = 0;
                (*record).path[0] = 0;
                mix(HASH_SEED, 0)
            }
            Reported::Nothing => {
                (*record).path_len = -2;
                (*record).path[0] = 0;
                mix(HASH_SEED, 2)
            }
        };
        (*record).header.object_hash = object_hash;
        let granted = decision == decision::DENY
            && need & access::ADMIN == 0
            && matches!(reported, Reported::Path(_))
            && grant::file(
                cgroup_id,
                op,
                need,
                object_hash,
                (*record).path.as_ptr(),
                (*record).path_len as usize,
            );
        if granted {
            (*record).header.decision = decision::GRANTED;
        }
        let Some(repeats_before) = admit(cgroup_id, op, object_hash) else {
            entry.discard(0);
            return granted;
        };
        (*record).header.repeats_before = repeats_before;
        (*record).header.record = number(cgroup_id);
        entry.submit(0);
        granted
    }
}
