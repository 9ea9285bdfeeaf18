use actix_web::http::header::HeaderValue;
use actix_web::ResponseError;

use super::*;

const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-abcdefghijkl";

fn sample() -> Auth {
    let text =
        format!("# comment line\n\nalice writer {ALICE}\r\n  bob   reader\t{BOB}  \n# trailing\n");
    Auth::parse(text.as_bytes()).expect("valid tokens file")
}

fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
}

fn line_error(text: &str) -> (usize, String) {
    match Auth::parse(text.as_bytes()) {
        Err(TokensError::Line { line, reason }) => (line, reason),
        other => panic!("expected a line error, got {other:?}"),
    }
}

#[test]
fn parses_names_roles_and_skips_comments_and_blank_lines() {
    let auth = sample();
    assert_eq!(auth.token_count(), 2);
    let alice = auth.authenticate(Some(&bearer(ALICE))).unwrap();
    assert_eq!(
        alice,
        Principal {
            name: "alice".into(),
            role: Role::Writer
        }
    );
    let bob = auth.authenticate(Some(&bearer(BOB))).unwrap();
    assert_eq!(
        bob,
        Principal {
            name: "bob".into(),
            role: Role::Reader
        }
    );
}

#[test]
fn bad_lines_name_the_line_and_never_echo_the_token() {
    let secret = "s3cret-value-that-must-not-leak";
    let cases = [
        (
            format!("alice writer {ALICE}\nbob admin {secret}\n"),
            2,
            "role",
        ),
        ("\n\nbob reader\n".to_owned(), 3, "found 2 field(s)"),
        (
            format!("bob reader {secret} extra\n"),
            1,
            "found 4 field(s)",
        ),
        ("bob reader short\n".to_owned(), 1, "characters long"),
        (format!("b*b reader {secret}\n"), 1, "name must be"),
        (
            format!("bob reader {ALICE}\nbob writer {secret}\n"),
            2,
            "already used on line 1",
        ),
        (
            format!("bob reader {secret}\ncarol writer {secret}\n"),
            2,
            "same token as line 1",
        ),
        // Columns swapped: the token sits where the role belongs.
        (format!("bob {secret} reader-token-1234567\n"), 1, "role"),
    ];
    for (text, want_line, want_reason) in cases {
        let (line, reason) = line_error(&text);
        assert_eq!(line, want_line, "{text:?}: {reason}");
        assert!(reason.contains(want_reason), "{text:?}: {reason}");
        assert!(!reason.contains(secret), "token leaked: {reason}");
    }
}

#[test]
fn non_utf8_line_is_reported_by_number() {
    let mut bytes = format!("alice writer {ALICE}\n").into_bytes();
    bytes.extend_from_slice(b"bob reader \xff\xfe\n");
    match Auth::parse(&bytes) {
        Err(TokensError::Line { line: 2, reason }) => assert!(reason.contains("UTF-8")),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_file_without_tokens_is_an_error() {
    assert!(matches!(
        Auth::parse(b"# only a comment\n\n"),
        Err(TokensError::Empty)
    ));
    assert!(matches!(Auth::parse(b""), Err(TokensError::Empty)));
}

#[test]
fn load_limits_the_file_size() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("tokens");
    let mut text = format!("alice writer {ALICE}\n");
    text.push_str(&"#".repeat(MAX_TOKENS_FILE_BYTES as usize));
    std::fs::write(&big, text).unwrap();
    assert!(matches!(
        Auth::load(&big),
        Err(TokensError::TooLarge { .. })
    ));

    let missing = dir.path().join("absent");
    let err = Auth::load(&missing).unwrap_err();
    assert!(err.to_string().contains("absent"), "{err}");

    let ok = dir.path().join("ok");
    std::fs::write(&ok, format!("alice writer {ALICE}\n")).unwrap();
    assert_eq!(Auth::load(&ok).unwrap().token_count(), 1);
}

#[test]
fn missing_malformed_and_unknown_tokens_are_401() {
    let auth = sample();
    let cases = [
        None,
        Some(HeaderValue::from_static("Basic YWxpY2U6eA==")),
        Some(HeaderValue::from_static("Bearer")),
        Some(bearer("not-a-known-token-at-all")),
        Some(bearer(&ALICE[..ALICE.len() - 1])),
    ];
    for header in cases {
        let err = auth.authenticate(header.as_ref()).unwrap_err();
        assert_eq!(err.status_code(), 401, "{header:?}");
    }
}

#[test]
fn scheme_is_case_insensitive() {
    let header = HeaderValue::from_str(&format!("bearer {ALICE}")).unwrap();
    assert_eq!(sample().authenticate(Some(&header)).unwrap().name, "alice");
}

#[test]
fn disabled_auth_lets_everyone_write_and_debug_hides_tokens() {
    let auth = Auth::disabled();
    assert!(auth.is_disabled());
    assert_eq!(auth.authenticate(None).unwrap().role, Role::Writer);
    let shown = format!("{:?}", sample());
    assert!(
        !shown.contains(ALICE) && shown.contains("2 tokens"),
        "{shown}"
    );
}
