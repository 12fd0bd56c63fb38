//! The audit log: append-only JSON lines, each record carrying the SHA-256 of the record before
//! it, so that an edited, removed or reordered record breaks the chain. Rotated by size, the chain
//! continuing across files (`audit.log`, then `audit.log.1`, `audit.log.2`, ... oldest last).
//!
//! Durability: every record is written with one write(2) as it comes; the file is fsync'ed at
//! rotation and at least once a second while records arrive (`sync`), so a crash loses at most
//! the last second to the page cache — and what it loses is missing from the chain's end, never
//! silently in its middle.

use std::{
    fs::{File, OpenOptions},
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::events::event::Event;

/// The `prev` of the very first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// `hash` of the record before.
    pub prev: String,
    pub event: Entry,
    /// SHA-256 over `seq`, `prev` and the event's JSON.
    pub hash: String,
}

/// What a record holds: an event, or the count of events that could not be written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Entry {
    Event(std::sync::Arc<Event>),
    Lost { lost: u64 },
}

fn digest(seq: u64, prev: &str, entry: &Entry) -> String {
    digest_bytes(seq, prev, &serde_json::to_vec(entry).unwrap_or_default())
}

fn digest_bytes(seq: u64, prev: &str, entry_json: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(seq.to_le_bytes());
    hasher.update(prev.as_bytes());
    hasher.update(entry_json);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    hasher
        .finalize()
        .iter()
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]])
        .map(char::from)
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Records that could not be written, and the events they held.
#[derive(Debug, thiserror::Error)]
#[error("{error}; {events} events not written")]
pub struct Unwritten {
    #[source]
    pub error: AuditError,
    pub events: u64,
}

impl Entry {
    /// The events this record stands for.
    fn events(&self) -> u64 {
        match self {
            Entry::Event(_) => 1,
            Entry::Lost { lost } => *lost,
        }
    }
}

pub struct Writer {
    path: PathBuf,
    file: File,
    written: u64,
    max_bytes: u64,
    seq: u64,
    prev: String,
}

