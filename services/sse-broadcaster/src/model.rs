//! The broadcaster's picture of the store: every stored policy as written, and the
//! *effective* policies clients receive (expired rules removed, fully expired policies gone).
//!
//! Each operation returns the [`Delta`]s clients must hear about. A delta carries the old and
//! the new effective policy, so a client whose filter matched the old one but not the new one
//! can be told to delete it.

use std::collections::BTreeMap;
use std::sync::Arc;

use boifi_policy::wire::rule_active;
use boifi_policy::{Policy, Selector};
use boifi_store::{Change, Revision, Snapshot, StoredPolicy, WatchEvent};
use serde_json::value::RawValue;

/// A policy as clients receive it, serialized once: `policy` events and every snapshot that
/// holds it splice this JSON.
#[derive(Debug)]
pub(crate) struct PolicyView {
    pub name: String,
    pub selector: Selector,
    /// The effective policy with its `status`, compact JSON.
    pub json: Box<RawValue>,
}

impl PartialEq for PolicyView {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.selector == other.selector
            && self.json.get() == other.json.get()
    }
}

pub(crate) type Policies = Arc<BTreeMap<String, Arc<PolicyView>>>;

/// One thing a client may need to hear about.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Delta {
    /// `new: None` means the policy is gone for clients (deleted, or every rule expired).
    Policy {
        name: String,
        new: Option<Arc<PolicyView>>,
        old: Option<Arc<PolicyView>>,
    },
    Halt(bool),
}

/// What clients see of `stored` at `now_ms`: rules whose `expires_at_ms` has passed are
/// removed (from `spec.rules` and `status.rules` alike); `None` when a policy had rules and all
/// of them expired.
pub(crate) fn effective(stored: &StoredPolicy, now_ms: u64) -> Option<PolicyView> {
    let mut policy: Policy = stored.policy.clone();
    let status = policy.status.get_or_insert_with(Default::default);
    status.revision = stored.revision;
    let live: Vec<bool> = (0..policy.spec.rules.len())
        .map(|i| {
            let expires_at_ms = status.rules.get(i).and_then(|rule| rule.expires_at_ms);
            rule_active(expires_at_ms, now_ms)
        })
        .collect();
    if !live.is_empty() && !live.contains(&true) {
        return None;
    }
    let mut index = 0;
    policy.spec.rules.retain(|_| {
        index += 1;
        live[index - 1]
    });
    let mut index = 0;
    status.rules.retain_mut(|rule| {
        index += 1;
        // Status entries beyond the rules (malformed input) are dropped with their rules.
        let keep = live.get(index - 1).copied().unwrap_or(false);
        rule.expired = false;
        keep
    });
    match serde_json::value::to_raw_value(&policy) {
        Ok(json) => Some(PolicyView {
            name: policy.metadata.name.clone(),
            selector: policy.spec.selector.clone(),
            json,
        }),
        Err(err) => {
            // Unreachable for these types (string map keys only); skip rather than panic.
            log::error!("cannot serialize policy {}: {err}", policy.metadata.name);
            None
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Model {
    pub revision: Revision,
    pub halted: bool,
    stored: BTreeMap<String, StoredPolicy>,
    effective: Policies,
    /// Expiries at or before this time (Unix ms) have been applied.
    expired_through_ms: u64,
}

impl Model {
    pub fn policies(&self) -> Policies {
        self.effective.clone()
    }

    /// Applies one store change.
    pub fn apply(&mut self, event: WatchEvent, now_ms: u64) -> Vec<Delta> {
        self.revision = event.revision;
        match event.change {
            Change::Put(stored) => {
                let name = stored.policy.metadata.name.clone();
                let view = effective(&stored, now_ms);
                self.stored.insert(name.clone(), stored);
                self.set(name, view).into_iter().collect()
            }
            Change::Delete { name } => {
                self.stored.remove(&name);
                self.set(name, None).into_iter().collect()
            }
            Change::Halt { halted } => {
                self.halted = halted;
                vec![Delta::Halt(halted)]
            }
        }
    }

    /// Replaces everything with a snapshot (first load, or after the watch fell behind a
    /// compaction) and returns what changed.
    pub fn replace(&mut self, snapshot: Snapshot, now_ms: u64) -> Vec<Delta> {
        let mut deltas = Vec::new();
        if snapshot.halted != self.halted {
            deltas.push(Delta::Halt(snapshot.halted));
        }
        self.revision = snapshot.revision;
        self.halted = snapshot.halted;
        let mut incoming: BTreeMap<String, StoredPolicy> = snapshot
            .policies
            .into_iter()
            .map(|stored| (stored.policy.metadata.name.clone(), stored))
            .collect();
        let gone: Vec<String> = self
            .stored
            .keys()
            .filter(|name| !incoming.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            self.stored.remove(&name);
            deltas.extend(self.set(name, None));
        }
        for (name, stored) in std::mem::take(&mut incoming) {
            if self.stored.get(&name) == Some(&stored) {
                continue;
            }
            let view = effective(&stored, now_ms);
            self.stored.insert(name.clone(), stored);
            deltas.extend(self.set(name, view));
        }
        deltas
    }

    /// Applies every expiry up to `now_ms`.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Delta> {
        let since = self.expired_through_ms;
        self.expired_through_ms = self.expired_through_ms.max(now_ms);
        let due: Vec<(String, Option<PolicyView>)> = self
            .stored
            .iter()
            // Rules that acted at `since` and no longer do at `now_ms`.
            .filter(|(_, stored)| {
                expiries(stored)
                    .any(|at| rule_active(Some(at), since) && !rule_active(Some(at), now_ms))
            })
            .map(|(name, stored)| (name.clone(), effective(stored, now_ms)))
            .collect();
        due.into_iter()
            .filter_map(|(name, view)| self.set(name, view))
            .collect()
    }

    /// The next moment an expiry is due, if any.
    pub fn next_expiry(&self) -> Option<u64> {
        self.stored
            .values()
            .flat_map(expiries)
            .filter(|at| rule_active(Some(*at), self.expired_through_ms))
            .min()
    }

    fn set(&mut self, name: String, view: Option<PolicyView>) -> Option<Delta> {
        let current = self.effective.get(&name);
        if current.map(|c| c.json.get()) == view.as_ref().map(|v| v.json.get()) {
            return None;
        }
        let policies = Arc::make_mut(&mut self.effective);
        let new = view.map(Arc::new);
        let old = match &new {
            Some(new) => policies.insert(name.clone(), new.clone()),
            None => policies.remove(&name),
        };
        Some(Delta::Policy { name, new, old })
    }
}

fn expiries(stored: &StoredPolicy) -> impl Iterator<Item = u64> + '_ {
    stored
        .policy
        .status
        .iter()
        .flat_map(|status| status.rules.iter().filter_map(|rule| rule.expires_at_ms))
}

#[cfg(test)]
mod tests;
