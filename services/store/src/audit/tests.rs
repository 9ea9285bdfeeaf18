use super::*;

const DAY_MS: u64 = 24 * 3600 * 1000;

fn retention(max_entries: u64, max_age_days: u64) -> AuditRetention {
    AuditRetention {
        max_entries,
        max_age: Duration::from_millis(max_age_days * DAY_MS),
    }
}

fn entry(position: u64, at_ms: u64, actor: &str, action: AuditAction) -> AuditEntry {
    AuditEntry {
        revision: position * 10,
        at_ms,
        actor: actor.to_owned(),
        action,
        policy: matches!(
            action,
            AuditAction::Create | AuditAction::Replace | AuditAction::Delete
        )
        .then(|| format!("p{}", position % 3)),
        reason: None,
    }
}

/// Offers `entries` (position, entry), newest first, as a backend does; returns the page.
fn read(
    query: &AuditQuery,
    retention: &AuditRetention,
    head: u64,
    entries: &[(u64, AuditEntry)],
) -> AuditPage {
    let mut builder = PageBuilder::new(query, retention, head);
    let start = builder.start_below(head);
    for (position, entry) in entries.iter().rev() {
        if *position >= start {
            continue;
        }
        if !builder.offer(*position, entry.clone()) {
            break;
        }
    }
    builder.finish()
}

#[test]
fn attributions_are_bounded_and_never_echo_the_value() {
    let ok = Attribution::new("alice", Some("incident 7"), 5).unwrap();
    assert_eq!(
        (ok.actor(), ok.reason(), ok.at_ms()),
        ("alice", Some("incident 7"), 5)
    );
    assert_eq!(Attribution::new("a", Some("  "), 0).unwrap().reason(), None);
    assert_eq!(
        Attribution::new("", None, 0).unwrap_err(),
        AttributionError::Actor
    );
    assert_eq!(
        Attribution::new(&"a".repeat(65), None, 0).unwrap_err(),
        AttributionError::Actor
    );
    let long = "é".repeat(MAX_REASON_CHARS);
    assert!(
        Attribution::new("a", Some(&long), 0).is_ok(),
        "characters count"
    );
    let err = Attribution::new("a", Some(&format!("{long}x")), 0).unwrap_err();
    assert_eq!(err, AttributionError::ReasonTooLong);
    assert!(!err.to_string().contains('é'));
    assert_eq!(
        Attribution::new("a", Some("two\nlines"), 0).unwrap_err(),
        AttributionError::ReasonControl
    );
}

#[test]
fn entries_are_stored_without_their_revision() {
    let entry =
        Attribution::new("alice", Some("why"), 7)
            .unwrap()
            .entry(42, AuditAction::Halt, None);
    let json = serde_json::to_string(&entry).unwrap();
    assert_eq!(
        json,
        r#"{"at_ms":7,"actor":"alice","action":"halt","reason":"why"}"#
    );
    let back: AuditEntry = serde_json::from_str(&json).unwrap();
    assert_eq!(back.revision, 0);
    assert_eq!(
        AuditEntry {
            revision: 42,
            ..back
        },
        entry
    );
    for action in AuditAction::ALL {
        assert_eq!(AuditAction::parse(action.as_str()), Some(action));
    }
    assert_eq!(AuditAction::parse("Halt"), None);
}

#[test]
fn trimming_takes_the_oldest_run_out_of_either_bound() {
    let now = 100 * DAY_MS;
    let r = retention(5, 30);
    let young = now - DAY_MS;
    let old = now - 31 * DAY_MS;
    // Within both bounds: nothing.
    assert_eq!(r.trim_until(&[(6, young), (7, young)], 10, now), None);
    assert_eq!(r.trim_until(&[], 10, now), None);
    // By count: head 10 keeps 6..=10.
    assert_eq!(
        r.trim_until(&[(3, young), (4, young), (5, young), (6, young)], 10, now),
        Some(6)
    );
    // By age, up to the first young entry (a later old-looking one waits its turn).
    assert_eq!(
        r.trim_until(&[(7, old), (8, old), (9, young), (10, old)], 10, now),
        Some(9)
    );
    // Everything offered goes: the end is past the last one.
    assert_eq!(r.trim_until(&[(1, old), (2, old)], 2, now), Some(3));
    // The boundary itself is kept.
    let edge = r.oldest_kept_ms(now);
    assert_eq!(r.trim_until(&[(9, edge)], 10, now), None);
    assert_eq!(r.trim_until(&[(9, edge - 1)], 10, now), Some(10));
}

