//! The audit trail: who changed what, when and why.
//!
//! Every write, delete and kill-switch change carries an [`Attribution`] (the token's name,
//! never the token; the server's time; an optional reason), and each backend stores one
//! [`AuditEntry`] in the same transaction as the change: no acknowledged change lacks its
//! entry, and no entry exists for a change that failed.
//!
//! The trail is kept within an [`AuditRetention`] (a number of entries and an age). Entries
//! have a position that grows by one per audited change (the backend's own counter), so "the
//! newest N" is a range of positions. Writers remove what falls out of retention a bounded
//! batch at a time ([`TRIM_BATCH`]), so a write costs the same however long the trail is, and
//! readers never show an entry past retention, trimmed yet or not ([`PageBuilder`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Revision;

/// Longest reason, in characters.
pub const MAX_REASON_CHARS: usize = 512;
/// Longest actor name, in characters (token names are at most 64).
pub const MAX_ACTOR_CHARS: usize = 64;
/// Entries removed at most per write when the trail is over its retention; a write adds one,
/// so a trail over its bounds shrinks back.
pub const TRIM_BATCH: u64 = 32;
/// Entries a read looks at, at most, before it answers (a page that is short or even empty,
/// with a cursor to go on from, when filters skip that many).
pub const SCAN_BUDGET: usize = 10_000;

/// Who made a change, when (the server's clock, Unix ms) and why. Built checked, so a store
/// never holds a name or reason beyond the bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    actor: String,
    reason: Option<String>,
    at_ms: u64,
}

/// An [`Attribution`] that cannot be built; the message says why, without the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributionError {
    #[error("the actor must be 1-{MAX_ACTOR_CHARS} characters without control characters")]
    Actor,
    #[error("at most {MAX_REASON_CHARS} characters")]
    ReasonTooLong,
    #[error("one line of text, without control characters")]
    ReasonControl,
}

impl Attribution {
    /// `actor` (a token's name, or `anonymous`), an optional `reason` (blank counts as none),
    /// and the time of the change.
    pub fn new(
        actor: &str,
        reason: Option<&str>,
        at_ms: u64,
    ) -> Result<Attribution, AttributionError> {
        let actor_ok = !actor.is_empty()
            && actor.chars().count() <= MAX_ACTOR_CHARS
            && !actor.chars().any(char::is_control);
        if !actor_ok {
            return Err(AttributionError::Actor);
        }
        let reason = reason.filter(|r| !r.trim().is_empty());
        if let Some(reason) = reason {
            check_reason(reason)?;
        }
        Ok(Attribution {
            actor: actor.to_owned(),
            reason: reason.map(str::to_owned),
            at_ms,
        })
    }

    pub fn actor(&self) -> &str {
        &self.actor
    }

    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    pub fn at_ms(&self) -> u64 {
        self.at_ms
    }

    /// The entry this attribution makes for `action` on `policy`, at `revision`.
    pub fn entry(
        &self,
        revision: Revision,
        action: AuditAction,
        policy: Option<&str>,
    ) -> AuditEntry {
        AuditEntry {
            revision,
            at_ms: self.at_ms,
            actor: self.actor.clone(),
            action,
            policy: policy.map(str::to_owned),
            reason: self.reason.clone(),
        }
    }
}

/// A reason as the trail accepts it: at most [`MAX_REASON_CHARS`], one line.
pub fn check_reason(reason: &str) -> Result<(), AttributionError> {
    if reason.chars().count() > MAX_REASON_CHARS {
        Err(AttributionError::ReasonTooLong)
    } else if reason.chars().any(char::is_control) {
        Err(AttributionError::ReasonControl)
    } else {
        Ok(())
    }
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditAction {
    /// A policy that did not exist was written.
    Create,
    /// An existing policy was overwritten.
    Replace,
    Delete,
    /// The kill switch was set.
    Halt,
    /// The kill switch was cleared.
    Resume,
}

impl AuditAction {
    pub const ALL: [AuditAction; 5] = [
        AuditAction::Create,
        AuditAction::Replace,
        AuditAction::Delete,
        AuditAction::Halt,
        AuditAction::Resume,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Create => "create",
            AuditAction::Replace => "replace",
            AuditAction::Delete => "delete",
            AuditAction::Halt => "halt",
            AuditAction::Resume => "resume",
        }
    }

    /// The action named `name` (as [`AuditAction::as_str`] writes it).
    pub fn parse(name: &str) -> Option<AuditAction> {
        AuditAction::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// The action of setting the kill switch to `halted`.
    pub fn of_halt(halted: bool) -> AuditAction {
        if halted {
            AuditAction::Halt
        } else {
            AuditAction::Resume
        }
    }
}

/// One change in the trail. Stored as JSON without `revision` (the backend's key or the
/// change's own revision holds it); fields a later version adds are ignored when read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The store revision of the change.
    #[serde(skip)]
    pub revision: Revision,
    /// When the server made the change, Unix ms by its clock.
    pub at_ms: u64,
    /// The token's name (`anonymous` when auth is disabled).
    pub actor: String,
    pub action: AuditAction,
    /// The policy written or deleted; none for halt and resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How much of the trail is kept: the newest `max_entries` entries, and of those only the
/// ones younger than `max_age`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditRetention {
    /// At least 1.
    pub max_entries: u64,
    pub max_age: Duration,
}

