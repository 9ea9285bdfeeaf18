//! etcd backend: one key per policy under `{prefix}policies/`, the halt flag at `{prefix}halt`,
//! the audit trail under `{prefix}audit/` ([`trail`]: each change and its entry in one
//! transaction).
//!
//! Revisions are etcd's own: a policy's revision is its key's `mod_revision`, a snapshot's is the
//! response header's. Preconditions are etcd transactions, so they hold across API replicas.
//! Every call has a deadline ([`EtcdConfig::request_timeout`]): an unreachable etcd turns into
//! [`StoreError::Unavailable`] instead of a hang.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use boifi_policy::{Policy, PolicyStatus, ValidPolicy};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KeyValue,
    KvClient, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchClient, WatchOptions,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::{
    Attribution, AuditAction, AuditPage, AuditQuery, AuditRetention, Change, PolicyStore,
    Precondition, PutOutcome, Revision, Snapshot, StoreError, StoredPolicy, WatchEvent,
    WatchStream,
};

mod trail;

use trail::{entry_value, put_entry, AuditedChange, Outcome, Trail};

/// Largest value we accept from etcd. Policy bodies are limited to 1 MiB by the API; anything
/// bigger was not written by us.
pub const MAX_VALUE_BYTES: usize = 2 * 1024 * 1024;

/// gRPC message bound for snapshots (all policies in one response).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// HTTP/2 keep-alive, so a watch on a silently dead connection breaks instead of waiting forever.
/// etcd rejects pings more often than every 5 s (`--grpc-keepalive-min-time`).
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    /// Key prefix, e.g. `/boifi/` (always ends with `/`).
    pub prefix: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub audit_retention: AuditRetention,
}

impl EtcdConfig {
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

    /// Config with default timeouts; `prefix` is normalised (see [`crate::normalize_prefix`]).
    pub fn new(endpoints: Vec<String>, prefix: &str) -> Self {
        EtcdConfig {
            endpoints,
            prefix: crate::normalize_prefix(prefix),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            audit_retention: AuditRetention::default(),
        }
    }
}

pub struct EtcdStore {
    kv: KvClient,
    watch: WatchClient,
    keys: Keys,
    request_timeout: Duration,
    trail: Trail,
}

impl EtcdStore {
    /// Builds the client. The connection itself is lazy: this succeeds while etcd is down (the
    /// service starts and reports not-ready); only malformed endpoints fail here.
    pub async fn connect(config: EtcdConfig) -> Result<Self, StoreError> {
        if config.endpoints.is_empty() {
            return Err(StoreError::Unavailable(
                "no etcd endpoints configured".into(),
            ));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, config.request_timeout)
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        let client = tokio::time::timeout(
            config.connect_timeout,
            Client::connect(&config.endpoints, Some(options)),
        )
        .await
        .map_err(|_| {
            StoreError::Unavailable(format!(
                "connecting to etcd {:?} took longer than {:?}",
                config.endpoints, config.connect_timeout
            ))
        })?
        .map_err(|e| {
            StoreError::Unavailable(format!("etcd endpoints {:?}: {e}", config.endpoints))
        })?;
        Ok(EtcdStore {
            kv: client
                .kv_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
            watch: client.watch_client(),
            keys: Keys::new(&config.prefix),
            request_timeout: config.request_timeout,
            trail: Trail::new(config.audit_retention),
        })
    }

    /// Runs one etcd call under the request deadline.
    async fn call<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.request_timeout, fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!("etcd {what}: {e}"))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "etcd {what}: no answer within {:?}",
                self.request_timeout
            ))),
        }
    }

    fn compare(key: &str, precondition: Precondition) -> Vec<Compare> {
        match precondition {
            Precondition::None => Vec::new(),
            Precondition::Absent => vec![Compare::create_revision(key, CompareOp::Equal, 0)],
            Precondition::Revision(r) => {
                vec![Compare::mod_revision(key, CompareOp::Equal, to_i64(r))]
            }
        }
    }

    /// The keys-only read of `key` that answers a refused precondition.
    fn conflict_read(key: &str) -> TxnOp {
        TxnOp::get(key, Some(GetOptions::new().with_keys_only()))
    }
}

/// The policy's current revision from a refused transaction's reads (`None`: absent).
fn current_revision(responses: &[TxnOpResponse]) -> Option<Revision> {
    responses.iter().find_map(|r| match r {
        TxnOpResponse::Get(get) => Some(get.kvs().first().map(|kv| to_u64(kv.mod_revision()))),
        _ => None,
    })?
}

