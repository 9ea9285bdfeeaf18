//! The redb file (`store.redb`): its tables, how values are encoded, and what the store does
//! with them: create or import the initial state, load everything at open, apply one change
//! durably, read the history after a revision.
//!
//! Tables:
//! - `policies`: name -> (revision of its last write, the policy's JSON as readers get it,
//!   `status.revision` included).
//! - `history`: revision -> (end, that revision's change as JSON: `{"put":{"policy":{..}}}`,
//!   `{"delete":{"name":".."}}` or `{"halt":{"halted":true}}`). `end` is a running byte count:
//!   the previous entry's `end` plus this entry's [`entry_bytes`], so what the history holds is
//!   the last `end` minus where the first entry starts, known without a counter to update.
//! - `audit`: the audit trail ([`super::trail`]), one entry per revision, written by the same
//!   transaction as the change.
//! - `meta`: named numbers: `format`, `halted` (0 or 1), `base_revision` (the revision the
//!   history started at: 0, or the imported one), and, when the store was imported from a
//!   `state.json`, `imported_revision` and `imported_bytes` (that file's revision and length).
//!
//! Every revision has exactly one history event, and trimming removes the oldest, so the store's
//! revision is the last history key and the history floor the first key minus one (both
//! `base_revision` while the history is empty). A put or delete thus writes one policy and one
//! history entry (and trims), nothing else: its cost depends on the size of that change, not on
//! how many policies are stored or how large the history is.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use boifi_policy::{Policy, PolicyStatus};
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableError,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::trail::{self, Record};
use super::{HistoryLimits, Memory};
use crate::{Change, Revision, StoreError, StoredPolicy, WatchEvent};

/// The database file in the data directory.
pub(super) const DB_FILE: &str = "store.redb";

/// redb's page cache. Reads are served from memory ([`Memory`]), so the cache only speeds up
/// the pages a write rewrites and the history a lagging watcher reads back.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Layout version, in `meta` under `format`.
const FORMAT: u64 = 1;

const POLICIES: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("policies");
const HISTORY: TableDefinition<u64, (u64, &[u8])> = TableDefinition::new("history");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Names in the `meta` table.
mod meta {
    pub const FORMAT: &str = "format";
    pub const HALTED: &str = "halted";
    pub const BASE_REVISION: &str = "base_revision";
    pub const IMPORTED_REVISION: &str = "imported_revision";
    pub const IMPORTED_BYTES: &str = "imported_bytes";
}

/// A history entry as written: the policy's JSON is spliced in as it is stored, not
/// serialized a second time.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum ChangeOut<'a> {
    Put { policy: &'a RawValue },
    Delete { name: &'a str },
    Halt { halted: bool },
}

/// A history entry as read back; mirrors [`ChangeOut`].
// Short-lived, one at a time: boxing the policy would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum ChangeIn {
    Put { policy: Policy },
    Delete { name: String },
    Halt { halted: bool },
}

/// What a new database starts with: empty, or what a `state.json` held.
#[derive(Debug, Default)]
pub(super) struct Initial {
    pub revision: Revision,
    pub halted: bool,
    pub policies: Vec<StoredPolicy>,
    pub imported: Option<ImportMarker>,
}

/// Which `state.json` a database was imported from, to recognise that file if it is seen again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ImportMarker {
    pub revision: Revision,
    pub file_bytes: u64,
}

/// Maps a redb error to the store's: I/O stays I/O, a damaged file is `Corrupt`.
pub(super) fn db_error(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Io(e) => StoreError::Io(e),
        redb::Error::Corrupted(reason) => StoreError::Corrupt {
            key: DB_FILE.into(),
            reason,
        },
        redb::Error::DatabaseAlreadyOpen => StoreError::Io(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("{DB_FILE} is open in another process"),
        )),
        other => StoreError::Io(io::Error::other(format!("{DB_FILE}: {other}"))),
    }
}

fn corrupt(key: impl Into<String>, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        key: format!("{DB_FILE}: {}", key.into()),
        reason: reason.into(),
    }
}

