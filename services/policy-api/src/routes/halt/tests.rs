use super::*;

fn fields(result: Result<HaltRequest, ValidationErrors>) -> Vec<String> {
    result
        .unwrap_err()
        .errors
        .into_iter()
        .map(|e| e.field)
        .collect()
}

#[test]
fn a_reason_in_json_or_yaml() {
    let want = HaltRequest {
        reason: Some("game day: stop everything".to_owned()),
    };
    assert_eq!(
        parse_halt_request(br#"{"reason":"game day: stop everything"}"#, Format::Json).unwrap(),
        want
    );
    assert_eq!(
        parse_halt_request(b"reason: 'game day: stop everything'\n", Format::Yaml).unwrap(),
        want
    );
    for (body, format) in [
        (br#"{"reason":null}"#.as_slice(), Format::Json),
        (br#"{"reason":""}"#.as_slice(), Format::Json),
        (b"null".as_slice(), Format::Json),
        (b"null\n".as_slice(), Format::Yaml),
        (b"# nothing\n".as_slice(), Format::Yaml),
    ] {
        assert_eq!(
            parse_halt_request(body, format).unwrap(),
            HaltRequest::default()
        );
    }
}

#[test]
fn unknown_fields_and_bad_reasons_are_named() {
    assert_eq!(
        fields(parse_halt_request(
            br#"{"why":"x","reason":5}"#,
            Format::Json
        )),
        ["reason", "why"]
    );
    let long = format!(r#"{{"reason":"{}"}}"#, "x".repeat(MAX_REASON_CHARS + 1));
    assert_eq!(
        fields(parse_halt_request(long.as_bytes(), Format::Json)),
        ["reason"]
    );
    let exact = format!(r#"{{"reason":"{}"}}"#, "é".repeat(MAX_REASON_CHARS));
    assert!(parse_halt_request(exact.as_bytes(), Format::Json).is_ok());
    assert_eq!(
        fields(parse_halt_request(
            br#"{"reason":"one\nforged log line"}"#,
            Format::Json
        )),
        ["reason"]
    );
    for (body, format) in [
        (b"[1]".as_slice(), Format::Json),
        (b"{".as_slice(), Format::Json),
        (b"- a\n".as_slice(), Format::Yaml),
        (b"a: [\n".as_slice(), Format::Yaml),
    ] {
        assert_eq!(fields(parse_halt_request(body, format)), [""]);
    }
}
