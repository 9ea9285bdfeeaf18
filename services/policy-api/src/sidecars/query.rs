//! The query of policy-api's `GET /v1/sidecars`:
//! `?namespace=NS&service=SVC&policy=NAME&state=current|behind&limit=N&continue=TOKEN`.
//!
//! Read as `GET /v1/policies` reads its own: strictly, every problem naming its parameter, an
//! unknown or repeated parameter a 400 ([`read_query`]); `limit` out of range is a 400, not
//! a silent clamp. The `continue` token stands for the last sidecar of the previous page
//! (namespace and pod), so each page reads the current table anew: a sidecar live during the
//! whole walk is listed exactly once.

use boifi_policy::wire::{read_query, FieldProblem, Filter, SidecarState, MAX_NAME_LEN};

use crate::routes::policies::list::{decode_token, encode_token};

/// Sidecars in a page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 500;
/// Largest `limit` (a broadcaster's largest page).
pub const MAX_LIMIT: usize = boifi_policy::wire::MAX_SIDECARS_PAGE;

const PARAMETERS: [&str; 6] = [
    "namespace",
    "service",
    "policy",
    "state",
    "limit",
    "continue",
];

/// Between namespace and pod in a token: names never hold control characters.
const SEPARATOR: char = '\n';

/// What `GET /v1/sidecars` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarListQuery {
    /// Only sidecars of this namespace.
    pub namespace: Option<String>,
    /// Only sidecars whose workload name or `app` label is this.
    pub service: Option<String>,
    /// Only sidecars this policy selects.
    pub policy: Option<String>,
    pub state: Option<SidecarState>,
    pub limit: usize,
    /// From `continue`: list sidecars after this (namespace, pod).
    pub after: Option<(String, String)>,
}

impl Default for SidecarListQuery {
    fn default() -> Self {
        SidecarListQuery {
            namespace: None,
            service: None,
            policy: None,
            state: None,
            limit: DEFAULT_LIMIT,
            after: None,
        }
    }
}

impl SidecarListQuery {
    /// Parse the query string, strictly: every problem, each naming its parameter.
    pub fn parse(query: &str) -> Result<SidecarListQuery, Vec<FieldProblem>> {
        let [namespace, service, policy, state, limit, token] =
            read_query(query, &PARAMETERS).map_err(|problem| vec![problem])?;
        let mut problems = Vec::new();
        // Names as the stream's filter reads them: empty or `*` means any.
        let filter = Filter::parse(namespace.as_deref(), service.as_deref(), None)
            .map_err(|found| problems.extend(found))
            .unwrap_or_default();
        let policy = policy.filter(|name| !name.is_empty());
        if let Some(Err(message)) = policy.as_deref().map(boifi_policy::check_dns_label) {
            problems.push(FieldProblem::new("policy", message));
        }
        let state = match state.as_deref() {
            None | Some("") => None,
            Some("current") => Some(SidecarState::Current),
            Some("behind") => Some(SidecarState::Behind),
            Some(other) => {
                problems.push(FieldProblem::new(
                    "state",
                    format!(
                        "expected `current` or `behind`, found `{}`",
                        other.escape_default()
                    ),
                ));
                None
            }
        };
        let limit = match limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(value) => match value.parse::<usize>() {
                Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => limit,
                _ => {
                    problems.push(FieldProblem::new(
                        "limit",
                        format!(
                            "expected a whole number from 1 to {MAX_LIMIT}, found `{}`",
                            value.escape_default()
                        ),
                    ));
                    DEFAULT_LIMIT
                }
            },
        };
        let after = match token.as_deref().map(parse_token) {
            None => None,
            Some(Some(after)) => Some(after),
            Some(None) => {
                problems.push(FieldProblem::new(
                    "continue",
                    "not a token this server gave; list again without `continue`",
                ));
                None
            }
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(SidecarListQuery {
            namespace: filter.namespace,
            service: filter.service,
            policy,
            state,
            limit,
            after,
        })
    }
}

/// The `continue` token of a page that ends at this sidecar.
pub fn continue_token(namespace: &str, pod: &str) -> String {
    encode_token(&format!("{namespace}{SEPARATOR}{pod}"))
}

fn parse_token(token: &str) -> Option<(String, String)> {
    let key = decode_token(token, 2 * MAX_NAME_LEN + 1)?;
    let (namespace, pod) = key.split_once(SEPARATOR)?;
    Some((namespace.to_owned(), pod.to_owned()))
}

#[cfg(test)]
mod tests;
