//! `boifi audit` and `--reason` as a user runs them: the real binary against a real
//! `boifi serve` (embedded store) with tokens, and the question the trail must answer: who
//! halted the mesh?

use std::fs;

use serde_json::Value;

mod support;

use support::{boifi, Run, Server};

const ALICE: &str = "alice-token-7d1e0c9b8a6f5e4d";
const VIEWER: &str = "viewer-token-3c2b1a0f9e8d7c6b";

const POLICY: &str = "\
metadata: {name: reviews-abort}
spec:
  selector: {namespace: demo, service: reviews}
  rules:
  - fault: {percentage: 50, abort: {httpStatus: 503}}
";

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{run}"))
}

/// `(actor, action, policy, reason)` of each entry of `boifi audit -o json`.
fn summary(run: &Run) -> Vec<(String, String, String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    json(run)["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                text(&e["actor"]),
                text(&e["action"]),
                text(&e["policy"]),
                text(&e["reason"]),
            )
        })
        .collect()
}

fn row(actor: &str, action: &str, policy: &str, reason: &str) -> (String, String, String, String) {
    (
        actor.to_owned(),
        action.to_owned(),
        policy.to_owned(),
        reason.to_owned(),
    )
}

#[test]
fn the_audit_trail_says_who_halted_the_mesh() {
    let mut server = Server::with_tokens_file(
        &format!("alice writer {ALICE}\nviewer reader {VIEWER}\n"),
        &[("BOIFI_AUDIT_MAX_ENTRIES", "5")],
    );
    let url = server.url();
    let alice = [("BOIFI_SERVER", url.as_str()), ("BOIFI_TOKEN", ALICE)];
    let viewer = [("BOIFI_SERVER", url.as_str()), ("BOIFI_TOKEN", VIEWER)];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    fs::write(&file, POLICY).unwrap();
    let file = file.to_str().unwrap();
    let mut runs = Vec::new();

    runs.push(
        boifi(
            &["apply", "-f", file, "--reason", "game day 7: reviews fail"],
            &alice,
            None,
        )
        .expect(0),
    );
    let run = boifi(
        &["halt", "--reason", "pager: error budget burnt"],
        &alice,
        None,
    )
    .expect(0);
    let halted_at = run.stdout["halted (revision ".len()..]
        .split(')')
        .next()
        .unwrap()
        .to_owned();
    runs.push(run);
    // A reader may not halt (nothing recorded), but may read the trail.
    let run = boifi(&["resume", "--reason", "sneaky"], &viewer, None).expect(1);
    assert!(run.stderr.contains("writer role"), "{run}");
    runs.push(run);

    let run = boifi(&["audit"], &viewer, None).expect(0);
    let lines: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["TIME", "ACTOR", "ACTION", "POLICY", "REVISION", "REASON"],
        "{run}"
    );
    assert_eq!(lines.len(), 3, "{run}");
    assert_eq!(
        lines[1][1..5],
        ["alice", "halt", "-", halted_at.as_str()],
        "{run}"
    );
    assert!(run
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .ends_with("pager: error budget burnt"));
    assert!(
        lines[1][0].starts_with("20") && lines[1][0].ends_with('Z'),
        "{run}"
    );
    assert_eq!(
        lines[2][1..4],
        ["alice", "create", "reviews-abort"],
        "{run}"
    );
    assert!(run
        .stdout
        .lines()
        .nth(2)
        .unwrap()
        .ends_with("game day 7: reviews fail"));
    runs.push(run);

    // Who halted the mesh?
    let run = boifi(&["audit", "--action", "halt", "-o", "json"], &viewer, None).expect(0);
    assert_eq!(
        summary(&run),
        [row("alice", "halt", "-", "pager: error budget burnt")]
    );
    assert_eq!(json(&run)["entries"][0]["revision"].to_string(), halted_at);
    runs.push(run);

    runs.push(
        boifi(
            &["delete", "reviews-abort", "--reason", "done"],
            &alice,
            None,
        )
        .expect(0),
    );
    runs.push(boifi(&["resume"], &alice, None).expect(0));
    let run = boifi(&["audit", "--limit", "2", "-o", "json"], &viewer, None).expect(0);
    assert_eq!(
        summary(&run),
        [
            row("alice", "resume", "-", "-"),
            row("alice", "delete", "reviews-abort", "done"),
        ]
    );
    runs.push(run);
    let run = boifi(
        &["audit", "--policy", "reviews-abort", "-o", "yaml"],
        &viewer,
        None,
    )
    .expect(0);
    assert!(run.stdout.starts_with("entries:\n"), "{run}");
    assert_eq!(run.stdout.matches("actor: alice").count(), 2, "{run}");
    runs.push(run);
    let run = boifi(&["audit", "--actor", "viewer"], &viewer, None).expect(0);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.starts_with("No audit entries on "), "{run}");
    runs.push(run);

    // The trail survives a restart, and keeps the newest 5 (BOIFI_AUDIT_MAX_ENTRIES).
    server.restart();
    for _ in 0..3 {
        runs.push(boifi(&["halt"], &alice, None).expect(0));
    }
    let run = boifi(&["audit", "-o", "json"], &viewer, None).expect(0);
    let all = summary(&run);
    assert_eq!(all.len(), 5, "{run}");
    assert_eq!(all[3], row("alice", "resume", "-", "-"));
    assert_eq!(all[4], row("alice", "delete", "reviews-abort", "done"));
    runs.push(run);

    // The server logged each entry, with the token's name and never the token.
    let log = server.process.log();
    assert!(
        log.contains(r#"audit actor=alice action=halt policy=- revision="#)
            && log.contains(r#"reason="pager: error budget burnt""#),
        "{log}"
    );
    for token in [ALICE, VIEWER] {
        assert!(!log.contains(token), "the log holds a token:\n{log}");
        for run in &runs {
            assert!(
                !run.stdout.contains(token) && !run.stderr.contains(token),
                "a token was printed:\n{run}"
            );
        }
    }
}

#[test]
fn a_reason_must_be_one_line_and_the_server_bounds_its_length() {
    let server = Server::start();
    let url = server.url();
    let env = [("BOIFI_SERVER", url.as_str())];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    fs::write(&file, POLICY).unwrap();
    let file = file.to_str().unwrap();
    let run = boifi(&["apply", "-f", file, "--reason", "a\nb"], &env, None).expect(2);
    assert!(run.stderr.contains("--reason"), "{run}");
    let long = "x".repeat(513);
    let run = boifi(&["apply", "-f", file, "--reason", &long], &env, None).expect(1);
    assert!(run.stderr.contains("X-Boifi-Reason: at most 512"), "{run}");
    // Without tokens, the actor is `anonymous`.
    boifi(&["apply", "-f", file, "--reason", "ok"], &env, None).expect(0);
    let run = boifi(&["audit", "-o", "json"], &env, None).expect(0);
    assert_eq!(
        summary(&run),
        [row("anonymous", "create", "reviews-abort", "ok")]
    );
}
