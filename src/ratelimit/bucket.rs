//! Token-bucket arithmetic: pure, integer, with the clock passed in.
//!
//! Tokens are kept in fixed point: one token is [`UNITS_PER_TOKEN`] units
//! (60,000,000). A refill rate of `r` tokens per minute is then exactly
//! `r * 1000` units per millisecond, so refilling is one multiplication with no
//! remainder to carry and no float drift, for any rate with three decimals
//! (0.001 token per minute and up).

/// Fixed-point units in one token: 60,000 ms x 1,000 (thousandths of a token per minute).
pub const UNITS_PER_TOKEN: i64 = 60_000_000;

/// Deepest debt a bucket can go into, so later arithmetic never overflows.
const MAX_DEBT: i64 = -(i64::MAX / 4);

/// The constant parameters of one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketParams {
    /// Capacity in units (> 0).
    pub capacity: i64,
    /// Refill in units per millisecond (> 0).
    pub rate_per_ms: u64,
}

impl BucketParams {
    /// Parameters for `capacity` tokens refilled at `refill_per_minute` tokens a
    /// minute. Inputs are validated by the config; out-of-range values are
    /// clamped to stay meaningful (never zero, never overflowing).
    pub fn new(capacity: u64, refill_per_minute: f64) -> Self {
        let capacity = i64::try_from(capacity).unwrap_or(i64::MAX).clamp(1, 1 << 32);
        let milli_per_minute = (refill_per_minute * 1000.0).round();
        // `as` saturates for floats; NaN becomes 0 and is then raised to 1.
        let rate_per_ms = (milli_per_minute as u64).max(1);
        BucketParams { capacity: capacity * UNITS_PER_TOKEN, rate_per_ms }
    }

    /// Whole tokens of capacity.
    pub fn capacity_tokens(&self) -> u64 {
        u64::try_from(self.capacity / UNITS_PER_TOKEN).unwrap_or(0)
    }

    /// Seconds an empty bucket takes to fill, rounded up, at least 1: the `w`
    /// of `RateLimit-Policy`.
    pub fn window_secs(&self) -> u64 {
        ms_to_secs_ceil(ms_for_units(self.capacity, self.rate_per_ms)).max(1)
    }
}

/// The mutable state of one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Tokens held, in units; may be negative (debt) after a response charge.
    pub tokens: i64,
    /// Clock reading of the last refill, in milliseconds.
    pub last_ms: u64,
}

impl Bucket {
    /// A full bucket as of `now_ms`.
    pub fn full(params: &BucketParams, now_ms: u64) -> Self {
        Bucket { tokens: params.capacity, last_ms: now_ms }
    }

    /// Adds the tokens earned since `last_ms`, up to capacity.
    ///
    /// A clock that went backwards earns nothing and takes nothing: the bucket
    /// keeps its tokens and counts from the new reading, so a step back of the
    /// wall clock neither gives a burst nor freezes the bucket until the clock
    /// catches up.
    pub fn refill(&mut self, params: &BucketParams, now_ms: u64) {
        if now_ms > self.last_ms && self.tokens < params.capacity {
            let elapsed = u128::from(now_ms - self.last_ms);
            let earned = elapsed.saturating_mul(u128::from(params.rate_per_ms));
            let room = (i128::from(params.capacity) - i128::from(self.tokens)).max(0) as u128;
            // `earned.min(room)` fits: room is at most capacity + |MAX_DEBT| < i64::MAX * 2,
            // and adding it to `tokens` lands at or below capacity.
            let added = earned.min(room);
            self.tokens = (i128::from(self.tokens) + added as i128).min(i128::from(params.capacity)) as i64;
        }
        self.last_ms = now_ms;
    }

    /// Whether `cost` units can be taken now (call [`Bucket::refill`] first).
    pub fn has(&self, cost: i64) -> bool {
        self.tokens >= cost
    }

    /// Takes `cost` units, possibly into debt (bounded).
    pub fn take(&mut self, cost: i64) {
        self.tokens = self.tokens.saturating_sub(cost).max(MAX_DEBT);
    }

    /// Gives back `amount` units, never beyond capacity.
    pub fn give_back(&mut self, params: &BucketParams, amount: i64) {
        self.tokens = self.tokens.saturating_add(amount).min(params.capacity);
    }

