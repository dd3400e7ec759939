//! `SeededRng`: a small deterministic random generator (SplitMix64), so a fault schedule or a
//! workload is reproduced exactly from its seed.
//!
//! Invariant: the same seed always yields the same sequence, on every platform.

/// A seeded generator of pseudo-random numbers; not for cryptography.
#[derive(Clone, Debug)]
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    pub fn new(seed: u64) -> SeededRng {
        SeededRng { state: seed }
    }

    /// A generator derived from this seed for an independent stream, e.g. one per client.
    pub fn derive(seed: u64, stream: u64) -> SeededRng {
        let mut mixer = SeededRng::new(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        SeededRng::new(mixer.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    /// A number in `0..bound`; `bound` must not be zero.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "below(0) has no answer");
        // Multiply-shift keeps the bias below 2^-32 for the small bounds used here.
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// An index into a slice of `len` items.
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// `true` with probability `probability` (clamped to 0..=1).
    pub fn chance(&mut self, probability: f64) -> bool {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < probability
    }

    /// A duration uniformly in `[low, high]`.
    pub fn between(
        &mut self,
        low: std::time::Duration,
        high: std::time::Duration,
    ) -> std::time::Duration {
        if high <= low {
            return low;
        }
        let span = (high - low).as_micros() as u64;
        low + std::time::Duration::from_micros(self.below(span + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::SeededRng;

    #[test]
    fn the_same_seed_gives_the_same_sequence() {
        let first: Vec<u64> = {
            let mut rng = SeededRng::new(7);
            (0..5).map(|_| rng.next_u64()).collect()
        };
        let mut rng = SeededRng::new(7);
        let second: Vec<u64> = (0..5).map(|_| rng.next_u64()).collect();
        assert_eq!(first, second);
        let mut other = SeededRng::new(8);
        assert_ne!(first[0], other.next_u64());
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = SeededRng::new(1);
        let mut seen = [0u32; 6];
        for _ in 0..6000 {
            seen[rng.index(6)] += 1;
        }
        assert!(
            seen.iter().all(|count| (800..1200).contains(count)),
            "{seen:?}"
        );
    }

    #[test]
    fn derived_streams_differ() {
        let mut first = SeededRng::derive(3, 0);
        let mut second = SeededRng::derive(3, 1);
        assert_ne!(first.next_u64(), second.next_u64());
    }
}
