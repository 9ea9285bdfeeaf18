//! Requests held by a delay (or start delay), ordered by deadline.
//!
//! The root context's tick serves them: it is re-armed for the earliest deadline, and a
//! request is released only once the clock has reached its deadline, so a delay is never
//! early. Envoy's tick period is whole milliseconds and may fire a little before the wall
//! clock agrees, so [`tick_period_ms`] rounds up and a tick that comes early just re-arms.

use std::collections::BTreeMap;

/// Held requests, keyed by deadline (ns, host wall clock) and HTTP context id. The request
/// remembers its own deadline, so one ordered map is enough (each map type costs code size).
#[derive(Debug)]
pub struct Holds<T> {
    by_deadline: BTreeMap<(u64, u32), T>,
}

impl<T> Default for Holds<T> {
    fn default() -> Self {
        Holds {
            by_deadline: BTreeMap::new(),
        }
    }
}

impl<T> Holds<T> {
    pub fn insert(&mut self, context_id: u32, deadline_ns: u64, data: T) {
        self.by_deadline.insert((deadline_ns, context_id), data);
    }

    /// Forgets a hold (the request went away); its data if it was still held.
    pub fn remove(&mut self, context_id: u32, deadline_ns: u64) -> Option<T> {
        self.by_deadline.remove(&(deadline_ns, context_id))
    }

    pub fn contains(&self, context_id: u32, deadline_ns: u64) -> bool {
        self.by_deadline.contains_key(&(deadline_ns, context_id))
    }

    pub fn len(&self) -> usize {
        self.by_deadline.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_deadline.is_empty()
    }

    /// The earliest deadline, in ns.
    pub fn next_deadline_ns(&self) -> Option<u64> {
        self.by_deadline
            .keys()
            .next()
            .map(|(deadline, _)| *deadline)
    }

    /// Takes every hold whose deadline is at or before `now_ns`, earliest first.
    pub fn take_due(&mut self, now_ns: u64) -> Vec<(u32, T)> {
        let later = self.by_deadline.split_off(&(now_ns.saturating_add(1), 0));
        std::mem::replace(&mut self.by_deadline, later)
            .into_iter()
            .map(|((_, id), data)| (id, data))
            .collect()
    }

    /// Takes every hold, whatever its deadline (the kill switch releases them all).
    pub fn take_all(&mut self) -> Vec<(u32, T)> {
        std::mem::take(&mut self.by_deadline)
            .into_iter()
            .map(|((_, id), data)| (id, data))
            .collect()
    }
}

/// Tick period (whole ms, at least 1) that fires no earlier than `wake_ns`.
pub fn tick_period_ms(now_ns: u64, wake_ns: u64) -> u64 {
    wake_ns.saturating_sub(now_ns).div_ceil(1_000_000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_holds_come_out_in_deadline_order_and_never_early() {
        let mut holds = Holds::default();
        holds.insert(1, 3_000, "c");
        holds.insert(2, 1_000, "a");
        holds.insert(3, 2_000, "b");
        assert_eq!(holds.next_deadline_ns(), Some(1_000));
        assert!(holds.take_due(999).is_empty());
        assert_eq!(holds.take_due(2_000), vec![(2, "a"), (3, "b")]);
        assert_eq!(holds.len(), 1);
        assert_eq!(holds.next_deadline_ns(), Some(3_000));
        assert_eq!(holds.take_due(u64::MAX), vec![(1, "c")]);
        assert!(holds.is_empty());
        assert_eq!(holds.next_deadline_ns(), None);
    }

    #[test]
    fn remove_contains_and_take_all() {
        let mut holds = Holds::default();
        holds.insert(1, 10, 'x');
        holds.insert(2, 10, 'y');
        assert!(holds.contains(1, 10) && !holds.contains(1, 11) && !holds.contains(3, 10));
        assert_eq!(holds.remove(1, 10), Some('x'));
        assert_eq!(holds.remove(1, 10), None);
        holds.insert(3, 500, 'w');
        assert_eq!(holds.take_all(), vec![(2, 'y'), (3, 'w')]);
        assert!(holds.take_due(u64::MAX).is_empty());
        assert_eq!(holds.remove(2, 10), None);
    }

    #[test]
    fn tick_period_rounds_up() {
        assert_eq!(tick_period_ms(0, 1), 1);
        assert_eq!(tick_period_ms(0, 1_000_000), 1);
        assert_eq!(tick_period_ms(0, 1_000_001), 2);
        assert_eq!(
            tick_period_ms(5_000_000, 0),
            1,
            "overdue: fire as soon as possible"
        );
        assert_eq!(tick_period_ms(0, 250_000_000), 250);
    }
}
