//! `boifi audit [--policy NAME] [--actor NAME] [--action ACTION] [--limit N] [-o table|json|yaml]`:
//! who changed what, when and why (`GET /v1/audit`), newest first.
//!
//! The entries are read page by page until `--limit` of them are shown or the trail ends.
//! `-o json` prints `{"entries": [...]}` as the server sends each entry; `-o yaml` the same
//! document in YAML. Also here: `--reason`, which `apply` and `delete` send in the
//! `X-Boifi-Reason` header.

use boifi_store::AuditAction;
use clap::builder::PossibleValuesParser;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::client::{encode, Client, Connection, ConnectionArgs};
use super::{table, CliError, Io};

/// Entries asked for per page, at most (the server's largest page).
const PAGE_SIZE: usize = 1000;
/// Largest `--limit`.
const MAX_LIMIT: usize = 1_000_000;

/// The columns of `boifi audit`.
pub const HEADERS: [&str; 6] = ["TIME", "ACTOR", "ACTION", "POLICY", "REVISION", "REASON"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// The server's JSON: `{"entries": [...]}`.
    Json,
    /// The same document as YAML.
    Yaml,
}

#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// Only changes of this policy.
    #[arg(long, value_name = "NAME")]
    pub policy: Option<String>,
    /// Only changes by this token name (`anonymous` when the server has no tokens).
    #[arg(long, value_name = "NAME")]
    pub actor: Option<String>,
    /// Only this kind of change.
    #[arg(long, value_parser = PossibleValuesParser::new(AuditAction::ALL.map(AuditAction::as_str)))]
    pub action: Option<String>,
    /// Show at most this many entries, the newest.
    #[arg(long, value_name = "N", default_value_t = 100,
        value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT as u64))]
    pub limit: u64,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// One entry as the server sends it (other fields are kept for `-o json|yaml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    revision: u64,
    time: String,
    actor: String,
    action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(flatten)]
    other: serde_json::Map<String, Value>,
}

/// One page of `GET /v1/audit`.
#[derive(Debug, Deserialize)]
struct Page {
    entries: Vec<Entry>,
    #[serde(default, rename = "continue")]
    next: Option<String>,
}

pub fn run(args: &AuditArgs, vars: Vec<(String, String)>, io: &mut Io<'_>) -> Result<(), CliError> {
    let client = Connection::resolve(&args.connection, None, vars)?.client();
    let limit = usize::try_from(args.limit).unwrap_or(MAX_LIMIT);
    let entries = read(&client, args, limit)?;
    match args.output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut *io.out, &json!({ "entries": entries }))
                .map_err(|e| CliError::Output(e.into()))?;
            writeln!(io.out)?;
        }
        Output::Yaml => {
            let text = serde_saphyr::to_string(&json!({ "entries": entries }))
                .map_err(|e| CliError::Protocol(format!("cannot write YAML: {e}")))?;
            io.out.write_all(text.as_bytes())?;
        }
        Output::Table if entries.is_empty() => {
            writeln!(io.err, "No audit entries on {}.", client.base())?;
        }
        Output::Table => {
            let rows: Vec<Vec<String>> = entries.iter().map(row).collect();
            io.out
                .write_all(table::render(&HEADERS, &rows).as_bytes())?;
        }
    }
    Ok(())
}

/// The newest `limit` entries the filters admit, following the server's `continue`.
fn read(client: &Client, args: &AuditArgs, limit: usize) -> Result<Vec<Entry>, CliError> {
    let mut filters = String::new();
    for (name, value) in [
        ("policy", args.policy.as_deref()),
        ("actor", args.actor.as_deref()),
        ("action", args.action.as_deref()),
    ] {
        if let Some(value) = value {
            filters.push_str(&format!("&{name}={}", encode(value)));
        }
    }
    let mut entries: Vec<Entry> = Vec::new();
    let mut next: Option<String> = None;
    while entries.len() < limit {
        let page_size = (limit - entries.len()).min(PAGE_SIZE);
        let mut path = format!("/v1/audit?limit={page_size}{filters}");
        if let Some(token) = &next {
            path.push_str("&continue=");
            path.push_str(&encode(token));
        }
        let page: Page = client.get_json(&path)?;
        entries.extend(page.entries);
        match page.next.filter(|t| !t.is_empty()) {
            Some(token) if next.as_ref() == Some(&token) => {
                return Err(CliError::Protocol(
                    "the server answered the same continue token twice".to_owned(),
                ))
            }
            Some(token) => next = Some(token),
            None => break,
        }
    }
    entries.truncate(limit);
    Ok(entries)
}

/// The table row of `entry`: the time to the second, `-` for what is absent.
fn row(entry: &Entry) -> Vec<String> {
    let time = humantime::parse_rfc3339_weak(&entry.time)
        .ok()
        .and_then(|at| {
            let ms = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
            table::rfc3339(u64::try_from(ms).ok()?)
        })
        .unwrap_or_else(|| entry.time.clone());
    let dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
    vec![
        time,
        entry.actor.clone(),
        entry.action.clone(),
        dash(&entry.policy),
        entry.revision.to_string(),
        dash(&entry.reason),
    ]
}

/// `--reason` of `apply` and `delete`: one line (it travels in an HTTP header); the server
/// checks the length.
pub fn parse_reason(text: &str) -> Result<String, String> {
    if text.chars().any(char::is_control) {
        return Err("one line of text, without control characters".to_owned());
    }
    Ok(text.to_owned())
}

/// The header that carries `reason`, for a write's extra headers.
pub fn reason_header(reason: Option<&str>) -> Option<(&'static str, &str)> {
    reason.map(|r| (boifi_policy_api::routes::audit::REASON_HEADER, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(policy: Option<&str>, reason: Option<&str>) -> Entry {
        Entry {
            revision: 42,
            time: "2024-05-01T12:05:00.123Z".into(),
            actor: "alice".into(),
            action: "halt".into(),
            policy: policy.map(str::to_owned),
            reason: reason.map(str::to_owned),
            other: Default::default(),
        }
    }

    #[test]
    fn rows_show_the_time_to_the_second_and_dashes_for_what_is_absent() {
        assert_eq!(
            row(&entry(None, Some("incident 7"))),
            [
                "2024-05-01T12:05:00Z",
                "alice",
                "halt",
                "-",
                "42",
                "incident 7"
            ]
        );
        assert_eq!(row(&entry(Some("p"), None))[3..], ["p", "42", "-"]);
        let mut odd = entry(None, None);
        odd.time = "yesterday".into();
        assert_eq!(row(&odd)[0], "yesterday", "shown as the server sent it");
    }

    #[test]
    fn a_reason_is_one_line() {
        assert_eq!(parse_reason("game day é").unwrap(), "game day é");
        assert!(parse_reason("a\nb").is_err());
        assert_eq!(reason_header(Some("x")), Some(("x-boifi-reason", "x")));
        assert_eq!(reason_header(None), None);
    }
}