#[async_trait]
impl PolicyStore for EtcdStore {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // A linearizable read goes through the leader: it proves a quorum answers, which
        // `status` would not.
        let mut kv = self.kv.clone();
        let options = GetOptions::new().with_count_only();
        self.call("ping", kv.get(self.keys.halt.as_str(), Some(options)))
            .await
            .map(|_| ())
    }

    async fn get(&self, name: &str) -> Result<Option<StoredPolicy>, StoreError> {
        let key = self.keys.policy(name);
        let mut kv = self.kv.clone();
        let response = self.call("get", kv.get(key.as_str(), None)).await?;
        response
            .kvs()
            .first()
            .map(|kv| decode_policy(&self.keys, kv.into()))
            .transpose()
    }

    async fn halt_state(&self) -> Result<(bool, Revision), StoreError> {
        let mut kv = self.kv.clone();
        let response = self
            .call("halt_state", kv.get(self.keys.halt.as_str(), None))
            .await?;
        let revision = response.header().map_or(0, |h| to_u64(h.revision()));
        let halted = match response.kvs().first() {
            Some(kv) => decode_halt(kv.into())?,
            None => false,
        };
        Ok((halted, revision))
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        // Policies and the halt flag, not the audit trail: two reads in one transaction, so
        // at one revision.
        let txn = Txn::new().and_then(vec![
            TxnOp::get(
                self.keys.policies.as_str(),
                Some(GetOptions::new().with_prefix()),
            ),
            TxnOp::get(self.keys.halt.as_str(), None),
        ]);
        let mut kv = self.kv.clone();
        let response = self.call("snapshot", kv.txn(txn)).await?;
        let mut snapshot = Snapshot {
            revision: header_revision(&response),
            ..Snapshot::default()
        };
        // etcd returns keys in byte order, so policies come sorted by name.
        for op in response.op_responses() {
            let TxnOpResponse::Get(get) = op else {
                continue;
            };
            for kv in get.kvs() {
                match self.keys.classify(kv.key()) {
                    KeyKind::Halt => snapshot.halted = decode_halt(kv.into())?,
                    KeyKind::Policy(_) => snapshot
                        .policies
                        .push(decode_policy(&self.keys, kv.into())?),
                    KeyKind::Other => {}
                }
            }
        }
        Ok(snapshot)
    }

    async fn put(
        &self,
        policy: &ValidPolicy,
        precondition: Precondition,
        by: &Attribution,
    ) -> Result<PutOutcome, StoreError> {
        let name = policy.name();
        let key = self.keys.policy(name);
        let value = serde_json::to_vec(policy.policy()).map_err(|e| StoreError::Corrupt {
            key: key.clone(),
            reason: format!("policy does not serialize: {e}"),
        })?;
        let create = entry_value(by, AuditAction::Create, Some(name))?;
        let replace = entry_value(by, AuditAction::Replace, Some(name))?;
        // Create or replace is known only inside the transaction: a nested one writes the
        // policy with the entry that says which.
        let ops = |entry: &str| {
            let put = TxnOp::put(key.as_str(), value.clone(), None);
            let choose = Txn::new()
                .when(vec![Compare::create_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then(vec![put.clone(), put_entry(entry, create.clone())])
                .or_else(vec![put, put_entry(entry, replace.clone())]);
            vec![TxnOp::txn(choose)]
        };
        let change = AuditedChange {
            what: "put",
            guard: Self::compare(&key, precondition),
            ops: Box::new(ops),
            reads: vec![Self::conflict_read(&key)],
            by,
        };
        match self.audited(change).await? {
            Outcome::Committed {
                revision,
                responses,
            } => {
                let created = responses.iter().any(|r| match r {
                    TxnOpResponse::Txn(nested) => nested.succeeded(),
                    _ => false,
                });
                Ok(PutOutcome { revision, created })
            }
            Outcome::Refused(reads) => Err(StoreError::Conflict {
                current: current_revision(&reads),
            }),
        }
    }

    async fn delete(
        &self,
        name: &str,
        precondition: Precondition,
        by: &Attribution,
    ) -> Result<Option<Revision>, StoreError> {
        let key = self.keys.policy(name);
        if precondition == Precondition::Absent {
            // Nothing to delete when it holds; nothing written, nothing audited.
            let mut kv = self.kv.clone();
            let options = GetOptions::new().with_keys_only();
            let response = self
                .call("delete", kv.get(key.as_str(), Some(options)))
                .await?;
            return match response.kvs().first() {
                Some(kv) => Err(StoreError::Conflict {
                    current: Some(to_u64(kv.mod_revision())),
                }),
                None => Ok(None),
            };
        }
        let mut guard = Self::compare(&key, precondition);
        // Deleting nothing writes no entry.
        guard.push(Compare::create_revision(
            key.as_str(),
            CompareOp::Greater,
            0,
        ));
        let entry = entry_value(by, AuditAction::Delete, Some(name))?;
        let ops = |entry_key: &str| {
            vec![
                TxnOp::delete(key.as_str(), Some(DeleteOptions::new())),
                put_entry(entry_key, entry.clone()),
            ]
        };
        let change = AuditedChange {
            what: "delete",
            guard,
            ops: Box::new(ops),
            reads: vec![Self::conflict_read(&key)],
            by,
        };
        match self.audited(change).await? {
            Outcome::Committed { revision, .. } => Ok(Some(revision)),
            Outcome::Refused(reads) => match (current_revision(&reads), precondition) {
                (None, Precondition::None) => Ok(None),
                (current, _) => Err(StoreError::Conflict { current }),
            },
        }
    }

    async fn set_halted(&self, halted: bool, by: &Attribution) -> Result<Revision, StoreError> {
        let value = serde_json::to_vec(&HaltValue { halted }).map_err(|e| StoreError::Corrupt {
            key: self.keys.halt.clone(),
            reason: e.to_string(),
        })?;
        let entry = entry_value(by, AuditAction::of_halt(halted), None)?;
        let ops = |entry_key: &str| {
            vec![
                TxnOp::put(self.keys.halt.as_str(), value.clone(), None),
                put_entry(entry_key, entry.clone()),
            ]
        };
        let change = AuditedChange {
            what: "set halt",
            guard: Vec::new(),
            ops: Box::new(ops),
            reads: Vec::new(),
            by,
        };
        match self.audited(change).await? {
            Outcome::Committed { revision, .. } => Ok(revision),
            // No guard, so nothing can refuse it.
            Outcome::Refused(_) => Err(StoreError::Unavailable(
                "etcd set halt: refused without a condition".into(),
            )),
        }
    }

    async fn audit(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        self.read_trail(query).await
    }

    async fn watch(&self, after: Revision) -> Result<WatchStream, StoreError> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(to_i64(after.saturating_add(1)));
        let mut client = self.watch.clone();
        let stream = self
            .call(
                "watch",
                client.watch(self.keys.prefix.as_str(), Some(options)),
            )
            .await?;
        let state = WatchState {
            stream,
            keys: self.keys.clone(),
            after,
            pending: VecDeque::new(),
            finished: false,
        };
        Ok(futures::stream::unfold(state, WatchState::next).boxed())
    }
}

