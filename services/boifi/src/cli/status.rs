//! `boifi status [NAME]`: which sidecars enforce what (`GET /v1/sidecars`, and a policy's
//! `status.enforcement` and `status.injected`).
//!
//! Without NAME, one row per live sidecar: its pod, namespace, workload, the revision it
//! enforces, whether that is current, when it last polled and the faults it injected. With
//! NAME, the policy's enforcement (how many of the sidecars it selects enforce its revision,
//! the lagging ones) and its injected counts, then the selected sidecars. Broadcaster
//! replicas that did not answer are named on stderr: their sidecars are missing.

use std::time::SystemTime;

use boifi_policy::wire::{FaultCounts, SidecarList, SidecarState, SidecarStatus};
use boifi_policy::{Enforcement, Policy};
use clap::{Args, ValueEnum};
use serde_json::json;

use super::client::{encode, policy_path, Client, Connection, ConnectionArgs};
use super::{table, workload_filter, CliError, Io};

/// Sidecars asked for per page.
const PAGE_SIZE: usize = 1000;
/// Pages read at most (a server whose `continue` never ends must not keep us forever).
const MAX_PAGES: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// The server's JSON.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The policy whose enforcement to show; every sidecar when left out.
    pub name: Option<String>,
    /// Only sidecars in this namespace.
    #[arg(long, conflicts_with = "name")]
    pub namespace: Option<String>,
    /// Only sidecars of this workload (its name or `app` label).
    #[arg(long, conflicts_with = "name")]
    pub service: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// The columns without NAME.
pub const HEADERS: [&str; 7] = [
    "POD",
    "NAMESPACE",
    "WORKLOAD",
    "REVISION",
    "STATE",
    "LAST SEEN",
    "INJECTED",
];
/// The columns of a policy's sidecars.
pub const POLICY_HEADERS: [&str; 6] = [
    "POD",
    "NAMESPACE",
    "WORKLOAD",
    "REVISION",
    "LAST SEEN",
    "INJECTED",
];

pub fn run(
    args: &StatusArgs,
    vars: Vec<(String, String)>,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    let client = Connection::resolve(&args.connection, None, vars)?.client();
    match &args.name {
        None => {
            let filter = workload_filter(args.namespace.as_deref(), args.service.as_deref())?;
            let mut query = Vec::new();
            for (name, value) in [
                ("namespace", &filter.namespace),
                ("service", &filter.service),
            ] {
                if let Some(value) = value {
                    query.push(format!("{name}={}", encode(value)));
                }
            }
            let list = sidecars(&client, &query.join("&"))?;
            print_sidecars(&client, &list, args.output, io)
        }
        Some(name) => {
            let policy: Policy = client.get_json(&policy_path(name))?;
            let list = sidecars(&client, &format!("policy={}", encode(name)))?;
            print_policy(&policy, &list, args.output, io)
        }
    }
}

/// Every page of `GET /v1/sidecars?<query>`, as one list (the replicas as the last page
/// says).
pub fn sidecars(client: &Client, query: &str) -> Result<SidecarList, CliError> {
    let mut all: Option<SidecarList> = None;
    let mut next: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut path = format!("/v1/sidecars?limit={PAGE_SIZE}");
        if !query.is_empty() {
            path.push('&');
            path.push_str(query);
        }
        if let Some(token) = &next {
            path.push_str("&continue=");
            path.push_str(&encode(token));
        }
        let mut page: SidecarList = client.get_json(&path)?;
        let token = page.continue_token.take().filter(|t| !t.is_empty());
        match all.as_mut() {
            None => all = Some(page),
            Some(all) => {
                all.sidecars.append(&mut page.sidecars);
                all.replicas = page.replicas;
                all.unreachable = page.unreachable;
            }
        }
        match token {
            Some(token) if next.as_ref() == Some(&token) => {
                return Err(CliError::Protocol(
                    "the server answered the same continue token twice".to_owned(),
                ))
            }
            Some(token) => next = Some(token),
            None => return all.ok_or_else(|| CliError::Protocol("no page".to_owned())),
        }
    }
    Err(CliError::Protocol(format!(
        "more than {MAX_PAGES} pages of sidecars"
    )))
}

fn print_sidecars(
    client: &Client,
    list: &SidecarList,
    output: Output,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    if output == Output::Json {
        return print_json(&json!(list), io);
    }
    if list.sidecars.is_empty() {
        writeln!(io.err, "No sidecars report to {}.", client.base())?;
    } else {
        let now = SystemTime::now();
        let rows: Vec<Vec<String>> = list.sidecars.iter().map(|s| row(s, now)).collect();
        io.out
            .write_all(table::render(&HEADERS, &rows).as_bytes())?;
    }
    warn_unreachable(list, io)
}

