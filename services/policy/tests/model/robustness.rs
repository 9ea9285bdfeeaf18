//! Malformed input never panics, and every rejection says what is wrong: truncations and seeded
//! mutations of the fixtures, plus hostile values (huge numbers, deep nesting, long strings).

use std::panic::{catch_unwind, AssertUnwindSafe};

use boifi_policy::limits::MAX_POLICY_BYTES;
use boifi_policy::{compile, parse_policy, ValidationErrors};

use crate::{fields, EXISTING_FORMAT, EXISTING_FORMAT_HTTP_STATUS};

const FIXTURES: [&str; 2] = [EXISTING_FORMAT, EXISTING_FORMAT_HTTP_STATUS];

/// Tokens spliced into the text: structure, escapes, numbers no field type can hold.
const TOKENS: [&str; 18] = [
    "{",
    "[",
    "\"",
    "}",
    "]",
    ",",
    ":",
    "\\u0000",
    "\0",
    "\\ud800",
    "1e309",
    "-1e309",
    "-1",
    "18446744073709551616",
    "-9223372036854775809",
    "NaN",
    "null",
    "\u{feff}",
];

/// SplitMix64: a fixed seed gives the same mutations on every run, with no extra dependency.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough for choosing positions; `n > 0`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Parses and compiles as the API does on a write. Panics (failing the test) when either step
/// panics, or when a rejection carries no message.
fn outcome(input: &[u8]) -> Result<(), ValidationErrors> {
    let result = catch_unwind(AssertUnwindSafe(|| {
        parse_policy(input).and_then(|policy| compile(&policy))
    }))
    .unwrap_or_else(|_| panic!("panicked on input {}", preview(input)));
    match result {
        Ok(_) => Ok(()),
        Err(errors) => {
            assert!(
                errors.errors.iter().any(|e| !e.message.is_empty()),
                "rejection without a message for {}: {errors:?}",
                preview(input)
            );
            Err(errors)
        }
    }
}

fn preview(input: &[u8]) -> String {
    let text = String::from_utf8_lossy(&input[..input.len().min(400)]).into_owned();
    format!("({} bytes) {text:?}", input.len())
}

/// Byte offsets where a digit run starts, to swap a number for a hostile one.
fn number_starts(text: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if text[i].is_ascii_digit() {
            let start = i;
            while i < text.len() && (text[i].is_ascii_digit() || text[i] == b'.') {
                i += 1;
            }
            spans.push((start, i));
        } else {
            i += 1;
        }
    }
    spans
}

fn mutate(fixture: &[u8], rng: &mut Prng) -> Vec<u8> {
    let mut text = fixture.to_vec();
    // One to three edits, so that some mutants are broken in more than one place.
    for _ in 0..=rng.below(3) {
        let at = rng.below(text.len() + 1);
        match rng.below(5) {
            0 if at < text.len() => text[at] ^= 1 << rng.below(8),
            1 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                text.splice(at..at, token.bytes());
            }
            2 if at < text.len() => {
                let end = (at + 1 + rng.below(8)).min(text.len());
                text.drain(at..end);
            }
            3 => {
                let spans = number_starts(&text);
                if let Some(&(start, end)) = spans.get(rng.below(spans.len().max(1))) {
                    let token = TOKENS[10 + rng.below(6)];
                    text.splice(start..end, token.bytes());
                }
            }
            _ => {
                // A random byte, often outside ASCII.
                text.insert(at, rng.next() as u8);
            }
        }
    }
    text
}

#[test]
fn fixtures_are_accepted() {
    for fixture in FIXTURES {
        assert_eq!(outcome(fixture.as_bytes()), Ok(()));
    }
}

#[test]
fn every_truncation_is_rejected_with_a_message() {
    for fixture in FIXTURES {
        // Only trailing whitespace may be cut without breaking the object.
        let complete = fixture.trim_end().len();
        for len in 0..complete {
            let errors = outcome(&fixture.as_bytes()[..len])
                .expect_err("a truncated policy is not a policy");
            assert!(!errors.errors.is_empty());
        }
    }
}

#[test]
fn seeded_mutations_never_panic() {
    let mut rng = Prng(0x0b01_f1f1);
    let mut rejected = 0;
    let runs = 3_000;
    for i in 0..runs {
        let fixture = FIXTURES[i % FIXTURES.len()].as_bytes();
        let mutant = mutate(fixture, &mut rng);
        if outcome(&mutant).is_err() {
            rejected += 1;
        }
    }
    // The mutations must exercise the error paths, not only harmless whitespace.
    assert!(rejected > runs / 2, "only {rejected} of {runs} rejected");
}

