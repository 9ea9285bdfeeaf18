//! Seeded malformed input for the parsers' robustness tests: the same mutants on every run.

use crate::rng::{Rng, SplitMix64};

/// Spliced into inputs: JSON structure and escapes, numbers no field can hold, SSE line breaks
/// and field names, NUL and a byte-order mark.
const TOKENS: [&[u8]; 20] = [
    b"{",
    b"[",
    b"\"",
    b"}",
    b"]",
    b",",
    b":",
    b"\\u0000",
    b"\0",
    b"\\ud800",
    b"1e309",
    b"-1",
    b"18446744073709551616",
    b"null",
    b"\n",
    b"\r",
    b"\n\n",
    b"data: ",
    b"event: snapshot\n",
    "\u{feff}".as_bytes(),
];

/// `count` mutants of `input`, each with one to three edits: bit flips, spliced tokens, cut
/// ranges and random bytes.
pub fn mutants(input: &[u8], seed: u64, count: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
    let mut rng = SplitMix64::new(seed);
    (0..count).map(move |_| {
        let mut bytes = input.to_vec();
        for _ in 0..=below(&mut rng, 3) {
            let at = below(&mut rng, bytes.len() + 1);
            match below(&mut rng, 4) {
                0 if at < bytes.len() => bytes[at] ^= 1 << below(&mut rng, 8),
                1 => {
                    let token = TOKENS[below(&mut rng, TOKENS.len())];
                    bytes.splice(at..at, token.iter().copied());
                }
                2 if at < bytes.len() => {
                    let end = (at + 1 + below(&mut rng, 8)).min(bytes.len());
                    bytes.drain(at..end);
                }
                _ => bytes.insert(at, rng.next_u64() as u8),
            }
        }
        bytes
    })
}

fn below(rng: &mut SplitMix64, n: usize) -> usize {
    rng.below(n as u64) as usize
}

/// `n` nested JSON arrays around `null`.
pub fn nested(n: usize) -> String {
    format!("{}null{}", "[".repeat(n), "]".repeat(n))
}
