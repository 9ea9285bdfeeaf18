//! The state file: one JSON document holding the policies, the halt flag, the revision counter
//! and the recent history, replaced atomically on every write.
//!
//! Atomic replace: write `state.json.tmp`, fsync it, rename it over `state.json`, fsync the
//! directory. A crash leaves either the old or the new `state.json`; a leftover temp file is
//! never read.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use boifi_policy::{Policy, PolicyStatus};
use serde::{Deserialize, Serialize};

use super::State;
use crate::{Change, Revision, StoreError, StoredPolicy, WatchEvent};

pub(super) const STATE_FILE: &str = "state.json";
pub(super) const TEMP_FILE: &str = "state.json.tmp";
pub(super) const LOCK_FILE: &str = "lock";

/// Bound on the state file, read and written. Far above what the policy count of a single
/// machine needs; it guards against reading a wrong or damaged file into memory.
pub(super) const MAX_STATE_BYTES: u64 = 256 * 1024 * 1024;

const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskState {
    format: u32,
    revision: Revision,
    halted: bool,
    history_floor: Revision,
    policies: Vec<DiskPolicy>,
    history: Vec<DiskEvent>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskPolicy {
    revision: Revision,
    policy: Policy,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskEvent {
    revision: Revision,
    change: DiskChange,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum DiskChange {
    /// The policy's revision is the event's.
    Put {
        policy: Box<Policy>,
    },
    Delete {
        name: String,
    },
    Halt {
        halted: bool,
    },
}

/// Serializes `state`. If the result is over the bound, drops the oldest half of the history
/// (raising `history_floor`) until it fits; fails if the policies alone do not fit.
pub(super) fn encode(state: &mut State) -> Result<Vec<u8>, StoreError> {
    loop {
        let bytes = serde_json::to_vec(&to_disk(state)).map_err(|e| StoreError::Corrupt {
            key: STATE_FILE.into(),
            reason: format!("state does not serialize: {e}"),
        })?;
        if bytes.len() as u64 <= MAX_STATE_BYTES {
            return Ok(bytes);
        }
        if state.history.is_empty() {
            return Err(StoreError::Io(io::Error::other(format!(
                "store full: the policies take {} bytes, over the {MAX_STATE_BYTES} byte limit",
                bytes.len()
            ))));
        }
        let keep = state.history.len() / 2;
        state.trim_history(keep);
    }
}

/// Writes `bytes` as the new state file, durably and atomically.
pub(super) fn save(dir: &Path, bytes: &[u8]) -> io::Result<()> {
    let temp = dir.join(TEMP_FILE);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temp, dir.join(STATE_FILE))?;
    // The rename is only durable once the directory entry is.
    File::open(dir)?.sync_all()
}

/// Reads the state file; a missing file is an empty store. A leftover temp file (a crash
/// before its rename) is removed unread.
pub(super) fn load(dir: &Path) -> Result<State, StoreError> {
    match fs::remove_file(dir.join(TEMP_FILE)) {
        Ok(()) => log::warn!(
            "embedded store: removed unfinished write {} (the last write before a crash was not acknowledged)",
            dir.join(TEMP_FILE).display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let path = dir.join(STATE_FILE);
    let corrupt = |reason: String| StoreError::Corrupt {
        key: path.display().to_string(),
        reason,
    };
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(State::default()),
        Err(e) => return Err(e.into()),
    };
    let mut bytes = Vec::new();
    file.take(MAX_STATE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(corrupt(format!(
            "larger than the {MAX_STATE_BYTES} byte limit"
        )));
    }
    let disk: DiskState = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(format!("not a BOIFI state file: {e}")))?;
    from_disk(disk).map_err(corrupt)
}

fn to_disk(state: &State) -> DiskState {
    DiskState {
        format: FORMAT,
        revision: state.revision,
        halted: state.halted,
        history_floor: state.history_floor,
        policies: state
            .policies
            .values()
            .map(|stored| DiskPolicy {
                revision: stored.revision,
                policy: stored.policy.clone(),
            })
            .collect(),
        history: state
            .history
            .iter()
            .map(|event| DiskEvent {
                revision: event.revision,
                change: match &event.change {
                    Change::Put(stored) => DiskChange::Put {
                        policy: Box::new(stored.policy.clone()),
                    },
                    Change::Delete { name } => DiskChange::Delete { name: name.clone() },
                    Change::Halt { halted } => DiskChange::Halt { halted: *halted },
                },
            })
            .collect(),
    }
}

/// Checks the invariants the store relies on, so a hand-edited or damaged file is reported
/// rather than producing revisions that go backwards.
fn from_disk(disk: DiskState) -> Result<State, String> {
    if disk.format != FORMAT {
        return Err(format!(
            "format {} is not supported (expected {FORMAT})",
            disk.format
        ));
    }
    if disk.history_floor > disk.revision {
        return Err(format!(
            "history_floor {} is above revision {}",
            disk.history_floor, disk.revision
        ));
    }
    let mut policies = BTreeMap::new();
    for entry in disk.policies {
        let name = entry.policy.metadata.name.clone();
        if entry.revision == 0 || entry.revision > disk.revision {
            return Err(format!(
                "policy {name:?} has revision {} outside 1..={}",
                entry.revision, disk.revision
            ));
        }
        let stored = stamp(entry.policy, entry.revision);
        if policies.insert(name.clone(), stored).is_some() {
            return Err(format!("policy {name:?} appears twice"));
        }
    }
    let mut history = VecDeque::with_capacity(disk.history.len());
    let mut previous = disk.history_floor;
    for event in disk.history {
        if event.revision <= previous || event.revision > disk.revision {
            return Err(format!(
                "history event at revision {} is out of order (after {previous}, limit {})",
                event.revision, disk.revision
            ));
        }
        previous = event.revision;
        let change = match event.change {
            DiskChange::Put { policy } => Change::Put(stamp(*policy, event.revision)),
            DiskChange::Delete { name } => Change::Delete { name },
            DiskChange::Halt { halted } => Change::Halt { halted },
        };
        history.push_back(Arc::new(WatchEvent {
            revision: event.revision,
            change,
        }));
    }
    Ok(State {
        revision: disk.revision,
        halted: disk.halted,
        policies,
        history,
        history_floor: disk.history_floor,
    })
}

/// A policy as readers see it: `status.revision` is the revision of its last write.
pub(super) fn stamp(mut policy: Policy, revision: Revision) -> StoredPolicy {
    policy
        .status
        .get_or_insert_with(PolicyStatus::default)
        .revision = revision;
    StoredPolicy { policy, revision }
}
