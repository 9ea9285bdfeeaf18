//! Which policies a client may receive.
//!
//! A sidecar says who it is with query parameters; every parameter it leaves out is unknown
//! and therefore matches anything, so a filter can only narrow what a client receives, never
//! hide a policy that could apply to it:
//!
//! - `namespace=demo`: the workload's namespace (`NAMESPACE` in Envoy node metadata);
//! - `service=reviews`: the workload name (`WORKLOAD_NAME`);
//! - `labels=version:v2,app:reviews`: the workload's labels (`LABELS`), as comma-separated
//!   `key:value` pairs. Given, it is the complete label set: a selector label missing from it
//!   does not match. The `app` label also counts as a service name, as in selector semantics.
//!
//! An empty value or `*` for `namespace`/`service` means "unknown" (same as leaving it out).

use std::collections::BTreeMap;

use boifi_policy::Selector;

/// Longest namespace or service name accepted (a DNS subdomain).
pub const MAX_NAME_LEN: usize = 253;
/// Most label pairs accepted in `labels`.
pub const MAX_LABELS: usize = 64;
/// Longest label key or value accepted (a prefixed Kubernetes key is at most 317).
pub const MAX_LABEL_PART_LEN: usize = 317;

/// The identity a client gave; `None` parts are unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Filter {
    pub namespace: Option<String>,
    pub service: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
}

/// A query parameter that could not be used, with its name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldProblem {
    pub field: &'static str,
    pub message: String,
}

impl FieldProblem {
    pub(crate) fn new(field: &'static str, message: impl Into<String>) -> Self {
        FieldProblem {
            field,
            message: message.into(),
        }
    }
}

impl Filter {
    /// Builds a filter from the raw query values.
    pub fn parse(
        namespace: Option<&str>,
        service: Option<&str>,
        labels: Option<&str>,
    ) -> Result<Filter, Vec<FieldProblem>> {
        let mut problems = Vec::new();
        let namespace = parse_name("namespace", namespace, &mut problems);
        let service = parse_name("service", service, &mut problems);
        let labels = match labels.map(parse_labels).transpose() {
            Ok(labels) => labels,
            Err(problem) => {
                problems.push(problem);
                None
            }
        };
        if problems.is_empty() {
            Ok(Filter {
                namespace,
                service,
                labels,
            })
        } else {
            Err(problems)
        }
    }

    /// True when a policy with `selector` could apply to this client's workload.
    pub fn admits(&self, selector: &Selector) -> bool {
        let namespace = self.namespace.as_deref();
        let app = self
            .labels
            .as_ref()
            .and_then(|labels| labels.get("app"))
            .map(String::as_str);
        let service_ok = selector.may_match(namespace, self.service.as_deref())
            || app.is_some_and(|app| selector.may_match(namespace, Some(app)));
        if !service_ok {
            return false;
        }
        match &self.labels {
            // Unknown labels could be anything.
            None => true,
            Some(labels) => selector
                .labels
                .iter()
                .all(|(key, value)| labels.get(key) == Some(value)),
        }
    }
}

fn parse_name(
    field: &'static str,
    value: Option<&str>,
    problems: &mut Vec<FieldProblem>,
) -> Option<String> {
    let value = value?;
    if value.is_empty() || value == "*" {
        return None;
    }
    if value.len() > MAX_NAME_LEN {
        problems.push(FieldProblem::new(
            field,
            format!("longer than {MAX_NAME_LEN} characters"),
        ));
        return None;
    }
    if value.chars().any(char::is_control) {
        problems.push(FieldProblem::new(field, "contains control characters"));
        return None;
    }
    Some(value.to_owned())
}

