//! The audit trail in etcd.
//!
//! # Keys
//! - `{prefix}audit/head`: the position of the newest entry (decimal).
//! - `{prefix}audit/entries/<position, 20 digits>`: one entry, JSON ([`AuditEntry`] without
//!   its revision). The entry's `mod_revision` is the revision of the change: both are written
//!   in one transaction, and etcd gives every key written by a transaction its revision.
//!
//! # Why a head
//! A change's revision is known only after its transaction commits, so it cannot name the
//! entry's key. The head gives entries a position that grows by one per change, in revision
//! order: every audited transaction compares the head's `mod_revision` with the one this
//! store last saw and moves it by one. Two writers (API replicas) that race both read the
//! head back from the failed transaction and the loser tries again; writes of one store
//! instance queue on a mutex instead of racing each other. With positions dense and in key
//! order, "the newest N" is a key range, a page is a bounded range read, and trimming is a
//! range delete.
//!
//! # Trimming
//! Each audited transaction also deletes, in the same transaction:
//! - by count, the batch of [`TRIM_BATCH`] positions just below the lowest one kept;
//! - what the previous transaction of this instance found out of retention among the oldest
//!   [`TRIM_BATCH`] entries (a range read at the end of every audited transaction: it costs a
//!   bounded read, never an extra round trip).
//!
//! Deletes only remove entries that were already out of retention, so replicas trimming the
//! same range at once do no harm; an entry is never deleted twice with a different meaning.

use std::sync::atomic::{AtomicU64, Ordering};

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use tokio::sync::Mutex;

use super::{header_revision, to_i64, to_u64, EtcdStore, Keys};
use crate::audit::{PageBuilder, TRIM_BATCH};
use crate::{
    Attribution, AuditAction, AuditEntry, AuditPage, AuditQuery, AuditRetention, Revision,
    StoreError,
};

/// Times an audited write goes round when other writers keep moving the head.
const HEAD_ATTEMPTS: usize = 16;
/// Entries read per range request of a page.
const READ_WINDOW: u64 = 500;
/// Digits of a position in a key: every `u64` fits, so key order is number order.
const POSITION_DIGITS: usize = 20;

/// The head as this store instance last saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Head {
    position: u64,
    /// 0 when the head key does not exist.
    mod_revision: i64,
}

#[derive(Debug, Default)]
struct TrailState {
    head: Head,
    /// Positions below this one were out of retention when last looked at.
    trim_until: Option<u64>,
}

/// The trail of one store: its retention and what this instance knows of the head.
#[derive(Debug)]
pub(super) struct Trail {
    retention: AuditRetention,
    state: Mutex<TrailState>,
    /// Audited transactions that had to go round again (for tests of the race).
    retries: AtomicU64,
}

impl Trail {
    pub fn new(retention: AuditRetention) -> Self {
        Trail {
            retention: AuditRetention {
                max_entries: retention.max_entries.max(1),
                ..retention
            },
            state: Mutex::new(TrailState::default()),
            retries: AtomicU64::new(0),
        }
    }
}

/// Builds a change's operations, given the key of its audit entry.
pub(super) type OpsForEntry<'a> = Box<dyn Fn(&str) -> Vec<TxnOp> + Send + Sync + 'a>;

/// A change to write with its audit entry.
pub(super) struct AuditedChange<'a> {
    pub what: &'static str,
    /// The change's own conditions (its precondition).
    pub guard: Vec<Compare>,
    /// The change's operations, given the key of its entry.
    pub ops: OpsForEntry<'a>,
    /// What to read when the guard fails (the caller's conflict answer).
    pub reads: Vec<TxnOp>,
    pub by: &'a Attribution,
}

/// How an audited transaction ended.
pub(super) enum Outcome {
    /// Written; the responses of the change's own operations, in order.
    Committed {
        revision: Revision,
        responses: Vec<TxnOpResponse>,
    },
    /// The guard failed; the responses of `reads`.
    Refused(Vec<TxnOpResponse>),
}

impl Keys {
    pub(super) fn audit_entry(&self, position: u64) -> String {
        format!(
            "{}{position:0width$}",
            self.audit_entries,
            width = POSITION_DIGITS
        )
    }

    fn audit_position(&self, key: &[u8]) -> Option<u64> {
        let digits = key.strip_prefix(self.audit_entries.as_bytes())?;
        if digits.len() != POSITION_DIGITS || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    }
}