/// One row of the sidecar table at `now`.
pub fn row(sidecar: &SidecarStatus, now: SystemTime) -> Vec<String> {
    let total = sidecar
        .injected
        .values()
        .fold(FaultCounts::default(), |sum, c| FaultCounts {
            abort: sum.abort.saturating_add(c.abort),
            delay: sum.delay.saturating_add(c.delay),
        });
    vec![
        sidecar.pod.clone(),
        sidecar.namespace.clone(),
        sidecar.workload.clone(),
        sidecar.revision.to_string(),
        state(sidecar),
        seen(sidecar, now),
        counts(&total),
    ]
}

/// `current`, or `behind 3.2s`.
pub fn state(sidecar: &SidecarStatus) -> String {
    match sidecar.state {
        SidecarState::Current => "current".to_owned(),
        SidecarState::Behind => format!("behind {:.1}s", sidecar.behind_seconds),
    }
}

/// How long ago it last polled (`now` while a poll of it is held).
fn seen(sidecar: &SidecarStatus, now: SystemTime) -> String {
    if sidecar.polling {
        return "now".to_owned();
    }
    let ms = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };
    table::age(ms(now), ms(sidecar.last_seen).max(1))
}

/// `abort=12,delay=3`; `-` when both are 0.
pub fn counts(counts: &FaultCounts) -> String {
    match (counts.abort, counts.delay) {
        (0, 0) => "-".to_owned(),
        (abort, delay) => format!("abort={abort},delay={delay}"),
    }
}

fn print_policy(
    policy: &Policy,
    list: &SidecarList,
    output: Output,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    let name = &policy.metadata.name;
    let status = policy.status.clone().unwrap_or_default();
    let enforcement = status.enforcement.ok_or_else(no_sidecar_status)?;
    let injected = status.injected.unwrap_or_default();
    if output == Output::Json {
        let document = json!({
            "name": name,
            "revision": status.revision,
            "enforcement": enforcement,
            "injected": injected,
            "sidecars": list.sidecars,
            "unreachable": list.unreachable,
        });
        return print_json(&document, io);
    }
    writeln!(io.out, "Policy:     {name}")?;
    writeln!(io.out, "Revision:   {}", status.revision)?;
    writeln!(
        io.out,
        "Selector:   {}",
        table::selector(&policy.spec.selector)
    )?;
    writeln!(io.out, "Enforcing:  {}", enforcing_line(&enforcement))?;
    if enforcement.lagging_count > 0 {
        writeln!(io.out, "Lagging:    {}", lagging_line(&enforcement))?;
    }
    writeln!(
        io.out,
        "Injected:   {} aborts, {} delays",
        injected.abort, injected.delay
    )?;
    if !list.sidecars.is_empty() {
        let now = SystemTime::now();
        let rows: Vec<Vec<String>> = list
            .sidecars
            .iter()
            .map(|s| {
                let mine = s.injected.get(name).copied().unwrap_or_default();
                vec![
                    s.pod.clone(),
                    s.namespace.clone(),
                    s.workload.clone(),
                    s.revision.to_string(),
                    seen(s, now),
                    counts(&mine),
                ]
            })
            .collect();
        writeln!(io.out)?;
        io.out
            .write_all(table::render(&POLICY_HEADERS, &rows).as_bytes())?;
    }
    warn_unreachable(list, io)
}

/// `5 of 6 selected sidecars`, `no live sidecar selected`.
pub fn enforcing_line(enforcement: &Enforcement) -> String {
    match enforcement.selected {
        0 => "no live sidecar is selected".to_owned(),
        selected => format!("{} of {selected} selected sidecars", enforcement.enforcing),
    }
}

/// `ratings-1, ratings-2 (and 3 more)`.
pub fn lagging_line(enforcement: &Enforcement) -> String {
    let mut line = enforcement.lagging.join(", ");
    let more = enforcement
        .lagging_count
        .saturating_sub(enforcement.lagging.len() as u64);
    if more > 0 {
        line.push_str(&format!(" (and {more} more)"));
    }
    line
}

/// The server answered a policy without `status.enforcement`.
pub fn no_sidecar_status() -> CliError {
    CliError::Reported(
        "the server does not report sidecar status (policy-api needs BOIFI_BROADCASTERS, the \
         sse-broadcaster URLs)"
            .to_owned(),
    )
}

fn warn_unreachable(list: &SidecarList, io: &mut Io<'_>) -> Result<(), CliError> {
    io.out.flush()?;
    for replica in &list.unreachable {
        writeln!(
            io.err,
            "warning: broadcaster {} did not answer ({}): its sidecars are not listed",
            replica.address, replica.error
        )?;
    }
    Ok(())
}

fn print_json(document: &serde_json::Value, io: &mut Io<'_>) -> Result<(), CliError> {
    serde_json::to_writer_pretty(&mut *io.out, document).map_err(|e| CliError::Output(e.into()))?;
    writeln!(io.out)?;
    Ok(())
}

#[cfg(test)]
mod tests;
