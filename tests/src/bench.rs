//! What the benchmark binaries (`src/bin/bench-*`) share: a bounded count argument, order
//! statistics, and the two pieces of HTTP/1.1 their raw clients read responses with.

use std::time::Duration;

use clap::builder::RangedU64ValueParser;

/// A clap parser for a count in `min..=max`.
pub fn whole_number(min: u64, max: u64) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(min..=max)
}

/// The `q` quantile (0 to 1) of `values`, the sample nearest to rank `(n - 1) * q`; zero when
/// there are none.
pub fn quantile(values: &[Duration], q: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    match sorted.len() {
        0 => Duration::ZERO,
        n => sorted[((n - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize],
    }
}

/// The median of `values` (the upper one of an even count); zero when there are none.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut sorted: Vec<f64> = values.into_iter().collect();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// Where `needle` first occurs in `haystack` (the end of a response head: `b"\r\n\r\n"`).
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `HTTP/1.1 200 OK\r\n...`, a response head without its blank line: the status and the
/// `Content-Length`, if any.
pub fn response_head(head: &[u8]) -> Option<(u16, Option<usize>)> {
    let mut lines = head.split(|&b| b == b'\n');
    let status_line = lines.next()?;
    let status = std::str::from_utf8(status_line.get(9..12)?)
        .ok()?
        .parse()
        .ok()?;
    let length = lines.find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = line.split_at(colon);
        if !name.eq_ignore_ascii_case(b"content-length") {
            return None;
        }
        std::str::from_utf8(&value[1..]).ok()?.trim().parse().ok()
    });
    Some((status, length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads_give_status_and_length() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-type: x\r\nContent-Length: 42\r\n\r\nbody";
        let end = find(head, b"\r\n\r\n").unwrap();
        assert_eq!(response_head(&head[..end]), Some((200, Some(42))));
        assert_eq!(
            response_head(b"HTTP/1.1 503 Service Unavailable"),
            Some((503, None))
        );
        assert_eq!(response_head(b"HTTP/1.1"), None);
        assert_eq!(find(b"abc", b"\r\n\r\n"), None);
    }

    #[test]
    fn quantiles_and_medians_pick_samples() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        let samples = ms(&[5, 1, 4, 2, 3]);
        assert_eq!(quantile(&samples, 0.0), Duration::from_millis(1));
        assert_eq!(quantile(&samples, 0.5), Duration::from_millis(3));
        assert_eq!(quantile(&samples, 1.0), Duration::from_millis(5));
        assert_eq!(quantile(&[], 0.99), Duration::ZERO);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), 3.0);
        assert_eq!(median([]), 0.0);
    }
}