    /// Whole tokens available, 0 when empty or in debt: the `r` of `RateLimit`.
    pub fn whole_tokens(&self) -> u64 {
        u64::try_from(self.tokens / UNITS_PER_TOKEN).unwrap_or(0)
    }

    /// Milliseconds until `cost` units are available (0 if they are now).
    pub fn ms_until(&self, params: &BucketParams, cost: i64) -> u64 {
        ms_for_units(cost.saturating_sub(self.tokens), params.rate_per_ms)
    }

    /// Seconds until `cost` units are available, rounded up: `Retry-After`.
    pub fn secs_until(&self, params: &BucketParams, cost: i64) -> u64 {
        ms_to_secs_ceil(self.ms_until(params, cost))
    }

    /// Seconds until the next whole token beyond those held now accrues,
    /// rounded up: the `t` of `RateLimit` (a full bucket reports the time one
    /// token takes, since that is when a spent token comes back).
    pub fn secs_to_next_token(&self, params: &BucketParams) -> u64 {
        let next_whole = self.tokens.div_euclid(UNITS_PER_TOKEN).saturating_add(1).saturating_mul(UNITS_PER_TOKEN);
        let units = if self.tokens >= params.capacity {
            UNITS_PER_TOKEN
        } else {
            next_whole.saturating_sub(self.tokens)
        };
        ms_to_secs_ceil(ms_for_units(units, params.rate_per_ms))
    }

    /// Whether refilling to `now_ms` would fill the bucket: an idle bucket whose
    /// slot another key may take over without losing anything.
    pub fn is_full_at(&self, params: &BucketParams, now_ms: u64) -> bool {
        let mut probe = *self;
        probe.refill(params, now_ms);
        probe.tokens >= params.capacity
    }
}

/// Milliseconds to earn `units` at `rate_per_ms`, rounded up; 0 if `units <= 0`.
fn ms_for_units(units: i64, rate_per_ms: u64) -> u64 {
    if units <= 0 {
        return 0;
    }
    let rate = rate_per_ms.max(1);
    (units as u64).div_ceil(rate)
}

