use crate::{Policy, ValidationErrors};

/// Parse a policy from JSON, strictly: unknown fields (except the read-only `status`) and
/// type errors are reported with their field paths.
pub fn parse_policy(json: &[u8]) -> Result<Policy, ValidationErrors> {
    let _ = json;
    todo!("implemented by the policy-model work")
}
