//! The `boifi` CLI as a user runs it: the real binary against a real `boifi serve`, with and
//! without tokens. Every run gets only the environment the test gives it.

use std::fs;
use std::time::Instant;

use boifi_tests::process::Process;
use boifi_tests::wait_until;
use serde_json::Value;

mod support;

use support::{boifi, Server, DEADLINE, READER_TOKEN, WRITER_TOKEN};

/// Two policies in one YAML stream.
const TWO: &str = "\
metadata: {name: a1}
spec:
  selector: {namespace: demo, service: reviews, labels: {version: v2}}
  rules:
  - fault: {percentage: 50, delay: {fixed_delay_ms: 200}, abort: {httpStatus: 503}}
---
metadata: {name: a2}
spec:
  rules:
  - match: {path: {prefix: /api}}
    fault: {duration_seconds: 300, abort: {grpcStatus: UNAVAILABLE}}
";

const ONE_JSON: &str =
    r#"{"metadata":{"name":"b"},"spec":{"rules":[{"fault":{"delay":{"fixed_delay_ms":5}}}]}}"#;

/// The policies on the server, through `boifi get -o json`.
fn names_on(server: &Server, extra: &[(&str, &str)]) -> Vec<String> {
    let url = server.url();
    let mut env = vec![("BOIFI_SERVER", url.as_str())];
    env.extend_from_slice(extra);
    let run = boifi(&["get", "-o", "json"], &env, None).expect(0);
    let list: Value = serde_json::from_str(&run.stdout).expect("JSON list");
    list["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn apply_get_and_delete_yaml_and_json_files() {
    let server = Server::start();
    let url = server.url();
    let env = [("BOIFI_SERVER", url.as_str())];
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    fs::create_dir(&policies).unwrap();
    let a = policies.join("a.yaml");
    fs::write(&a, TWO).unwrap();
    fs::write(policies.join("b.json"), ONE_JSON).unwrap();
    fs::write(policies.join("README.md"), "not a policy").unwrap();
    let dir_arg = policies.to_str().unwrap();
    let a_arg = a.to_str().unwrap();

    let run = boifi(&["apply", "-f", dir_arg], &env, None).expect(0);
    assert_eq!(
        run.stdout, "policy/a1 created\npolicy/a2 created\npolicy/b created\n",
        "{run}"
    );
    let run = boifi(&["apply", "-f", dir_arg], &env, None).expect(0);
    assert_eq!(
        run.stdout,
        "policy/a1 unchanged\npolicy/a2 unchanged\npolicy/b unchanged\n"
    );
    fs::write(&a, TWO.replace("percentage: 50", "percentage: 25")).unwrap();
    let run = boifi(&["apply", "-f", a_arg], &env, None).expect(0);
    assert_eq!(run.stdout, "policy/a1 configured\npolicy/a2 unchanged\n");

    // The table.
    let run = boifi(&["get"], &env, None).expect(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{run}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "SELECTOR", "RULES", "REVISION", "AGE", "EXPIRY"]
    );
    let a1: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(a1[..3], ["a1", "demo/reviews{version=v2}", "1"], "{run}");
    assert_eq!(a1[5], "never", "{run}");
    assert!(lines[2].starts_with("a2 "), "{run}");
    assert!(lines[2].contains("active until 20"), "{run}");
    // Only what may apply to a workload there (a2 and b select every workload).
    let run = boifi(&["get", "--namespace", "other"], &env, None).expect(0);
    let names: Vec<&str> = run.stdout.lines().skip(1).map(|l| &l[..2]).collect();
    assert_eq!(names, ["a2", "b "], "{run}");
    let run = boifi(
        &["get", "--namespace", "demo", "--service", "reviews"],
        &env,
        None,
    )
    .expect(0);
    assert_eq!(run.stdout.lines().count(), 4, "{run}");
    let run = boifi(&["get", "-o", "wide"], &env, None).expect(0);
    assert!(run.stdout.contains("25%:delay=200ms,abort=503"), "{run}");
    assert!(run.stdout.contains("abort=UNAVAILABLE"), "{run}");

    // One policy, as JSON: the server's document with its revision.
    let run = boifi(&["get", "a1", "-o", "json"], &env, None).expect(0);
    let a1: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(a1["metadata"]["name"], "a1");
    assert!(a1["status"]["revision"].as_u64().unwrap() > 0);
    let run = boifi(&["get", "a2", "-o", "yaml"], &env, None).expect(0);
    assert!(run.stdout.starts_with("metadata:\n  name: a2\n"), "{run}");

    // What get prints, apply takes back unchanged (status is ignored on input).
    for format in ["yaml", "json"] {
        let listed = boifi(&["get", "-o", format], &env, None).expect(0);
        let run = boifi(&["apply", "-f", "-"], &env, Some(&listed.stdout)).expect(0);
        assert_eq!(
            run.stdout, "policy/a1 unchanged\npolicy/a2 unchanged\npolicy/b unchanged\n",
            "{format}: {run}"
        );
    }

    let run = boifi(&["get", "nope"], &env, None).expect(1);
    assert_eq!(run.stderr, "error: policy \"nope\" not found\n");

    // A missing name is reported, the others are still deleted.
    let run = boifi(&["delete", "a2", "nope", "b"], &env, None).expect(1);
    assert_eq!(run.stdout, "policy/a2 deleted\npolicy/b deleted\n");
    assert_eq!(
        run.stderr,
        "error: policy/nope: not found\nerror: 1 of 3 policies not deleted\n"
    );
    let run = boifi(&["delete", "-f", a_arg], &env, None).expect(1);
    assert_eq!(run.stdout, "policy/a1 deleted\n");
    assert!(
        run.stderr.contains("error: policy/a2: not found\n"),
        "{run}"
    );
    let run = boifi(&["get"], &env, None).expect(0);
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr, format!("No policies on {}.\n", server.url()));
}

