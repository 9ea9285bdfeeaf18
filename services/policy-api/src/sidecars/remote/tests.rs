use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Instant;

use super::*;

/// A server on loopback that answers one request with `response` (raw HTTP), or holds the
/// connection without answering when `response` is empty.
fn answer_once(response: &[u8]) -> String {
    let response = response.to_vec();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 2 {
            line.clear();
        }
        if response.is_empty() {
            std::thread::sleep(PAGE_TIMEOUT * 2);
        } else {
            let _ = (&stream).write_all(&response);
        }
    });
    address
}

fn source() -> Broadcasters {
    Broadcasters::new(Vec::new())
}

#[test]
fn urls_read_back_as_written() {
    let urls =
        parse_broadcasters(" http://b-headless.boifi.svc:8081/ ,,http://10.1.2.3:9000").unwrap();
    let shown: Vec<String> = urls.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        ["http://b-headless.boifi.svc:8081", "http://10.1.2.3:9000"]
    );
    assert!(parse_broadcasters("").unwrap().is_empty());
    let error = parse_broadcasters("http://a:1,b:2").unwrap_err();
    assert!(error.contains("`b:2`"), "{error}");
}

#[test]
fn a_host_resolves_to_every_address_and_an_unknown_one_is_reported() {
    let urls = parse_broadcasters("http://127.0.0.1:8081,http://127.0.0.1:8081,http://[::1]:8082")
        .unwrap();
    let replicas: Vec<String> = Broadcasters::new(urls)
        .replicas()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        replicas,
        ["127.0.0.1:8081", "[::1]:8082"],
        "each address once"
    );

    let urls = parse_broadcasters("http://no-such-host.invalid:8081").unwrap();
    let replicas = Broadcasters::new(urls).replicas();
    let unreachable = replicas[0].as_ref().unwrap_err();
    assert_eq!(unreachable.address, "http://no-such-host.invalid:8081");
    assert!(
        unreachable.error.contains("no-such-host.invalid"),
        "{unreachable:?}"
    );
}

#[test]
fn a_page_is_read_and_bad_answers_are_reasons() {
    let page = br#"{"replica":"b-0","revision":42,"halted":false,"sidecars":[]}"#;
    let ok = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
        page.len(),
        String::from_utf8_lossy(page)
    );
    let read = source()
        .page(&answer_once(ok.as_bytes()), &SidecarsQuery::default())
        .unwrap();
    assert_eq!((read.replica.as_str(), read.revision), ("b-0", 42));

    let refused = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 19\r\n\r\nRBAC: access denied";
    let error = source()
        .page(&answer_once(refused), &SidecarsQuery::default())
        .unwrap_err();
    assert_eq!(error, "HTTP 403: RBAC: access denied");

    let garbage = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
    let error = source()
        .page(&answer_once(garbage), &SidecarsQuery::default())
        .unwrap_err();
    assert!(error.starts_with("not a sidecar table"), "{error}");
}

#[test]
fn a_closed_port_and_a_silent_replica_fail_within_the_timeout() {
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let error = source()
        .page(&closed, &SidecarsQuery::default())
        .unwrap_err();
    assert!(!error.is_empty());

    let start = Instant::now();
    let error = source()
        .page(&answer_once(b""), &SidecarsQuery::default())
        .unwrap_err();
    assert!(error.contains("no answer in time"), "{error}");
    assert!(start.elapsed() < PAGE_TIMEOUT + Duration::from_secs(1));
}
