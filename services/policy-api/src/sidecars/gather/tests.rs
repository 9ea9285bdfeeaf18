use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use boifi_policy::wire::{SidecarState, SidecarStatus};

use super::*;

fn sidecar(pod: usize) -> SidecarStatus {
    SidecarStatus {
        pod: format!("pod-{pod:05}"),
        namespace: "demo".into(),
        workload: "w".into(),
        labels: None,
        revision: 1,
        state: SidecarState::Current,
        behind_seconds: 0.0,
        first_seen: SystemTime::UNIX_EPOCH,
        last_seen: SystemTime::UNIX_EPOCH + Duration::from_secs(1),
        polling: true,
        injected: Default::default(),
    }
}

/// Replicas by address: how many sidecars each has (`None`: it fails), paged as a
/// broadcaster pages (`continue` = the index to go on from).
struct Fake {
    replicas: Vec<(&'static str, Option<usize>)>,
    unresolved: Vec<&'static str>,
    /// Answers every page with the same token.
    stuck: bool,
    asked: Mutex<Vec<(String, Option<usize>)>>,
}

impl Fake {
    fn new(replicas: Vec<(&'static str, Option<usize>)>) -> Fake {
        Fake {
            replicas,
            unresolved: Vec::new(),
            stuck: false,
            asked: Mutex::new(Vec::new()),
        }
    }
}

impl SidecarSource for Fake {
    fn replicas(&self) -> Vec<Result<String, UnreachableReplica>> {
        let unresolved = self.unresolved.iter().map(|url| {
            Err(UnreachableReplica {
                address: url.to_string(),
                error: "cannot resolve".into(),
            })
        });
        self.replicas
            .iter()
            .map(|(address, _)| Ok(address.to_string()))
            .chain(unresolved)
            .collect()
    }

    fn page(&self, address: &str, query: &SidecarsQuery) -> Result<SidecarsPage, String> {
        self.asked
            .lock()
            .unwrap()
            .push((address.to_owned(), query.limit));
        let (_, count) = self.replicas.iter().find(|(a, _)| *a == address).unwrap();
        let count = count.ok_or("connection refused")?;
        let from: usize = query
            .continue_token
            .as_deref()
            .map_or(0, |t| t.parse().unwrap());
        let to = (from + query.page_size()).min(count);
        let more = to < count || self.stuck;
        Ok(SidecarsPage {
            replica: format!("replica-{address}"),
            revision: 7 + from as u64,
            halted: false,
            sidecars: (from..to).map(sidecar).collect(),
            continue_token: more.then(|| {
                if self.stuck {
                    "0".into()
                } else {
                    to.to_string()
                }
            }),
        })
    }
}

fn outcomes(reads: &[ReplicaRead]) -> Vec<(String, Result<usize, String>)> {
    let mut out: Vec<_> = reads
        .iter()
        .map(|r| {
            let outcome = r
                .outcome
                .as_ref()
                .map(|p| p.sidecars.len())
                .map_err(Clone::clone);
            (r.address.clone(), outcome)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_replica_is_read_page_by_page_and_a_failure_is_its_own_entry() {
    let mut fake = Fake::new(vec![("a", Some(2500)), ("b", None), ("c", Some(0))]);
    fake.unresolved.push("http://gone:8081");
    let reads = gather(&fake);
    assert_eq!(
        outcomes(&reads),
        [
            ("a".to_owned(), Ok(2500)),
            ("b".to_owned(), Err("connection refused".to_owned())),
            ("c".to_owned(), Ok(0)),
            (
                "http://gone:8081".to_owned(),
                Err("cannot resolve".to_owned())
            ),
        ]
    );
    let a = reads.iter().find(|r| r.address == "a").unwrap();
    let page = a.outcome.as_ref().unwrap();
    assert_eq!(page.revision, 7 + 2000, "the last page's position");
    assert_eq!(page.continue_token, None);
    assert_eq!(page.sidecars[2499].pod, "pod-02499");
    let asked = fake.asked.lock().unwrap();
    assert_eq!(asked.iter().filter(|(a, _)| a == "a").count(), 3);
    assert!(asked.iter().all(|(_, limit)| *limit == Some(PAGE_SIZE)));
}

#[test]
fn a_replica_that_never_ends_its_pages_is_unreachable() {
    let mut fake = Fake::new(vec![("a", Some(5))]);
    fake.stuck = true;
    let reads = gather(&fake);
    let error = reads[0].outcome.as_ref().unwrap_err();
    assert!(error.contains("twice"), "{error}");
}

#[test]
fn a_replica_with_too_many_sidecars_is_unreachable() {
    let fake = Fake::new(vec![("a", Some(MAX_SIDECARS_PER_REPLICA + 1))]);
    let reads = gather(&fake);
    let error = reads[0].outcome.as_ref().unwrap_err();
    assert!(error.contains("more than"), "{error}");
}
