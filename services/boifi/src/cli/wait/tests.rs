use boifi_policy::PolicyStatus;
use serde_json::json;

use super::*;

fn read(enforcement: Option<Enforcement>) -> Policy {
    let mut policy: Policy = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {"rules": [{"fault": {"abort": {"httpStatus": 503}}}]}
    }))
    .unwrap();
    policy.status = Some(PolicyStatus {
        revision: 42,
        enforcement,
        ..PolicyStatus::default()
    });
    policy
}

fn enforcement(selected: u64, enforcing: u64, unreachable: u64) -> Enforcement {
    Enforcement {
        selected,
        enforcing,
        lagging: (0..(selected - enforcing).min(2))
            .map(|i| format!("pod-{i}"))
            .collect(),
        lagging_count: selected - enforcing,
        unreachable_replicas: unreachable,
    }
}

#[test]
fn a_policy_is_done_when_every_selected_sidecar_enforces_it() {
    assert_eq!(
        Progress::of(&read(Some(enforcement(3, 3, 0)))).unwrap(),
        Progress::Enforced {
            revision: 42,
            sidecars: 3
        }
    );
    assert_eq!(
        Progress::of(&read(Some(enforcement(0, 0, 0)))).unwrap(),
        Progress::NoSidecars { revision: 42 }
    );
    let waiting = Progress::of(&read(Some(enforcement(5, 1, 0)))).unwrap();
    assert_eq!(
        waiting.why_waiting(),
        "1 of 5 selected sidecars enforce revision 42; lagging: pod-0, pod-1 (and 2 more)"
    );
}

#[test]
fn an_unreachable_replica_keeps_it_waiting() {
    for e in [enforcement(3, 3, 1), enforcement(0, 0, 2)] {
        let progress = Progress::of(&read(Some(e))).unwrap();
        assert!(matches!(progress, Progress::Waiting { .. }), "{progress:?}");
        assert!(progress.why_waiting().contains("did not answer"));
    }
}

#[test]
fn a_server_without_sidecar_status_is_an_error() {
    let err = Progress::of(&read(None)).unwrap_err();
    assert!(err.to_string().contains("BOIFI_BROADCASTERS"), "{err}");
}
