//! The README's local demo (`boifi-demo`, which `scripts/run-local.sh` runs) works end to end:
//! run with `--once` on a free port, it must show the example fault injected into real
//! traffic and every other request untouched.

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use boifi_tests::wait_until;

/// Stops the demo by PID if the test ends early.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The numbers of the results row `label` after `section`: sent, 200, 503, other, faulted.
fn row(output: &str, section: &str, label: &str) -> Vec<usize> {
    let start = output
        .find(section)
        .unwrap_or_else(|| panic!("{section:?} in:\n{output}"));
    output[start..]
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix(label))
        .find_map(|rest| {
            rest.split_whitespace()
                .take(5)
                .map(|n| n.parse().ok())
                .collect::<Option<Vec<usize>>>()
        })
        .unwrap_or_else(|| panic!("row {label:?} after {section:?} in:\n{output}"))
}

#[test]
fn demo_shows_the_example_fault_injected_and_everything_else_untouched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_path = dir.path().join("demo.out");
    let out = File::create(&out_path).expect("output file");
    let err = out.try_clone().expect("clone");
    let mut demo = Demo(
        Command::new(env!("CARGO_BIN_EXE_boifi-demo"))
            .args(["--once", "--port", "0"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start boifi-demo"),
    );
    let mut status = None;
    let finished = wait_until(Instant::now() + Duration::from_secs(120), || {
        status = demo.0.try_wait().expect("poll the demo");
        status.is_some()
    });
    let output = std::fs::read_to_string(&out_path).expect("demo output");
    assert!(finished, "demo did not finish:\n{output}");
    assert!(status.is_some_and(|s| s.success()), "{status:?}:\n{output}");

    let before = "1. Traffic before any policy";
    let after = "3. The same traffic now";
    let faulted_row = "reviews  GET /api/products  x-user: test";
    // Before: everything 200, nothing faulted.
    for label in [
        faulted_row,
        "reviews  GET /api/products",
        "ratings  GET /api/ratings",
    ] {
        assert_eq!(
            row(&output, before, label),
            [20, 20, 0, 0, 0],
            "{label}:\n{output}"
        );
    }
    // After: about half of the matching requests aborted, each marked.
    let [sent, ok, unavailable, other, faulted] = row(&output, after, faulted_row)[..] else {
        unreachable!("five numbers")
    };
    assert_eq!((sent, other), (20, 0), "{output}");
    assert!(unavailable > 0 && ok > 0, "50% abort:\n{output}");
    assert_eq!(faulted, unavailable, "{output}");
    // Requests the policy does not match are untouched; ratings is delayed, not aborted.
    assert_eq!(
        row(&output, after, "reviews  GET /api/products")[..],
        [20, 20, 0, 0, 0]
    );
    assert_eq!(
        row(&output, after, "ratings  POST /other")[..],
        [20, 20, 0, 0, 0]
    );
    assert_eq!(
        row(&output, after, "ratings  GET /api/ratings")[..],
        [20, 20, 0, 0, 20]
    );
    assert!(output.contains("curl -s http://127.0.0.1:"), "{output}");
}
