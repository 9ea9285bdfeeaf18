use super::*;

fn keys() -> Keys {
    Keys::new("/boifi/")
}

fn entry<'a>(key: &'a str, value: &'a [u8], mod_revision: i64) -> Entry<'a> {
    Entry {
        key: key.as_bytes(),
        value,
        mod_revision,
    }
}

#[test]
fn keys_are_classified_under_the_prefix_only() {
    let keys = keys();
    assert_eq!(keys.policy("a"), "/boifi/policies/a");
    assert_eq!(keys.classify(b"/boifi/halt"), KeyKind::Halt);
    assert_eq!(
        keys.classify(b"/boifi/policies/a"),
        KeyKind::Policy("a".into())
    );
    assert_eq!(keys.classify(b"/boifi/policies/"), KeyKind::Other);
    assert_eq!(keys.classify(b"/boifi/halted"), KeyKind::Other);
    assert_eq!(keys.classify(b"/other/policies/a"), KeyKind::Other);
    assert_eq!(keys.classify(b"/boifi/policies/\xff"), KeyKind::Other);
    // An unnormalised prefix gets the same keys.
    assert_eq!(Keys::new("boifi").halt, "/boifi/halt");
}

#[test]
fn a_policy_value_is_decoded_with_its_revision() {
    let value = br#"{"metadata":{"name":"a"},"spec":{},"status":{"revision":1,"created_at_ms":5}}"#;
    let stored = decode_policy(&keys(), entry("/boifi/policies/a", value, 42)).unwrap();
    assert_eq!(stored.revision, 42);
    let status = stored.policy.status.unwrap();
    assert_eq!(status.revision, 42);
    assert_eq!(status.created_at_ms, 5, "the rest of the status is kept");

    let no_status = br#"{"metadata":{"name":"a"},"spec":{}}"#;
    let stored = decode_policy(&keys(), entry("/boifi/policies/a", no_status, 7)).unwrap();
    assert_eq!(stored.policy.status.unwrap().revision, 7);
}

#[test]
fn bad_policy_values_are_corrupt_and_name_the_key() {
    let big = vec![b' '; MAX_VALUE_BYTES + 1];
    let cases: [(&str, &[u8], &str); 4] = [
        (
            "/boifi/policies/a",
            b"{not json",
            "not a policy JSON document",
        ),
        (
            "/boifi/policies/a",
            br#"{"metadata":{"name":"b"},"spec":{}}"#,
            "named \"b\"",
        ),
        ("/boifi/policies/a", &big, "bytes"),
        (
            "/boifi/halt",
            br#"{"metadata":{"name":"a"},"spec":{}}"#,
            "not a policy key",
        ),
    ];
    for (key, value, expected) in cases {
        match decode_policy(&keys(), entry(key, value, 1)) {
            Err(StoreError::Corrupt { key: k, reason }) => {
                assert_eq!(k, key);
                assert!(reason.contains(expected), "{reason}");
            }
            other => panic!("expected Corrupt for {key}, got {other:?}"),
        }
    }
}

#[test]
fn halt_values() {
    assert!(decode_halt(entry("/boifi/halt", br#"{"halted":true}"#, 1)).unwrap());
    assert!(!decode_halt(entry("/boifi/halt", br#"{"halted":false}"#, 1)).unwrap());
    for bad in [&b"true"[..], b"{}", b"{\"halted\":\"yes\"}"] {
        assert!(matches!(
            decode_halt(entry("/boifi/halt", bad, 1)),
            Err(StoreError::Corrupt { key, .. }) if key == "/boifi/halt"
        ));
    }
}

#[test]
fn revision_conversions_saturate() {
    assert_eq!(to_u64(-1), 0);
    assert_eq!(to_u64(5), 5);
    assert_eq!(to_i64(u64::MAX), i64::MAX);
    assert_eq!(to_i64(5), 5);
}

#[test]
fn preconditions_become_etcd_compares() {
    assert!(EtcdStore::compare("k", Precondition::None).is_empty());
    assert_eq!(EtcdStore::compare("k", Precondition::Absent).len(), 1);
    assert_eq!(EtcdStore::compare("k", Precondition::Revision(3)).len(), 1);
}

#[tokio::test]
async fn an_unreachable_etcd_fails_within_the_request_timeout() {
    // Port 9 (discard) on loopback has no etcd; nothing listens there in tests.
    let mut config = EtcdConfig::new(vec!["http://127.0.0.1:9".into()], "/boifi/");
    config.request_timeout = Duration::from_millis(500);
    config.connect_timeout = Duration::from_millis(200);
    let store = EtcdStore::connect(config).await.unwrap();
    let started = std::time::Instant::now();
    let err = store.ping().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(
        store.watch(0).await.err(),
        Some(StoreError::Unavailable(_))
    ));
}

#[tokio::test]
async fn no_endpoints_is_an_error() {
    let config = EtcdConfig::new(Vec::new(), "/boifi/");
    assert!(matches!(
        EtcdStore::connect(config).await.err(),
        Some(StoreError::Unavailable(_))
    ));
}
