//! One gathering of the sidecar tables, merged and indexed for the questions reads ask: which
//! sidecars a selector picks and how many enforce a revision, the faults injected per policy,
//! and a filtered page of the table. Plain functions of the replicas' answers, no I/O.
//!
//! Policy lists ask the enforcement question once per policy, so the work per policy must not
//! grow with the number of sidecars: sidecars are grouped by identity (namespace, workload,
//! labels: the replicas of a Deployment share one), each group sorted by revision, and the
//! groups indexed by namespace. A selector is matched once per group
//! ([`Selector::matches`], the plugin's own rule) in the namespaces it can match
//! ([`Selector::may_match`]), and the members behind a revision are a prefix of their group.

use std::collections::{BTreeMap, HashMap};

use boifi_policy::wire::{
    FaultCounts, ReplicaSummary, SidecarList, SidecarStatus, SidecarsPage, UnreachableReplica,
};
use boifi_policy::{Enforcement, Selector, Workload};

use super::query::SidecarListQuery;

/// Pod names in `status.enforcement.lagging`, at most.
pub const MAX_LAGGING_NAMES: usize = 20;

/// What asking one replica gave.
#[derive(Debug, Clone)]
pub struct ReplicaRead {
    /// Where it was asked (`ip:port`, `in-process`).
    pub address: String,
    /// Its whole table (every page), or why not.
    pub outcome: Result<SidecarsPage, String>,
}

/// Sidecars of one identity, indices into [`SidecarView::sidecars`].
#[derive(Debug)]
struct Group {
    workload: Workload,
    /// Sorted by revision, then by position (namespace, pod).
    members: Vec<usize>,
}

/// The merged table of every replica that answered, and who did not.
#[derive(Debug, Default)]
pub struct SidecarView {
    /// Sorted by namespace, then pod; one entry per sidecar.
    sidecars: Vec<SidecarStatus>,
    replicas: Vec<ReplicaSummary>,
    unreachable: Vec<UnreachableReplica>,
    groups: Vec<Group>,
    /// The group of each sidecar.
    group_of: Vec<usize>,
    /// Group indices by namespace.
    namespaces: BTreeMap<String, Vec<usize>>,
    /// Per policy, the sum over sidecars.
    injected: HashMap<String, FaultCounts>,
}

impl SidecarView {
    /// Merges the replicas' tables. A sidecar listed by two replicas (it moved, and the one it
    /// left has not forgotten it yet) is kept as the replica that saw it last says.
    pub fn build(reads: Vec<ReplicaRead>) -> SidecarView {
        let mut replicas = Vec::new();
        let mut unreachable = Vec::new();
        let mut latest: HashMap<(String, String), SidecarStatus> = HashMap::new();
        for read in reads {
            let page = match read.outcome {
                Ok(page) => page,
                Err(error) => {
                    unreachable.push(UnreachableReplica {
                        address: read.address,
                        error,
                    });
                    continue;
                }
            };
            replicas.push(ReplicaSummary {
                replica: page.replica,
                address: read.address,
                revision: page.revision,
                halted: page.halted,
                sidecars: page.sidecars.len() as u64,
            });
            for sidecar in page.sidecars {
                let key = (sidecar.namespace.clone(), sidecar.pod.clone());
                match latest.get(&key) {
                    Some(kept) if kept.last_seen >= sidecar.last_seen => {}
                    _ => {
                        latest.insert(key, sidecar);
                    }
                }
            }
        }
        let mut sidecars: Vec<SidecarStatus> = latest.into_values().collect();
        sidecars.sort_unstable_by(|a, b| position(a).cmp(&position(b)));
        let mut view = SidecarView {
            sidecars,
            replicas,
            unreachable,
            ..SidecarView::default()
        };
        view.index();
        view
    }