#[test]
fn a_bad_document_stops_the_apply_before_anything_is_written() {
    let server = Server::start();
    let url = server.url();
    let env = [("BOIFI_SERVER", url.as_str())];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policies.yaml");
    let text = format!(
        "{TWO}---\n\
         metadata: {{name: c}}\n\
         spec: {{rules: [{{fault: {{percentge: 5, abort: {{httpStatus: 503}}}}}}]}}\n"
    )
    .replace("percentage: 50", "percentage: 150");
    fs::write(&file, text).unwrap();
    let arg = file.to_str().unwrap();

    for command in ["apply", "validate"] {
        let run = boifi(&[command, "-f", arg], &env, None).expect(1);
        assert_eq!(run.stdout, "", "{run}");
        let place = format!("{arg} document ");
        assert!(
            run.stderr.contains(&format!(
                "{place}1: spec.rules[0].fault.percentage: must be"
            )),
            "{run}"
        );
        assert!(
            run.stderr.contains(&format!(
                "{place}3: spec.rules[0].fault.percentge: unknown field\n"
            )),
            "{run}"
        );
        assert!(!run.stderr.contains("document 2"), "{run}");
    }
    let run = boifi(&["apply", "-f", arg], &env, None).expect(1);
    assert!(
        run.stderr
            .ends_with("error: 2 of 3 documents have problems; nothing was applied\n"),
        "{run}"
    );
    assert!(names_on(&server, &[]).is_empty(), "nothing was written");

    // validate needs no server at all.
    let good = dir.path().join("good.yaml");
    fs::write(&good, TWO).unwrap();
    let run = boifi(
        &["validate", "-f", good.to_str().unwrap()],
        &[("BOIFI_SERVER", "http://127.0.0.1:1")],
        None,
    )
    .expect(0);
    let g = good.to_str().unwrap();
    assert_eq!(
        run.stdout,
        format!("policy/a1 valid ({g} document 1)\npolicy/a2 valid ({g} document 2)\n")
    );
}

