//! A small deterministic generator (SplitMix64) for schedules, room sizes
//! and payloads: the same seed gives the same run. Not for secrets.

/// SplitMix64: one 64-bit state, a fast and well-mixed output.
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// A gap of a Poisson process of `rate` per second: exponential.
    pub fn exponential_secs(&mut self, rate: f64) -> f64 {
        -self.unit().ln() / rate
    }
}
