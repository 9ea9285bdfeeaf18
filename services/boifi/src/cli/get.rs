//! `boifi get [NAME] [-o table|wide|json|yaml]`: the policies on the server, or one.
//!
//! The list is read page by page (`?limit=` and the `continue` token the server answers with,
//! when it pages; a server that does not page answers everything at once). `-o json|yaml`
//! prints what the server sent, and `boifi apply -f` takes it back (`status` is ignored on
//! input): `-o json` one policy, or the list document `{"policies": [...]}`; `-o yaml` one
//! policy, or every policy as a YAML stream (`---` between them; YAML's own list of
//! documents, which `apply` reads without a special form).

use std::time::{SystemTime, UNIX_EPOCH};

use boifi_policy::wire::Filter;
use boifi_policy::Policy;
use clap::{Args, ValueEnum};
use serde::Deserialize;
use serde_json::{json, Value};

use super::client::{encode, policy_path, Client, Connection, ConnectionArgs};
use super::{table, workload_filter, CliError, Io};

/// Policies asked for per page.
const PAGE_SIZE: usize = 100;
/// Pages read at most (a server whose `continue` never ends must not keep us forever).
const MAX_PAGES: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// More columns: version, last update, a summary of each rule's fault.
    Wide,
    /// The server's JSON.
    Json,
    /// The server's JSON as YAML; a list as one document per policy.
    Yaml,
}

#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// The policy to show; all when left out.
    pub name: Option<String>,
    /// Only policies that may apply to a workload in this namespace.
    #[arg(long, conflicts_with = "name")]
    pub namespace: Option<String>,
    /// Only policies that may apply to this workload (its name or `app` label).
    #[arg(long, conflicts_with = "name")]
    pub service: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// One page of `GET /v1/policies`.
#[derive(Debug, Deserialize)]
struct Page {
    policies: Vec<Value>,
    #[serde(default, rename = "continue")]
    next: Option<String>,
}

/// `GET /v1/halt`.
#[derive(Debug, Deserialize)]
struct HaltState {
    halted: bool,
}

pub fn run(args: &GetArgs, vars: Vec<(String, String)>, io: &mut Io<'_>) -> Result<(), CliError> {
    let client = Connection::resolve(&args.connection, None, vars)?.client();
    let filter = workload_filter(args.namespace.as_deref(), args.service.as_deref())?;
    let policies = match &args.name {
        Some(name) => vec![client.get_json::<Value>(&policy_path(name))?],
        None => list(&client, &filter)?,
    };
    match args.output {
        Output::Json => {
            let document = match (&args.name, policies) {
                (Some(_), mut one) => one.remove(0),
                (None, all) => json!({ "policies": all }),
            };
            serde_json::to_writer_pretty(&mut *io.out, &document)
                .map_err(|e| CliError::Output(e.into()))?;
            writeln!(io.out)?;
            Ok(())
        }
        Output::Yaml => {
            let text = serde_saphyr::to_string_multiple(&policies)
                .map_err(|e| CliError::Protocol(format!("cannot write YAML: {e}")))?;
            io.out.write_all(text.as_bytes())?;
            Ok(())
        }
        Output::Table | Output::Wide => {
            if args.name.is_none() && policies.is_empty() {
                writeln!(io.err, "No policies on {}.", client.base())?;
            } else {
                print_table(&policies, args.output == Output::Wide, io)?;
            }
            warn_if_halted(&client, io)
        }
    }
}

/// Every policy `filter` admits, following the server's `continue` tokens. The filter goes
/// to the server and is applied here too, with the same rule ([`Filter::admits`], the
/// stream's), so a server that ignores it gives the same answer.
pub fn list(client: &Client, filter: &Filter) -> Result<Vec<Value>, CliError> {
    let mut query = format!("limit={PAGE_SIZE}");
    for (name, value) in [
        ("namespace", &filter.namespace),
        ("service", &filter.service),
    ] {
        if let Some(value) = value {
            query.push_str(&format!("&{name}={}", encode(value)));
        }
    }
    let mut policies = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut path = format!("/v1/policies?{query}");
        if let Some(token) = &next {
            path.push_str("&continue=");
            path.push_str(&encode(token));
        }
        let page: Page = client.get_json(&path)?;
        for value in page.policies {
            let policy: Policy = serde_json::from_value(value.clone())
                .map_err(|e| CliError::Protocol(format!("not a policy: {e}")))?;
            if filter.admits(&policy.spec.selector) {
                policies.push(value);
            }
        }
        match page.next.filter(|t| !t.is_empty()) {
            Some(token) if next.as_ref() == Some(&token) => {
                return Err(CliError::Protocol(
                    "the server answered the same continue token twice".to_owned(),
                ))
            }
            Some(token) => next = Some(token),
            None => return Ok(policies),
        }
    }
    Err(CliError::Protocol(format!(
        "more than {MAX_PAGES} pages of policies"
    )))
}

fn print_table(policies: &[Value], wide: bool, io: &mut Io<'_>) -> Result<(), CliError> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let rows = policies
        .iter()
        .map(|value| {
            let policy: Policy = serde_json::from_value(value.clone())
                .map_err(|e| CliError::Protocol(format!("not a policy: {e}")))?;
            Ok(table::row(&policy, now_ms, wide))
        })
        .collect::<Result<Vec<_>, CliError>>()?;
    let headers: &[&str] = if wide {
        &table::WIDE_HEADERS
    } else {
        &table::HEADERS
    };
    io.out.write_all(table::render(headers, &rows).as_bytes())?;
    Ok(())
}

/// Policies listed while the kill switch is on act on nothing: say so (on stderr, so the
/// table stays clean). A failure to read the switch is not worth an error here.
fn warn_if_halted(client: &Client, io: &mut Io<'_>) -> Result<(), CliError> {
    if let Ok(HaltState { halted: true }) = client.get_json::<HaltState>("/v1/halt") {
        io.out.flush()?;
        writeln!(
            io.err,
            "warning: the kill switch is on: no policy acts until `boifi resume`"
        )?;
    }
    Ok(())
}
