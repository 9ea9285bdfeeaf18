use super::*;

fn query(text: &str) -> ListQuery {
    ListQuery::parse(text).unwrap_or_else(|e| panic!("{text}: {e:?}"))
}

fn problems(text: &str) -> Vec<&'static str> {
    ListQuery::parse(text)
        .unwrap_err()
        .iter()
        .map(|p| p.field)
        .collect()
}

/// `(name, namespace, service)` items, as the page function sees policies.
fn items(list: &[(&str, Option<&str>, Option<&str>)]) -> Vec<(String, Selector)> {
    list.iter()
        .map(|(name, namespace, service)| {
            let selector = Selector {
                namespace: namespace.map(str::to_owned),
                service: service.map(str::to_owned),
                ..Selector::default()
            };
            (name.to_string(), selector)
        })
        .collect()
}

fn names_of(page: &[(String, Selector)]) -> Vec<&str> {
    page.iter().map(|(name, _)| name.as_str()).collect()
}

fn page_of(all: &[(String, Selector)], q: &ListQuery) -> (Vec<(String, Selector)>, Option<String>) {
    page(all.to_vec(), q, |(name, _)| name, |(_, selector)| selector)
}

#[test]
fn defaults_and_bounds_of_limit() {
    assert_eq!(query("").limit, DEFAULT_LIMIT);
    assert_eq!(query("limit=1").limit, 1);
    assert_eq!(query(&format!("limit={MAX_LIMIT}")).limit, MAX_LIMIT);
    for bad in ["limit=0", "limit=1001", "limit=-1", "limit=ten", "limit="] {
        assert_eq!(problems(bad), ["limit"], "{bad}");
    }
}

#[test]
fn unknown_repeated_and_bad_parameters_are_named() {
    let unknown = ListQuery::parse("limit=10&labels=a:b").unwrap_err();
    assert_eq!(unknown[0].field, "query");
    assert!(
        unknown[0].message.contains("`labels`"),
        "{}",
        unknown[0].message
    );
    assert_eq!(problems("limit=1&limit=2"), ["query"]);
    assert_eq!(problems("continue=zz"), ["continue"]);
    assert_eq!(
        problems("continue=%2B6"),
        ["continue"],
        "from_str_radix's `+`"
    );
    assert_eq!(
        problems(&format!("service={}&limit=0", "s".repeat(300))),
        ["service", "limit"],
        "every problem at once"
    );
    assert_eq!(problems("namespace=a+b"), ["namespace"], "a space");
    assert_eq!(problems("service=%C3%A9"), ["service"], "not ASCII");
    assert_eq!(problems("service=%09"), ["service"], "reported once");
}

#[test]
fn pages_walk_every_name_once_in_order() {
    let all = items(&[
        ("a", None, None),
        ("b", None, None),
        ("c", None, None),
        ("d", None, None),
        ("e", None, None),
    ]);
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let text = match &token {
            Some(t) => format!("limit=2&continue={t}"),
            None => "limit=2".to_owned(),
        };
        let (page, next) = page_of(&all, &query(&text));
        pages += 1;
        seen.extend(names_of(&page).into_iter().map(str::to_owned));
        match next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    assert_eq!(pages, 3);
    // Exactly a page's worth left: no token for an empty next page.
    let (page, next) = page_of(&all[..4], &query("limit=2&continue=62"));
    assert_eq!((names_of(&page), next), (vec!["c", "d"], None));
}

#[test]
fn a_token_survives_its_policy_being_deleted() {
    let all = items(&[("a", None, None), ("b", None, None), ("c", None, None)]);
    let (_, token) = page_of(&all, &query("limit=2"));
    let token = token.unwrap();
    // "b" was the last of the page; it is deleted before the next page is read.
    let without_b = items(&[("a", None, None), ("c", None, None)]);
    let (page, next) = page_of(&without_b, &query(&format!("limit=2&continue={token}")));
    assert_eq!((names_of(&page), next), (vec!["c"], None));
}

#[test]
fn filters_keep_what_a_workload_there_could_receive() {
    let all = items(&[
        ("any", None, None),
        ("demo-reviews", Some("demo"), Some("reviews")),
        ("demo-star", Some("demo"), Some("*")),
        ("other-ns", Some("prod"), Some("reviews")),
        ("ratings", Some("demo"), Some("ratings")),
    ]);
    let (page, _) = page_of(&all, &query("namespace=demo&service=reviews"));
    assert_eq!(names_of(&page), ["any", "demo-reviews", "demo-star"]);
    let (page, _) = page_of(&all, &query("namespace=demo"));
    assert_eq!(
        names_of(&page),
        ["any", "demo-reviews", "demo-star", "ratings"]
    );
    // A page is counted after the filter; the token skips what the filter dropped.
    let (page, next) = page_of(&all, &query("namespace=demo&service=reviews&limit=2"));
    assert_eq!(names_of(&page), ["any", "demo-reviews"]);
    let (page, next) = page_of(
        &all,
        &query(&format!(
            "namespace=demo&service=reviews&limit=2&continue={}",
            next.unwrap()
        )),
    );
    assert_eq!((names_of(&page), next), (vec!["demo-star"], None));
}

#[test]
fn tokens_round_trip_and_reject_what_was_not_issued() {
    for name in ["a", "reviews-abort", &"x".repeat(63)] {
        assert_eq!(decode_token(&encode_token(name), 63).as_deref(), Some(name));
    }
    for bad in ["", "6", "6G", "FF", "ff", "c3", &"61".repeat(64)] {
        assert_eq!(decode_token(bad, 63), None, "{bad}");
    }
}
