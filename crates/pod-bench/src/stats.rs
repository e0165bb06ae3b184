//! Percentiles over raw samples. Samples are kept whole (no histograms) so
//! that the p99 reported is a real observed value.

/// The `q` quantile (0.0..=1.0) of `samples`, nearest-rank. Sorts in place.
pub fn quantile(samples: &mut [u64], q: f64) -> u64 {
    assert!(!samples.is_empty(), "quantile of no samples");
    assert!((0.0..=1.0).contains(&q), "quantile {q} outside 0..=1");
    samples.sort_unstable();
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut s: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&mut s, 0.5), 50);
        assert_eq!(quantile(&mut s, 0.99), 99);
        assert_eq!(quantile(&mut s, 1.0), 100);
        assert_eq!(quantile(&mut [7], 0.5), 7);
    }
}