/// Whole seconds covering `ms`, rounded up.
pub fn ms_to_secs_ceil(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// Units for `tokens` whole tokens, saturating.
pub fn units(tokens: u64) -> i64 {
    i64::try_from(tokens).unwrap_or(i64::MAX).saturating_mul(UNITS_PER_TOKEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: i64 = UNITS_PER_TOKEN;

    fn per_minute(capacity: u64, refill: f64) -> BucketParams {
        BucketParams::new(capacity, refill)
    }

    #[test]
    fn rate_is_exact_in_units_per_ms() {
        assert_eq!(per_minute(60, 60.0).rate_per_ms, 60_000);
        assert_eq!(per_minute(1, 0.5).rate_per_ms, 500);
        assert_eq!(per_minute(1, 0.001).rate_per_ms, 1);
        assert_eq!(per_minute(60, 60.0).capacity, 60 * ONE);
    }

    #[test]
    fn full_bucket_allows_a_burst_of_capacity_then_refuses() {
        let p = per_minute(5, 60.0);
        let mut b = Bucket::full(&p, 1_000);
        for _ in 0..5 {
            b.refill(&p, 1_000);
            assert!(b.has(ONE));
            b.take(ONE);
        }
        b.refill(&p, 1_000);
        assert!(!b.has(ONE));
        assert_eq!(b.whole_tokens(), 0);
    }

    #[test]
    fn refill_is_linear_and_capped_at_capacity() {
        let p = per_minute(60, 60.0); // one token a second
        let mut b = Bucket { tokens: 0, last_ms: 0 };
        b.refill(&p, 999);
        assert_eq!(b.whole_tokens(), 0);
        b.refill(&p, 1_000);
        assert_eq!(b.tokens, ONE);
        b.refill(&p, 30_000);
        assert_eq!(b.tokens, 30 * ONE);
        b.refill(&p, 10_000_000);
        assert_eq!(b.tokens, 60 * ONE);
    }

    #[test]
    fn fractional_refill_accumulates_without_drift_over_many_small_steps() {
        // 0.5 token per minute, refilled every millisecond for two minutes:
        // exactly one token, not zero (a float or truncating counter would lose it).
        let p = per_minute(10, 0.5);
        let mut b = Bucket { tokens: 0, last_ms: 0 };
        for now in 1..=120_000 {
            b.refill(&p, now);
        }
        assert_eq!(b.tokens, ONE);
        // 7 tokens per minute in 1 ms steps over one minute: exactly 7.
        let p = per_minute(100, 7.0);
        let mut b = Bucket { tokens: 0, last_ms: 0 };
        for now in 1..=60_000 {
            b.refill(&p, now);
        }
        assert_eq!(b.tokens, 7 * ONE);
    }

    #[test]
    fn clock_going_backwards_neither_refills_nor_drains_and_refilling_resumes() {
        let p = per_minute(60, 60.0);
        let mut b = Bucket { tokens: 10 * ONE, last_ms: 1_000_000 };
        b.refill(&p, 0);
        assert_eq!(b.tokens, 10 * ONE);
        assert_eq!(b.last_ms, 0);
        b.refill(&p, 2_000);
        assert_eq!(b.tokens, 12 * ONE);
        // The extreme readings do not panic either.
        b.refill(&p, u64::MAX);
        assert_eq!(b.tokens, 60 * ONE);
        b.refill(&p, 0);
        assert_eq!(b.tokens, 60 * ONE);
    }

    #[test]
    fn response_cost_drives_the_bucket_into_debt_and_refill_pays_it_back() {
        let p = per_minute(50_000, 2_000.0);
        let mut b = Bucket::full(&p, 0);
        b.take(units(60_000));
        assert_eq!(b.tokens, -10_000 * ONE);
        assert!(!b.has(ONE));
        assert_eq!(b.whole_tokens(), 0);
        // 10,001 tokens at 2,000/min: 300.03 s.
        assert_eq!(b.secs_until(&p, ONE), 301);
        b.refill(&p, 300_030);
        assert!(b.has(ONE));
        assert_eq!(b.tokens, ONE);
    }

    #[test]
    fn debt_is_bounded_and_never_overflows() {
        let p = per_minute(1, 1.0);
        let mut b = Bucket::full(&p, 0);
        b.take(units(u64::MAX));
        b.take(i64::MAX);
        assert_eq!(b.tokens, MAX_DEBT);
        b.refill(&p, u64::MAX);
        assert_eq!(b.tokens, ONE);
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        let p = per_minute(10, 10.0); // a token every 6 s
        let cases: &[(i64, u64)] = &[
            (ONE, 0),
            (ONE - 1, 1),
            (0, 6),
            (ONE / 2, 3),
            (ONE / 2 - 1, 4),
            (-ONE, 12),
        ];
        for (tokens, secs) in cases {
            let b = Bucket { tokens: *tokens, last_ms: 0 };
            assert_eq!(b.secs_until(&p, ONE), *secs, "tokens {tokens}");
        }
    }

    #[test]
    fn next_token_time_and_policy_window() {
        let p = per_minute(10, 10.0);
        assert_eq!(p.window_secs(), 60);
        assert_eq!(Bucket { tokens: 10 * ONE, last_ms: 0 }.secs_to_next_token(&p), 6);
        assert_eq!(Bucket { tokens: 9 * ONE, last_ms: 0 }.secs_to_next_token(&p), 6);
        assert_eq!(Bucket { tokens: 9 * ONE + ONE / 2, last_ms: 0 }.secs_to_next_token(&p), 3);
        assert_eq!(Bucket { tokens: -ONE / 2, last_ms: 0 }.secs_to_next_token(&p), 3);
        assert_eq!(per_minute(50_000, 2_000.0).window_secs(), 1_500);
        assert_eq!(per_minute(1, 1_000.0).window_secs(), 1);
    }

    #[test]
    fn idle_detection_uses_refill() {
        let p = per_minute(60, 60.0);
        let b = Bucket { tokens: 59 * ONE, last_ms: 0 };
        assert!(!b.is_full_at(&p, 999));
        assert!(b.is_full_at(&p, 1_000));
    }

    #[test]
    fn give_back_stops_at_capacity() {
        let p = per_minute(2, 1.0);
        let mut b = Bucket { tokens: ONE, last_ms: 0 };
        b.give_back(&p, 5 * ONE);
        assert_eq!(b.tokens, 2 * ONE);
    }
}
