//! `bench-status`: what sidecar status costs a policy list. A benchmark, not a test: it prints
//! numbers (Markdown for `docs/benchmarks.md`).
//!
//! Setup, in process (no network: the cost measured is policy-api's own): `--sidecars`
//! sidecars of `--workloads` workloads in `--namespaces` namespaces, as two broadcaster
//! replicas answer them (identity with the labels Istio leaves in `LABELS`, revisions spread
//! so that some lag, counts for 3 policies each); `--policies` policies whose selectors mix a
//! namespace and service (most), labels, a namespace only and none at all.
//!
//! Timed, in interleaved rounds (order rotated per round; the tables show medians):
//! - **merge**: `SidecarView::build` from the two replicas' tables (once per gathering, at
//!   most every 500 ms however many reads);
//! - **enforcement, grouped**: `status.enforcement` and `status.injected` of every policy, as
//!   policy-api computes them (sidecars grouped by identity, groups by namespace);
//! - **enforcement, per sidecar**: the same counts by matching every policy against every
//!   sidecar, the baseline the grouping is measured against (the results are checked equal);
//! - **list JSON**: serializing the whole list answer (`{"policies":[...]}`) with the status
//!   fields, and without them (what the list cost before), for the share sidecar status adds.
//!
//! Build and run (release): `cargo build --release --bin bench-status && target/release/bench-status`

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use boifi_policy::wire::{FaultCounts, SidecarState, SidecarStatus, SidecarsPage};
use boifi_policy::{Enforcement, Policy, Selector, Workload};
use boifi_policy_api::sidecars::{ReplicaRead, SidecarView};
use boifi_tests::bench::{quantile, whole_number};
use clap::Parser;
use serde_json::json;

/// What sidecar status costs a list of policies.
#[derive(Debug, Parser)]
#[command(name = "bench-status")]
struct Args {
    /// Live sidecars.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = whole_number(1, 1_000_000))]
    sidecars: usize,
    /// Workloads the sidecars are spread over.
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = whole_number(1, 100_000))]
    workloads: usize,
    /// Namespaces the workloads are spread over.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = whole_number(1, 10_000))]
    namespaces: usize,
    /// Policies in the list.
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = whole_number(1, 100_000))]
    policies: usize,
    /// Interleaved rounds.
    #[arg(long, value_name = "N", default_value_t = 7, value_parser = whole_number(1, 1000))]
    rounds: usize,
}

/// The newest policy revision; sidecars are at it or up to 4 behind.
const LATEST: u64 = 10_000;