impl Writer {
    /// Opens (or creates) the log at `path`, continuing the chain of what is already there.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Self, AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let (seq, prev) = match last_record(path) {
            Some(last) => (last.seq + 1, last.hash),
            None => match last_record(&rotated(path, 1)) {
                Some(last) => (last.seq + 1, last.hash),
                None => (0, GENESIS.to_owned()),
            },
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let written = file.metadata().map_err(io)?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            written,
            max_bytes,
            seq,
            prev,
        })
    }

    pub fn append(&mut self, entry: Entry) -> Result<(), Unwritten> {
        self.append_all(std::iter::once(entry))
    }

    /// Appends records with one write (per file, when the log rotates between them). On failure
    /// (a full disk) the records not written are rolled back whole — the file is cut back to its
    /// last complete record and the chain continues from it — and counted in the error.
    pub fn append_all(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<(), Unwritten> {
        let mut lines = Vec::new();
        let mut events_in_lines = 0;
        let mut chain_before_lines = (self.seq, self.prev.clone());
        let mut entries = entries.into_iter();
        while let Some(entry) = entries.next() {
            // The entry is serialised once: the hash covers these bytes, and the line embeds
            // them as they are (the same bytes serde would write for the Record).
            let entry_json = serde_json::to_vec(&entry).unwrap_or_default();
            let hash = digest_bytes(self.seq, &self.prev, &entry_json);
            let mut line = format!(
                "{{\"seq\":{},\"prev\":\"{}\",\"event\":",
                self.seq, self.prev
            )
            .into_bytes();
            line.extend_from_slice(&entry_json);
            line.extend_from_slice(format!(",\"hash\":\"{hash}\"}}\n").as_bytes());
            if self.written + (lines.len() + line.len()) as u64 > self.max_bytes
                && self.written + lines.len() as u64 > 0
            {
                if let Err(error) = self.write(&lines).and_then(|()| self.rotate()) {
                    let events =
                        events_in_lines + entry.events() + entries.map(|e| e.events()).sum::<u64>();
                    return Err(self.roll_back(chain_before_lines, error, events));
                }
                lines.clear();
                events_in_lines = 0;
                chain_before_lines = (self.seq, self.prev.clone());
            }
            lines.extend_from_slice(&line);
            events_in_lines += entry.events();
            self.prev = hash;
            self.seq += 1;
        }
        self.write(&lines)
            .map_err(|error| self.roll_back(chain_before_lines, error, events_in_lines))
    }

    /// A write that failed part-way leaves a torn line: cut the file back to its last whole
    /// record, so that the chain continues from there.
    fn roll_back(&mut self, chain: (u64, String), error: AuditError, events: u64) -> Unwritten {
        if let Err(err) = self.file.set_len(self.written) {
            tracing::error!("audit log: cutting back a partly written record: {err}");
        }
        (self.seq, self.prev) = chain;
        Unwritten { error, events }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), AuditError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(bytes)
            .map_err(|source| self.error(source))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    pub fn sync(&mut self) -> Result<(), AuditError> {
        self.file.sync_data().map_err(|source| self.error(source))
    }

    /// `audit.log` becomes `audit.log.1` (older ones move up one); a new `audit.log` starts.
    fn rotate(&mut self) -> Result<(), AuditError> {
        self.sync()?;
        let mut oldest = 1;
        while rotated(&self.path, oldest).exists() {
            oldest += 1;
        }
        for n in (1..oldest).rev() {
            std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1))
                .map_err(|source| self.error(source))?;
        }
        std::fs::rename(&self.path, rotated(&self.path, 1)).map_err(|source| self.error(source))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|source| self.error(source))?;
        self.written = 0;
        Ok(())
    }

    fn error(&self, source: std::io::Error) -> AuditError {
        AuditError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

/// `audit.log.N`.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn last_record(path: &Path) -> Option<Record> {
    let file = File::open(path).ok()?;
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .last()
}

/// The files of a rotated log, oldest first.
pub fn files_of(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..)
        .map(|n| rotated(path, n))
        .take_while(|p| p.exists())
        .collect();
    files.reverse();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    files
}

pub fn events_of(file: &Path) -> impl Iterator<Item = Event> {
    File::open(file)
        .into_iter()
        .flat_map(|f| BufReader::new(f).lines().map_while(Result::ok))
        .filter_map(|line| serde_json::from_str::<Record>(&line).ok())
        .filter_map(|record| match record.event {
            Entry::Event(event) => Some(std::sync::Arc::unwrap_or_clone(event)),
            Entry::Lost { .. } => None,
        })
}

/// The sequence number after the last event in the log at `path` (0 for a new log): where the
/// daemon's event numbering continues.
pub fn next_event_seq(path: &Path) -> u64 {
    files_of(path)
        .iter()
        .rev()
        .find_map(|file| events_of(file).last())
        .map_or(0, |event| event.seq + 1)
}

/// Where a replay starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayFrom {
    /// The events after this sequence number.
    After(u64),
    /// The events at or after this time (RFC 3339, as events carry it).
    Since(std::time::SystemTime),
}

impl ReplayFrom {
    fn admits(&self, event: &Event) -> bool {
        match self {
            ReplayFrom::After(seq) => event.seq > *seq,
            ReplayFrom::Since(time) => {
                humantime::parse_rfc3339(&event.time).is_ok_and(|t| t >= *time)
            }
        }
    }
}

/// The logged events from `from` up to (not including) sequence number `until`, oldest first.
/// Reads only the newest files that can hold them.
pub fn replay(path: &Path, from: &ReplayFrom, until: u64) -> Vec<Event> {
    let files = files_of(path);
    // The newest file whose first event is already before `from`: no older file is needed.
    let start = files
        .iter()
        .rposition(|file| events_of(file).next().is_some_and(|e| !from.admits(&e)))
        .unwrap_or(0);
    // Events are logged in sequence order: reading stops at `until`.
    files[start..]
        .iter()
        .flat_map(|file| events_of(file))
        .take_while(|e| e.seq < until)
        .filter(|e| from.admits(e))
        .collect()
}