#[test]
fn tokens_roles_and_secrecy() {
    let server = Server::with_tokens();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    fs::write(&file, TWO).unwrap();
    let file = file.to_str().unwrap();
    let writer_file = dir.path().join("writer-token");
    fs::write(&writer_file, format!("{WRITER_TOKEN}\n")).unwrap();
    let writer_file = writer_file.to_str().unwrap();
    let mut runs = Vec::new();

    // No token.
    let run = boifi(&["get"], &[("BOIFI_SERVER", &url)], None).expect(1);
    assert!(
        run.stderr.starts_with("error: missing bearer token"),
        "{run}"
    );
    assert!(run.stderr.contains("BOIFI_TOKEN"), "{run}");
    runs.push(run);

    // A reader may read, not write: a clear message and exit 1, nothing written.
    let reader = [
        ("BOIFI_SERVER", url.as_str()),
        ("BOIFI_TOKEN", READER_TOKEN),
    ];
    runs.push(boifi(&["get"], &reader, None).expect(0));
    let run = boifi(&["apply", "-f", file], &reader, None).expect(1);
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        "error: the token's role `reader` may not change anything\n  \
         (this needs a token with the writer role)\n",
        "one message, not one per policy"
    );
    runs.push(run);
    let run = boifi(&["halt"], &reader, None).expect(1);
    assert!(run.stderr.contains("writer role"), "{run}");
    runs.push(run);
    assert!(names_on(&server, &[("BOIFI_TOKEN", READER_TOKEN)]).is_empty());

    // A writer, from a token file (which beats the variable).
    let writer = [
        ("BOIFI_SERVER", url.as_str()),
        ("BOIFI_TOKEN", READER_TOKEN),
    ];
    let run = boifi(
        &["apply", "-f", file, "--token-file", writer_file],
        &writer,
        None,
    )
    .expect(0);
    assert_eq!(run.stdout, "policy/a1 created\npolicy/a2 created\n");
    runs.push(run);
    let with_writer = [
        ("BOIFI_SERVER", url.as_str()),
        ("BOIFI_TOKEN", WRITER_TOKEN),
    ];
    runs.push(boifi(&["delete", "a1"], &with_writer, None).expect(0));
    runs.push(boifi(&["halt", "--reason", "test"], &with_writer, None).expect(0));
    runs.push(boifi(&["resume"], &with_writer, None).expect(0));

    // An unknown token, a server that is not there, a token that cannot be sent.
    let unknown = "unknown-token-1234567890abcdef";
    let run = boifi(
        &["get"],
        &[("BOIFI_SERVER", &url), ("BOIFI_TOKEN", unknown)],
        None,
    )
    .expect(1);
    assert!(
        run.stderr.starts_with("error: unknown bearer token"),
        "{run}"
    );
    runs.push(run);
    let closed = format!("http://127.0.0.1:{}", boifi_tests::free_port());
    runs.push(
        boifi(
            &["apply", "-f", file],
            &[("BOIFI_SERVER", &closed), ("BOIFI_TOKEN", WRITER_TOKEN)],
            None,
        )
        .expect(1),
    );
    let spaced = format!("{WRITER_TOKEN} {READER_TOKEN}");
    let run = boifi(
        &["get"],
        &[("BOIFI_SERVER", &url), ("BOIFI_TOKEN", &spaced)],
        None,
    )
    .expect(1);
    assert!(
        run.stderr
            .contains("BOIFI_TOKEN: the token must be one word"),
        "{run}"
    );
    runs.push(run);
    fs::write(dir.path().join("bad-token"), &spaced).unwrap();
    let bad_file = dir.path().join("bad-token");
    runs.push(
        boifi(
            &["get", "--token-file", bad_file.to_str().unwrap()],
            &[("BOIFI_SERVER", &url)],
            None,
        )
        .expect(1),
    );

    for run in &runs {
        for token in [WRITER_TOKEN, READER_TOKEN, unknown] {
            assert!(
                !run.stdout.contains(token) && !run.stderr.contains(token),
                "a token was printed:\n{run}"
            );
        }
    }
}

#[test]
fn halt_and_resume() {
    let server = Server::start();
    let url = server.url();
    let env = [("BOIFI_SERVER", url.as_str())];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.json");
    fs::write(&file, ONE_JSON).unwrap();
    boifi(&["apply", "-f", file.to_str().unwrap()], &env, None).expect(0);

    let run = boifi(&["halt", "--reason", "incident 7"], &env, None).expect(0);
    assert!(run.stdout.starts_with("halted (revision "), "{run}");
    let log = server.process.log();
    assert!(
        log.contains("reason \"incident 7\""),
        "the server got the reason:\n{log}"
    );
    let run = boifi(&["get"], &env, None).expect(0);
    assert!(
        run.stderr.contains("warning: the kill switch is on"),
        "{run}"
    );
    let run = boifi(&["resume"], &env, None).expect(0);
    assert!(run.stdout.starts_with("resumed (revision "), "{run}");
    // The server's refusal, with its field path.
    let long = "x".repeat(600);
    let run = boifi(&["halt", "--reason", &long], &env, None).expect(1);
    assert!(run.stderr.starts_with("error: "), "{run}");
    assert!(run.stderr.contains("\n  reason: "), "{run}");
    let run = boifi(&["get"], &env, None).expect(0);
    assert_eq!(run.stderr, "");
}