    /// Groups by identity, the namespace index and the injected sums.
    fn index(&mut self) {
        // (namespace, workload, labels) -> index in `groups`.
        type IdentityKey<'s> = (&'s str, &'s str, Option<&'s BTreeMap<String, String>>);
        let mut by_identity: HashMap<IdentityKey<'_>, usize> = HashMap::new();
        let mut groups: Vec<Group> = Vec::new();
        for (i, sidecar) in self.sidecars.iter().enumerate() {
            let key = (
                sidecar.namespace.as_str(),
                sidecar.workload.as_str(),
                sidecar.labels.as_ref(),
            );
            let group = *by_identity.entry(key).or_insert_with(|| {
                groups.push(Group {
                    workload: workload(sidecar),
                    members: Vec::new(),
                });
                groups.len() - 1
            });
            groups[group].members.push(i);
            self.group_of.push(group);
            for (policy, counts) in &sidecar.injected {
                let sum = self.injected.entry(policy.clone()).or_default();
                sum.abort = sum.abort.saturating_add(counts.abort);
                sum.delay = sum.delay.saturating_add(counts.delay);
            }
        }
        for (g, group) in groups.iter_mut().enumerate() {
            let sidecars = &self.sidecars;
            // Positions are already in order, so a stable sort by revision keeps it as the
            // tie-break.
            group.members.sort_by_key(|&i| sidecars[i].revision);
            self.namespaces
                .entry(group.workload.namespace.clone())
                .or_default()
                .push(g);
        }
        self.groups = groups;
    }

    /// The store revision every replica that answered serves (the lowest of theirs); `u64::MAX`
    /// when none answered (no replica to wait for).
    pub fn revision(&self) -> u64 {
        self.replicas
            .iter()
            .map(|r| r.revision)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Live sidecars listed.
    pub fn len(&self) -> usize {
        self.sidecars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sidecars.is_empty()
    }

    pub fn unreachable(&self) -> &[UnreachableReplica] {
        &self.unreachable
    }

    /// The groups `selector` matches.
    fn selected_groups<'a>(&'a self, selector: &'a Selector) -> impl Iterator<Item = &'a Group> {
        self.namespaces
            .iter()
            .filter(|(namespace, _)| selector.may_match(Some(namespace), None))
            .flat_map(|(_, groups)| groups.iter().map(|&g| &self.groups[g]))
            .filter(|group| selector.matches(&group.workload))
    }

    /// `status.enforcement` of a policy with `selector` at `revision`: the live sidecars it
    /// selects, those at `revision` or later, and the names of the furthest behind.
    pub fn enforcement(&self, selector: &Selector, revision: u64) -> Enforcement {
        let mut selected = 0;
        let mut lagging_count = 0;
        // The first few behind of each group: together they hold the furthest behind overall.
        let mut behind: Vec<usize> = Vec::new();
        for group in self.selected_groups(selector) {
            selected += group.members.len();
            let lagging = group
                .members
                .partition_point(|&i| self.sidecars[i].revision < revision);
            lagging_count += lagging;
            behind.extend(&group.members[..lagging.min(MAX_LAGGING_NAMES)]);
        }
        behind.sort_unstable_by_key(|&i| (self.sidecars[i].revision, i));
        Enforcement {
            selected: selected as u64,
            enforcing: (selected - lagging_count) as u64,
            lagging: behind
                .iter()
                .take(MAX_LAGGING_NAMES)
                .map(|&i| self.sidecars[i].pod.clone())
                .collect(),
            lagging_count: lagging_count as u64,
            unreachable_replicas: self.unreachable.len() as u64,
        }
    }

    /// `status.injected` of `policy`: its counts summed over the live sidecars.
    pub fn injected(&self, policy: &str) -> FaultCounts {
        self.injected.get(policy).copied().unwrap_or_default()
    }

    /// A page of the sidecars `query` asks for; `policy` is the selector of its `policy`
    /// parameter. `namespace` and `service` match as a selector with those fields would
    /// (`service`: the workload name or the `app` label).
    pub fn list(&self, query: &SidecarListQuery, policy: Option<&Selector>) -> SidecarList {
        let workload_filter = Selector {
            namespace: query.namespace.clone(),
            service: query.service.clone(),
            labels: BTreeMap::new(),
        };
        let start = match &query.after {
            Some((namespace, pod)) => self.sidecars.partition_point(|s| {
                (s.namespace.as_str(), s.pod.as_str()) <= (namespace.as_str(), pod.as_str())
            }),
            None => 0,
        };
        let mut matching = self.sidecars[start..]
            .iter()
            .zip(&self.group_of[start..])
            .filter(|(sidecar, &group)| {
                let identity = &self.groups[group].workload;
                workload_filter.matches(identity)
                    && policy.is_none_or(|selector| selector.matches(identity))
                    && query.state.is_none_or(|state| sidecar.state == state)
            })
            .map(|(sidecar, _)| sidecar);
        let sidecars: Vec<SidecarStatus> = matching.by_ref().take(query.limit).cloned().collect();
        let more = matching.next().is_some();
        let continue_token = match sidecars.last() {
            Some(last) if more => Some(super::query::continue_token(&last.namespace, &last.pod)),
            _ => None,
        };
        SidecarList {
            sidecars,
            replicas: self.replicas.clone(),
            unreachable: self.unreachable.clone(),
            continue_token,
        }
    }
}

/// A sidecar's place in the table.
fn position(sidecar: &SidecarStatus) -> (&str, &str) {
    (&sidecar.namespace, &sidecar.pod)
}

/// The identity selectors match. Unknown labels (they did not fit the sidecar's report)
/// count as none, so a selector that needs labels does not select the sidecar.
fn workload(sidecar: &SidecarStatus) -> Workload {
    Workload {
        namespace: sidecar.namespace.clone(),
        name: sidecar.workload.clone(),
        labels: sidecar.labels.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests;
