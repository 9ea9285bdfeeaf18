//! The read-only `status` block the server adds.

use crate::{Policy, PolicyStatus};

/// Stamp `policy.status` for a write at `now_ms` (Unix ms, server clock). `created_at_ms` is
/// the creation time of the policy being replaced, if any. Per rule, `expires_at_ms` is
/// `now_ms + duration_seconds * 1000` (none when `duration_seconds` is 0). `revision` is left
/// for the store to fill in.
pub fn stamp(policy: &mut Policy, now_ms: u64, created_at_ms: Option<u64>) {
    let _ = (policy, now_ms, created_at_ms);
    todo!("implemented by the policy-model work")
}

/// Set each rule's `expired` flag for a read at `now_ms`.
pub fn refresh_expired(status: &mut PolicyStatus, now_ms: u64) {
    let _ = (status, now_ms);
    todo!("implemented by the policy-model work")
}
