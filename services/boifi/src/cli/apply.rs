//! `boifi apply -f FILE|DIR|-`: create or update policies so the server holds what the files
//! say.
//!
//! All or report: every document is checked offline first (the API's checks), and if any has
//! a problem nothing is written. Then, policy by policy: absent on the server, it is created
//! (`If-None-Match: *`); present and equal (without the server-owned `status`), it is left
//! alone; different, it is replaced with `If-Match` on the revision just read, so a change
//! someone made in between is reported rather than overwritten. A refusal of one policy is
//! reported and the others go on, unless it would repeat for every policy (no token, wrong
//! role, server unreachable). `--reason` goes to the server's audit trail with each write.
//!
//! `--wait`: then wait until every sidecar each applied policy selects enforces it
//! ([`super::wait`]), at most `--timeout`.

use boifi_policy::Policy;
use clap::Args;
use serde_json::Value;
use ureq::http::Method;

use super::audit;
use super::client::{policy_path, Client, Connection, ConnectionArgs, Reply};
use super::documents::{self, FilesArgs};
use super::error::ErrorReply;
use super::{each_policy, wait, CliError, Io};

#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub files: FilesArgs,
    /// Then wait until every live sidecar each policy selects enforces it, at most --timeout
    /// (exit 1 at the timeout, naming the sidecars that lag). A policy that selects no live
    /// sidecar is done at once, with a warning.
    #[arg(long)]
    pub wait: bool,
    /// Why, for the server's audit trail (e.g. "game day 7: reviews fail").
    #[arg(long, value_name = "TEXT", value_parser = audit::parse_reason)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// What apply did to one policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        }
    }
}

pub fn run(args: &ApplyArgs, vars: Vec<(String, String)>, io: &mut Io<'_>) -> Result<(), CliError> {
    let documents = documents::read_args(&args.files.files, io.stdin)?;
    let policies = documents::valid_or_report(documents, io.err, "applied")?;
    let client = Connection::resolve(&args.connection, None, vars)?.client();
    let mut applied = Vec::new();
    let written = each_policy(
        &policies,
        |p| p.name(),
        "applied",
        io,
        |policy| {
            let outcome = apply_one(&client, policy.policy(), args.reason.as_deref())?;
            applied.push(policy.name().to_owned());
            Ok(outcome.as_str())
        },
    );
    if args.wait && !applied.is_empty() {
        // The writes' own failure, if any, is the one to report; the wait's goes to stderr.
        let waited = wait::wait(&client, &applied, args.connection.timeout, io);
        if let (Ok(()), Err(e)) = (&written, waited) {
            return Err(e);
        }
    }
    written
}

/// Brings one policy on the server to `policy`.
fn apply_one(client: &Client, policy: &Policy, reason: Option<&str>) -> Result<Outcome, CliError> {
    let step = plan(client, policy)?;
    write(client, policy, &step, reason)
}

/// What [`write`] has to do for one policy, decided from the server's current copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No policy of that name: create it, only if it is still absent.
    Create,
    /// A different one at this revision: replace it, only if it is still at this revision.
    Replace { revision: String },
    /// The same policy (`status` aside): write nothing.
    Keep,
}

/// Reads the server's copy of `policy` and decides the [`Step`].
pub fn plan(client: &Client, policy: &Policy) -> Result<Step, CliError> {
    let path = policy_path(&policy.metadata.name);
    let current = client.send(Method::GET, &path, &[], None)?;
    if current.status == 404 {
        return Ok(Step::Create);
    }
    let etag = current.etag.clone();
    let current: Value = current.json()?;
    if same_policy(&current, &wanted_json(policy)?) {
        return Ok(Step::Keep);
    }
    let revision = etag
        .or_else(|| {
            current["status"]["revision"]
                .as_u64()
                .map(|r| r.to_string())
        })
        .ok_or_else(|| CliError::Protocol(format!("no revision for {path}")))?;
    Ok(Step::Replace { revision })
}

/// Carries out `step` for `policy`: a conditional `PUT`, so a change made since [`plan`] read
/// the policy is reported (409) instead of overwritten. `reason` goes with it for the audit
/// trail.
pub fn write(
    client: &Client,
    policy: &Policy,
    step: &Step,
    reason: Option<&str>,
) -> Result<Outcome, CliError> {
    let (precondition, outcome) = match step {
        Step::Keep => return Ok(Outcome::Unchanged),
        Step::Create => (("If-None-Match", "*"), Outcome::Created),
        Step::Replace { revision } => (("If-Match", revision.as_str()), Outcome::Configured),
    };
    let body =
        serde_json::to_vec(&wanted_json(policy)?).map_err(|e| CliError::Protocol(e.to_string()))?;
    let mut headers = vec![precondition];
    headers.extend(audit::reason_header(reason));
    let reply = client.send(
        Method::PUT,
        &policy_path(&policy.metadata.name),
        &headers,
        Some(body),
    )?;
    match reply.status {
        409 => Err(conflict(outcome, &reply)),
        _ => reply.success().map(|_| outcome),
    }
}

fn wanted_json(policy: &Policy) -> Result<Value, CliError> {
    serde_json::to_value(policy).map_err(|e| CliError::Protocol(e.to_string()))
}

/// A refused precondition: someone else wrote the policy between our read and our write.
fn conflict(outcome: Outcome, reply: &Reply) -> CliError {
    let what = match outcome {
        Outcome::Created => "it was created by someone else meanwhile",
        _ => "it was changed on the server since it was read",
    };
    let server = ErrorReply::from_body(reply.status, &reply.body).message;
    CliError::Reported(format!(
        "not applied: {what} ({server}); nothing was overwritten, run apply again to replace it"
    ))
}

/// True when the server's policy equals the wanted one, `status` aside.
pub fn same_policy(current: &Value, wanted: &Value) -> bool {
    let mut current = current.clone();
    if let Some(object) = current.as_object_mut() {
        object.remove("status");
    }
    current == *wanted
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn status_does_not_count_as_a_difference() {
        let wanted = json!({"metadata": {"name": "a"}, "spec": {"rules": []}});
        let mut current = wanted.clone();
        current["status"] = json!({"revision": 7});
        assert!(same_policy(&current, &wanted));
        current["spec"]["sampling"] = json!("attempt");
        assert!(!same_policy(&current, &wanted));
    }
}