fn parse_labels(raw: &str) -> Result<BTreeMap<String, String>, FieldProblem> {
    let mut labels = BTreeMap::new();
    if raw.is_empty() {
        return Ok(labels);
    }
    for pair in raw.split(',') {
        let Some((key, value)) = pair.split_once(':') else {
            return Err(FieldProblem::new(
                "labels",
                format!("`{pair}` is not a `key:value` pair"),
            ));
        };
        if key.is_empty() {
            return Err(FieldProblem::new(
                "labels",
                format!("`{pair}` has an empty key"),
            ));
        }
        if key.len() > MAX_LABEL_PART_LEN || value.len() > MAX_LABEL_PART_LEN {
            return Err(FieldProblem::new(
                "labels",
                format!("keys and values are at most {MAX_LABEL_PART_LEN} characters"),
            ));
        }
        if labels.len() == MAX_LABELS {
            return Err(FieldProblem::new(
                "labels",
                format!("at most {MAX_LABELS} labels"),
            ));
        }
        if labels.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(FieldProblem::new(
                "labels",
                format!("label `{key}` given twice"),
            ));
        }
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(namespace: &str, service: &str, labels: &[(&str, &str)]) -> Selector {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Selector {
            namespace: opt(namespace),
            service: opt(service),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn filter(namespace: Option<&str>, service: Option<&str>, labels: Option<&str>) -> Filter {
        Filter::parse(namespace, service, labels).expect("valid filter")
    }

    #[test]
    fn unknown_parts_match_anything() {
        let everything = Filter::default();
        assert!(everything.admits(&selector("demo", "reviews", &[("version", "v2")])));
        assert!(everything.admits(&selector("", "", &[])));
        assert_eq!(filter(Some(""), Some("*"), None), Filter::default());
    }

    #[test]
    fn namespace_and_service_narrow() {
        let reviews = filter(Some("demo"), Some("reviews"), None);
        assert!(reviews.admits(&selector("demo", "reviews", &[])));
        assert!(reviews.admits(&selector("", "reviews", &[])));
        assert!(reviews.admits(&selector("demo", "", &[])));
        assert!(reviews.admits(&selector("", "*", &[])));
        assert!(!reviews.admits(&selector("demo", "ratings", &[])));
        assert!(!reviews.admits(&selector("prod", "reviews", &[])));
        // Labels are unknown, so a label selector may still match.
        assert!(reviews.admits(&selector("demo", "reviews", &[("version", "v2")])));
    }

    #[test]
    fn given_labels_are_the_complete_set() {
        let v2 = filter(None, Some("reviews"), Some("version:v2,team:a"));
        assert!(v2.admits(&selector("", "reviews", &[("version", "v2")])));
        assert!(v2.admits(&selector(
            "",
            "reviews",
            &[("version", "v2"), ("team", "a")]
        )));
        assert!(!v2.admits(&selector("", "reviews", &[("version", "v1")])));
        assert!(!v2.admits(&selector("", "reviews", &[("tier", "x")])));
        let none = filter(None, None, Some(""));
        assert!(none.admits(&selector("", "", &[])));
        assert!(!none.admits(&selector("", "", &[("version", "v2")])));
    }

    #[test]
    fn app_label_counts_as_service_name() {
        let by_app = filter(Some("demo"), Some("reviews-v2"), Some("app:reviews"));
        assert!(by_app.admits(&selector("demo", "reviews", &[])));
        assert!(by_app.admits(&selector("demo", "reviews-v2", &[])));
        assert!(!by_app.admits(&selector("demo", "ratings", &[])));
    }

    #[test]
    fn bad_values_name_their_field() {
        let long = "x".repeat(MAX_NAME_LEN + 1);
        let problems = Filter::parse(Some(&long), Some("a\nb"), Some("version")).unwrap_err();
        let fields: Vec<_> = problems.iter().map(|p| p.field).collect();
        assert_eq!(fields, ["namespace", "service", "labels"]);
        assert!(problems[2].message.contains("key:value"), "{problems:?}");
        for bad in [":v", "a:1,a:2"] {
            assert_eq!(
                Filter::parse(None, None, Some(bad)).unwrap_err()[0].field,
                "labels"
            );
        }
        let many: Vec<String> = (0..=MAX_LABELS).map(|i| format!("k{i}:v")).collect();
        let problems = Filter::parse(None, None, Some(&many.join(","))).unwrap_err();
        assert!(problems[0].message.contains("at most"), "{problems:?}");
    }
}
