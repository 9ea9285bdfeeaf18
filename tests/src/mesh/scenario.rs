//! Running many checks on one shared mesh, and the statistical bound the sampling checks use.

use std::time::Instant;

/// A named check run on a shared mesh by [`run_scenarios`].
pub type Scenario<M> = (&'static str, fn(&mut M));

/// Runs every scenario on `mesh` in order (they share it, so each uses its own paths and
/// policies), reports each as it finishes, and panics at the end naming those that failed.
/// One mesh per test file keeps the suite fast; the scenarios still fail one by one.
pub fn run_scenarios<M>(mesh: &mut M, scenarios: &[Scenario<M>]) {
    let mut failed = Vec::new();
    for (name, scenario) in scenarios {
        let start = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(mesh)));
        match result {
            Ok(()) => eprintln!("scenario {name} ... ok ({:.2?})", start.elapsed()),
            Err(cause) => {
                let message = cause
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| cause.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                eprintln!("scenario {name} ... FAILED: {message}");
                failed.push(*name);
            }
        }
    }
    assert!(failed.is_empty(), "scenarios failed: {failed:?}");
}

/// The two-sided bound on `|faulted - n * p|` that a correct sampler stays within with
/// probability 99.9% (normal approximation of the binomial, z = 3.29).
pub fn binomial_bound_999(n: usize, p: f64) -> f64 {
    3.29 * (n as f64 * p * (1.0 - p)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_bound_matches_the_normal_approximation() {
        let bound = binomial_bound_999(2400, 0.3);
        assert!((bound - 73.8).abs() < 0.5, "{bound}");
        assert_eq!(binomial_bound_999(100, 1.0), 0.0);
    }
}
