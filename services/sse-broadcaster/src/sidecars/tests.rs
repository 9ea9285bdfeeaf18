use std::cell::Cell;

use boifi_policy::wire::MAX_SIDECARS_PAGE;

use super::*;

const TTL: Duration = Duration::from_secs(30);

fn identity(namespace: &str, pod: &str, workload: &str) -> SidecarIdentity {
    SidecarIdentity {
        pod: pod.into(),
        namespace: namespace.into(),
        workload: workload.into(),
        labels: Some(BTreeMap::from([("app".to_owned(), workload.to_owned())])),
    }
}

fn poll(namespace: &str, pod: &str, workload: &str, revision: Option<u64>) -> Poll<'static> {
    let identity = identity(namespace, pod, workload);
    Poll {
        report: Cow::Owned(identity.header_value().unwrap().value.into_bytes()),
        identity,
        injected: None,
        filter: Cow::Owned(Filter::parse(Some(namespace), Some(workload), None).unwrap()),
        revision,
    }
}

/// Sidecar `pod` of `demo/reviews` polls at `revision`; its handle.
fn reviews_poll(
    table: &mut Table,
    pod: &str,
    revision: Option<u64>,
    at: Instant,
    wall: SystemTime,
) -> SidecarId {
    table
        .arrive(poll("demo", pod, "reviews", revision), at, wall)
        .unwrap()
}

fn counts(abort: u64, delay: u64) -> FaultCounts {
    FaultCounts { abort, delay }
}

fn injected(entries: &[(&str, u64, u64)]) -> Option<BTreeMap<String, FaultCounts>> {
    Some(
        entries
            .iter()
            .map(|(p, a, d)| ((*p).to_owned(), counts(*a, *d)))
            .collect(),
    )
}

fn all_current(_: &Filter, _: Option<u64>) -> Lag {
    Lag::Current
}

fn pods(table: &Table, query: &SidecarsQuery, now: Instant) -> Vec<String> {
    let (page, _) = table.page(query, now, None, all_current).unwrap();
    page.into_iter().map(|s| s.pod).collect()
}

fn everything() -> SidecarsQuery {
    SidecarsQuery::default()
}

#[test]
fn a_sidecar_lives_while_it_polls_and_for_the_ttl_after() {
    let t0 = Instant::now();
    let wall = SystemTime::now();
    let mut table = Table::new(TTL, 100);
    let key = reviews_poll(&mut table, "reviews-0", Some(3), t0, wall);
    // Held for an hour: still live.
    let t1 = t0 + Duration::from_secs(3600);
    assert_eq!(pods(&table, &everything(), t1), ["reviews-0"]);
    let (page, _) = table.page(&everything(), t1, None, all_current).unwrap();
    assert!(page[0].polling);
    assert_eq!(page[0].revision, 3);
    assert_eq!(page[0].first_seen, wall);
    let ended = wall + Duration::from_secs(3600);
    table.leave(key, t1, ended, Ended::Answered);
    let (page, _) = table.page(&everything(), t1, None, all_current).unwrap();
    assert!(!page[0].polling);
    assert_eq!(page[0].last_seen, ended);
    assert_eq!(page[0].first_seen, wall, "first seen stays");
    // Live until the TTL after its last poll ended, not from then on.
    assert_eq!(table.sweep(t1 + TTL - Duration::from_millis(1)), 0);
    assert_eq!(pods(&table, &everything(), t1 + TTL), Vec::<String>::new());
    assert_eq!(table.len(), 1, "not swept yet, but not listed");
    assert_eq!(table.sweep(t1 + TTL), 1);
    assert_eq!(table.len(), 0);
    // A late end of a forgotten poll changes nothing.
    table.leave(key, t1 + TTL, ended, Ended::Answered);
    assert_eq!(table.len(), 0);
}

