//! The random number a rule's percentage is compared with ([`crate::CompiledFault::sample`]).
//!
//! With [`Sampling::Request`](crate::Sampling::Request) it is a pure function of the request's
//! `x-request-id`, the policy and the rule: Envoy keeps that header across a caller's retries
//! and hops (istio/istio sets no `preserve_external_request_id` and sidecars do not use the
//! remote address, so the callee's sidecar never regenerates it), so every attempt of one
//! request gets the same answer on every replica. Envoy's ids are UUIDv4 (122 random bits);
//! hashing one with the policy and rule gives a uniform, unbiased draw, different per rule and
//! policy, so the policies of one request are still independent.
//!
//! The hash is FNV-1a 64 over the three parts (each length-prefixed, so no two inputs run
//! together), finished with the SplitMix64 mixer: FNV alone leaves the high bits, which the
//! comparison looks at, poorly mixed for short inputs. Small and exactly the same in the plugin
//! and in tests; not a keyed hash, which is fine: a caller who picks request ids can choose
//! its faults anyway.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The draw for rule `rule` of policy `policy` on the request with id `request_id`.
pub fn request_draw(request_id: &str, policy: &str, rule: usize) -> u64 {
    let mut hash = FNV_OFFSET;
    let mut feed = |bytes: &[u8]| {
        for byte in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
    };
    feed(policy.as_bytes());
    feed(&(rule as u64).to_le_bytes());
    feed(request_id.as_bytes());
    mix(hash)
}

/// SplitMix64's finalizer (Steele, Lea, Flood 2014): every input bit reaches every output bit.
/// Also the output step of the plugin's random number generator.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// UUIDv4-shaped ids from a fixed sequence, like Envoy's.
    fn uuid(n: u64) -> String {
        let a = mix(n);
        let b = mix(n ^ 0xdead_beef);
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }

    #[test]
    fn same_request_same_draw_other_rule_or_policy_other_draw() {
        let id = uuid(1);
        assert_eq!(request_draw(&id, "p", 0), request_draw(&id, "p", 0));
        assert_ne!(request_draw(&id, "p", 0), request_draw(&id, "p", 1));
        assert_ne!(request_draw(&id, "p", 0), request_draw(&id, "q", 0));
        // Length prefixes: moving a byte between parts changes the draw.
        assert_ne!(request_draw("ab", "c", 0), request_draw("b", "ca", 0));
    }

    #[test]
    fn draws_are_uniform() {
        // 200,000 ids into 20 buckets by the high bits: chi-square with 19 degrees of freedom
        // stays under 43.8 (p = 0.001) for a uniform draw.
        const N: u64 = 200_000;
        let mut buckets = [0u64; 20];
        for n in 0..N {
            let draw = request_draw(&uuid(n), "reviews-abort", 0);
            buckets[((u128::from(draw) * 20) >> 64) as usize] += 1;
        }
        let expected = N as f64 / 20.0;
        let chi2: f64 = buckets
            .iter()
            .map(|&b| (b as f64 - expected).powi(2) / expected)
            .sum();
        assert!(chi2 < 43.8, "chi2 {chi2}: {buckets:?}");
    }

    #[test]
    fn a_percentage_holds_over_request_ids() {
        // 30 % of 100,000 requests: within the 99.9 % binomial bound (3.29 sigma = 477).
        let threshold = (0.30 * 18_446_744_073_709_551_616.0) as u64;
        let hits = (0..100_000u64)
            .filter(|n| request_draw(&uuid(*n), "p", 3) < threshold)
            .count() as f64;
        assert!((hits - 30_000.0).abs() < 477.0, "{hits}");
    }
}
