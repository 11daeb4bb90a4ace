//! Retry budget: retries allowed = a floor + a share of recent requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Tokens are counted in millionths, so percentages with up to six decimal
/// places are exact: at 20%, five requests earn exactly one retry.
const SCALE: u64 = 1_000_000;
const BUCKETS: u64 = 10;

/// Caps retries at `floor_per_second x ttl + percent x requests in the last
/// ttl`, lock-free. Shared by every caller of one dependency, so a
/// dependency that fails everything receives at most `1 + percent` times
/// the original load, not `attempts` times.
#[derive(Debug)]
pub struct RetryBudget {
    origin: Instant,
    bucket_ms: u64,
    deposit: u64,
    floor: u64,
    epochs: [AtomicU64; BUCKETS as usize],
    deposits: [AtomicU64; BUCKETS as usize],
    withdrawals: [AtomicU64; BUCKETS as usize],
}

impl RetryBudget {
    /// `percent` in `[0, 10]` (0.2 = one retry per five requests), at least
    /// `floor_per_second` retries a second, over a `ttl` window (at least
    /// 1 s).
    pub fn new(ttl: Duration, floor_per_second: u32, percent: f64) -> Self {
        let ttl = ttl.max(Duration::from_secs(1));
        let bucket_ms = (u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX) / BUCKETS).max(1);
        let deposit = (percent.clamp(0.0, 10.0) * SCALE as f64).round() as u64;
        let floor = u64::from(floor_per_second) * ttl.as_secs() * SCALE;
        Self {
            origin: Instant::now(),
            bucket_ms,
            deposit,
            floor,
            epochs: Default::default(),
            deposits: Default::default(),
            withdrawals: Default::default(),
        }
    }

    fn slot(&self) -> (usize, u64) {
        let epoch = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
            / self.bucket_ms
            + 1;
        let i = (epoch % BUCKETS) as usize;
        let seen = self.epochs[i].load(Ordering::Acquire);
        if seen != epoch
            && self.epochs[i]
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.deposits[i].store(0, Ordering::Release);
            self.withdrawals[i].store(0, Ordering::Release);
        }
        (i, epoch)
    }

    /// Records an original request (not a retry).
    pub fn deposit(&self) {
        let (i, _) = self.slot();
        self.deposits[i].fetch_add(self.deposit, Ordering::AcqRel);
    }

    fn balance(&self, epoch: u64) -> i128 {
        let mut balance = i128::from(self.floor);
        for i in 0..BUCKETS as usize {
            let e = self.epochs[i].load(Ordering::Acquire);
            if e + BUCKETS > epoch && e <= epoch {
                balance += i128::from(self.deposits[i].load(Ordering::Acquire));
                balance -= i128::from(self.withdrawals[i].load(Ordering::Acquire));
            }
        }
        balance
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn withdraw(&self) -> bool {
        let (i, epoch) = self.slot();
        if self.balance(epoch) < i128::from(SCALE) {
            return false;
        }
        self.withdrawals[i].fetch_add(SCALE, Ordering::AcqRel);
        true
    }

    /// Whole retries available now.
    pub fn available(&self) -> u64 {
        let (_, epoch) = self.slot();
        u64::try_from(self.balance(epoch).max(0) / i128::from(SCALE)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fractional_percentages_are_exact() {
        let b = RetryBudget::new(Duration::from_secs(10), 0, 0.3);
        for _ in 0..10 {
            b.deposit();
        }
        assert_eq!(b.available(), 3);
        assert!(b.withdraw() && b.withdraw() && b.withdraw());
        assert!(!b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire_after_the_ttl_and_the_floor_stays() {
        let b = RetryBudget::new(Duration::from_secs(10), 1, 0.5);
        assert_eq!(b.available(), 10, "floor: 1/s over 10 s");
        for _ in 0..10 {
            b.deposit();
        }
        assert_eq!(b.available(), 15);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(b.available(), 10);
    }
}
