//! Builders shared by the unit tests.

use boifi_policy::{
    AbortFault, Fault, Metadata, Policy, PolicySpec, PolicyStatus, Rule, RuleStatus, Selector,
};
use boifi_store::StoredPolicy;

/// A policy for `service` with one abort rule per entry of `expiries` (Unix ms, or none).
pub(crate) fn policy(name: &str, service: &str, expiries: &[Option<u64>]) -> Policy {
    let rule = Rule {
        matches: Default::default(),
        fault: Fault {
            abort: Some(AbortFault {
                http_status: Some(503),
                grpc_status: None,
                body: None,
                headers: Default::default(),
            }),
            ..Default::default()
        },
    };
    Policy {
        metadata: Metadata {
            name: name.to_owned(),
            version: None,
        },
        spec: PolicySpec {
            selector: Selector {
                namespace: Some("demo".to_owned()),
                service: Some(service.to_owned()),
                labels: Default::default(),
            },
            rules: expiries.iter().map(|_| rule.clone()).collect(),
            ..Default::default()
        },
        status: Some(PolicyStatus {
            rules: expiries
                .iter()
                .map(|expires_at_ms| RuleStatus {
                    expires_at_ms: *expires_at_ms,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
    }
}

pub(crate) fn stored(name: &str, service: &str, revision: u64) -> StoredPolicy {
    StoredPolicy {
        policy: policy(name, service, &[None]),
        revision,
    }
}
