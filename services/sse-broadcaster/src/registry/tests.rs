use std::collections::BTreeSet;

use super::*;

fn filter(namespace: Option<&str>, service: Option<&str>, labels: Option<&str>) -> Arc<Filter> {
    Arc::new(Filter::parse(namespace, service, labels).unwrap())
}

fn selector(namespace: &str, service: &str, labels: &[(&str, &str)]) -> Selector {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Selector {
        namespace: opt(namespace),
        service: opt(service),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn candidates<T>(registry: &Registry<T>, selector: &Selector) -> BTreeSet<Id> {
    let mut out = Vec::new();
    registry.candidates([selector], &mut out);
    let unique: BTreeSet<Id> = out.iter().copied().collect();
    assert_eq!(unique.len(), out.len(), "each candidate once");
    unique
}

/// Every filter shape a client can send, against every selector shape.
#[test]
fn candidates_include_every_client_a_selector_concerns() {
    let mut registry = Registry::default();
    let mut filters = Vec::new();
    for namespace in [None, Some("demo"), Some("prod")] {
        for service in [None, Some("reviews"), Some("reviews-v1")] {
            for labels in [
                None,
                Some(""),
                Some("app:reviews"),
                Some("app:reviews,version:v2"),
                Some("app:ratings"),
            ] {
                let filter = filter(namespace, service, labels);
                filters.push((registry.insert(filter.clone(), ()), filter));
            }
        }
    }
    for sel_ns in ["", "*", "demo", "prod", "other"] {
        for sel_svc in ["", "*", "reviews", "reviews-v1", "ratings", "other"] {
            for sel_labels in [&[][..], &[("version", "v2")][..]] {
                let selector = selector(sel_ns, sel_svc, sel_labels);
                let found = candidates(&registry, &selector);
                for (id, filter) in &filters {
                    if filter.admits(&selector) {
                        assert!(found.contains(id), "{filter:?} misses {selector:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn a_selective_change_leaves_other_workloads_out() {
    let mut registry = Registry::default();
    let reviews = registry.insert(
        filter(Some("demo"), Some("reviews-v1"), Some("app:reviews")),
        (),
    );
    let ratings = registry.insert(
        filter(Some("demo"), Some("ratings-v1"), Some("app:ratings")),
        (),
    );
    let elsewhere = registry.insert(filter(Some("prod"), Some("reviews-v1"), None), ());
    let anonymous = registry.insert(filter(None, None, None), ());
    let namespace_only = registry.insert(filter(Some("demo"), None, None), ());

    // By `app` label, in one namespace.
    assert_eq!(
        candidates(&registry, &selector("demo", "reviews", &[])),
        BTreeSet::from([reviews, anonymous, namespace_only])
    );
    // By workload name, any namespace.
    assert_eq!(
        candidates(&registry, &selector("", "reviews-v1", &[])),
        BTreeSet::from([reviews, elsewhere, anonymous, namespace_only])
    );
    // A whole namespace.
    assert_eq!(
        candidates(&registry, &selector("prod", "*", &[])),
        BTreeSet::from([elsewhere, anonymous])
    );
    // Everyone.
    assert_eq!(
        candidates(&registry, &selector("", "", &[])).len(),
        registry.len()
    );
    assert_eq!(registry.ids().count(), 5);
    assert!(registry.get(ratings).is_some());
}

#[test]
fn removal_empties_the_index() {
    let mut registry = Registry::default();
    let ids: Vec<Id> = (0..50)
        .map(|i| {
            let ns = format!("ns{}", i % 5);
            let svc = format!("svc{i}-v1");
            let labels = format!("app:svc{i}");
            registry.insert(
                filter(Some(&ns), Some(&svc), Some(&labels)),
                format!("client {i}"),
            )
        })
        .collect();
    assert_eq!(registry.remove(ids[7]).as_deref(), Some("client 7"));
    assert_eq!(registry.remove(ids[7]), None);
    assert!(candidates(&registry, &selector("ns2", "svc7", &[])).is_empty());
    for id in ids {
        registry.remove(id);
    }
    assert_eq!(registry.len(), 0);
    assert!(registry.index.named.is_empty() && registry.index.any.is_empty());
    let id = registry.insert(filter(None, None, None), "again".to_owned());
    registry.clear();
    assert!(registry.get(id).is_none());
}