/// Opens (or creates) the database file. Its checksums are verified on every open, so a file
/// damaged or altered outside redb is reported as `Corrupt` rather than trusted; after a crash
/// redb repairs it from the last durable commit.
pub(super) fn open(path: &Path) -> Result<Database, StoreError> {
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .set_check_integrity_on_open(true)
        .create(path)
        .map_err(|e| match db_error(e) {
            StoreError::Io(e) => {
                StoreError::Io(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
            }
            other => other,
        })
}

/// `Some(format)` once the database was initialized (fresh or imported), `None` before.
pub(super) fn format(db: &Database) -> Result<Option<u64>, StoreError> {
    let txn = db.begin_read().map_err(db_error)?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(db_error(e)),
    };
    number(&meta, meta::FORMAT)
}

/// The import marker of an initialized database, if it was imported.
pub(super) fn import_marker(db: &Database) -> Result<Option<ImportMarker>, StoreError> {
    let txn = db.begin_read().map_err(db_error)?;
    let meta = txn.open_table(META).map_err(db_error)?;
    let revision = number(&meta, meta::IMPORTED_REVISION)?;
    Ok(match (revision, number(&meta, meta::IMPORTED_BYTES)?) {
        (Some(revision), Some(file_bytes)) => Some(ImportMarker {
            revision,
            file_bytes,
        }),
        _ => None,
    })
}

/// Creates the tables and writes the initial state, in one durable transaction: a crash leaves
/// either an uninitialized database (the next open starts over) or the whole initial state.
/// The history starts empty at `initial.revision`: older revisions are compacted.
pub(super) fn initialize(db: &Database, initial: &Initial) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(db_error)?;
    {
        let mut meta = txn.open_table(META).map_err(db_error)?;
        let mut policies = txn.open_table(POLICIES).map_err(db_error)?;
        txn.open_table(HISTORY).map_err(db_error)?;
        for stored in &initial.policies {
            let json = encode_policy(&stored.policy)?;
            policies
                .insert(
                    stored.policy.metadata.name.as_str(),
                    (stored.revision, json.get().as_bytes()),
                )
                .map_err(db_error)?;
        }
        let mut numbers = vec![
            (meta::FORMAT, FORMAT),
            (meta::HALTED, u64::from(initial.halted)),
            (meta::BASE_REVISION, initial.revision),
        ];
        if let Some(marker) = initial.imported {
            numbers.push((meta::IMPORTED_REVISION, marker.revision));
            numbers.push((meta::IMPORTED_BYTES, marker.file_bytes));
        }
        for (key, value) in numbers {
            meta.insert(key, value).map_err(db_error)?;
        }
    }
    txn.commit().map_err(db_error)
}

/// Everything the store serves reads from, checked as it is read: a value that does not
/// parse or breaks an invariant (revisions going backwards) is reported, naming its key.
pub(super) fn load(db: &Database) -> Result<Memory, StoreError> {
    let txn = db.begin_read().map_err(db_error)?;
    let meta = txn.open_table(META).map_err(db_error)?;
    let format = number(&meta, meta::FORMAT)?.unwrap_or(0);
    if format != FORMAT {
        return Err(corrupt(
            "meta/format",
            format!("format {format} is not supported (expected {FORMAT})"),
        ));
    }
    let halted = match number(&meta, meta::HALTED)?.unwrap_or(0) {
        0 => false,
        1 => true,
        other => return Err(corrupt("meta/halted", format!("{other} is not 0 or 1"))),
    };
    let history = txn.open_table(HISTORY).map_err(db_error)?;
    let extent = Extent::of(&meta, &history)?;
    let count = history.len().map_err(db_error)?;
    if count != extent.revision - extent.floor {
        return Err(corrupt(
            "history",
            format!(
                "{count} events for revisions {}..={}: one per revision expected",
                extent.floor + 1,
                extent.revision
            ),
        ));
    }
    let revision = extent.revision;

    let table = txn.open_table(POLICIES).map_err(db_error)?;
    let mut policies = BTreeMap::new();
    for entry in table.iter().map_err(db_error)? {
        let (name, value) = entry.map_err(db_error)?;
        let name = name.value().to_owned();
        let key = format!("policies/{name}");
        let (policy_revision, json) = value.value();
        if policy_revision == 0 || policy_revision > revision {
            return Err(corrupt(
                key,
                format!("revision {policy_revision} is outside 1..={revision}"),
            ));
        }
        let policy: Policy = serde_json::from_slice(json)
            .map_err(|e| corrupt(key.as_str(), format!("not a policy: {e}")))?;
        if policy.metadata.name != name {
            return Err(corrupt(
                key,
                format!("holds the policy named {:?}", policy.metadata.name),
            ));
        }
        policies.insert(name, Arc::new(stamp(policy, policy_revision)));
    }
    Ok(Memory {
        revision,
        halted,
        history_floor: extent.floor,
        policies,
    })
}