/// The entry `value` as JSON bytes.
pub(super) fn entry_value(
    by: &Attribution,
    action: AuditAction,
    policy: Option<&str>,
) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(&by.entry(0, action, policy)).map_err(|e| StoreError::Corrupt {
        key: "audit entry".into(),
        reason: e.to_string(),
    })
}

/// `TxnOp::put` of an entry.
pub(super) fn put_entry(key: &str, value: Vec<u8>) -> TxnOp {
    TxnOp::put(key, value, None::<PutOptions>)
}

/// The ranges (`from` inclusive, `None` meaning the first entry; `to` exclusive) to delete:
/// what the last look found out of retention (`trim_until`), and the batch just below the
/// `lowest` position kept. Overlapping ones are one range.
fn trim_ranges(trim_until: Option<u64>, lowest: u64) -> Vec<(Option<u64>, u64)> {
    let window = (lowest > 1).then(|| (lowest.saturating_sub(TRIM_BATCH).max(1), lowest));
    match (trim_until, window) {
        (None, None) => Vec::new(),
        (Some(until), None) => vec![(None, until)],
        (None, Some((from, to))) => vec![(Some(from), to)],
        (Some(until), Some((from, to))) if until >= from => vec![(None, until.max(to))],
        (Some(until), Some((from, to))) => vec![(None, until), (Some(from), to)],
    }
}

impl EtcdStore {
    /// Writes `change` and its audit entry in one transaction, moving the head by one.
    pub(super) async fn audited(&self, change: AuditedChange<'_>) -> Result<Outcome, StoreError> {
        let trail = &self.trail;
        let mut state = trail.state.lock().await;
        for _ in 0..HEAD_ATTEMPTS {
            let position = state.head.position + 1;
            let own_ops = (change.ops)(&self.keys.audit_entry(position));
            let own_count = own_ops.len();
            let mut then = own_ops;
            then.push(TxnOp::put(
                self.keys.audit_head.as_str(),
                position.to_string(),
                None,
            ));
            let lowest = trail.retention.lowest_kept_position(position);
            for (from, to) in trim_ranges(state.trim_until, lowest) {
                let from = match from {
                    Some(from) => self.keys.audit_entry(from),
                    None => self.keys.audit_entries.clone(),
                };
                let options = DeleteOptions::new().with_range(self.keys.audit_entry(to));
                then.push(TxnOp::delete(from, Some(options)));
            }
            // Last, so it sees this transaction's deletes: the oldest entries left.
            then.push(TxnOp::get(
                self.keys.audit_entries.as_str(),
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_limit(to_i64(TRIM_BATCH)),
                ),
            ));
            let mut compares = change.guard.clone();
            compares.push(Compare::mod_revision(
                self.keys.audit_head.as_str(),
                CompareOp::Equal,
                state.head.mod_revision,
            ));
            let mut otherwise = change.reads.clone();
            otherwise.push(TxnOp::get(self.keys.audit_head.as_str(), None));
            let txn = Txn::new().when(compares).and_then(then).or_else(otherwise);
            let mut kv = self.kv.clone();
            let response = self.call(change.what, kv.txn(txn)).await?;
            let succeeded = response.succeeded();
            let revision = header_revision(&response);
            let mut responses = response.op_responses();
            if succeeded {
                state.head = Head {
                    position,
                    mod_revision: to_i64(revision),
                };
                let oldest = match responses.pop() {
                    Some(TxnOpResponse::Get(get)) => self.oldest(get.kvs())?,
                    _ => Vec::new(),
                };
                state.trim_until = trail
                    .retention
                    .trim_until(&oldest, position, change.by.at_ms());
                responses.truncate(own_count);
                return Ok(Outcome::Committed {
                    revision,
                    responses,
                });
            }
            let head = match responses.pop() {
                Some(TxnOpResponse::Get(get)) => self.head(get.kvs().first())?,
                _ => return Err(unexpected(change.what)),
            };
            if head == state.head {
                // The head held, so the change's own guard failed.
                return Ok(Outcome::Refused(responses));
            }
            state.head = head;
            trail.retries.fetch_add(1, Ordering::Relaxed);
        }
        Err(StoreError::Unavailable(format!(
            "etcd {}: the audit trail's head moved {HEAD_ATTEMPTS} times in a row",
            change.what
        )))
    }

    /// Audited transactions that went round again because another writer moved the head.
    pub fn audit_retries(&self) -> u64 {
        self.trail.retries.load(Ordering::Relaxed)
    }

    /// A page of the trail: the head, then bounded range reads downwards.
    pub(super) async fn read_trail(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        let mut kv = self.kv.clone();
        let response = self
            .call(
                "audit head",
                kv.get(self.keys.audit_head.as_str(), None::<GetOptions>),
            )
            .await?;
        let head = self.head(response.kvs().first())?;
        let mut builder = PageBuilder::new(query, &self.trail.retention, head.position);
        let mut below = builder.start_below(head.position);
        let lowest = builder.lowest_position().max(1);
        while below > lowest && !builder.is_done() {
            let from = below.saturating_sub(READ_WINDOW).max(lowest);
            let options = GetOptions::new().with_range(self.keys.audit_entry(below));
            let response = self
                .call(
                    "audit",
                    kv.get(self.keys.audit_entry(from).as_str(), Some(options)),
                )
                .await?;
            let kvs = response.kvs();
            for kv in kvs.iter().rev() {
                let (position, entry) = self.decode_entry(kv)?;
                if !builder.offer(position, entry) {
                    break;
                }
            }
            // Positions are dense from the oldest entry up: a short window is the end.
            if (kvs.len() as u64) < below - from {
                break;
            }
            below = from;
        }
        Ok(builder.finish())
    }

    fn head(&self, kv: Option<&KeyValue>) -> Result<Head, StoreError> {
        let Some(kv) = kv else {
            return Ok(Head::default());
        };
        let position = std::str::from_utf8(kv.value())
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| StoreError::Corrupt {
                key: self.keys.audit_head.clone(),
                reason: "expected a whole number".into(),
            })?;
        Ok(Head {
            position,
            mod_revision: kv.mod_revision(),
        })
    }

    fn decode_entry(&self, kv: &KeyValue) -> Result<(u64, AuditEntry), StoreError> {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let corrupt = |reason: String| StoreError::Corrupt {
            key: key.clone(),
            reason,
        };
        let position = self
            .keys
            .audit_position(kv.key())
            .ok_or_else(|| corrupt("not an audit entry key".into()))?;
        if kv.value().len() > super::MAX_VALUE_BYTES {
            return Err(corrupt("value too large".into()));
        }
        let mut entry: AuditEntry = serde_json::from_slice(kv.value())
            .map_err(|e| corrupt(format!("not an audit entry: {e}")))?;
        entry.revision = to_u64(kv.mod_revision());
        Ok((position, entry))
    }

    /// `(position, at_ms)` of the oldest entries read.
    fn oldest(&self, kvs: &[KeyValue]) -> Result<Vec<(u64, u64)>, StoreError> {
        kvs.iter()
            .map(|kv| {
                self.decode_entry(kv)
                    .map(|(position, entry)| (position, entry.at_ms))
            })
            .collect()
    }
}