impl AuditRetention {
    pub const DEFAULT_MAX_ENTRIES: u64 = 10_000;
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

    /// Entries strictly older than this (Unix ms) are out of retention at `now_ms`.
    pub fn oldest_kept_ms(&self, now_ms: u64) -> u64 {
        let age_ms = u64::try_from(self.max_age.as_millis()).unwrap_or(u64::MAX);
        now_ms.saturating_sub(age_ms)
    }

    /// The lowest position kept when the newest entry is at `head`: `head - max_entries + 1`.
    pub fn lowest_kept_position(&self, head: u64) -> u64 {
        head.saturating_sub(self.max_entries.max(1) - 1)
    }

    /// Where trimming ends: given the oldest entries `(position, at_ms)` in ascending order,
    /// the newest position `head` and the time `now_ms`, the first position to keep when it
    /// is above the first one given (everything below it goes), else `None`. Only a run from
    /// the oldest entry goes, so this is one range delete; an entry that looks old after a
    /// young one (clocks of two servers apart) waits until it is the oldest.
    pub fn trim_until(&self, oldest: &[(u64, u64)], head: u64, now_ms: u64) -> Option<u64> {
        let lowest = self.lowest_kept_position(head);
        let oldest_ms = self.oldest_kept_ms(now_ms);
        let first = oldest.first()?.0;
        let mut until = first;
        for &(position, at_ms) in oldest {
            if position >= lowest && at_ms >= oldest_ms {
                break;
            }
            until = position + 1;
        }
        (until > first).then_some(until)
    }
}

impl Default for AuditRetention {
    fn default() -> Self {
        AuditRetention {
            max_entries: Self::DEFAULT_MAX_ENTRIES,
            max_age: Self::DEFAULT_MAX_AGE,
        }
    }
}

/// What a read of the trail asks for: newest first, `limit` entries that pass the filters,
/// starting below `before` (a cursor from a previous [`AuditPage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    pub limit: usize,
    pub before: Option<u64>,
    pub policy: Option<String>,
    pub actor: Option<String>,
    pub action: Option<AuditAction>,
    /// The reader's clock (Unix ms): entries older than the retention's age are not shown.
    pub now_ms: u64,
}

impl AuditQuery {
    /// The newest `limit` entries, unfiltered.
    pub fn newest(limit: usize, now_ms: u64) -> AuditQuery {
        AuditQuery {
            limit,
            before: None,
            policy: None,
            actor: None,
            action: None,
            now_ms,
        }
    }

    /// True when `entry` passes every filter given.
    pub fn admits(&self, entry: &AuditEntry) -> bool {
        self.policy
            .as_deref()
            .is_none_or(|p| entry.policy.as_deref() == Some(p))
            && self.actor.as_deref().is_none_or(|a| entry.actor == a)
            && self.action.is_none_or(|a| entry.action == a)
    }
}

/// A page of the trail, newest first. `next`: more may remain; pass it as `before`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub next: Option<u64>,
}

/// Builds an [`AuditPage`] from entries offered newest first with their positions; both
/// backends read through it, so retention, filters and paging behave the same.
#[derive(Debug)]
pub(crate) struct PageBuilder<'q> {
    query: &'q AuditQuery,
    lowest_position: u64,
    oldest_ms: u64,
    scanned: usize,
    page: AuditPage,
    /// Position of the last entry put on the page.
    last: Option<u64>,
    done: bool,
}

impl<'q> PageBuilder<'q> {
    /// `head`: the newest position that exists (the bound by count counts from it).
    pub fn new(query: &'q AuditQuery, retention: &AuditRetention, head: u64) -> Self {
        PageBuilder {
            query,
            lowest_position: retention.lowest_kept_position(head),
            oldest_ms: retention.oldest_kept_ms(query.now_ms),
            scanned: 0,
            page: AuditPage::default(),
            last: None,
            done: query.limit == 0,
        }
    }

    /// Where the reading starts: positions below this one (exclusive upper bound).
    pub fn start_below(&self, head: u64) -> u64 {
        let top = head.saturating_add(1);
        self.query.before.map_or(top, |b| b.min(top))
    }

    /// The lowest position worth reading (the bound by count).
    pub fn lowest_position(&self) -> u64 {
        self.lowest_position
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Offers the next older entry at `position`; false once the page is complete.
    pub fn offer(&mut self, position: u64, entry: AuditEntry) -> bool {
        if self.done {
            return false;
        }
        if position < self.lowest_position {
            self.done = true;
            return false;
        }
        self.scanned += 1;
        let shown = entry.at_ms >= self.oldest_ms && self.query.admits(&entry);
        if shown {
            if self.page.entries.len() == self.query.limit {
                // One more exists: the page is full and says where to go on.
                self.page.next = self.last;
                self.done = true;
                return false;
            }
            self.page.entries.push(entry);
            self.last = Some(position);
        }
        if self.scanned >= SCAN_BUDGET {
            self.page.next = Some(position);
            self.done = true;
        }
        !self.done
    }

    pub fn finish(self) -> AuditPage {
        self.page
    }
}

#[cfg(test)]
mod tests;
