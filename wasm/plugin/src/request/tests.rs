use std::cell::RefCell;
use std::collections::BTreeMap;

use boifi_policy::{compile, Policy, Workload};
use serde_json::json;

use super::*;
use crate::decide::{decide, Decision, PolicySet, Sampler};
use crate::rng::SplitMix64;

const WHOLE_MAP: &str = "<whole map>";

/// Envoy's request headers as the host calls see them, recording every call.
struct Fake {
    headers: Vec<(&'static str, &'static str)>,
    calls: RefCell<Vec<String>>,
    /// A call (header name, or [`WHOLE_MAP`]) that fails.
    failing: Option<&'static str>,
}

impl Fake {
    fn new(headers: &[(&'static str, &'static str)]) -> Self {
        Fake {
            headers: headers.to_vec(),
            calls: RefCell::default(),
            failing: None,
        }
    }

    fn record(&self, call: &str) -> Result<(), HostFailed> {
        self.calls.borrow_mut().push(call.to_owned());
        if self.failing == Some(call) {
            Err(HostFailed)
        } else {
            Ok(())
        }
    }
}

impl HeaderSource for &Fake {
    fn first(&self, name: &str) -> Result<Option<String>, HostFailed> {
        self.record(name)?;
        Ok(self
            .headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| (*v).to_owned()))
    }

    fn all(&self) -> Result<Vec<(String, String)>, HostFailed> {
        self.record(WHOLE_MAP)?;
        Ok(self
            .headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect())
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|n| (*n).to_owned()).collect()
}

fn is(expected: &'static str) -> impl Fn(&str) -> bool {
    move |value| value == expected
}

#[test]
fn nothing_is_read_until_asked_and_each_part_once() {
    let fake = Fake::new(&[(":method", "GET"), (":path", "/a?b")]);
    let list = names(&[]);
    let request = LazyRequest::new(&fake, &list);
    assert!(fake.calls.borrow().is_empty());
    assert_eq!((request.method(), request.method()), ("GET", "GET"));
    assert_eq!((request.path(), request.path()), ("/a?b", "/a?b"));
    assert_eq!(*fake.calls.borrow(), [":method", ":path"]);
    assert!(!request.failed());
}

#[test]
fn an_absent_header_never_matches_and_needs_no_map() {
    let fake = Fake::new(&[(":path", "/")]);
    let list = names(&["x-user"]);
    let request = LazyRequest::new(&fake, &list);
    assert!(!request.any_header_value("x-user", &|_| true));
    assert!(!request.any_header_value("x-user", &|_| true));
    assert_eq!(*fake.calls.borrow(), ["x-user"]);
}

#[test]
fn a_matching_first_value_needs_no_map() {
    let fake = Fake::new(&[("x-user", "a"), ("x-user", "b")]);
    let list = names(&["x-user"]);
    let request = LazyRequest::new(&fake, &list);
    assert!(request.any_header_value("x-user", &is("a")));
    assert_eq!(*fake.calls.borrow(), ["x-user"]);
}

#[test]
fn any_value_of_a_repeated_header_matches_through_the_whole_map_read_once() {
    let fake = Fake::new(&[("x-user", "a"), ("x-other", "c"), ("x-user", "b")]);
    let list = names(&["x-other", "x-user"]);
    let request = LazyRequest::new(&fake, &list);
    assert!(request.any_header_value("x-user", &is("b")));
    assert!(!request.any_header_value("x-user", &is("c")), "other names");
    assert!(request.any_header_value("x-other", &is("c")));
    assert_eq!(*fake.calls.borrow(), ["x-user", WHOLE_MAP, "x-other"]);
    assert!(!request.failed());
}

#[test]
fn a_name_outside_the_list_is_answered_but_not_cached() {
    let fake = Fake::new(&[("x-a", "1")]);
    let list = names(&["x-b"]);
    let request = LazyRequest::new(&fake, &list);
    assert!(request.any_header_value("x-a", &is("1")));
    assert!(request.any_header_value("x-a", &is("1")));
    assert_eq!(*fake.calls.borrow(), ["x-a", "x-a"]);
}

#[test]
fn failed_host_calls_read_as_absent_and_are_reported() {
    let mut fake = Fake::new(&[(":method", "GET"), ("x-user", "a")]);
    fake.failing = Some(":method");
    let list = names(&["x-user"]);
    let request = LazyRequest::new(&fake, &list);
    assert_eq!(request.method(), "");
    assert!(request.failed());

    fake.failing = Some("x-user");
    let request = LazyRequest::new(&fake, &list);
    assert!(!request.any_header_value("x-user", &|_| true));
    assert!(request.failed());

    fake.failing = Some(WHOLE_MAP);
    let request = LazyRequest::new(&fake, &list);
    assert!(!request.any_header_value("x-user", &is("b")));
    assert!(request.failed());
}

/// Like the benchmark's: each policy its own path prefix and `x-user` value.
fn route_policies(n: usize) -> PolicySet {
    let policies = (0..n).map(|i| {
        let policy: Policy = serde_json::from_value(json!({
            "metadata": {"name": format!("p-{i:03}")},
            "spec": {"rules": [{
                "match": {
                    "method": {"exact": "GET"},
                    "path": {"prefix": format!("/route-{i}/")},
                    "headers": [{"name": "X-User", "exact": format!("user-{i}")}]
                },
                "fault": {"abort": {"httpStatus": 503}}
            }]}
        }))
        .expect("well-typed policy");
        compile(&policy).expect("valid policy")
    });
    let workload = Workload {
        namespace: "demo".into(),
        name: "web".into(),
        labels: BTreeMap::new(),
    };
    PolicySet::new(1, false, policies, &workload)
}

#[test]
fn the_set_lists_each_header_name_once() {
    assert_eq!(route_policies(100).header_names(), ["x-user"]);
    assert!(route_policies(0).header_names().is_empty());
}

#[test]
fn a_hundred_rules_that_miss_on_the_path_read_the_path_only() {
    let set = route_policies(100);
    let fake = Fake::new(&[(":method", "GET"), (":path", "/bench"), ("x-user", "bench")]);
    let request = LazyRequest::new(&fake, set.header_names());
    let mut rng = SplitMix64::new(1);
    assert_eq!(
        decide(&request, &set, 0, &mut Sampler::new(&mut rng)),
        Decision::Pass
    );
    assert_eq!(*fake.calls.borrow(), [":path"]);
}

#[test]
fn a_rule_that_gets_to_its_header_reads_that_header() {
    let set = route_policies(100);
    let fake = Fake::new(&[
        (":method", "GET"),
        (":path", "/route-42/x"),
        ("x-user", "someone"),
        ("x-user", "user-42"),
    ]);
    let request = LazyRequest::new(&fake, set.header_names());
    let mut rng = SplitMix64::new(1);
    let Decision::Fault(plan) = decide(&request, &set, 0, &mut Sampler::new(&mut rng)) else {
        panic!("the second x-user value matches policy p-042");
    };
    assert_eq!(set.policy(&plan).map(|p| p.name()), Some("p-042"));
    assert_eq!(
        *fake.calls.borrow(),
        [":path", ":method", "x-user", WHOLE_MAP]
    );
}
