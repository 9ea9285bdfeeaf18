//! Who is waiting for changes (held long polls, open streams), indexed by the names their
//! filters give, so a change is offered only to the clients it may concern.
//!
//! A client sits in one namespace bucket (its namespace, or "any" when it gave none) and, in
//! it, in the buckets of its service names (workload name and `app` label; "any" when a
//! selector requiring any service could concern it): [`Filter::namespace_key`] and
//! [`Filter::service_keys`], which promise that [`Filter::admits`] holds only for selectors
//! whose required namespace and service are among those keys. The candidates of a selector
//! are the clients in the buckets it requires plus the "any" buckets (all buckets for the
//! parts it leaves open), a superset of those it concerns; the caller decides each one with
//! `admits`. So a change that selects one workload costs in proportion to that workload's
//! clients plus the clients that did not say who they are, not to every client connected.

use std::sync::Arc;

use boifi_policy::wire::Filter;
use boifi_policy::Selector;
// Seeded per process: the names come from clients.
use foldhash::{HashMap, HashSet};

/// A registered client's handle.
pub(crate) type Id = u64;

/// Clients by id, with the index; `T` is how to reach one.
pub(crate) struct Registry<T> {
    next_id: Id,
    members: HashMap<Id, Member<T>>,
    index: Namespaces,
}

struct Member<T> {
    filter: Arc<Filter>,
    value: T,
}

#[derive(Default)]
struct Namespaces {
    named: HashMap<Box<str>, Services>,
    any: Services,
}

#[derive(Default)]
struct Services {
    named: HashMap<Box<str>, HashSet<Id>>,
    any: HashSet<Id>,
}

impl Services {
    fn is_empty(&self) -> bool {
        self.named.is_empty() && self.any.is_empty()
    }

    fn insert(&mut self, id: Id, filter: &Filter) {
        match filter.service_keys() {
            None => {
                self.any.insert(id);
            }
            Some((name, app)) => {
                for key in std::iter::once(name).chain(app) {
                    in_bucket(&mut self.named, key, |ids| ids.insert(id));
                }
            }
        }
    }

    fn remove(&mut self, id: Id, filter: &Filter) {
        match filter.service_keys() {
            None => {
                self.any.remove(&id);
            }
            Some((name, app)) => {
                for key in std::iter::once(name).chain(app) {
                    if let Some(ids) = self.named.get_mut(key) {
                        ids.remove(&id);
                        if ids.is_empty() {
                            self.named.remove(key);
                        }
                    }
                }
            }
        }
    }

    fn candidates(&self, service: Option<&str>, out: &mut Vec<Id>) {
        out.extend(&self.any);
        match service {
            Some(service) => out.extend(self.named.get(service).into_iter().flatten()),
            None => out.extend(self.named.values().flatten()),
        }
    }
}

/// Calls `f` on the bucket named `key`, made if missing. The name is copied only for a new
/// bucket: a change hands thousands of clients back at once, mostly to buckets that exist.
fn in_bucket<V: Default, R>(
    buckets: &mut HashMap<Box<str>, V>,
    key: &str,
    f: impl FnOnce(&mut V) -> R,
) -> R {
    match buckets.get_mut(key) {
        Some(bucket) => f(bucket),
        None => f(buckets.entry(key.into()).or_default()),
    }
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry {
            next_id: 0,
            members: HashMap::default(),
            index: Namespaces::default(),
        }
    }
}

impl<T> Registry<T> {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn insert(&mut self, filter: Arc<Filter>, value: T) -> Id {
        let id = self.next_id;
        self.next_id += 1;
        match filter.namespace_key() {
            Some(namespace) => in_bucket(&mut self.index.named, namespace, |services| {
                services.insert(id, &filter)
            }),
            None => self.index.any.insert(id, &filter),
        }
        self.members.insert(id, Member { filter, value });
        id
    }

    pub fn remove(&mut self, id: Id) -> Option<T> {
        let member = self.members.remove(&id)?;
        let filter = &member.filter;
        match filter.namespace_key() {
            Some(namespace) => {
                if let Some(services) = self.index.named.get_mut(namespace) {
                    services.remove(id, filter);
                    if services.is_empty() {
                        self.index.named.remove(namespace);
                    }
                }
            }
            None => self.index.any.remove(id, filter),
        }
        Some(member.value)
    }

    pub fn get(&self, id: Id) -> Option<(&Filter, &T)> {
        self.members
            .get(&id)
            .map(|member| (&*member.filter, &member.value))
    }

    /// The clients a change with these selectors (a policy's new and old one) may concern,
    /// each once, into `out` (cleared first).
    pub fn candidates<'a>(
        &self,
        selectors: impl IntoIterator<Item = &'a Selector>,
        out: &mut Vec<Id>,
    ) {
        out.clear();
        for selector in selectors {
            let service = selector.required_service();
            self.index.any.candidates(service, out);
            match selector.required_namespace() {
                Some(namespace) => {
                    if let Some(services) = self.index.named.get(namespace) {
                        services.candidates(service, out);
                    }
                }
                None => {
                    for services in self.index.named.values() {
                        services.candidates(service, out);
                    }
                }
            }
        }
        // A client may sit in two service buckets, and two selectors may both reach it.
        out.sort_unstable();
        out.dedup();
    }

    /// Every client.
    pub fn ids(&self) -> impl Iterator<Item = Id> + '_ {
        self.members.keys().copied()
    }

    pub fn values(&self) -> impl Iterator<Item = (Id, &T)> + '_ {
        self.members.iter().map(|(id, member)| (*id, &member.value))
    }

    /// Removes every client.
    pub fn clear(&mut self) {
        self.members.clear();
        self.index = Namespaces::default();
    }
}

#[cfg(test)]
mod tests;
