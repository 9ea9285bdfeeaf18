//! The README's local demo (`boifi-demo`, which `scripts/run-local.sh` runs) works end to end:
//! run with `--once` on a free port, it must apply the example policies with the `boifi` CLI,
//! show the example fault injected into real traffic and every other request untouched, and
//! say how to go on with the CLI.

use std::process::Command;
use std::time::Duration;

use boifi_tests::process::Process;

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
    let mut command = Command::new(env!("CARGO_BIN_EXE_boifi-demo"));
    command.args(["--once", "--port", "0"]);
    // Stopped by PID if the test ends early.
    let mut demo =
        Process::spawn("boifi-demo", &mut command, &dir.path().join("demo.out")).expect("spawn");
    let status = demo.wait_exit(Duration::from_secs(120));
    let output = demo.log();
    assert!(status.is_some(), "demo did not finish:\n{output}");
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
    // Through a caller that retries as Istio does: the declared 50 % of 100 calls (99.9 %
    // binomial bound: 50 +/- 16).
    let caller = output
        .lines()
        .find_map(|l| {
            l.split_once("productpage -> reviews, GET /api/products with x-user: test: ")
                .map(|(_, rest)| rest.to_owned())
        })
        .unwrap_or_else(|| panic!("caller line in:\n{output}"));
    let failed: usize = caller
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("count in {caller:?}"));
    assert!(caller.contains("of 100 calls failed"), "{caller}");
    assert!((34..=66).contains(&failed), "{caller}");
    // The policies went in through the CLI, as the README tells users to do.
    for line in [
        "$ boifi apply -f docs/examples/reviews-abort.yaml -f docs/examples/ratings-delay.yaml\n",
        "   policy/reviews-abort created\n",
        "   policy/ratings-delay created\n",
        "   $ boifi get\n",
    ] {
        assert!(output.contains(line), "{line:?}:\n{output}");
    }
    let table = output
        .lines()
        .find(|l| l.trim_start().starts_with("NAME "))
        .unwrap_or_else(|| panic!("get's table:\n{output}"));
    assert!(
        table.contains("SELECTOR") && table.contains("EXPIRY"),
        "{table}"
    );
    // How to go on with the CLI: where the binary is, which server, what to type.
    assert!(output.contains("export PATH=\""), "{output}");
    assert!(
        output.contains("export BOIFI_SERVER=http://127.0.0.1:"),
        "{output}"
    );
    assert!(output.contains("   boifi halt --reason"), "{output}");
}
