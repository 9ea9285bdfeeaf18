//! The audit trail in the redb file: table `audit`, revision -> the entry as JSON
//! ([`AuditEntry`] without its revision).
//!
//! [`record`] runs inside the write transaction of the change it records, so the change and
//! its entry commit together or not at all. Every write is audited, so the entries' revisions
//! are consecutive from the oldest kept to the store's revision: the newest N entries are the
//! last N keys. Each write also removes what fell out of retention, oldest first, at most
//! [`TRIM_BATCH`] entries.
//!
//! A database without the table (created before the trail existed) reads as an empty trail;
//! the first write creates the table.

#[cfg(test)]
use redb::ReadableTableMetadata;
use redb::{
    Database, ReadableDatabase, ReadableTable, TableDefinition, TableError, WriteTransaction,
};

use super::tables::db_error;
use crate::audit::{PageBuilder, TRIM_BATCH};
use crate::{AuditEntry, AuditPage, AuditQuery, AuditRetention, Revision, StoreError};

const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// A change's entry and the retention to trim to, for [`record`].
#[derive(Debug)]
pub(super) struct Record<'a> {
    pub entry: &'a AuditEntry,
    pub retention: &'a AuditRetention,
}

/// Writes `record.entry` at its revision in `txn`, then trims the oldest entries that are past
/// the retention at the entry's time, at most [`TRIM_BATCH`].
pub(super) fn record(txn: &WriteTransaction, record: &Record<'_>) -> Result<(), StoreError> {
    let Record { entry, retention } = record;
    let mut audit = txn.open_table(AUDIT).map_err(db_error)?;
    audit
        .insert(entry.revision, encode(entry)?.as_slice())
        .map_err(db_error)?;
    let lowest = retention.lowest_kept_position(entry.revision);
    let oldest_ms = retention.oldest_kept_ms(entry.at_ms);
    for _ in 0..TRIM_BATCH {
        let oldest = match audit.first().map_err(db_error)? {
            Some((revision, value)) => {
                let revision = revision.value();
                Some((revision, decode(revision, value.value())?.at_ms))
            }
            None => None,
        };
        let Some((revision, at_ms)) = oldest else {
            break;
        };
        // The entry just written is never past retention at its own time.
        if revision >= lowest && at_ms >= oldest_ms || revision == entry.revision {
            break;
        }
        audit.remove(revision).map_err(db_error)?;
    }
    Ok(())
}

/// A page of the trail as `query` asks, within `retention`.
pub(super) fn read(
    db: &Database,
    query: &AuditQuery,
    retention: &AuditRetention,
) -> Result<AuditPage, StoreError> {
    let txn = db.begin_read().map_err(db_error)?;
    let audit = match txn.open_table(AUDIT) {
        Ok(audit) => audit,
        Err(TableError::TableDoesNotExist(_)) => return Ok(AuditPage::default()),
        Err(e) => return Err(db_error(e)),
    };
    let Some(head) = audit.last().map_err(db_error)?.map(|(k, _)| k.value()) else {
        return Ok(AuditPage::default());
    };
    let mut builder = PageBuilder::new(query, retention, head);
    let below = builder.start_below(head);
    let lowest = builder.lowest_position();
    if below > lowest {
        for item in audit.range(lowest..below).map_err(db_error)?.rev() {
            let (revision, value) = item.map_err(db_error)?;
            let revision = revision.value();
            if !builder.offer(revision, decode(revision, value.value())?) {
                break;
            }
        }
    }
    Ok(builder.finish())
}

/// Entries held, trimmed or not (for tests of the trimming).
#[cfg(test)]
pub(super) fn stored(db: &Database) -> Result<u64, StoreError> {
    let txn = db.begin_read().map_err(db_error)?;
    match txn.open_table(AUDIT) {
        Ok(audit) => audit.len().map_err(db_error),
        Err(TableError::TableDoesNotExist(_)) => Ok(0),
        Err(e) => Err(db_error(e)),
    }
}

fn encode(entry: &AuditEntry) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(entry).map_err(|e| StoreError::Corrupt {
        key: format!("{}: audit/{}", super::tables::DB_FILE, entry.revision),
        reason: format!("entry does not serialize: {e}"),
    })
}

fn decode(revision: Revision, bytes: &[u8]) -> Result<AuditEntry, StoreError> {
    let mut entry: AuditEntry = serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: format!("{}: audit/{revision}", super::tables::DB_FILE),
        reason: format!("not an audit entry: {e}"),
    })?;
    entry.revision = revision;
    Ok(entry)
}