/// A poll cut off by its connection closing (the Envoy stopped) leaves the sidecar listed for
/// CUT_OFF_TTL only; a new poll makes it an ordinary sidecar again.
#[test]
fn a_sidecar_whose_poll_was_cut_off_goes_sooner() {
    let ttl = CUT_OFF_TTL * 6;
    let t0 = Instant::now();
    let wall = SystemTime::now();
    let mut table = Table::new(ttl, 100);
    let gone = reviews_poll(&mut table, "reviews-0", Some(3), t0, wall);
    let answered = reviews_poll(&mut table, "reviews-1", Some(3), t0, wall);
    table.leave(gone, t0, wall, Ended::CutOff);
    table.leave(answered, t0, wall, Ended::Answered);
    let just_before = t0 + CUT_OFF_TTL - Duration::from_millis(1);
    assert_eq!(
        pods(&table, &everything(), just_before),
        ["reviews-0", "reviews-1"]
    );
    assert_eq!(pods(&table, &everything(), t0 + CUT_OFF_TTL), ["reviews-1"]);
    assert_eq!(table.sweep(t0 + CUT_OFF_TTL), 1);
    // Back within the grace: polling again, and its next answered poll gets the full TTL.
    let back = reviews_poll(&mut table, "reviews-1", Some(4), t0, wall);
    table.leave(back, t0, wall, Ended::CutOff);
    reviews_poll(&mut table, "reviews-1", Some(4), t0, wall);
    table.leave(back, t0, wall, Ended::Answered);
    assert_eq!(
        pods(&table, &everything(), t0 + ttl - Duration::from_millis(1)),
        ["reviews-1"]
    );
    // A TTL shorter than CUT_OFF_TTL bounds it too.
    let mut short = Table::new(Duration::from_secs(1), 10);
    let key = reviews_poll(&mut short, "reviews-2", None, t0, wall);
    short.leave(key, t0, wall, Ended::CutOff);
    assert_eq!(short.sweep(t0 + Duration::from_secs(1)), 1);
}

/// A poll that repeats the identity header of `first`, at `revision`, through the path that
/// skips parsing; `None` when the table does not know the header.
fn again(table: &mut Table, first: &Poll<'_>, revision: u64, now: Instant) -> Option<SidecarId> {
    table.arrive_again(
        &first.report,
        &first.filter,
        Some(revision),
        now,
        SystemTime::now(),
        |_| injected(&[("a", revision, 0)]),
    )
}

#[test]
fn a_repeated_identity_header_updates_its_sidecar_without_parsing() {
    let t0 = Instant::now();
    let wall = SystemTime::now();
    let mut table = Table::new(TTL, 100);
    let first = poll("demo", "reviews-0", "reviews", Some(1));
    assert_eq!(
        again(&mut table, &first, 1, t0),
        None,
        "not known before its first poll"
    );
    let key = table.arrive(first.clone(), t0, wall).unwrap();
    table.leave(key, t0, wall, Ended::Answered);

    assert_eq!(again(&mut table, &first, 7, t0), Some(key));
    let (page, _) = table.page(&everything(), t0, None, all_current).unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].revision, 7);
    assert_eq!(page[0].injected["a"], counts(7, 0));
    assert!(page[0].polling);

    // The pod's labels changed: its header too. The old header no longer names it.
    let mut relabelled = poll("demo", "reviews-0", "reviews", Some(8));
    relabelled.identity.labels = None;
    relabelled.report = Cow::Owned(
        relabelled
            .identity
            .header_value()
            .unwrap()
            .value
            .into_bytes(),
    );
    table.arrive(relabelled.clone(), t0, wall).unwrap();
    assert_eq!(again(&mut table, &first, 9, t0), None);
    assert_eq!(again(&mut table, &relabelled, 9, t0), Some(key));

    // A forgotten sidecar's header is forgotten with it.
    for _ in 0..3 {
        table.leave(key, t0, wall, Ended::Answered);
    }
    assert_eq!(table.sweep(t0 + TTL), 1);
    assert_eq!(again(&mut table, &relabelled, 10, t0 + TTL), None);
    assert!(table.reports.is_empty() && table.order.is_empty());
}

#[test]
fn each_poll_updates_the_entry_and_reports_merge() {
    let t0 = Instant::now();
    let wall = SystemTime::now();
    let mut table = Table::new(TTL, 100);
    let mut first = poll("demo", "reviews-0", "reviews", None);
    first.injected = injected(&[("a", 1, 0), ("b", 0, 2)]);
    let key = table.arrive(first, t0, wall).unwrap();
    table.leave(key, t0, wall, Ended::Answered);
    // Later reports carry only what changed; counts are cumulative and replace.
    let mut second = poll("demo", "reviews-0", "reviews", Some(9));
    second.injected = injected(&[("a", 5, 0)]);
    second.identity.labels = None;
    table.arrive(second, t0, wall).unwrap();
    let (page, _) = table.page(&everything(), t0, None, all_current).unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].revision, 9);
    assert_eq!(page[0].labels, None, "the latest identity");
    assert_eq!(page[0].injected["a"], counts(5, 0));
    assert_eq!(page[0].injected["b"], counts(0, 2));
    // A restarted Envoy counts from 0 again: the report is the truth.
    let mut restarted = poll("demo", "reviews-0", "reviews", Some(9));
    restarted.injected = injected(&[("a", 1, 0)]);
    table.arrive(restarted, t0, wall).unwrap();
    let (page, _) = table.page(&everything(), t0, None, all_current).unwrap();
    assert_eq!(page[0].injected["a"], counts(1, 0));
    assert!(page[0].polling, "two polls held, one ended");
}

