use std::path::PathBuf;

use serde::Deserialize;

use super::*;

#[derive(Debug, Deserialize, PartialEq)]
struct Vars {
    listen_addr: Option<String>,
    tokens_file: Option<String>,
    data_dir: Option<String>,
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn blank_and_whitespace_only_values_count_as_unset() {
    let vars: Vars = from_vars(pairs(&[
        ("BOIFI_LISTEN_ADDR", ""),
        ("BOIFI_TOKENS_FILE", " \t "),
        ("BOIFI_DATA_DIR", "\n"),
    ]))
    .unwrap();
    assert_eq!(
        vars,
        Vars {
            listen_addr: None,
            tokens_file: None,
            data_dir: None,
        }
    );
}

#[test]
fn values_are_trimmed_and_other_variables_ignored() {
    let vars: Vars = from_vars(pairs(&[
        ("BOIFI_LISTEN_ADDR", " 0.0.0.0:9000 "),
        ("BOIFI_TOKENS_FILE", "/etc/boifi/tokens\n"),
        ("HOME", "/root"),
        ("LISTEN_ADDR", "ignored:1"),
        ("boifi_data_dir", "not ours: the prefix is upper case"),
    ]))
    .unwrap();
    assert_eq!(vars.listen_addr.as_deref(), Some("0.0.0.0:9000"));
    assert_eq!(vars.tokens_file.as_deref(), Some("/etc/boifi/tokens"));
    assert_eq!(vars.data_dir, None);
}

#[test]
fn inner_whitespace_is_kept() {
    let kept: Vec<_> = boifi_vars(pairs(&[("BOIFI_ETCD_ENDPOINTS", " a, b ")])).collect();
    assert_eq!(kept, pairs(&[("BOIFI_ETCD_ENDPOINTS", "a, b")]));
}

#[test]
fn a_value_that_does_not_fit_is_an_env_error() {
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Numbers {
        count: Option<u32>,
    }
    let err = from_vars::<Numbers, _>(pairs(&[("BOIFI_COUNT", "many")])).unwrap_err();
    assert!(err.to_string().starts_with("environment: "), "{err}");
}

#[test]
fn listen_addr_needs_a_host_and_a_numeric_port() {
    assert_eq!(
        listen_addr(None, "127.0.0.1:8080").unwrap(),
        "127.0.0.1:8080"
    );
    for addr in ["0.0.0.0:9000", "[::1]:8080", "localhost:8080"] {
        assert_eq!(listen_addr(Some(addr.into()), "x").unwrap(), addr);
    }
    for addr in [
        "8080",
        ":8080",
        "localhost:http",
        "127.0.0.1:70000",
        "host:",
    ] {
        let err = listen_addr(Some(addr.into()), "x").unwrap_err();
        assert_eq!(err.var, "BOIFI_LISTEN_ADDR", "{addr}");
        assert!(
            err.to_string()
                .starts_with("BOIFI_LISTEN_ADDR: expected host:port"),
            "{err}"
        );
    }
}

fn server(list: &[(&str, &str)]) -> Result<ServerSettings, InvalidVar> {
    from_vars::<ServerVars, _>(pairs(list))
        .unwrap()
        .check("127.0.0.1:8080")
}

#[test]
fn server_defaults_are_loopback_and_the_embedded_store() {
    for list in [
        &[][..],
        &[
            ("BOIFI_LISTEN_ADDR", " "),
            ("BOIFI_ETCD_ENDPOINTS", ""),
            ("BOIFI_ETCD_PREFIX", " "),
            ("BOIFI_DATA_DIR", ""),
        ],
    ] {
        assert_eq!(
            server(list).unwrap(),
            ServerSettings {
                listen_addr: "127.0.0.1:8080".into(),
                store: StoreSettings {
                    etcd_endpoints: Vec::new(),
                    etcd_prefix: "/boifi/".into(),
                    data_dir: PathBuf::from("./boifi-data"),
                    audit_retention: AuditRetention::default(),
                },
            }
        );
    }
}

#[test]
fn server_variables_are_read() {
    let settings = server(&[
        ("BOIFI_LISTEN_ADDR", "0.0.0.0:9000"),
        ("BOIFI_ETCD_ENDPOINTS", " http://a:2379, ,http://b:2379 "),
        ("BOIFI_ETCD_PREFIX", "chaos"),
        ("BOIFI_DATA_DIR", "/var/lib/boifi"),
    ]);
    let expected = ServerSettings {
        listen_addr: "0.0.0.0:9000".into(),
        store: StoreSettings {
            etcd_endpoints: vec!["http://a:2379".into(), "http://b:2379".into()],
            etcd_prefix: "/chaos/".into(),
            data_dir: PathBuf::from("/var/lib/boifi"),
            audit_retention: AuditRetention::default(),
        },
    };
    assert_eq!(settings, Ok(expected));
}

#[test]
fn audit_retention_is_read_and_checked() {
    let settings = server(&[
        ("BOIFI_AUDIT_MAX_ENTRIES", "250"),
        ("BOIFI_AUDIT_MAX_AGE", "12h 30m"),
    ])
    .unwrap();
    assert_eq!(
        settings.store.audit_retention,
        AuditRetention {
            max_entries: 250,
            max_age: std::time::Duration::from_secs(12 * 3600 + 1800),
        }
    );
    for (var, value) in [
        ("BOIFI_AUDIT_MAX_ENTRIES", "0"),
        ("BOIFI_AUDIT_MAX_ENTRIES", "10000001"),
        ("BOIFI_AUDIT_MAX_ENTRIES", "many"),
        ("BOIFI_AUDIT_MAX_AGE", "0s"),
        ("BOIFI_AUDIT_MAX_AGE", "11years"),
        ("BOIFI_AUDIT_MAX_AGE", "30"),
    ] {
        let err = server(&[(var, value)]).unwrap_err();
        assert_eq!(err.var, var, "{value}");
        assert!(err.reason.contains(value), "{err}");
    }
}

#[test]
fn bad_server_variables_are_named() {
    for (var, value) in [
        ("BOIFI_LISTEN_ADDR", "nowhere"),
        ("BOIFI_ETCD_ENDPOINTS", "http://a:1,http://b :2"),
        ("BOIFI_ETCD_PREFIX", "/a b/"),
    ] {
        let err = server(&[(var, value)]).unwrap_err();
        assert_eq!(err.var, var, "{value}");
    }
    assert_eq!(
        server(&[("BOIFI_ETCD_PREFIX", "/a b/")])
            .unwrap_err()
            .to_string(),
        "BOIFI_ETCD_PREFIX: must not contain whitespace"
    );
}