#[test]
fn usage_errors_exit_2_and_failures_exit_1() {
    let none: [(&str, &str); 0] = [];
    for usage in [
        &["get", "-o", "xml"][..],
        &["apply"],
        &["delete"],
        &["frobnicate"],
        &["get", "--server", "localhost:8080"],
        &["get", "--server", "https://boifi.example"],
        &["apply", "-f", "-", "-f", "-"],
    ] {
        let run = boifi(usage, &none, Some(""));
        assert_eq!(run.code, 2, "{usage:?}\n{run}");
        assert!(!run.stderr.is_empty(), "{usage:?}");
    }
    let closed = format!("http://127.0.0.1:{}", boifi_tests::free_port());
    let run = boifi(&["get"], &[("BOIFI_SERVER", &closed)], None).expect(1);
    assert!(
        run.stderr.starts_with(&format!("error: {closed}: ")),
        "{run}"
    );
    let run = boifi(&["apply", "-f", "/nonexistent.yaml"], &none, None).expect(1);
    assert_eq!(
        run.stderr,
        "error: /nonexistent.yaml: No such file or directory\n"
    );
    boifi(&["--version"], &none, None).expect(0);
    for shell in ["bash", "zsh", "fish"] {
        let run = boifi(&["completion", shell], &none, None).expect(0);
        assert!(
            run.stdout.contains("apply") && run.stdout.contains("token-file"),
            "{shell}: {run}"
        );
    }
}

/// The revision of `name`, from `boifi get NAME -o json`.
fn revision(env: &[(&str, &str)], name: &str) -> u64 {
    let run = boifi(&["get", name, "-o", "json"], env, None).expect(0);
    let policy: Value = serde_json::from_str(&run.stdout).unwrap();
    policy["status"]["revision"].as_u64().unwrap()
}

#[test]
fn watch_prints_each_change_and_reconnects() {
    let mut server = Server::start();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.json");
    fs::write(&file, ONE_JSON).unwrap();
    let file = file.to_str().unwrap();
    let env = [("BOIFI_SERVER", url.as_str())];

    // The stream's address on its own: the API's is unreachable.
    let mut command = std::process::Command::new(support::boifi_binary());
    command
        .arg("watch")
        .env_clear()
        .env("BOIFI_SERVER", "http://127.0.0.1:1")
        .env("BOIFI_STREAM_SERVER", &url);
    let mut watch =
        Process::spawn("boifi watch", &mut command, &dir.path().join("watch.log")).unwrap();
    let shows = |watch: &Process, text: &str| {
        let ok = wait_until(Instant::now() + DEADLINE, || watch.log().contains(text));
        assert!(ok, "{text:?} not shown:\n{}", watch.log());
    };
    let row = |revision: u64, event: &str, detail: &str| {
        format!("   {revision:<8}   {event:<8}   {detail}\n")
    };
    shows(
        &watch,
        "TIME                   REVISION   EVENT      POLICY\n",
    );
    shows(&watch, "   snapshot   (no policies)\n");

    boifi(&["apply", "-f", file], &env, None).expect(0);
    shows(&watch, &row(revision(&env, "b"), "policy", "b"));
    let run = boifi(&["halt"], &env, None).expect(0);
    let halted_at: u64 = run.stdout["halted (revision ".len()..]
        .split(')')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    shows(&watch, &row(halted_at, "halt", "on"));
    boifi(&["resume"], &env, None).expect(0);
    shows(&watch, "   halt       off\n");
    boifi(&["delete", "b"], &env, None).expect(0);
    shows(&watch, "   delete     b\n");

    // The server goes away and comes back: watch reconnects and shows what follows.
    server.restart();
    shows(&watch, "reconnecting in ");
    let renamed = fs::read_to_string(file).unwrap().replace("\"b\"", "\"c\"");
    boifi(&["apply", "-f", "-"], &env, Some(&renamed)).expect(0);
    shows(&watch, "   c\n");
    assert!(watch.exited().is_none(), "watch keeps running");
    watch.stop();
}