#[test]
fn counts_per_sidecar_are_bounded_dropping_the_stalest() {
    let t0 = Instant::now();
    let wall = SystemTime::now();
    let mut table = Table::new(TTL, 10);
    let names: Vec<String> = (0..MAX_POLICIES_PER_SIDECAR)
        .map(|i| format!("p{i}"))
        .collect();
    for (i, chunk) in names.chunks(64).enumerate() {
        let mut report = poll("demo", "r-0", "reviews", Some(1));
        report.injected = Some(chunk.iter().map(|n| (n.clone(), counts(1, 0))).collect());
        table
            .arrive(report, t0 + Duration::from_millis(i as u64), wall)
            .unwrap();
    }
    // p0..p63 were reported first; p0 again now: one of p1..p63 makes room for a new one.
    let later = t0 + Duration::from_secs(1);
    let mut refresh = poll("demo", "r-0", "reviews", Some(1));
    refresh.injected = injected(&[("p0", 2, 0)]);
    table.arrive(refresh, later, wall).unwrap();
    let mut new = poll("demo", "r-0", "reviews", Some(1));
    new.injected = injected(&[("new", 1, 0)]);
    table.arrive(new, later, wall).unwrap();
    let (page, _) = table.page(&everything(), later, None, all_current).unwrap();
    let kept = &page[0].injected;
    assert_eq!(kept.len(), MAX_POLICIES_PER_SIDECAR);
    assert!(kept.contains_key("new") && kept.contains_key("p0"));
    assert_eq!(kept["p0"], counts(2, 0));
    let first_chunk = (1..64)
        .filter(|i| kept.contains_key(&format!("p{i}")))
        .count();
    assert_eq!(first_chunk, 62);
}

#[test]
fn the_table_is_bounded_and_makes_room_when_sidecars_go() {
    let t0 = Instant::now();
    let wall = SystemTime::now();
    let mut table = Table::new(TTL, 2);
    let a = table
        .arrive(poll("demo", "a", "w", Some(1)), t0, wall)
        .unwrap();
    table
        .arrive(poll("demo", "b", "w", Some(1)), t0, wall)
        .unwrap();
    assert_eq!(
        table.arrive(poll("demo", "c", "w", Some(1)), t0, wall),
        Err(Full)
    );
    // Known sidecars still update.
    assert!(table
        .arrive(poll("demo", "a", "w", Some(2)), t0, wall)
        .is_ok());
    table.leave(a, t0, wall, Ended::Answered);
    table.leave(a, t0, wall, Ended::Answered);
    table.sweep(t0 + TTL);
    assert!(table
        .arrive(poll("demo", "c", "w", Some(1)), t0 + TTL, wall)
        .is_ok());
}

