//! The text tables of `boifi get`: columns aligned by padding, and the short forms of a
//! policy's parts that fill them (selector, age, expiry, fault summary).

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use boifi_policy::{Fault, Policy, Selector};

/// Spaces between columns (as kubectl).
const GAP: usize = 3;

/// `headers` and `rows` as lines with every column padded to its widest cell; the last column
/// is not padded. Widths count characters.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                let pad = widths[i] + GAP - cell.chars().count();
                let _ = write!(line, "{cell}{:pad$}", "");
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The columns of `boifi get`.
pub const HEADERS: [&str; 6] = ["NAME", "SELECTOR", "RULES", "REVISION", "AGE", "EXPIRY"];
/// The columns of `boifi get -o wide`.
pub const WIDE_HEADERS: [&str; 9] = [
    "NAME", "SELECTOR", "RULES", "REVISION", "AGE", "VERSION", "UPDATED", "FAULTS", "EXPIRY",
];

/// One row of the table for `policy`, read at `now_ms` (Unix ms, this machine's clock).
pub fn row(policy: &Policy, now_ms: u64, wide: bool) -> Vec<String> {
    let status = policy.status.clone().unwrap_or_default();
    let name = policy.metadata.name.clone();
    let selector = selector(&policy.spec.selector);
    let rules = policy.spec.rules.len().to_string();
    let revision = status.revision.to_string();
    let created = age(now_ms, status.created_at_ms);
    let expiry = expiry(policy);
    if !wide {
        return vec![name, selector, rules, revision, created, expiry];
    }
    let version = policy
        .metadata
        .version
        .clone()
        .unwrap_or_else(|| "-".into());
    let updated = age(now_ms, status.updated_at_ms);
    let faults: Vec<String> = policy.spec.rules.iter().map(|r| fault(&r.fault)).collect();
    let faults = if faults.is_empty() {
        "-".to_owned()
    } else {
        faults.join(";")
    };
    vec![
        name, selector, rules, revision, created, version, updated, faults, expiry,
    ]
}

/// `namespace/service{label=value,...}`, `*` for a part that matches any workload:
/// `demo/reviews{version=v2}`, `*/*`.
pub fn selector(selector: &Selector) -> String {
    let part = |value: &Option<String>| match value.as_deref() {
        None | Some("") | Some("*") => "*".to_owned(),
        Some(value) => value.to_owned(),
    };
    let mut text = format!("{}/{}", part(&selector.namespace), part(&selector.service));
    if !selector.labels.is_empty() {
        let labels: Vec<String> = selector
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = write!(text, "{{{}}}", labels.join(","));
    }
    text
}

/// How long ago `then_ms` was, as kubectl shows ages: `45s`, `5m30s`, `42m`, `5h10m`, `30h`,
/// `3d4h`, `120d`; `-` when unknown (0) and `0s` for a time ahead of this clock.
pub fn age(now_ms: u64, then_ms: u64) -> String {
    if then_ms == 0 {
        return "-".to_owned();
    }
    let secs = now_ms.saturating_sub(then_ms) / 1000;
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 && s % 60 != 0 => format!("{m}m{}s", s % 60),
        s if s < 3 * 3600 => format!("{m}m"),
        s if s < 8 * 3600 && (s / 60) % 60 != 0 => format!("{h}h{}m", m % 60),
        s if s < 48 * 3600 => format!("{h}h"),
        s if s < 8 * 86_400 && h % 24 != 0 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

/// When the policy stops acting, by the server's `status`: `never` (some rule runs until the
/// policy is deleted, or it has no rules), `expired` (every rule's time has passed, as the
/// server computed when it answered), else `active until <the last rule's expiry>`.
pub fn expiry(policy: &Policy) -> String {
    let rules = policy
        .status
        .as_ref()
        .map(|s| s.rules.as_slice())
        .unwrap_or_default();
    if rules.is_empty() || rules.iter().any(|r| r.expires_at_ms.is_none()) {
        return "never".to_owned();
    }
    if rules.iter().all(|r| r.expired) {
        return "expired".to_owned();
    }
    let last = rules.iter().filter_map(|r| r.expires_at_ms).max();
    match last.and_then(rfc3339) {
        Some(at) => format!("active until {at}"),
        None => "active".to_owned(),
    }
}

/// `2024-05-01T12:05:00Z`.
pub fn rfc3339(ms: u64) -> Option<String> {
    let at = UNIX_EPOCH.checked_add(Duration::from_millis(ms))?;
    let mut text = String::new();
    write!(text, "{}", humantime::format_rfc3339_seconds(at)).ok()?;
    Some(text)
}

/// One rule's fault in a few characters: `50%:delay=200ms,abort=503`, `abort=UNAVAILABLE`
/// (100 % is left out), `after=100ms` when the fault waits.
pub fn fault(fault: &Fault) -> String {
    let mut parts = Vec::new();
    if fault.start_delay_ms > 0 {
        parts.push(format!("after={}ms", fault.start_delay_ms));
    }
    if let Some(delay) = &fault.delay {
        parts.push(format!("delay={}ms", delay.fixed_delay_ms));
    }
    if let Some(abort) = &fault.abort {
        let code = match (&abort.http_status, &abort.grpc_status) {
            (Some(http), _) => http.to_string(),
            (None, Some(grpc)) => grpc.clone(),
            (None, None) => "?".to_owned(),
        };
        parts.push(format!("abort={code}"));
    }
    let text = parts.join(",");
    match fault.percentage {
        Some(p) if p < 100.0 => format!("{p}%:{text}"),
        _ => text,
    }
}

#[cfg(test)]
mod tests;