/// What the history spans, from its first and last entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Extent {
    /// Every event above this revision is in the history.
    floor: Revision,
    /// The store's revision: that of the newest event.
    revision: Revision,
    /// Where the oldest entry starts and the newest ends (see `end` in the module comment).
    start: u64,
    end: u64,
}

impl Extent {
    fn of(
        meta: &impl ReadableTable<&'static str, u64>,
        history: &impl ReadableTable<u64, (u64, &'static [u8])>,
    ) -> Result<Extent, StoreError> {
        let first = history.first().map_err(db_error)?;
        let last = history.last().map_err(db_error)?;
        let (Some((first_key, first_value)), Some((last_key, last_value))) = (first, last) else {
            let base = number(meta, meta::BASE_REVISION)?.unwrap_or(0);
            return Ok(Extent {
                floor: base,
                revision: base,
                start: 0,
                end: 0,
            });
        };
        let (first_end, first_change) = first_value.value();
        let extent = Extent {
            floor: first_key.value().saturating_sub(1),
            revision: last_key.value(),
            start: first_end.saturating_sub(entry_bytes(first_change)),
            end: last_value.value().0,
        };
        if first_key.value() == 0 || extent.start > extent.end {
            return Err(corrupt(
                "history",
                format!("inconsistent entries: {extent:?}"),
            ));
        }
        Ok(extent)
    }

    fn bytes(&self) -> u64 {
        self.end - self.start
    }
}

/// Applies `change` at `revision` and appends it to the history, trimming the oldest entries
/// beyond `limits` (the newest entry is always kept), records its audit entry (and trims the
/// trail), then commits durably. Returns the new history floor.
pub(super) fn write_change(
    db: &Database,
    revision: Revision,
    change: &Change,
    limits: HistoryLimits,
    audit: &Record<'_>,
) -> Result<Revision, StoreError> {
    let txn = db.begin_write().map_err(db_error)?;
    let floor = {
        let mut meta = txn.open_table(META).map_err(db_error)?;
        let mut history = txn.open_table(HISTORY).map_err(db_error)?;
        let before = Extent::of(&meta, &history)?;
        if revision != before.revision + 1 {
            return Err(corrupt(
                "history",
                format!(
                    "the next revision is {revision} but the file is at {}: changed behind the store's back",
                    before.revision
                ),
            ));
        }
        let entry = match change {
            Change::Put(stored) => {
                let json = encode_policy(&stored.policy)?;
                let mut policies = txn.open_table(POLICIES).map_err(db_error)?;
                policies
                    .insert(
                        stored.policy.metadata.name.as_str(),
                        (stored.revision, json.get().as_bytes()),
                    )
                    .map_err(db_error)?;
                encode_change(&ChangeOut::Put { policy: &json })?
            }
            Change::Delete { name } => {
                let mut policies = txn.open_table(POLICIES).map_err(db_error)?;
                policies.remove(name.as_str()).map_err(db_error)?;
                encode_change(&ChangeOut::Delete { name })?
            }
            Change::Halt { halted } => {
                meta.insert(meta::HALTED, u64::from(*halted))
                    .map_err(db_error)?;
                encode_change(&ChangeOut::Halt { halted: *halted })?
            }
        };
        let end = before.end + entry_bytes(&entry);
        history
            .insert(revision, (end, entry.as_slice()))
            .map_err(db_error)?;
        loop {
            let extent = Extent::of(&meta, &history)?;
            let count = history.len().map_err(db_error)?;
            if count <= 1 || (count <= limits.events && extent.bytes() <= limits.bytes) {
                break extent.floor;
            }
            history.pop_first().map_err(db_error)?;
        }
    };
    trail::record(&txn, audit)?;
    txn.commit().map_err(db_error)?;
    Ok(floor)
}

/// Up to `max` history events after `after`, up to and including `upto`, oldest first.
/// `Compacted` when events after `after` were trimmed.
pub(super) fn read_history(
    db: &Database,
    after: Revision,
    upto: Revision,
    max: usize,
) -> Result<Vec<WatchEvent>, StoreError> {
    let txn = db.begin_read().map_err(db_error)?;
    let meta = txn.open_table(META).map_err(db_error)?;
    let history = txn.open_table(HISTORY).map_err(db_error)?;
    let floor = Extent::of(&meta, &history)?.floor;
    if after < floor {
        return Err(StoreError::Compacted {
            requested: after,
            oldest: floor,
        });
    }
    if after >= upto {
        return Ok(Vec::new());
    }
    let mut events = Vec::new();
    for entry in history.range(after + 1..=upto).map_err(db_error)?.take(max) {
        let (revision, value) = entry.map_err(db_error)?;
        let revision = revision.value();
        let change: ChangeIn = serde_json::from_slice(value.value().1)
            .map_err(|e| corrupt(format!("history/{revision}"), format!("not a change: {e}")))?;
        let change = match change {
            ChangeIn::Put { policy } => Change::Put(stamp(policy, revision)),
            ChangeIn::Delete { name } => Change::Delete { name },
            ChangeIn::Halt { halted } => Change::Halt { halted },
        };
        events.push(WatchEvent { revision, change });
    }
    Ok(events)
}

/// A number from `meta`, `None` when unset.
fn number(
    meta: &impl ReadableTable<&'static str, u64>,
    key: &str,
) -> Result<Option<u64>, StoreError> {
    Ok(meta.get(key).map_err(db_error)?.map(|v| v.value()))
}

/// The history's bytes and entry count, as the bounds count them.
#[cfg(test)]
pub(super) fn history_usage(db: &Database) -> Result<(u64, u64), StoreError> {
    let txn = db.begin_read().map_err(db_error)?;
    let meta = txn.open_table(META).map_err(db_error)?;
    let history = txn.open_table(HISTORY).map_err(db_error)?;
    let bytes = Extent::of(&meta, &history)?.bytes();
    Ok((bytes, history.len().map_err(db_error)?))
}

/// What one history entry counts against the byte bound: its change and its two 8-byte
/// numbers (key and `end`).
fn entry_bytes(change: &[u8]) -> u64 {
    change.len() as u64 + 16
}

fn encode_policy(policy: &Policy) -> Result<Box<RawValue>, StoreError> {
    serde_json::value::to_raw_value(policy).map_err(|e| {
        corrupt(
            format!("policies/{}", policy.metadata.name),
            format!("policy does not serialize: {e}"),
        )
    })
}

fn encode_change(change: &ChangeOut<'_>) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(change)
        .map_err(|e| corrupt("history", format!("change does not serialize: {e}")))
}

/// A policy as readers see it: `status.revision` is the revision of its last write.
pub(super) fn stamp(mut policy: Policy, revision: Revision) -> StoredPolicy {
    policy
        .status
        .get_or_insert_with(PolicyStatus::default)
        .revision = revision;
    StoredPolicy { policy, revision }
}

/// Changes to the file behind the store's back, for the tests of what `load` refuses.
#[cfg(test)]
pub(super) mod tamper {
    use super::*;

    pub fn remove_history(db: &Database, revision: Revision) {
        let txn = db.begin_write().unwrap();
        txn.open_table(HISTORY).unwrap().remove(revision).unwrap();
        txn.commit().unwrap();
    }

    pub fn put_policy_bytes(db: &Database, name: &str, revision: Revision, json: &[u8]) {
        let txn = db.begin_write().unwrap();
        txn.open_table(POLICIES)
            .unwrap()
            .insert(name, (revision, json))
            .unwrap();
        txn.commit().unwrap();
    }
}
