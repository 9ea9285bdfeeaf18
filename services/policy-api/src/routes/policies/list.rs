//! `GET /v1/policies` in pages: `?limit=N&continue=TOKEN&namespace=NS&service=SVC`.
//!
//! Policies come sorted by name; a page holds at most `limit` of them (default
//! [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]; more is a 400 on `limit`, not a silent clamp, so
//! a client never mistakes a short page for the end). When more remain, the answer carries
//! `continue`, an opaque token to send back with the same query for the next page (as
//! Kubernetes' `metadata.continue`). Each page reads the store anew: a policy that exists
//! during the whole walk is listed exactly once; one created or deleted meanwhile may or may
//! not be.
//!
//! `namespace` and `service` keep the policies whose selector can match such a workload:
//! the sse-broadcaster's stream filter ([`Filter::admits`]), so a list and a sidecar's stream
//! agree. Parameters are read as the stream reads its own ([`read_query`]): an unknown or
//! repeated one is a 400 naming it.

use boifi_policy::wire::{read_query, FieldProblem, Filter};
use boifi_policy::Selector;

/// Policies in a page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 500;
/// Largest `limit`.
pub const MAX_LIMIT: usize = 1000;

const PARAMETERS: [&str; 4] = ["limit", "continue", "namespace", "service"];

/// Longest policy name, hence the longest name a token stands for.
const MAX_NAME_LEN: usize = 63;

/// What `GET /v1/policies` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub limit: usize,
    /// From `continue`: list names after this one.
    pub after: Option<String>,
    pub filter: Filter,
}

impl ListQuery {
    /// Parse the query string, strictly: every problem, each naming its parameter.
    pub fn parse(query: &str) -> Result<ListQuery, Vec<FieldProblem>> {
        let [limit, token, namespace, service] =
            read_query(query, &PARAMETERS).map_err(|problem| vec![problem])?;
        let mut problems = Vec::new();
        let namespace = printable("namespace", namespace, &mut problems);
        let service = printable("service", service, &mut problems);
        let filter = Filter::parse(namespace.as_deref(), service.as_deref(), None)
            .map_err(|found| problems.extend(found))
            .ok();
        let limit = match limit.as_deref().map(parse_limit) {
            None => DEFAULT_LIMIT,
            Some(Ok(limit)) => limit,
            Some(Err(problem)) => {
                problems.push(problem);
                DEFAULT_LIMIT
            }
        };
        let after = match token.as_deref().map(|t| {
            // Policy names are DNS labels: a token for anything else was not issued here.
            decode_token(t, MAX_NAME_LEN).filter(|name| {
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
        }) {
            None => None,
            Some(Some(name)) => Some(name),
            Some(None) => {
                problems.push(FieldProblem::new(
                    "continue",
                    "not a token this server gave; list again without `continue`",
                ));
                None
            }
        };
        match filter {
            Some(filter) if problems.is_empty() => Ok(ListQuery {
                limit,
                after,
                filter,
            }),
            _ => Err(problems),
        }
    }
}

/// Kubernetes names are printable ASCII; the list takes nothing else (the stream's filter is
/// more lenient, and says the rest). A value refused here is reported and not filtered on.
fn printable(
    field: &'static str,
    value: Option<String>,
    problems: &mut Vec<FieldProblem>,
) -> Option<String> {
    let value = value?;
    if value.bytes().all(|b| b.is_ascii_graphic()) {
        return Some(value);
    }
    problems.push(FieldProblem::new(
        field,
        "a name of printable ASCII characters (no spaces)",
    ));
    None
}

fn parse_limit(value: &str) -> Result<usize, FieldProblem> {
    match value.parse::<usize>() {
        Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
        _ => Err(FieldProblem::new(
            "limit",
            format!(
                "expected a whole number from 1 to {MAX_LIMIT}, found `{}`",
                value.escape_default()
            ),
        )),
    }
}

/// One page of `sorted` (sorted by name, as the store gives them): the items after
/// `query.after` that the filter admits, at most `query.limit`, and the `continue` token when
/// more remain. `name` and `selector` read an item.
pub fn page<T>(
    sorted: Vec<T>,
    query: &ListQuery,
    name: impl Fn(&T) -> &str,
    selector: impl Fn(&T) -> &Selector,
) -> (Vec<T>, Option<String>) {
    let start = match &query.after {
        Some(after) => sorted.partition_point(|item| name(item) <= after.as_str()),
        None => 0,
    };
    let mut admitted = sorted
        .into_iter()
        .skip(start)
        .filter(|item| query.filter.admits(selector(item)));
    let page: Vec<T> = admitted.by_ref().take(query.limit).collect();
    let more = admitted.next().is_some();
    let token = match page.last() {
        Some(last) if more => Some(encode_token(name(last))),
        _ => None,
    };
    (page, token)
}

/// The token for "after `name`": opaque to clients (they send it back as they got it): the
/// hex of the name's bytes.
pub(crate) fn encode_token(name: &str) -> String {
    name.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The name a token stands for; `None` for anything [`encode_token`] cannot have written
/// for a UTF-8 name of at most `max_len` bytes (the OpenAPI document gives the policy list's
/// rule as a pattern, so a client can check it too).
pub(crate) fn decode_token(token: &str, max_len: usize) -> Option<String> {
    let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if token.is_empty()
        || token.len() > 2 * max_len
        || !token.len().is_multiple_of(2)
        || !token.bytes().all(lower_hex)
    {
        return None;
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests;