struct WatchState {
    stream: etcd_client::WatchStream,
    keys: Keys,
    after: Revision,
    pending: VecDeque<WatchEvent>,
    finished: bool,
}

impl WatchState {
    /// Yields decoded events one by one; the first error (broken stream, compaction, corrupt
    /// value) is yielded once and ends the stream.
    async fn next(mut self) -> Option<(Result<WatchEvent, StoreError>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            if self.finished {
                return None;
            }
            match self.receive().await {
                Ok(()) => {}
                Err(e) => {
                    self.finished = true;
                    return Some((Err(e), self));
                }
            }
        }
    }

    async fn receive(&mut self) -> Result<(), StoreError> {
        let response = match self.stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return Err(StoreError::Unavailable("etcd watch stream ended".into())),
            Err(e) => return Err(StoreError::Unavailable(format!("etcd watch: {e}"))),
        };
        if response.compact_revision() > 0 {
            return Err(StoreError::Compacted {
                requested: self.after,
                // Watching from `compact_revision` still works, i.e. after `compact_revision - 1`.
                oldest: to_u64(response.compact_revision()).saturating_sub(1),
            });
        }
        if response.canceled() {
            return Err(StoreError::Unavailable(format!(
                "etcd cancelled the watch: {}",
                response.cancel_reason()
            )));
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let revision = to_u64(kv.mod_revision());
            let change = match (self.keys.classify(kv.key()), event.event_type()) {
                (KeyKind::Policy(_), EventType::Put) => {
                    Change::Put(decode_policy(&self.keys, kv.into())?)
                }
                (KeyKind::Policy(name), EventType::Delete) => Change::Delete { name },
                (KeyKind::Halt, EventType::Put) => Change::Halt {
                    halted: decode_halt(kv.into())?,
                },
                // Nobody deletes the halt key through this store; absent means not halted.
                (KeyKind::Halt, EventType::Delete) => Change::Halt { halted: false },
                (KeyKind::Other, _) => continue,
            };
            self.after = revision;
            self.pending.push_back(WatchEvent { revision, change });
        }
        Ok(())
    }
}

