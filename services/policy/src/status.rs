//! The read-only `status` block the server adds.
//!
//! Pure functions of the policy and the server's clock reading, so expiry is decided once, by
//! one clock, and every sidecar sees the same `expires_at_ms` however often it reconnects.

use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};

use crate::wire::rule_active;
use crate::{Policy, PolicyStatus, RuleStatus};

/// Stamp `policy.status` for a write at `now_ms` (Unix ms, server clock). `created_at_ms` is
/// the creation time of the policy being replaced, if any. Per rule, `expires_at_ms` is
/// `now_ms + duration_seconds * 1000` (none when `duration_seconds` is 0). `revision` is left
/// for the store to fill in.
pub fn stamp(policy: &mut Policy, now_ms: u64, created_at_ms: Option<u64>) {
    let created_at_ms = created_at_ms.unwrap_or(now_ms);
    let revision = policy.status.as_ref().map_or(0, |status| status.revision);
    let rules = policy
        .spec
        .rules
        .iter()
        .map(|rule| {
            let expires_at_ms = (rule.fault.duration_seconds > 0)
                .then(|| now_ms.saturating_add(rule.fault.duration_seconds.saturating_mul(1000)));
            RuleStatus {
                expires_at_ms,
                expires_at: expires_at_ms.and_then(rfc3339),
                expired: is_expired(expires_at_ms, now_ms),
            }
        })
        .collect();
    policy.status = Some(PolicyStatus {
        revision,
        created_at_ms,
        updated_at_ms: now_ms,
        created_at: rfc3339(created_at_ms),
        updated_at: rfc3339(now_ms),
        rules,
        enforcement: None,
        injected: None,
    });
}

/// Set each rule's `expired` flag for a read at `now_ms`.
pub fn refresh_expired(status: &mut PolicyStatus, now_ms: u64) {
    for rule in &mut status.rules {
        rule.expired = is_expired(rule.expires_at_ms, now_ms);
    }
}

/// Expired from `expires_at_ms` on: the boundary of [`crate::wire::rule_active`].
fn is_expired(expires_at_ms: Option<u64>, now_ms: u64) -> bool {
    !rule_active(expires_at_ms, now_ms)
}

/// `2024-05-01T12:00:00.000Z`; `None` past year 9999, which RFC 3339 cannot write.
fn rfc3339(ms: u64) -> Option<String> {
    let time = UNIX_EPOCH.checked_add(Duration::from_millis(ms))?;
    let mut text = String::new();
    // humantime reports a formatting error (instead of text) for years past 9999.
    write!(text, "{}", humantime::format_rfc3339_millis(time)).ok()?;
    Some(text)
}