fn sidecar(index: usize, args: &Args) -> SidecarStatus {
    let w = index % args.workloads;
    let app = format!("svc{w}");
    let labels: BTreeMap<String, String> = [
        ("app", app.as_str()),
        ("version", if w.is_multiple_of(2) { "v1" } else { "v2" }),
        ("security.istio.io/tlsMode", "istio"),
        ("service.istio.io/canonical-name", app.as_str()),
        ("service.istio.io/canonical-revision", "v1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let injected = (0..3)
        .map(|k| {
            let counts = FaultCounts {
                abort: (index * 7 + k) as u64 % 100,
                delay: (index + k) as u64 % 10,
            };
            (format!("p{}", (index + k) % args.policies), counts)
        })
        .collect();
    SidecarStatus {
        pod: format!("{app}-7d9f5c-{index:06}"),
        namespace: format!("ns{}", w % args.namespaces),
        workload: app,
        labels: Some(labels),
        revision: LATEST - (index % 5) as u64,
        state: SidecarState::Current,
        behind_seconds: 0.0,
        first_seen: SystemTime::now(),
        last_seen: SystemTime::now(),
        polling: true,
        injected,
    }
}

/// Policy `i`: most select one workload (namespace and service), some add a label, some a
/// whole namespace, a few everything.
fn policy(i: usize, args: &Args) -> Policy {
    let w = (i * 7) % args.workloads;
    let selector = match i % 10 {
        0 => json!({}),
        1 | 2 => json!({"namespace": format!("ns{}", w % args.namespaces)}),
        3 | 4 => json!({"service": format!("svc{w}"), "labels": {"version": "v2"}}),
        _ => {
            json!({"namespace": format!("ns{}", w % args.namespaces), "service": format!("svc{w}")})
        }
    };
    let mut policy: Policy = serde_json::from_value(json!({
        "metadata": {"name": format!("p{i}")},
        "spec": {"selector": selector, "rules": [{
            "match": {"path": {"prefix": "/api"}, "headers": [{"name": "x-user", "exact": "test"}]},
            "fault": {"percentage": 10, "abort": {"httpStatus": 503}}
        }]}
    }))
    .expect("a policy");
    let status = policy.status.get_or_insert_with(Default::default);
    status.revision = LATEST - (i % 3) as u64;
    policy
}

/// The baseline: every policy against every sidecar (their identities built once).
fn per_sidecar(sidecars: &[(Workload, u64)], selector: &Selector, revision: u64) -> (u64, u64) {
    let mut selected = 0;
    let mut enforcing = 0;
    for (workload, sidecar_revision) in sidecars {
        if selector.matches(workload) {
            selected += 1;
            enforcing += u64::from(*sidecar_revision >= revision);
        }
    }
    (selected, enforcing)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn run(args: &Args) -> Result<(), String> {
    let sidecars: Vec<SidecarStatus> = (0..args.sidecars).map(|i| sidecar(i, args)).collect();
    let half = sidecars.len() / 2;
    let reads = || {
        ["sse-broadcaster-0", "sse-broadcaster-1"]
            .iter()
            .enumerate()
            .map(|(r, replica)| {
                let part = if r == 0 {
                    &sidecars[..half]
                } else {
                    &sidecars[half..]
                };
                ReplicaRead {
                    address: format!("10.0.0.{r}:8081"),
                    outcome: Ok(SidecarsPage {
                        replica: (*replica).to_owned(),
                        revision: LATEST,
                        halted: false,
                        sidecars: part.to_vec(),
                        continue_token: None,
                    }),
                }
            })
            .collect::<Vec<_>>()
    };
    let policies: Vec<Policy> = (0..args.policies).map(|i| policy(i, args)).collect();
    let identities: Vec<(Workload, u64)> = sidecars
        .iter()
        .map(|s| {
            let workload = Workload {
                namespace: s.namespace.clone(),
                name: s.workload.clone(),
                labels: s.labels.clone().unwrap_or_default(),
            };
            (workload, s.revision)
        })
        .collect();
    let view = SidecarView::build(reads());
    if view.len() != args.sidecars {
        return Err(format!(
            "merged {} sidecars of {}",
            view.len(),
            args.sidecars
        ));
    }
    let grouped = |view: &SidecarView| -> Vec<(Enforcement, FaultCounts)> {
        policies
            .iter()
            .map(|p| {
                let revision = p.status.as_ref().map_or(0, |s| s.revision);
                (
                    view.enforcement(&p.spec.selector, revision),
                    view.injected(&p.metadata.name),
                )
            })
            .collect()
    };
    // The grouping must count what matching every sidecar counts.
    let mut selected_total = 0;
    for (p, (e, _)) in policies.iter().zip(grouped(&view)) {
        let revision = p.status.as_ref().map_or(0, |s| s.revision);
        let baseline = per_sidecar(&identities, &p.spec.selector, revision);
        if (e.selected, e.enforcing) != baseline {
            return Err(format!(
                "{}: grouped {e:?}, per sidecar {baseline:?}",
                p.metadata.name
            ));
        }
        selected_total += e.selected;
    }
    let with_status = |results: &[(Enforcement, FaultCounts)]| -> Vec<Policy> {
        policies
            .iter()
            .zip(results)
            .map(|(p, (e, injected))| {
                let mut p = p.clone();
                let status = p.status.get_or_insert_with(Default::default);
                status.enforcement = Some(e.clone());
                status.injected = Some(*injected);
                p
            })
            .collect()
    };
    let listed = with_status(&grouped(&view));
    let bytes_with =
        serde_json::to_vec(&json!({ "policies": listed })).map_err(|e| e.to_string())?;
    let bytes_without =
        serde_json::to_vec(&json!({ "policies": policies })).map_err(|e| e.to_string())?;

    #[derive(Clone, Copy, PartialEq)]
    enum Step {
        Merge,
        Grouped,
        PerSidecar,
        JsonWith,
        JsonWithout,
    }
    let steps = [
        Step::Merge,
        Step::Grouped,
        Step::PerSidecar,
        Step::JsonWith,
        Step::JsonWithout,
    ];
    let mut times: BTreeMap<usize, Vec<Duration>> = BTreeMap::new();
    for round in 0..args.rounds {
        for k in 0..steps.len() {
            let index = (k + round) % steps.len();
            let step = steps[index];
            let prepared = reads();
            let start = Instant::now();
            match step {
                Step::Merge => {
                    std::hint::black_box(SidecarView::build(prepared));
                }
                Step::Grouped => {
                    std::hint::black_box(grouped(&view));
                }
                Step::PerSidecar => {
                    for p in &policies {
                        let revision = p.status.as_ref().map_or(0, |s| s.revision);
                        std::hint::black_box(per_sidecar(&identities, &p.spec.selector, revision));
                    }
                }
                Step::JsonWith => {
                    std::hint::black_box(serde_json::to_vec(&json!({ "policies": listed })))
                        .map_err(|e| e.to_string())?;
                }
                Step::JsonWithout => {
                    std::hint::black_box(serde_json::to_vec(&json!({ "policies": policies })))
                        .map_err(|e| e.to_string())?;
                }
            }
            times.entry(index).or_default().push(start.elapsed());
        }
    }
    let t = |step: Step| quantile(&times[&steps.iter().position(|s| *s == step).unwrap()], 0.5);
    println!(
        "\n### Sidecar status in a list ({} sidecars in {} workloads and {} namespaces, 2 replicas; {} policies selecting {} sidecars in all; {} rounds)\n",
        args.sidecars, args.workloads, args.namespaces, args.policies, selected_total, args.rounds
    );
    println!("| step | median |");
    println!("|---|---:|");
    println!(
        "| merge the replicas' tables (once per gathering) | {} |",
        ms(t(Step::Merge))
    );
    println!(
        "| enforcement and injected counts of every policy, grouped by identity | {} |",
        ms(t(Step::Grouped))
    );
    println!(
        "| the same counts, every policy against every sidecar (baseline) | {} |",
        ms(t(Step::PerSidecar))
    );
    println!(
        "| the list's JSON with the status fields ({} bytes) | {} |",
        bytes_with.len(),
        ms(t(Step::JsonWith))
    );
    println!(
        "| the list's JSON without them ({} bytes) | {} |",
        bytes_without.len(),
        ms(t(Step::JsonWithout))
    );
    let extra = t(Step::Grouped) + t(Step::JsonWith).saturating_sub(t(Step::JsonWithout));
    println!(
        "\ngrouped vs per sidecar: {:.0}x faster; sidecar status adds {} to the list (its counts \
         and the longer JSON), {:.0}% of serializing the list without it",
        t(Step::PerSidecar).as_secs_f64() / t(Step::Grouped).as_secs_f64(),
        ms(extra),
        100.0 * extra.as_secs_f64() / t(Step::JsonWithout).as_secs_f64()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-status: {e}");
            ExitCode::FAILURE
        }
    }
}
