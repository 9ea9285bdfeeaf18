use super::*;

fn fields(problems: &[FieldProblem]) -> Vec<&str> {
    problems.iter().map(|p| p.field).collect()
}

#[test]
fn every_parameter_is_read() {
    let query = SidecarListQuery::parse(
        "namespace=demo&service=reviews&policy=reviews-abort&state=behind&limit=20",
    )
    .unwrap();
    assert_eq!(
        query,
        SidecarListQuery {
            namespace: Some("demo".into()),
            service: Some("reviews".into()),
            policy: Some("reviews-abort".into()),
            state: Some(SidecarState::Behind),
            limit: 20,
            after: None,
        }
    );
    assert_eq!(
        SidecarListQuery::parse("").unwrap(),
        SidecarListQuery::default()
    );
    let any = SidecarListQuery::parse("namespace=*&service=&policy=&state=").unwrap();
    assert_eq!(any, SidecarListQuery::default(), "empty or * means any");
}

#[test]
fn bad_values_are_all_named() {
    let problems = SidecarListQuery::parse(&format!(
        "namespace={}&policy=Not_A_Name&state=late&limit=0&continue=zz",
        "n".repeat(300)
    ))
    .unwrap_err();
    assert_eq!(
        fields(&problems),
        ["namespace", "policy", "state", "limit", "continue"]
    );
    let problems = SidecarListQuery::parse(&format!("limit={}", MAX_LIMIT + 1)).unwrap_err();
    assert_eq!(fields(&problems), ["limit"]);
}

#[test]
fn unknown_or_repeated_parameters_are_refused_alone() {
    for bad in ["labels=a:b", "state=current&state=behind", "pod=x"] {
        let problems = SidecarListQuery::parse(bad).unwrap_err();
        assert_eq!(fields(&problems), ["query"], "{bad}");
    }
}

#[test]
fn tokens_round_trip_and_reject_what_was_not_issued() {
    let token = continue_token("demo", "reviews-v2-7d9f");
    assert_eq!(
        parse_token(&token),
        Some(("demo".to_owned(), "reviews-v2-7d9f".to_owned()))
    );
    let long = continue_token(&"n".repeat(MAX_NAME_LEN), &"p".repeat(MAX_NAME_LEN));
    assert!(parse_token(&long).is_some());
    // A policy list token (one name, no separator) is not a sidecar token.
    for bad in [encode_token("demo"), "zz".into(), String::new()] {
        assert_eq!(parse_token(&bad), None, "{bad}");
    }
}