#[test]
fn the_documented_examples_are_valid_and_the_yaml_and_json_agree() {
    let none: [(&str, &str); 0] = [];
    let examples = [
        "reviews-abort.yaml",
        "ratings-delay.yaml",
        "json/reviews-abort.json",
    ]
    .map(|f| boifi_tests::binaries::repo_file(&format!("docs/examples/{f}")));
    for file in &examples {
        let run = boifi(&["validate", "-f", file.to_str().unwrap()], &none, None).expect(0);
        assert!(run.stdout.contains(" valid ("), "{run}");
    }
    // The directory as a whole, as a user would apply it: no policy defined twice.
    let dir = boifi_tests::binaries::repo_file("docs/examples");
    let run = boifi(&["validate", "-f", dir.to_str().unwrap()], &none, None).expect(0);
    assert!(
        !run.stdout.contains("json/"),
        "the JSON copy is not read: {run}"
    );
    let parse = |file: &std::path::Path, format| {
        let bytes = fs::read(file).unwrap();
        boifi_policy::ValidPolicy::parse(&bytes, format, None).expect("valid")
    };
    assert_eq!(
        parse(&examples[0], boifi_policy::Format::Yaml),
        parse(&examples[2], boifi_policy::Format::Json),
        "docs/examples/reviews-abort.yaml and .json hold the same policy"
    );
}

/// Apply's write is conditional on what it read: a change made in between is reported, and
/// nothing is overwritten.
#[test]
fn a_change_made_after_apply_read_the_policy_is_not_overwritten() {
    use boifi::cli::apply::{plan, write, Step};
    use boifi::cli::client::{Connection, ConnectionArgs};

    let server = Server::start();
    let url = server.url();
    let env = [("BOIFI_SERVER", url.as_str())];
    let mine = |percentage: u32| {
        let text = TWO
            .split("---")
            .next()
            .unwrap()
            .replace("percentage: 50", &format!("percentage: {percentage}"));
        boifi_policy::ValidPolicy::parse(text.as_bytes(), boifi_policy::Format::Yaml, None)
            .expect("valid")
            .into_policy()
    };
    let args = ConnectionArgs {
        server: Some(url.clone()),
        token_file: None,
        timeout: DEADLINE,
    };
    let client = Connection::resolve(&args, None, Vec::new())
        .unwrap()
        .client();

    // Created by someone else between the read and the write.
    let step = plan(&client, &mine(10)).unwrap();
    assert_eq!(step, Step::Create);
    boifi(&["apply", "-f", "-"], &env, Some(TWO)).expect(0);
    let err = write(&client, &mine(10), &step, None).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("not applied: it was created by someone else meanwhile"),
        "{err}"
    );

    // Changed by someone else between the read and the write.
    let step = plan(&client, &mine(10)).unwrap();
    assert!(matches!(step, Step::Replace { .. }), "{step:?}");
    let theirs = TWO.replace("percentage: 50", "percentage: 70");
    let run = boifi(&["apply", "-f", "-"], &env, Some(&theirs)).expect(0);
    assert!(run.stdout.contains("policy/a1 configured"), "{run}");
    let err = write(&client, &mine(10), &step, None).unwrap_err();
    assert!(
        err.to_string()
            .contains("it was changed on the server since it was read"),
        "{err}"
    );
    let run = boifi(&["get", "a1", "-o", "json"], &env, None).expect(0);
    let stored: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(stored["spec"]["rules"][0]["fault"]["percentage"], 70.0);

    // Without a change in between, the same steps go through.
    let step = plan(&client, &mine(10)).unwrap();
    assert_eq!(
        write(&client, &mine(10), &step, None).unwrap().as_str(),
        "configured"
    );
    assert_eq!(plan(&client, &mine(10)).unwrap(), Step::Keep);
}