#[test]
fn out_of_range_numbers_are_rejected_at_their_field() {
    let cases = [
        ("\"percentage\": 12.5", "spec.rules[0].fault.percentage"),
        (
            "\"start_delay_ms\": 1500",
            "spec.rules[0].fault.start_delay_ms",
        ),
        (
            "\"http_status\": 429",
            "spec.rules[0].fault.abort.http_status",
        ),
        (
            "\"fixed_delay_ms\": 3000",
            "spec.rules[1].fault.delay.fixed_delay_ms",
        ),
    ];
    for (original, field) in cases {
        let key = original.split(':').next().unwrap();
        for number in ["-1", "18446744073709551616", "1e309", "-1e309", "1.5e400"] {
            let text = EXISTING_FORMAT_HTTP_STATUS.replace(original, &format!("{key}: {number}"));
            assert_ne!(
                text, EXISTING_FORMAT_HTTP_STATUS,
                "{original} is in the fixture"
            );
            let errors = outcome(text.as_bytes()).expect_err(number);
            assert_eq!(fields(&errors), [field], "{number}: {errors}");
        }
    }
}

/// `n` nested arrays around `null`.
fn nested(n: usize) -> String {
    format!("{}null{}", "[".repeat(n), "]".repeat(n))
}

#[test]
fn deep_nesting_is_rejected_without_overflowing_the_stack() {
    let deep = nested(10_000);
    let spots = [
        ("\"version\": \"1.0.0\"", "\"version\": DEEP"),
        ("\"name\": \"x-user\"", "\"name\": DEEP"),
        ("\"percentage\": 50", "\"percentage\": DEEP"),
        ("\"metadata\": {", "\"extra\": DEEP, \"metadata\": {"),
        (
            "\"headers\": { \"x-k\": \"v\" }",
            "\"headers\": { \"x-k\": DEEP }",
        ),
    ];
    for (original, replacement) in spots {
        let text = EXISTING_FORMAT.replace(original, &replacement.replace("DEEP", &deep));
        assert!(
            text.len() > EXISTING_FORMAT.len(),
            "{original} is in the fixture"
        );
        // In a thread with the default test stack, so an overflow would show here too.
        let errors = outcome(text.as_bytes()).expect_err(original);
        assert!(!errors.errors.is_empty());
    }
    // `status` is read-only and skipped without recursion, so any depth is simply dropped.
    let text = EXISTING_FORMAT.replace("\"spec\": {", &format!("\"status\": {deep}, \"spec\": {{"));
    assert_eq!(outcome(text.as_bytes()), Ok(()));

    let errors = outcome(deep.as_bytes()).expect_err("an array is not a policy");
    assert_eq!(fields(&errors), [""]);
    let objects = format!("{}{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    outcome(objects.as_bytes()).expect_err("deep objects");
}

#[test]
fn long_strings_around_the_size_limit() {
    let wrap = |filler: &str| EXISTING_FORMAT.replace("\"optional\"", &format!("\"{filler}\""));
    let base = wrap("").len();
    // Just fits the document limit: parses, and compile names the over-long body.
    let fits = wrap(&"b".repeat(MAX_POLICY_BYTES - base));
    assert_eq!(fits.len(), MAX_POLICY_BYTES);
    let errors = outcome(fits.as_bytes()).expect_err("body over its own limit");
    assert_eq!(fields(&errors), ["spec.rules[0].fault.abort.body"]);
    // One byte over the document limit: refused before parsing.
    let over = wrap(&"b".repeat(MAX_POLICY_BYTES - base + 1));
    let errors = outcome(over.as_bytes()).expect_err("over the document limit");
    assert_eq!(fields(&errors), [""]);

    // Long strings everywhere a string goes, including escapes and non-ASCII text.
    let long = "é\\n\\u00e9".repeat(20_000);
    for original in [
        "\"reviews-abort\"",
        "\"/api\"",
        "\"x-user\"",
        "\"x-k\"",
        "\"v2\"",
    ] {
        let text = EXISTING_FORMAT.replace(original, &format!("\"{long}\""));
        let errors = outcome(text.as_bytes()).expect_err(original);
        assert!(
            errors.errors.iter().all(|e| !e.field.is_empty()),
            "{errors}"
        );
    }
}

#[test]
fn hostile_regexes_are_rejected_at_their_field() {
    let field = "spec.rules[0].match.path.regex";
    for regex in [
        "(".repeat(500) + &")".repeat(500),
        "a{1000}{1000}{1000}".to_owned(),
        "[".to_owned(),
        "\\\\".repeat(600),
    ] {
        let text = EXISTING_FORMAT_HTTP_STATUS.replace(
            "\"regex\": \"/ratings/[0-9]+\"",
            &format!("\"regex\": {}", serde_json::to_string(&regex).unwrap()),
        );
        let errors = outcome(text.as_bytes()).expect_err(&regex);
        assert_eq!(fields(&errors), [field], "{errors}");
    }
}
