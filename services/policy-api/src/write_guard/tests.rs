use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use actix_web::ResponseError;

use super::*;

fn allowed(origin: &str, host: Option<&str>, secure: bool, loopback: bool) -> bool {
    let origin = HeaderValue::from_str(origin).unwrap();
    let connection = Connection {
        secure,
        loopback,
        host,
    };
    origin_allowed(Some(&origin), &connection).is_ok()
}

#[test]
fn the_own_origin_is_scheme_host_and_port_as_browsers_compare_them() {
    let on = |origin, host| allowed(origin, Some(host), false, false);
    assert!(on("http://api.example:8080", "api.example:8080"));
    assert!(on("http://API.Example:8080", "api.example:8080"), "case");
    assert!(on("http://api.example", "api.example:80"), "default port");
    assert!(on("http://api.example:80", "api.example"), "default port");
    assert!(on("http://[::1]:8080", "[::1]:8080"));
    assert!(!on("http://api.example:8081", "api.example:8080"), "port");
    assert!(
        !on("https://api.example:8080", "api.example:8080"),
        "scheme"
    );
    assert!(!on("http://evil.example:8080", "api.example:8080"), "host");
    assert!(
        !on("http://localhost:8080", "127.0.0.1:8080"),
        "another name"
    );
    assert!(!on("http://sub.api.example:8080", "api.example:8080"));
    // Only this server's TLS makes it https; forwarded headers are not read.
    assert!(allowed(
        "https://api.example",
        Some("api.example"),
        true,
        false
    ));
}

#[test]
fn anything_but_a_bare_origin_is_foreign() {
    let on = |origin| allowed(origin, Some("api.example:8080"), false, false);
    for origin in [
        "null",
        "",
        "api.example:8080",
        "http://api.example:8080/",
        "http://api.example:8080/path",
        "http://api.example:8080?q",
        "http://user@api.example:8080",
        "file:///etc/passwd",
        "http://api.example:99999",
    ] {
        assert!(!on(origin), "{origin:?}");
    }
    // No Host: nothing to compare with.
    assert!(!allowed("http://api.example:8080", None, false, false));
    for host in ["evil.example@api.example:8080", "api.example:8080/x", ""] {
        assert!(
            !allowed("http://api.example:8080", Some(host), false, false),
            "{host}"
        );
    }
}

#[test]
fn a_loopback_connection_takes_browser_writes_only_for_loopback_names() {
    let on = |origin, host| allowed(origin, Some(host), false, true);
    assert!(on("http://127.0.0.1:8080", "127.0.0.1:8080"));
    assert!(on("http://127.1.2.3:8080", "127.1.2.3:8080"));
    assert!(on("http://localhost:8080", "localhost:8080"));
    assert!(on("http://boifi.localhost:8080", "boifi.localhost:8080"));
    assert!(on("http://[::1]:8080", "[::1]:8080"));
    // DNS rebinding: evil.example resolved to 127.0.0.1 is same-origin with itself.
    assert!(!on("http://evil.example:8080", "evil.example:8080"));
    assert!(!on(
        "http://localhost.evil.example:8080",
        "localhost.evil.example:8080"
    ));
    // Without an Origin (not a browser) the Host does not matter.
    let connection = Connection {
        secure: false,
        loopback: true,
        host: Some("evil.example:8080"),
    };
    assert!(origin_allowed(None, &connection).is_ok());
}

#[test]
fn the_refusal_is_403_and_shows_the_origin_escaped() {
    let origin = HeaderValue::from_static("http://evil.example");
    let connection = Connection {
        secure: false,
        loopback: false,
        host: Some("api.example"),
    };
    let error = origin_allowed(Some(&origin), &connection).unwrap_err();
    assert_eq!(error.status_code(), StatusCode::FORBIDDEN);
    let message = error.to_string();
    assert!(message.contains("`http://evil.example`"), "{message}");
    assert!(
        message.contains("this server is http://api.example"),
        "{message}"
    );
}

fn format_of(content_type: &str) -> Result<Option<Format>, StatusCode> {
    let req = TestRequest::post()
        .insert_header((header::CONTENT_TYPE, content_type))
        .to_http_request();
    body_format(req.headers()).map_err(|e| e.status_code())
}

#[test]
fn json_and_yaml_are_the_accepted_types() {
    for (content_type, format) in [
        ("application/json", Format::Json),
        ("application/json; charset=utf-8", Format::Json),
        ("Application/JSON; charset=UTF-8", Format::Json),
        ("application/yaml", Format::Yaml),
        ("application/x-yaml", Format::Yaml),
        ("text/yaml; charset=utf-8", Format::Yaml),
    ] {
        assert_eq!(format_of(content_type), Ok(Some(format)), "{content_type}");
    }
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin1",
        "application/jsonx",
        "not a type",
    ] {
        assert_eq!(
            format_of(content_type),
            Err(StatusCode::UNSUPPORTED_MEDIA_TYPE),
            "{content_type}"
        );
    }
    let none = TestRequest::post().to_http_request();
    assert_eq!(body_format(none.headers()).ok(), Some(None));
}

#[test]
fn a_body_needs_a_content_type_and_no_body_needs_none() {
    let check_of = |req: TestRequest| check(&req.to_http_request()).map_err(|e| e.status_code());
    assert_eq!(check_of(TestRequest::post()), Ok(()));
    assert_eq!(
        check_of(TestRequest::post().insert_header((header::CONTENT_LENGTH, "0"))),
        Ok(())
    );
    assert_eq!(
        check_of(TestRequest::post().insert_header((header::CONTENT_LENGTH, "12"))),
        Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
    );
    // Possibly empty: judged once read (routes::body).
    assert_eq!(
        check_of(TestRequest::post().insert_header((header::TRANSFER_ENCODING, "chunked"))),
        Ok(())
    );
    // An empty form post is still a form post.
    assert_eq!(
        check_of(
            TestRequest::post()
                .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
        ),
        Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
    );
    // The Origin is checked first.
    assert_eq!(
        check_of(
            TestRequest::post()
                .insert_header((header::HOST, "127.0.0.1:8080"))
                .insert_header((header::ORIGIN, "http://evil.example"))
                .insert_header((header::CONTENT_TYPE, "text/plain"))
        ),
        Err(StatusCode::FORBIDDEN)
    );
}
