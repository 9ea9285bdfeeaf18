//! Reading every broadcaster replica's table through a [`SidecarSource`]: each replica page by
//! page, the replicas in parallel, with bounds on pages and sidecars. A replica that fails is
//! an entry of the result, never an error of the whole.

use std::collections::HashSet;

use boifi_policy::wire::{SidecarsPage, SidecarsQuery, UnreachableReplica};

use super::view::ReplicaRead;

/// Sidecars asked for per page (the broadcaster's answers stay a few MiB).
pub const PAGE_SIZE: usize = 1000;
/// Sidecars read from one replica at most (a broadcaster tracks 20,000 by default); past it
/// the replica counts as unreachable, so nobody mistakes a partial table for a whole one.
pub const MAX_SIDECARS_PER_REPLICA: usize = 100_000;

/// Where the sidecar tables come from: the broadcaster replicas over HTTP, or the broadcaster
/// in the same process (`boifi serve`). Both calls may block (DNS, network); the gatherer
/// calls them off the async workers.
pub trait SidecarSource: Send + Sync {
    /// The replicas to ask now, each by its address; a configured broadcaster that cannot be
    /// resolved is reported instead.
    fn replicas(&self) -> Vec<Result<String, UnreachableReplica>>;

    /// One page of the table of the replica at `address`, or why not (one line).
    fn page(&self, address: &str, query: &SidecarsQuery) -> Result<SidecarsPage, String>;
}

/// Every replica's whole table, or why not: replicas asked in parallel, one thread each.
pub fn gather(source: &dyn SidecarSource) -> Vec<ReplicaRead> {
    let mut addresses = Vec::new();
    let mut reads = Vec::new();
    for replica in source.replicas() {
        match replica {
            Ok(address) => addresses.push(address),
            Err(unreachable) => reads.push(ReplicaRead {
                address: unreachable.address,
                outcome: Err(unreachable.error),
            }),
        }
    }
    match addresses.as_slice() {
        [] => {}
        [one] => reads.push(read_replica(source, one)),
        several => std::thread::scope(|scope| {
            let handles: Vec<_> = several
                .iter()
                .map(|address| (address, scope.spawn(|| read_replica(source, address))))
                .collect();
            for (address, handle) in handles {
                reads.push(handle.join().unwrap_or_else(|_| ReplicaRead {
                    address: address.clone(),
                    outcome: Err("reading its table failed (panic)".to_owned()),
                }));
            }
        }),
    }
    reads
}

/// One replica's table, every page, as one page.
pub fn read_replica(source: &dyn SidecarSource, address: &str) -> ReplicaRead {
    ReplicaRead {
        address: address.to_owned(),
        outcome: read_pages(source, address),
    }
}

fn read_pages(source: &dyn SidecarSource, address: &str) -> Result<SidecarsPage, String> {
    let mut query = SidecarsQuery {
        limit: Some(PAGE_SIZE),
        ..SidecarsQuery::default()
    };
    let mut whole: Option<SidecarsPage> = None;
    let mut tokens = HashSet::new();
    loop {
        let mut page = source.page(address, &query)?;
        let next = page.continue_token.take();
        let read = match whole.as_mut() {
            None => whole.insert(page),
            Some(whole) => {
                // A later page was read later: its position is the latest.
                whole.revision = page.revision;
                whole.halted = page.halted;
                whole.sidecars.extend(page.sidecars);
                whole
            }
        };
        if read.sidecars.len() > MAX_SIDECARS_PER_REPLICA {
            return Err(format!(
                "more than {MAX_SIDECARS_PER_REPLICA} sidecars; not read"
            ));
        }
        match next {
            None => return whole.ok_or_else(|| "no page".to_owned()),
            Some(token) if !tokens.insert(token.clone()) => {
                return Err(format!("gave the continue token {token:?} twice"));
            }
            Some(token) => query.continue_token = Some(token),
        }
    }
}

#[cfg(test)]
mod tests;
