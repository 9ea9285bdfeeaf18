//! [`ValidPolicy`]: a policy that passed every check, and the one way request bytes become one.
//!
//! [`ValidPolicy::parse`] runs the strict parse ([`crate::parse_policy`]'s rules), then
//! [`crate::compile`]'s value checks, and answers with every problem of both steps at once: a
//! body whose only parse problems are unknown fields is still checked, so a user fixing a typo
//! also hears that `percentage` is out of range. The compiled matchers are not kept: the server
//! stores and serves the wire form, and each sidecar compiles what it receives.
//!
//! The fields are private, so code outside this module can only obtain a `ValidPolicy` from
//! [`ValidPolicy::parse`] or [`TryFrom<Policy>`]; the store's `put` takes nothing else.

use std::ops::Deref;

use crate::{compile, parse, status, Policy, ValidationErrors};

/// How a policy body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    Json,
    /// One YAML document, read into JSON and parsed as JSON is ([`crate::yaml`]): the same
    /// field paths, plus YAML's own problems with their line and column. Behind the crate
    /// feature `yaml`, so the Wasm plugin never links a YAML parser.
    #[cfg(feature = "yaml")]
    Yaml,
}

/// A policy that passed every check of the design brief.
///
/// Reads go through `Deref` to [`Policy`]; nothing can change the policy's `metadata` or
/// `spec` afterwards. Only the server-owned `status` changes, through [`ValidPolicy::stamp`]:
/// [`compile`] reads nothing from it that could fail.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidPolicy {
    policy: Policy,
}

impl ValidPolicy {
    /// Turn a request body into a valid policy, or report every problem with its field path:
    /// unknown fields and type errors from the strict parse, then the value checks of
    /// [`compile`], then (when `path_name` is given, as for `PUT /v1/policies/{name}`) a
    /// `metadata.name` that differs from it. A `status` in the body is ignored and dropped.
    pub fn parse(
        body: &[u8],
        format: Format,
        path_name: Option<&str>,
    ) -> Result<ValidPolicy, ValidationErrors> {
        let parsed = match format {
            Format::Json => parse::parse_json(body),
            #[cfg(feature = "yaml")]
            Format::Yaml => crate::yaml::parse_yaml(body),
        };
        ValidPolicy::from_parsed(parsed, path_name)
    }

    /// The checks after the strict parse: `compile`'s, then the path name's, added to the
    /// parse's own problems.
    pub(crate) fn from_parsed(
        (policy, mut errors): (Option<Policy>, ValidationErrors),
        path_name: Option<&str>,
    ) -> Result<ValidPolicy, ValidationErrors> {
        // Not even well-typed: there are no values to check.
        let Some(policy) = policy else {
            return Err(errors);
        };
        if let Err(found) = compile(&policy) {
            for e in found.errors {
                if !errors.errors.contains(&e) {
                    errors.errors.push(e);
                }
            }
        }
        if let Some(path_name) = path_name {
            if policy.metadata.name != path_name {
                errors.push(
                    "metadata.name",
                    format!(
                        "must equal the name in the path, \"{}\"",
                        path_name.escape_default()
                    ),
                );
            }
        }
        if errors.is_empty() {
            Ok(ValidPolicy { policy })
        } else {
            Err(errors)
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// `metadata.name`, the key the policy is stored under.
    pub fn name(&self) -> &str {
        &self.policy.metadata.name
    }

    pub fn into_policy(self) -> Policy {
        self.policy
    }

    /// Stamp the server-owned `status` for a write at `now_ms`; see [`status::stamp`].
    pub fn stamp(&mut self, now_ms: u64, created_at_ms: Option<u64>) {
        status::stamp(&mut self.policy, now_ms, created_at_ms);
    }
}

/// Check an already typed policy (one built in code, or read back from storage): the value
/// checks of [`compile`]. Its `status` is kept. Request bodies go through
/// [`ValidPolicy::parse`], which also reports unknown fields.
impl TryFrom<Policy> for ValidPolicy {
    type Error = ValidationErrors;

    fn try_from(policy: Policy) -> Result<ValidPolicy, ValidationErrors> {
        compile(&policy)?;
        Ok(ValidPolicy { policy })
    }
}

impl Deref for ValidPolicy {
    type Target = Policy;

    fn deref(&self) -> &Policy {
        &self.policy
    }
}

impl AsRef<Policy> for ValidPolicy {
    fn as_ref(&self) -> &Policy {
        &self.policy
    }
}

impl From<ValidPolicy> for Policy {
    fn from(valid: ValidPolicy) -> Policy {
        valid.policy
    }
}

#[cfg(test)]
mod tests;
