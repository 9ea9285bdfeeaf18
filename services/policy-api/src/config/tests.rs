use super::*;

fn parse(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

fn invalid_var(pairs: &[(&str, &str)]) -> &'static str {
    match parse(pairs) {
        Err(ConfigError::Invalid(InvalidVar { var, .. })) => var,
        other => panic!("expected an invalid variable, got {other:?}"),
    }
}

#[test]
fn defaults_with_a_tokens_file() {
    let config = parse(&[("BOIFI_TOKENS_FILE", "/etc/boifi/tokens"), ("HOME", "/x")]).unwrap();
    assert_eq!(config.listen_addr, DEFAULT_LISTEN_ADDR);
    assert!(config.store.etcd_endpoints.is_empty());
    assert_eq!(config.store.etcd_prefix, "/boifi/");
    assert_eq!(config.store.data_dir, PathBuf::from("./boifi-data"));
    assert_eq!(
        config.auth,
        AuthConfig::TokensFile("/etc/boifi/tokens".into())
    );
}

#[test]
fn every_variable_is_read() {
    let config = parse(&[
        ("BOIFI_LISTEN_ADDR", "0.0.0.0:9000"),
        ("BOIFI_ETCD_ENDPOINTS", " http://a:2379, ,http://b:2379 "),
        ("BOIFI_ETCD_PREFIX", "/chaos"),
        ("BOIFI_DATA_DIR", "/var/lib/boifi"),
        ("BOIFI_AUTH_DISABLED", "TRUE"),
        (
            "BOIFI_BROADCASTERS",
            " http://boifi-sse-broadcaster-headless.boifi.svc:8081/, ,http://10.0.0.7:9000",
        ),
    ])
    .unwrap();
    assert_eq!(config.listen_addr, "0.0.0.0:9000");
    let broadcasters: Vec<String> = config.broadcasters.iter().map(|b| b.to_string()).collect();
    assert_eq!(
        broadcasters,
        [
            "http://boifi-sse-broadcaster-headless.boifi.svc:8081",
            "http://10.0.0.7:9000"
        ]
    );
    assert_eq!(
        config.store.etcd_endpoints,
        ["http://a:2379", "http://b:2379"]
    );
    assert_eq!(config.store.etcd_prefix, "/chaos/");
    assert_eq!(config.store.data_dir, PathBuf::from("/var/lib/boifi"));
    assert_eq!(config.auth, AuthConfig::Disabled);
}

#[test]
fn empty_values_count_as_unset() {
    let config = parse(&[
        ("BOIFI_ETCD_ENDPOINTS", ""),
        ("BOIFI_LISTEN_ADDR", ""),
        ("BOIFI_AUTH_DISABLED", "true"),
        ("BOIFI_TOKENS_FILE", ""),
    ])
    .unwrap();
    assert!(config.store.etcd_endpoints.is_empty());
    assert_eq!(config.listen_addr, DEFAULT_LISTEN_ADDR);
    assert_eq!(config.auth, AuthConfig::Disabled);
    assert!(config.broadcasters.is_empty());
}

#[test]
fn broadcaster_urls_are_checked() {
    for bad in [
        "boifi-sse-broadcaster:8081",
        "https://b:8081",
        "http://b:8081/v1",
        "http://b:8081?x=1",
        "http://u:p@b:8081",
        "http://b:8081,ftp://c",
    ] {
        let var = invalid_var(&[("BOIFI_AUTH_DISABLED", "true"), ("BOIFI_BROADCASTERS", bad)]);
        assert_eq!(var, "BOIFI_BROADCASTERS", "{bad}");
    }
    let config = parse(&[
        ("BOIFI_AUTH_DISABLED", "true"),
        ("BOIFI_BROADCASTERS", "http://[::1]:8081,http://b"),
    ])
    .unwrap();
    let urls: Vec<String> = config.broadcasters.iter().map(|b| b.to_string()).collect();
    assert_eq!(urls, ["http://[::1]:8081", "http://b:80"]);
}

#[test]
fn whitespace_only_values_count_as_unset_and_values_are_trimmed() {
    let config = parse(&[
        ("BOIFI_LISTEN_ADDR", "  "),
        ("BOIFI_AUTH_DISABLED", " true "),
        ("BOIFI_TOKENS_FILE", " \t"),
    ])
    .unwrap();
    assert_eq!(config.listen_addr, DEFAULT_LISTEN_ADDR);
    assert_eq!(config.auth, AuthConfig::Disabled);
    let config = parse(&[("BOIFI_TOKENS_FILE", " /etc/boifi/tokens\n")]).unwrap();
    assert_eq!(
        config.auth,
        AuthConfig::TokensFile("/etc/boifi/tokens".into())
    );
    assert_eq!(
        parse(&[("BOIFI_AUTH_DISABLED", " ")]),
        Err(ConfigError::NoTokens)
    );
}

#[test]
fn refuses_to_run_without_tokens_unless_disabled() {
    assert_eq!(parse(&[]).unwrap_err(), ConfigError::NoTokens);
    assert_eq!(
        parse(&[("BOIFI_AUTH_DISABLED", "false")]).unwrap_err(),
        ConfigError::NoTokens
    );
    assert_eq!(
        parse(&[("BOIFI_AUTH_DISABLED", "true"), ("BOIFI_TOKENS_FILE", "t")]).unwrap_err(),
        ConfigError::AuthAmbiguous
    );
    let message = ConfigError::NoTokens.to_string();
    assert!(message.contains("BOIFI_TOKENS_FILE") && message.contains("BOIFI_AUTH_DISABLED"));
}

#[test]
fn bad_values_name_their_variable() {
    let auth = ("BOIFI_AUTH_DISABLED", "true");
    assert_eq!(
        invalid_var(&[("BOIFI_AUTH_DISABLED", "yes")]),
        "BOIFI_AUTH_DISABLED"
    );
    for addr in ["8080", ":8080", "localhost:http", "127.0.0.1:70000"] {
        assert_eq!(
            invalid_var(&[auth, ("BOIFI_LISTEN_ADDR", addr)]),
            "BOIFI_LISTEN_ADDR"
        );
    }
    assert_eq!(
        invalid_var(&[auth, ("BOIFI_ETCD_ENDPOINTS", "http://a:1,http://b :2")]),
        "BOIFI_ETCD_ENDPOINTS"
    );
    assert_eq!(
        invalid_var(&[auth, ("BOIFI_ETCD_PREFIX", "/a b/")]),
        "BOIFI_ETCD_PREFIX"
    );
    let err = parse(&[("BOIFI_AUTH_DISABLED", "yes")])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("BOIFI_AUTH_DISABLED:"), "{err}");
}

#[test]
fn ipv6_and_host_names_are_accepted() {
    let auth = ("BOIFI_AUTH_DISABLED", "true");
    for addr in ["[::1]:8080", "localhost:8080"] {
        assert_eq!(
            parse(&[auth, ("BOIFI_LISTEN_ADDR", addr)])
                .unwrap()
                .listen_addr,
            addr
        );
    }
}
