//! etcd backend: one key per policy under `{prefix}policies/`, the halt flag at `{prefix}halt`.
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
    KvClient, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchClient, WatchOptions,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::{
    Change, PolicyStore, Precondition, PutOutcome, Revision, Snapshot, StoreError, StoredPolicy,
    WatchEvent, WatchStream,
};

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
        }
    }
}

pub struct EtcdStore {
    kv: KvClient,
    watch: WatchClient,
    keys: Keys,
    request_timeout: Duration,
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

    /// Runs `op` if `precondition` holds on `key`; otherwise reads the key for the conflict.
    async fn guarded(
        &self,
        what: &str,
        key: &str,
        precondition: Precondition,
        op: TxnOp,
    ) -> Result<TxnResponse, StoreError> {
        let txn = Txn::new()
            .when(Self::compare(key, precondition))
            .and_then(vec![op])
            .or_else(vec![TxnOp::get(
                key,
                Some(GetOptions::new().with_keys_only()),
            )]);
        let mut kv = self.kv.clone();
        let response = self.call(what, kv.txn(txn)).await?;
        if response.succeeded() {
            return Ok(response);
        }
        let current = response.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => Some(get.kvs().first().map(|kv| to_u64(kv.mod_revision()))),
            _ => None,
        });
        Err(StoreError::Conflict {
            current: current.flatten(),
        })
    }
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

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let mut kv = self.kv.clone();
        let options = GetOptions::new().with_prefix();
        let response = self
            .call("snapshot", kv.get(self.keys.prefix.as_str(), Some(options)))
            .await?;
        let revision = response.header().map_or(0, |h| to_u64(h.revision()));
        let mut snapshot = Snapshot {
            revision,
            ..Snapshot::default()
        };
        // etcd returns keys in byte order, so policies come sorted by name.
        for kv in response.kvs() {
            match self.keys.classify(kv.key()) {
                KeyKind::Halt => snapshot.halted = decode_halt(kv.into())?,
                KeyKind::Policy(_) => snapshot
                    .policies
                    .push(decode_policy(&self.keys, kv.into())?),
                KeyKind::Other => {}
            }
        }
        Ok(snapshot)
    }

    async fn put(
        &self,
        policy: &ValidPolicy,
        precondition: Precondition,
    ) -> Result<PutOutcome, StoreError> {
        let key = self.keys.policy(policy.name());
        let value = serde_json::to_vec(policy.policy()).map_err(|e| StoreError::Corrupt {
            key: key.clone(),
            reason: format!("policy does not serialize: {e}"),
        })?;
        let op = TxnOp::put(key.as_str(), value, Some(PutOptions::new().with_prev_key()));
        let response = self.guarded("put", &key, precondition, op).await?;
        let created = response.op_responses().into_iter().any(|r| match r {
            TxnOpResponse::Put(put) => put.prev_key().is_none(),
            _ => false,
        });
        Ok(PutOutcome {
            revision: header_revision(&response),
            created,
        })
    }

    async fn delete(
        &self,
        name: &str,
        precondition: Precondition,
    ) -> Result<Option<Revision>, StoreError> {
        let key = self.keys.policy(name);
        let op = TxnOp::delete(key.as_str(), Some(DeleteOptions::new()));
        let response = self.guarded("delete", &key, precondition, op).await?;
        let deleted = response.op_responses().into_iter().any(|r| match r {
            TxnOpResponse::Delete(delete) => delete.deleted() > 0,
            _ => false,
        });
        Ok(deleted.then(|| header_revision(&response)))
    }

    async fn set_halted(&self, halted: bool) -> Result<Revision, StoreError> {
        let value = serde_json::to_vec(&HaltValue { halted }).map_err(|e| StoreError::Corrupt {
            key: self.keys.halt.clone(),
            reason: e.to_string(),
        })?;
        let mut kv = self.kv.clone();
        let response = self
            .call("set halt", kv.put(self.keys.halt.as_str(), value, None))
            .await?;
        Ok(response.header().map_or(0, |h| to_u64(h.revision())))
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