/// What verifying found: the records checked, or the first problem.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Intact {
        records: u64,
    },
    Broken {
        file: PathBuf,
        line: usize,
        what: String,
    },
}

/// Checks the chain through `files`, in order (oldest first).
pub fn verify(files: &[PathBuf]) -> std::io::Result<Verdict> {
    let mut expected: Option<(u64, String)> = None;
    let mut records = 0;
    for file in files {
        let reader = BufReader::new(File::open(file)?);
        for (index, line) in reader.lines().enumerate() {
            let line = line?;
            let broken = |what: String| Verdict::Broken {
                file: file.clone(),
                line: index + 1,
                what,
            };
            let record: Record = match serde_json::from_str(&line) {
                Ok(record) => record,
                Err(err) => return Ok(broken(format!("not a record: {err}"))),
            };
            if let Some((seq, prev)) = &expected {
                if record.seq != *seq {
                    return Ok(broken(format!(
                        "record {} follows {}: records {}..{} are missing",
                        record.seq,
                        seq - 1,
                        seq,
                        record.seq.saturating_sub(1)
                    )));
                }
                if record.prev != *prev {
                    return Ok(broken(format!(
                        "record {} does not chain to the record before it (edited, or one removed)",
                        record.seq
                    )));
                }
            }
            if digest(record.seq, &record.prev, &record.event) != record.hash {
                return Ok(broken(format!(
                    "record {} was altered: its hash does not match",
                    record.seq
                )));
            }
            expected = Some((record.seq + 1, record.hash));
            records += 1;
        }
    }
    Ok(Verdict::Intact { records })
}

/// The event numbered `seq` in the audit log at `path`.
pub async fn find(path: PathBuf, seq: u64) -> Option<Event> {
    let from = match seq.checked_sub(1) {
        Some(before) => ReplayFrom::After(before),
        None => ReplayFrom::Since(std::time::SystemTime::UNIX_EPOCH),
    };
    tokio::task::spawn_blocking(move || replay(&path, &from, seq.saturating_add(1)))
        .await
        .ok()?
        .into_iter()
        .find(|e| e.seq == seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> Entry {
        Entry::Lost { lost: n }
    }

    fn write(path: &Path, count: u64, max_bytes: u64) {
        let mut writer = Writer::open(path, max_bytes).unwrap();
        for n in 0..count {
            writer.append(entry(n)).unwrap();
        }
        writer.sync().unwrap();
    }

    #[test]
    fn an_untouched_log_verifies_across_rotation_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        write(&path, 30, 600);
        write(&path, 10, 600);
        let files = files_of(&path);
        assert!(files.len() > 2, "rotated into {files:?}");
        assert_eq!(verify(&files).unwrap(), Verdict::Intact { records: 40 });
    }

    #[test]
    fn an_edited_record_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        write(&path, 5, 1 << 20);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("\"lost\":3", "\"lost\":4", 1)).unwrap();
        let Verdict::Broken { line, what, .. } = verify(&files_of(&path)).unwrap() else {
            panic!("tampering not found")
        };
        assert_eq!(line, 4);
        assert!(what.contains("record 3 was altered"), "{what}");
    }

    #[test]
    fn a_removed_record_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        write(&path, 5, 1 << 20);
        let text = std::fs::read_to_string(&path).unwrap();
        let kept: Vec<&str> = text
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, l)| l)
            .collect();
        std::fs::write(&path, kept.join("\n") + "\n").unwrap();
        let Verdict::Broken { what, .. } = verify(&files_of(&path)).unwrap() else {
            panic!("removal not found")
        };
        assert!(what.contains("records 2..2 are missing"), "{what}");
    }
}