fn unexpected(what: &str) -> StoreError {
    StoreError::Unavailable(format!("etcd {what}: unexpected transaction response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_keys_sort_as_their_positions() {
        let keys = Keys::new("/boifi/");
        assert_eq!(
            keys.audit_entry(42),
            "/boifi/audit/entries/00000000000000000042"
        );
        assert!(keys.audit_entry(9) < keys.audit_entry(10));
        assert!(keys.audit_entry(u64::MAX - 1) < keys.audit_entry(u64::MAX));
        assert_eq!(
            keys.audit_position(keys.audit_entry(u64::MAX).as_bytes()),
            Some(u64::MAX)
        );
        assert_eq!(keys.audit_position(b"/boifi/audit/entries/42"), None);
        assert_eq!(keys.audit_position(b"/boifi/audit/head"), None);
    }

    #[test]
    fn trimming_deletes_the_window_below_the_kept_and_what_was_found() {
        assert_eq!(trim_ranges(None, 1), vec![]);
        assert_eq!(trim_ranges(None, 100), vec![(Some(68), 100)]);
        assert_eq!(trim_ranges(None, 10), vec![(Some(1), 10)]);
        assert_eq!(trim_ranges(Some(5), 1), vec![(None, 5)]);
        assert_eq!(trim_ranges(Some(70), 100), vec![(None, 100)]);
        assert_eq!(trim_ranges(Some(120), 100), vec![(None, 120)]);
        assert_eq!(
            trim_ranges(Some(20), 100),
            vec![(None, 20), (Some(68), 100)]
        );
    }
}
