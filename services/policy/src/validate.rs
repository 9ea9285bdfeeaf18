use crate::{CompiledPolicy, Policy, ValidationErrors};

/// Check every rule of the design brief; on success the policy is ready for matching.
pub fn compile(policy: &Policy) -> Result<CompiledPolicy, ValidationErrors> {
    let _ = policy;
    todo!("implemented by the policy-model work")
}
