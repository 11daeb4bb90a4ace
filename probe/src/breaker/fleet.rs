//! What the fleet (feature `redis`) may do to a breaker: open it on a
//! quorum of peers, adopt a peer's trial verdict, and decide who sends the
//! trial. None of it touches the closed path.

use super::*;

impl CircuitBreaker {
    /// Who sends the trial when the open period ends, and how long past it
    /// a [`Gate::Fleet`] breaker waits for the fleet before probing itself.
    pub(crate) fn set_gate(&self, gate: Gate, patience: Duration) {
        let ms = u64::try_from(patience.as_millis()).unwrap_or(u64::MAX);
        self.shared.gate_patience_ms.store(ms, Ordering::Release);
        self.shared.gate.store(gate as u8, Ordering::Release);
    }

    pub(crate) fn gate(&self) -> Gate {
        match self.shared.gate.load(Ordering::Acquire) {
            1 => Gate::Fleet,
            2 => Gate::Probe,
            _ => Gate::Local,
        }
    }

    /// Whether the current opening comes from this replica's own calls.
    pub(crate) fn own_evidence(&self) -> bool {
        self.shared.own_evidence.load(Ordering::Acquire)
    }

    /// Open and the open period is over: a trial is due.
    pub(crate) fn trial_due(&self) -> bool {
        self.state() == State::Open && self.remaining_open().is_zero()
    }

    /// Opens a closed breaker for `remaining` because a quorum of peers
    /// reports the dependency open. Returns whether it opened.
    pub(crate) fn fleet_open(&self, remaining: Duration) -> bool {
        let s = &self.shared;
        let mut slow = s.slow.lock().unwrap_or_else(PoisonError::into_inner);
        if State::from_code(s.state.load(Ordering::Acquire)) != State::Closed {
            return false;
        }
        let now = Instant::now();
        let remaining = remaining.min(s.config.open_max);
        let until = s
            .now_ms(now)
            .saturating_add(u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX / 2));
        s.open_until.store(until, Ordering::Release);
        s.own_evidence.store(false, Ordering::Release);
        slow.consecutive_openings = slow.consecutive_openings.saturating_add(1);
        s.transition(&mut slow, State::Closed, State::Open, now);
        true
    }

    /// A peer's trial succeeded: close an open or half-open breaker.
    /// Returns whether it closed.
    pub(crate) fn fleet_close(&self) -> bool {
        let s = &self.shared;
        let mut slow = s.slow.lock().unwrap_or_else(PoisonError::into_inner);
        let from = State::from_code(s.state.load(Ordering::Acquire));
        if !matches!(from, State::Open | State::HalfOpen) {
            return false;
        }
        slow.consecutive_openings = 0;
        s.hint_ms.store(0, Ordering::Release);
        s.transition(&mut slow, from, State::Closed, Instant::now());
        true
    }

    /// A peer's trial failed and it stays open `remaining`: an open breaker
    /// stays open at least as long, so the next trial is again one for the
    /// fleet.
    pub(crate) fn fleet_extend(&self, remaining: Duration) {
        let s = &self.shared;
        let _slow = s.slow.lock().unwrap_or_else(PoisonError::into_inner);
        if State::from_code(s.state.load(Ordering::Acquire)) != State::Open {
            return;
        }
        let remaining = remaining.min(s.config.open_max);
        let until = s
            .now_ms(Instant::now())
            .saturating_add(u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX / 2));
        s.open_until.fetch_max(until, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::builder()
            .count_window(4)
            .minimum_calls(2)
            .open_for(Duration::from_secs(5), 1.0, Duration::from_secs(30))
            .jitter(0.0, None)
            .build()
            .expect("valid")
    }

    fn trip(b: &CircuitBreaker) {
        for _ in 0..2 {
            b.try_acquire().expect("closed").record(Verdict::Failure);
        }
        assert_eq!(b.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_gated_breaker_waits_for_the_fleet_then_probes_alone() {
        let b = breaker();
        b.set_gate(Gate::Fleet, Duration::from_secs(2));
        trip(&b);
        assert!(b.own_evidence());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.trial_due());
        let err = b.try_acquire().expect_err("the fleet's probe decides");
        assert!(err.retry_after <= Duration::from_millis(100));
        assert_eq!(b.state(), State::Open, "no half-open while gated");
        tokio::time::advance(Duration::from_secs(2)).await;
        let trial = b.try_acquire().expect("patience over: a trial of its own");
        assert_eq!(b.state(), State::HalfOpen);
        trial.record(Verdict::Success);
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn the_lease_holder_probes_at_once() {
        let b = breaker();
        b.set_gate(Gate::Fleet, Duration::from_secs(60));
        trip(&b);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.try_acquire().is_err());
        b.set_gate(Gate::Probe, Duration::from_secs(60));
        let trial = b.try_acquire().expect("holder sends the trial");
        trial.record(Verdict::Failure);
        assert_eq!(b.state(), State::Open);
        assert!(b.own_evidence(), "a failed trial is evidence of its own");
    }

    #[tokio::test(start_paused = true)]
    async fn quorum_opening_verdicts_and_extension() {
        let b = breaker();
        assert!(b.fleet_open(Duration::from_secs(3)));
        assert_eq!(b.state(), State::Open);
        assert!(!b.own_evidence(), "opened on the peers' word");
        assert!(!b.fleet_open(Duration::from_secs(3)), "already open");
        assert_eq!(b.remaining_open(), Duration::from_secs(3));
        b.fleet_extend(Duration::from_secs(8));
        assert_eq!(b.remaining_open(), Duration::from_secs(8));
        b.fleet_extend(Duration::from_secs(1));
        assert_eq!(
            b.remaining_open(),
            Duration::from_secs(8),
            "never shortened"
        );
        assert!(b.fleet_close());
        assert_eq!(b.state(), State::Closed);
        assert!(!b.fleet_close(), "already closed");
        b.fleet_open(Duration::from_secs(600));
        assert_eq!(
            b.remaining_open(),
            Duration::from_secs(30),
            "capped at open_max"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_fleet_leaves_manual_states_alone() {
        let b = breaker();
        b.force_open();
        assert!(!b.fleet_close());
        assert_eq!(b.state(), State::ForcedOpen);
        b.disable();
        assert!(!b.fleet_open(Duration::from_secs(1)));
        assert_eq!(b.state(), State::Disabled);
    }
}
