use std::cell::RefCell;

use serde_json::json;

use super::*;
use crate::{compile, Policy};

fn compiled(value: serde_json::Value) -> CompiledPolicy {
    let policy: Policy = serde_json::from_value(value).expect("well-typed policy");
    compile(&policy).expect("valid policy")
}

fn rule_matching(matches: serde_json::Value) -> serde_json::Value {
    json!({"match": matches, "fault": {"abort": {"httpStatus": 503}}})
}

#[test]
fn header_names_are_lower_case_and_each_once_in_rule_order() {
    let policy = compiled(json!({
        "metadata": {"name": "names"},
        "spec": {"rules": [
            rule_matching(json!({"headers": [
                {"name": "X-User", "exact": "a"},
                {"name": "x-tenant", "prefix": "t"}
            ]})),
            rule_matching(json!({"path": {"prefix": "/api"}})),
            rule_matching(json!({"headers": [
                {"name": "x-user", "regex": "b.*"},
                {"name": "Accept", "exact": "text/plain"}
            ]}))
        ]}
    }));
    let per_rule: Vec<Vec<&str>> = policy
        .rules()
        .iter()
        .map(|r| r.header_names().collect())
        .collect();
    assert_eq!(
        per_rule,
        [vec!["x-user", "x-tenant"], vec![], vec!["x-user", "accept"]]
    );
    assert_eq!(policy.header_names(), ["x-user", "x-tenant", "accept"]);
}

#[test]
fn a_policy_without_header_conditions_names_none() {
    let policy = compiled(json!({
        "metadata": {"name": "none"},
        "spec": {"rules": [rule_matching(json!({"method": {"exact": "GET"}}))]}
    }));
    assert!(policy.header_names().is_empty());
}

/// A lookup that records what the rule asked for.
struct Recording {
    asked: RefCell<Vec<String>>,
    values: Vec<(&'static str, &'static str)>,
}

impl RequestLookup for Recording {
    fn method(&self) -> &str {
        self.asked.borrow_mut().push(":method".into());
        "GET"
    }

    fn path(&self) -> &str {
        self.asked.borrow_mut().push(":path".into());
        "/api/x?q=1"
    }

    fn any_header_value(&self, name: &str, accept: &dyn Fn(&str) -> bool) -> bool {
        self.asked.borrow_mut().push(name.into());
        self.values
            .iter()
            .filter(|(n, _)| *n == name)
            .any(|(_, v)| accept(v))
    }
}

#[test]
fn a_rule_asks_only_up_to_the_first_failing_condition() {
    let policy = compiled(json!({
        "metadata": {"name": "order"},
        "spec": {"rules": [
            rule_matching(json!({
                "method": {"exact": "GET"},
                "path": {"prefix": "/other"},
                "headers": [{"name": "x-user", "exact": "a"}]
            })),
            rule_matching(json!({
                "path": {"prefix": "/api"},
                "headers": [{"name": "x-a", "exact": "1"}, {"name": "x-b", "exact": "2"}]
            }))
        ]}
    }));
    let lookup = Recording {
        asked: RefCell::default(),
        values: vec![("x-a", "0"), ("x-a", "1"), ("x-b", "2")],
    };
    assert!(!policy.rules()[0].matches(&lookup));
    assert_eq!(*lookup.asked.borrow(), [":path"], "the path first");
    lookup.asked.borrow_mut().clear();
    assert!(
        policy.rules()[1].matches(&lookup),
        "any value of a repeated header"
    );
    assert_eq!(*lookup.asked.borrow(), [":path", "x-a", "x-b"]);
}