#[test]
fn pages_go_newest_first_and_carry_a_cursor_only_when_more_remain() {
    let now = 10 * DAY_MS;
    let entries: Vec<(u64, AuditEntry)> = (1..=7)
        .map(|p| (p, entry(p, now - 1000 + p, "alice", AuditAction::Create)))
        .collect();
    let r = retention(100, 30);
    let mut query = AuditQuery::newest(3, now);
    let page = read(&query, &r, 7, &entries);
    let positions: Vec<u64> = page.entries.iter().map(|e| e.revision / 10).collect();
    assert_eq!(positions, [7, 6, 5]);
    assert_eq!(page.next, Some(5));
    query.before = page.next;
    let page = read(&query, &r, 7, &entries);
    assert_eq!(page.entries.len(), 3);
    assert_eq!(page.next, Some(2));
    query.before = page.next;
    let page = read(&query, &r, 7, &entries);
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.next, None, "nothing after the last entry");
    // Exactly a page's worth: no cursor either.
    let page = read(&AuditQuery::newest(7, now), &r, 7, &entries);
    assert_eq!((page.entries.len(), page.next), (7, None));
    assert!(read(&AuditQuery::newest(0, now), &r, 7, &entries)
        .entries
        .is_empty());
}

#[test]
fn pages_hide_what_is_past_retention_and_apply_the_filters() {
    let now = 100 * DAY_MS;
    let old = now - 31 * DAY_MS;
    let entries = vec![
        (1, entry(1, now, "alice", AuditAction::Create)),
        (2, entry(2, old, "bob", AuditAction::Halt)),
        (3, entry(3, now, "bob", AuditAction::Halt)),
        (4, entry(4, now, "alice", AuditAction::Resume)),
        (5, entry(5, now, "bob", AuditAction::Delete)),
    ];
    // By count (the newest 4) and by age (2 is too old).
    let page = read(&AuditQuery::newest(10, now), &retention(4, 30), 5, &entries);
    let positions: Vec<u64> = page.entries.iter().map(|e| e.revision / 10).collect();
    assert_eq!(positions, [5, 4, 3]);

    let r = retention(100, 365);
    let mut query = AuditQuery::newest(10, now);
    query.actor = Some("bob".into());
    query.action = Some(AuditAction::Halt);
    let page = read(&query, &r, 5, &entries);
    let positions: Vec<u64> = page.entries.iter().map(|e| e.revision / 10).collect();
    assert_eq!(positions, [3, 2]);
    let mut query = AuditQuery::newest(10, now);
    query.policy = Some("p1".into());
    let page = read(&query, &r, 5, &entries);
    let positions: Vec<u64> = page.entries.iter().map(|e| e.revision / 10).collect();
    assert_eq!(positions, [1], "halt and resume name no policy");
}

#[test]
fn a_read_stops_after_its_scan_budget_with_a_cursor() {
    let now = DAY_MS;
    let n = SCAN_BUDGET as u64 + 5;
    let entries: Vec<(u64, AuditEntry)> = (1..=n)
        .map(|p| (p, entry(p, now, "bob", AuditAction::Halt)))
        .collect();
    let mut query = AuditQuery::newest(10, now);
    query.actor = Some("nobody".into());
    let page = read(&query, &retention(u64::MAX, 30), n, &entries);
    assert!(page.entries.is_empty());
    assert_eq!(page.next, Some(6), "the last position looked at");
    query.before = page.next;
    let page = read(&query, &retention(u64::MAX, 30), n, &entries);
    assert_eq!(page, AuditPage::default(), "the rest, then the end");
}
