//! Setting up `store.redb` at open, including the one-time import of the `state.json` that
//! BOIFI's embedded store wrote before it moved to redb.
//!
//! - No database yet, no `state.json`: an empty store.
//! - No database yet, a `state.json`: its policies, halt flag and revision are imported in
//!   one transaction, then the file is renamed to `state.json.imported` (kept, not deleted).
//!   Its history is not: the new history starts at the imported revision, so a watcher asking
//!   for anything older gets `Compacted` and reloads a snapshot. A crash during the import
//!   leaves the database uninitialized and `state.json` in place, so the next open imports again.
//! - A database and a `state.json`: if it is the file this database was imported from (same
//!   revision and length; a crash came between the import's commit and the rename), the rename
//!   is finished. Any other `state.json` (say, written by an older BOIFI run on this directory
//!   after the import) is refused with an error naming both files, rather than ignored or merged.
//! - A leftover `state.json.tmp` (an unacknowledged write of the old store, cut by a crash) is
//!   removed unread, as the old store did.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

use boifi_policy::Policy;
use redb::Database;
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::tables::{self, ImportMarker, Initial, DB_FILE};
use crate::{Revision, StoreError};

pub(super) const STATE_FILE: &str = "state.json";
pub(super) const TEMP_FILE: &str = "state.json.tmp";
pub(super) const IMPORTED_FILE: &str = "state.json.imported";

/// Bound on the `state.json` read, the old store's own limit: it guards against reading a
/// wrong or damaged file into memory.
pub(super) const MAX_STATE_BYTES: u64 = 256 * 1024 * 1024;

/// The only `state.json` format there was.
const LEGACY_FORMAT: u32 = 1;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyState {
    format: u32,
    revision: Revision,
    halted: bool,
    history_floor: Revision,
    policies: Vec<LegacyPolicy>,
    /// Not imported; see the module comment.
    #[allow(dead_code)]
    history: IgnoredAny,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyPolicy {
    revision: Revision,
    policy: Policy,
}

/// Makes `db` ready to load: initializes it (empty or from `state.json`), or finishes an
/// interrupted import.
pub(super) fn prepare(dir: &Path, db: &Database) -> Result<(), StoreError> {
    remove_leftover_temp(dir)?;
    let state_path = dir.join(STATE_FILE);
    let legacy = state_path.try_exists()?;
    match (tables::format(db)?, legacy) {
        (None, false) => tables::initialize(db, &Initial::default()),
        (None, true) => {
            let initial = read_legacy(&state_path)?;
            let count = initial.policies.len();
            let revision = initial.revision;
            tables::initialize(db, &initial)?;
            retire(dir)?;
            log::info!(
                "embedded store: imported {count} policies at revision {revision} from {} into {DB_FILE}; the old file is kept as {IMPORTED_FILE}",
                state_path.display()
            );
            Ok(())
        }
        (Some(_), false) => Ok(()),
        (Some(_), true) => {
            let found = read_legacy(&state_path)?.imported;
            if found.is_some() && found == tables::import_marker(db)? {
                retire(dir)?;
                log::info!(
                    "embedded store: finished an interrupted import (renamed {STATE_FILE} to {IMPORTED_FILE})"
                );
                return Ok(());
            }
            Err(StoreError::Io(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "data directory {} holds both {DB_FILE} and a {STATE_FILE} that was not imported into it; \
                     move {STATE_FILE} away to keep {DB_FILE}, or move {DB_FILE} away to import {STATE_FILE}",
                    dir.display()
                ),
            )))
        }
    }
}

fn remove_leftover_temp(dir: &Path) -> Result<(), StoreError> {
    let temp = dir.join(TEMP_FILE);
    match fs::remove_file(&temp) {
        Ok(()) => {
            log::warn!(
                "embedded store: removed unfinished write {} (the last write before a crash was not acknowledged)",
                temp.display()
            );
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `state.json` -> `state.json.imported`, durably.
fn retire(dir: &Path) -> Result<(), StoreError> {
    fs::rename(dir.join(STATE_FILE), dir.join(IMPORTED_FILE))?;
    // The rename is only durable once the directory entry is.
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Reads and checks a `state.json`: what to initialize the database with, marked with the
/// file's revision and length.
fn read_legacy(path: &Path) -> Result<Initial, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: path.display().to_string(),
        reason,
    };
    let mut bytes = Vec::new();
    File::open(path)?
        .take(MAX_STATE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(corrupt(format!(
            "larger than the {MAX_STATE_BYTES} byte limit"
        )));
    }
    let legacy: LegacyState = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(format!("not a BOIFI state file: {e}")))?;
    let mut initial = check(legacy).map_err(corrupt)?;
    initial.imported = Some(ImportMarker {
        revision: initial.revision,
        file_bytes: bytes.len() as u64,
    });
    Ok(initial)
}

/// The invariants the old store checked, so a hand-edited or damaged file is reported rather
/// than imported with revisions that go backwards.
fn check(legacy: LegacyState) -> Result<Initial, String> {
    if legacy.format != LEGACY_FORMAT {
        return Err(format!(
            "format {} is not supported (expected {LEGACY_FORMAT})",
            legacy.format
        ));
    }
    if legacy.history_floor > legacy.revision {
        return Err(format!(
            "history_floor {} is above revision {}",
            legacy.history_floor, legacy.revision
        ));
    }
    let mut names = BTreeSet::new();
    let mut policies = Vec::with_capacity(legacy.policies.len());
    for entry in legacy.policies {
        let name = entry.policy.metadata.name.clone();
        if entry.revision == 0 || entry.revision > legacy.revision {
            return Err(format!(
                "policy {name:?} has revision {} outside 1..={}",
                entry.revision, legacy.revision
            ));
        }
        if !names.insert(name.clone()) {
            return Err(format!("policy {name:?} appears twice"));
        }
        policies.push(tables::stamp(entry.policy, entry.revision));
    }
    Ok(Initial {
        revision: legacy.revision,
        halted: legacy.halted,
        policies,
        imported: None,
    })
}
