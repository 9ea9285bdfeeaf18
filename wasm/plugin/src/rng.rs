//! Random numbers for sampling and backoff jitter.
//!
//! wasm32-unknown-unknown has no OS random source, so each VM seeds a small generator from the
//! clock and its root context id. Sampling needs uniform numbers, not secret ones.

/// A source of uniform `u64`s; tests pass fixed sequences.
pub trait Rng {
    fn next_u64(&mut self) -> u64;

    /// Uniform in `0..bound` (0 when `bound` is 0), by multiply-shift: the bias is below
    /// `bound / 2^64`, far under anything a backoff can notice.
    fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// SplitMix64: a 64-bit state stepped by a Weyl constant and mixed; passes BigCrush, one
/// multiply-xorshift chain per number.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// A seed that differs between VMs started in the same nanosecond: the root context id
    /// goes into the high bits, and one round of mixing spreads both.
    pub fn seeded(now_nanos: u64, context_id: u32) -> Self {
        let mut mixer = SplitMix64::new(now_nanos ^ (u64::from(context_id) << 40));
        SplitMix64::new(mixer.next_u64())
    }
}

impl Rng for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        boifi_policy::sampling::mix(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_different_seed_different_sequence() {
        let a: Vec<u64> = (0..4)
            .scan(SplitMix64::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..4)
            .scan(SplitMix64::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let c: Vec<u64> = (0..4)
            .scan(SplitMix64::new(8), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(
            SplitMix64::seeded(1, 1).next_u64(),
            SplitMix64::seeded(1, 2).next_u64()
        );
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = SplitMix64::new(42);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let v = rng.below(10);
            assert!(v < 10);
            seen[v as usize] += 1;
        }
        // Each bucket expects 1000; 800..1200 is more than 6 standard deviations wide.
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn high_bit_is_fair() {
        let mut rng = SplitMix64::seeded(123_456_789, 3);
        let ones = (0..20_000).filter(|_| rng.next_u64() >> 63 == 1).count();
        // Expect 10000, sd ~71: 9500..10500 is 7 sd.
        assert!((9_500..10_500).contains(&ones), "{ones}");
    }
}