/// The keys of one prefix.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
    policies: String,
    halt: String,
    audit_head: String,
    /// Prefix of the entries, each at `{audit_entries}<position>`.
    audit_entries: String,
}

#[derive(Debug, PartialEq)]
enum KeyKind {
    Halt,
    Policy(String),
    Other,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        let prefix = crate::normalize_prefix(prefix);
        Keys {
            policies: format!("{prefix}policies/"),
            halt: format!("{prefix}halt"),
            audit_head: format!("{prefix}audit/head"),
            audit_entries: format!("{prefix}audit/entries/"),
            prefix,
        }
    }

    fn policy(&self, name: &str) -> String {
        format!("{}{name}", self.policies)
    }

    fn classify(&self, key: &[u8]) -> KeyKind {
        if key == self.halt.as_bytes() {
            return KeyKind::Halt;
        }
        match key.strip_prefix(self.policies.as_bytes()) {
            Some(name) if !name.is_empty() => match std::str::from_utf8(name) {
                Ok(name) => KeyKind::Policy(name.to_owned()),
                Err(_) => KeyKind::Other,
            },
            _ => KeyKind::Other,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct HaltValue {
    halted: bool,
}

/// The parts of an etcd key-value we read (a plain struct so decoding is unit-testable).
#[derive(Debug, Clone, Copy)]
struct Entry<'a> {
    key: &'a [u8],
    value: &'a [u8],
    mod_revision: i64,
}

impl<'a> From<&'a KeyValue> for Entry<'a> {
    fn from(kv: &'a KeyValue) -> Self {
        Entry {
            key: kv.key(),
            value: kv.value(),
            mod_revision: kv.mod_revision(),
        }
    }
}

impl Entry<'_> {
    fn corrupt(&self, reason: String) -> StoreError {
        StoreError::Corrupt {
            key: String::from_utf8_lossy(self.key).into_owned(),
            reason,
        }
    }

    fn check_size(&self) -> Result<(), StoreError> {
        if self.value.len() > MAX_VALUE_BYTES {
            return Err(self.corrupt(format!(
                "value is {} bytes, more than the {MAX_VALUE_BYTES} allowed",
                self.value.len()
            )));
        }
        Ok(())
    }
}

/// Parses a policy value and stamps its revision; the name in the body must match the key.
fn decode_policy(keys: &Keys, entry: Entry<'_>) -> Result<StoredPolicy, StoreError> {
    entry.check_size()?;
    let KeyKind::Policy(name) = keys.classify(entry.key) else {
        return Err(entry.corrupt("not a policy key".into()));
    };
    let mut policy: Policy = serde_json::from_slice(entry.value)
        .map_err(|e| entry.corrupt(format!("not a policy JSON document: {e}")))?;
    if policy.metadata.name != name {
        return Err(entry.corrupt(format!("holds a policy named {:?}", policy.metadata.name)));
    }
    let revision = to_u64(entry.mod_revision);
    policy
        .status
        .get_or_insert_with(PolicyStatus::default)
        .revision = revision;
    Ok(StoredPolicy { policy, revision })
}

fn decode_halt(entry: Entry<'_>) -> Result<bool, StoreError> {
    entry.check_size()?;
    serde_json::from_slice::<HaltValue>(entry.value)
        .map(|v| v.halted)
        .map_err(|e| entry.corrupt(format!("expected {{\"halted\": bool}}: {e}")))
}

fn header_revision(response: &TxnResponse) -> Revision {
    response.header().map_or(0, |h| to_u64(h.revision()))
}

/// etcd revisions are positive `i64`s; anything else would be a server bug, read as 0.
fn to_u64(revision: i64) -> Revision {
    u64::try_from(revision).unwrap_or(0)
}

/// Revisions above `i64::MAX` cannot exist in etcd; saturating keeps comparisons false.
fn to_i64(revision: Revision) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
