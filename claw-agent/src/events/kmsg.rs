//! The kernel's own account of an OOM kill, from /dev/kmsg: which task it chose as the victim
//! (not the task that triggered reclaim), in which memory cgroup, and how much memory it held.
//!
//! The kernel prints, for every OOM kill, a summary line and a kill line:
//! `oom-kill:constraint=CONSTRAINT_MEMCG,...,oom_memcg=/claw/tools,task_memcg=/claw/tools,task=python3,pid=1234,uid=0`
//! `Memory cgroup out of memory: Killed process 1234 (python3) total-vm:1052000kB, anon-rss:65000kB, ...`
//! (cAdvisor reads the same lines for Kubernetes.)

use std::{
    collections::HashMap,
    fs::File,
    io::{Read as _, Seek as _, SeekFrom},
};

pub const KMSG: &str = "/dev/kmsg";

/// One OOM kill, as the kernel reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomKill {
    /// The cgroup whose limit was hit (`/claw/tools`).
    pub oom_memcg: String,
    /// The victim's cgroup.
    pub task_memcg: String,
    pub comm: String,
    pub pid: u32,
    /// The victim's resident anonymous memory when killed, if the kill line was seen.
    pub anon_rss_bytes: Option<u64>,
}

/// The text of a /dev/kmsg record (`PRI,SEQ,TIME,FLAGS;TEXT`).
fn text(record: &str) -> &str {
    record
        .split_once(';')
        .map_or(record, |(_, text)| text)
        .trim_end()
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(',')
        .find_map(|part| part.trim().strip_prefix(key)?.strip_prefix('='))
}

pub fn parse_summary(record: &str) -> Option<OomKill> {
    let line = text(record).strip_prefix("oom-kill:")?;
    Some(OomKill {
        oom_memcg: field(line, "oom_memcg")?.to_owned(),
        task_memcg: field(line, "task_memcg")?.to_owned(),
        comm: field(line, "task")?.to_owned(),
        pid: field(line, "pid")?.parse().ok()?,
        anon_rss_bytes: None,
    })
}

/// (pid, anon-rss in bytes) of a kill line.
pub fn parse_kill(record: &str) -> Option<(u32, u64)> {
    let line = text(record);
    let rest = &line[line.find("Killed process ")? + "Killed process ".len()..];
    let pid = rest.split_whitespace().next()?.parse().ok()?;
    let rss = rest
        .split(", ")
        .find_map(|part| part.trim().strip_prefix("anon-rss:")?.strip_suffix("kB"))?
        .parse::<u64>()
        .ok()?;
    Some((pid, rss * 1024))
}

/// Pairs summary and kill lines into complete reports.
#[derive(Default)]
pub struct Assembler {
    pending: HashMap<u32, OomKill>,
}

impl Assembler {
    /// Feeds one record; returns a kill once both of its lines were seen.
    pub fn feed(&mut self, record: &str) -> Option<OomKill> {
        if let Some(kill) = parse_summary(record) {
            self.pending.insert(kill.pid, kill);
            return None;
        }
        let (pid, rss) = parse_kill(record)?;
        let mut kill = self.pending.remove(&pid)?;
        kill.anon_rss_bytes = Some(rss);
        Some(kill)
    }
}

/// Reads /dev/kmsg from now on (older records are skipped), calling `report` with each kill.
/// Blocks: run it on a thread of its own.
pub fn follow(mut report: impl FnMut(OomKill)) -> std::io::Result<()> {
    let mut kmsg = File::open(KMSG)?;
    kmsg.seek(SeekFrom::End(0))?;
    let mut assembler = Assembler::default();
    // One read returns one record; records are at most about 8 KiB.
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        match kmsg.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                if let Some(kill) = assembler.feed(&String::from_utf8_lossy(&buffer[..n])) {
                    report(kill);
                }
            }
            // The ring overwrote records we had not read yet: go on from the oldest left.
            Err(err) if err.raw_os_error() == Some(libc::EPIPE) => {}
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMMARY: &str = "6,2210,91234567,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/claw/tools,task_memcg=/claw/tools,task=hog,pid=812,uid=0";
    const KILL: &str = "3,2211,91234600,-;Memory cgroup out of memory: Killed process 812 (hog) total-vm:1052844kB, anon-rss:64312kB, file-rss:1024kB, shmem-rss:0kB, UID:0 pgtables:180kB oom_score_adj:0";

    #[test]
    fn pairs_the_summary_with_the_kill_line() {
        let mut assembler = Assembler::default();
        assert_eq!(assembler.feed("6,1,1,-;unrelated line"), None);
        assert_eq!(assembler.feed(SUMMARY), None);
        let kill = assembler.feed(KILL).expect("a complete report");
        assert_eq!(
            kill,
            OomKill {
                oom_memcg: "/claw/tools".into(),
                task_memcg: "/claw/tools".into(),
                comm: "hog".into(),
                pid: 812,
                anon_rss_bytes: Some(64312 * 1024),
            }
        );
    }

    #[test]
    fn a_kill_line_without_its_summary_is_ignored() {
        assert_eq!(Assembler::default().feed(KILL), None);
    }
}