#[test]
fn pages_are_sorted_filtered_and_continue_where_they_ended() {
    let t0 = Instant::now();
    let wall = SystemTime::now();
    let mut table = Table::new(TTL, 100);
    for (namespace, pod, workload) in [
        ("shop", "cart-1", "cart"),
        ("demo", "reviews-v2-1", "reviews-v2"),
        ("demo", "reviews-v2-0", "reviews-v2"),
        ("demo", "ratings-0", "ratings"),
        ("demo", "ünïcode.pod", "ratings"),
    ] {
        let mut poll = poll(namespace, pod, workload, Some(1));
        if workload == "reviews-v2" {
            poll.identity.labels = Some(BTreeMap::from([("app".into(), "reviews".into())]));
        }
        table.arrive(poll, t0, wall).unwrap();
    }
    assert_eq!(
        pods(&table, &everything(), t0),
        [
            "ratings-0",
            "reviews-v2-0",
            "reviews-v2-1",
            "ünïcode.pod",
            "cart-1"
        ]
    );
    let query = |namespace: Option<&str>, service: Option<&str>| SidecarsQuery {
        namespace: namespace.map(str::to_owned),
        service: service.map(str::to_owned),
        ..SidecarsQuery::default()
    };
    assert_eq!(pods(&table, &query(Some("shop"), None), t0), ["cart-1"]);
    // The workload name or the app label, as in selectors.
    assert_eq!(
        pods(&table, &query(None, Some("reviews")), t0),
        ["reviews-v2-0", "reviews-v2-1"]
    );
    assert_eq!(
        pods(&table, &query(Some("demo"), Some("reviews-v2")), t0),
        ["reviews-v2-0", "reviews-v2-1"]
    );
    assert!(pods(&table, &query(Some("shop"), Some("ratings")), t0).is_empty());

    let mut seen = Vec::new();
    let mut next = SidecarsQuery {
        limit: Some(2),
        ..SidecarsQuery::default()
    };
    let mut pages = 0;
    loop {
        let (page, token) = table.page(&next, t0, None, all_current).unwrap();
        pages += 1;
        assert!(page.len() <= 2);
        seen.extend(page.into_iter().map(|s| s.pod));
        match token {
            Some(token) => next.continue_token = Some(token),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, pods(&table, &everything(), t0));
    // Exactly a full last page: no token.
    let (_, token) = table
        .page(
            &SidecarsQuery {
                limit: Some(5),
                ..SidecarsQuery::default()
            },
            t0,
            None,
            all_current,
        )
        .unwrap();
    assert_eq!(token, None);
    for bad in ["zz", "6465", "64.6", "ff.ff"] {
        let query = SidecarsQuery {
            continue_token: Some(bad.into()),
            ..SidecarsQuery::default()
        };
        let Err(RequestError::Invalid(problems)) = table.page(&query, t0, None, all_current) else {
            panic!("{bad}: accepted");
        };
        assert_eq!(problems[0].field, "continue");
    }
    assert_eq!(everything().page_size(), MAX_SIDECARS_PAGE);
}

#[test]
fn states_follow_the_hubs_lag_asked_once_per_filter_and_revision() {
    let t0 = Instant::now();
    let wall = SystemTime::now();
    let mut table = Table::new(TTL, 100);
    for (pod, workload, revision) in [
        ("reviews-0", "reviews", Some(7)),
        ("reviews-1", "reviews", Some(7)),
        ("ratings-0", "ratings", Some(5)),
        ("new-0", "new", None),
    ] {
        table
            .arrive(poll("demo", pod, workload, revision), t0, wall)
            .unwrap();
    }
    let asked = Cell::new(0);
    let lag = |filter: &Filter, _: Option<u64>| {
        asked.set(asked.get() + 1);
        match filter.service.as_deref() {
            Some("ratings") => Lag::Behind {
                since: t0 - Duration::from_millis(1500),
            },
            Some("new") => Lag::Unknown,
            _ => Lag::Current,
        }
    };
    let now = t0 + Duration::from_secs(2);
    let (page, _) = table.page(&everything(), now, None, lag).unwrap();
    assert_eq!(
        asked.get(),
        3,
        "the two reviews replicas share filter and revision"
    );
    let by_pod: BTreeMap<&str, &SidecarStatus> = page.iter().map(|s| (s.pod.as_str(), s)).collect();
    assert_eq!(by_pod["reviews-0"].state, SidecarState::Current);
    assert_eq!(by_pod["reviews-0"].behind_seconds, 0.0);
    assert_eq!(by_pod["ratings-0"].state, SidecarState::Behind);
    assert_eq!(by_pod["ratings-0"].behind_seconds, 3.5);
    // No revision yet: behind since its poll arrived (it is answered at once).
    assert_eq!(by_pod["new-0"].state, SidecarState::Behind);
    assert_eq!(by_pod["new-0"].behind_seconds, 2.0);
    assert_eq!(by_pod["new-0"].revision, 0);
    assert_eq!(
        table.census(now, None, lag),
        Census {
            current: 2,
            behind: 2,
            max_lag_seconds: 3.5
        }
    );
    // At the replica's latest revision a sidecar is current without asking.
    asked.set(0);
    let census = table.census(now, Some(7), lag);
    assert_eq!((census.current, census.behind), (2, 2));
    assert_eq!(asked.get(), 2, "only ratings (5) and new (none)");
    let census = table.census(now, Some(5), lag);
    assert_eq!((census.current, census.behind), (3, 1));
    assert_eq!(
        table.census(now, None, all_current),
        Census {
            current: 4,
            behind: 0,
            max_lag_seconds: 0.0
        }
    );
    let mut idle = Table::new(TTL, 10);
    let key = idle
        .arrive(poll("demo", "x", "ratings", Some(1)), t0, wall)
        .unwrap();
    idle.leave(key, t0, wall, Ended::Answered);
    assert_eq!(idle.census(t0 + TTL, None, lag), Census::default());
}

#[test]
fn continue_tokens_survive_any_name() {
    for (namespace, pod) in [
        ("", "sidecar~10.0.0.1~a.b~b.svc"),
        ("n.s", "ü.🙂"),
        ("a", ""),
    ] {
        let key = Key {
            namespace: namespace.into(),
            pod: pod.into(),
        };
        assert_eq!(Key::from_token(&key.token()), Some(key));
    }
}

#[test]
fn bad_report_warnings_are_rate_limited() {
    let t0 = Instant::now();
    let mut limit = LogLimit::default();
    assert_eq!(limit.allow(t0), Some(0));
    assert_eq!(limit.allow(t0 + Duration::from_secs(1)), None);
    assert_eq!(limit.allow(t0 + Duration::from_secs(9)), None);
    assert_eq!(limit.allow(t0 + BAD_REPORT_LOG_INTERVAL), Some(2));
    assert_eq!(limit.allow(t0 + BAD_REPORT_LOG_INTERVAL), None);
}