/// More policies than one page: `get` follows the server's `continue` tokens (a server that
/// does not page answers all at once, which must work too).
#[test]
fn get_lists_more_than_one_page() {
    let server = Server::start();
    let url = server.url();
    let env = [("BOIFI_SERVER", url.as_str())];
    let stream: Vec<String> = (0..150)
        .map(|i| {
            format!(
                "metadata: {{name: p{i:03}}}\nspec: {{rules: [{{fault: {{delay: {{fixed_delay_ms: {i}}}}}}}]}}\n"
            )
        })
        .collect();
    let run = boifi(&["apply", "-f", "-"], &env, Some(&stream.join("---\n"))).expect(0);
    assert_eq!(run.stdout.lines().count(), 150, "{run}");
    let pages = || server.process.log().matches("GET /v1/policies 200").count();
    let before = pages();
    let names = names_on(&server, &[]);
    let expected: Vec<String> = (0..150).map(|i| format!("p{i:03}")).collect();
    assert_eq!(names, expected);
    assert_eq!(pages() - before, 2, "two pages of at most 100");
    let run = boifi(&["get"], &env, None).expect(0);
    assert_eq!(run.stdout.lines().count(), 151, "{run}");
}

/// What `watch` sends when it reconnects, seen by a stand-in for the broadcaster that drops the
/// connection after one event, then asks for a resync: each new request carries the id of the
/// last event received.
#[test]
fn watch_resumes_with_the_last_event_id() {
    use std::io::{BufRead, BufReader, Write as _};
    use std::net::TcpListener;

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(support::boifi_binary());
    command
        .args(["watch", "--server", &url, "--service", "reviews"])
        .env_clear();
    let mut watch =
        Process::spawn("boifi watch", &mut command, &dir.path().join("watch.log")).unwrap();

    // Each connection: the request's head, then `body`, then the connection is closed.
    let serve = |body: &str| -> Vec<String> {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            head.push(line.trim().to_owned());
        }
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        head
    };
    let policy = r#"{"metadata":{"name":"reviews-abort"},"spec":{"rules":[]}}"#;
    let first = serve(&format!(
        "retry: 50\n\nid: 7\nevent: policy\ndata: {policy}\n\n"
    ));
    assert!(
        first[0].starts_with("GET /v1/config/stream?service=reviews HTTP/1.1"),
        "{first:?}"
    );
    assert!(
        !first
            .iter()
            .any(|h| h.to_lowercase().starts_with("last-event-id")),
        "{first:?}"
    );
    assert!(
        !first
            .iter()
            .any(|h| h.to_lowercase().starts_with("authorization")),
        "the stream gets no token: {first:?}"
    );
    let second = serve("id: 8\nevent: delete\ndata: {\"name\":\"reviews-abort\"}\n\nevent: resync\ndata: {\"reason\":\"lagged\"}\n\n");
    assert!(
        second.contains(&"last-event-id: 7".to_owned()),
        "{second:?}"
    );
    let third = serve("");
    assert!(third.contains(&"last-event-id: 8".to_owned()), "{third:?}");

    let log = watch.log();
    for line in [
        "   7          policy     reviews-abort\n",
        "   8          delete     reviews-abort\n",
        "   8          resync     -\n",
        "watch: the stream ended; reconnecting in 0.05s (Last-Event-ID: 7)\n",
        "watch: the server asked to resync (this client fell behind); reconnecting in 0.05s \
         (Last-Event-ID: 8)\n",
    ] {
        assert!(log.contains(line), "{line:?} in:\n{log}");
    }
    watch.stop();
}

/// A server that never answers costs `--timeout`, and one that answers without end is cut off
/// at the size bound: both exit 1 with a message, neither hangs nor fills memory.
#[test]
fn silent_and_endless_servers_are_cut_off() {
    use std::io::{Read as _, Write as _};
    use std::net::TcpListener;

    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let holder = std::thread::spawn(move || {
        let (mut stream, _) = silent.accept().unwrap();
        // Read the request and never answer; returns when the client gives up.
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
    });
    let started = Instant::now();
    let run = boifi(&["get", "--server", &url, "--timeout", "1s"], &[], None).expect(1);
    assert!(run.stderr.contains("no answer in time"), "{run}");
    assert!(started.elapsed() < DEADLINE / 2, "{:?}", started.elapsed());
    holder.join().unwrap();

    let endless = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", endless.local_addr().unwrap());
    let sender = std::thread::spawn(move || {
        let (mut stream, _) = endless.accept().unwrap();
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request);
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000000000\r\n\r\n"
        );
        let chunk = vec![b' '; 1 << 20];
        // Until the client hangs up (at most the advertised length).
        for _ in 0..1000 {
            if stream.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let run = boifi(&["get", "--server", &url], &[], None).expect(1);
    assert!(run.stderr.contains("the answer is larger than"), "{run}");
    sender.join().unwrap();
}
