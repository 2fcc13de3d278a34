//! The limit algorithms: pure arithmetic from one sample window's summary
//! to the next limit, apart from the atomics that admit calls (see
//! `limiter.rs`), so each can be tested on numbers alone.

/// What one sample window saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct WindowSummary {
    /// Mean round-trip time of the successful calls timed in the window,
    /// in nanoseconds; `None` if none was.
    pub(crate) rtt: Option<f64>,
    /// Calls the classifier counted as failures (drops).
    pub(crate) drops: u64,
    /// Whether demand reached the limit: a call was refused in the window,
    /// or at least half the limit was in flight at its end. A limit that
    /// demand never reaches must not grow (it would grow without bound
    /// while the service is idle, then admit a burst it cannot take).
    pub(crate) limited: bool,
}

/// The algorithm behind one limiter, with its state.
#[derive(Debug, Clone)]
pub(crate) enum Algorithm {
    Gradient2(Gradient2),
    Aimd(Aimd),
    Fixed,
}

impl Algorithm {
    /// The next limit (before clamping to the configured bounds).
    pub(crate) fn update(&mut self, limit: f64, window: &WindowSummary) -> f64 {
        match self {
            Algorithm::Gradient2(g) => g.update(limit, window),
            Algorithm::Aimd(a) => a.update(limit, window),
            Algorithm::Fixed => limit,
        }
    }

    /// A round-trip time to size sample windows by, once known.
    pub(crate) fn rtt_hint(&self) -> Option<f64> {
        match self {
            Algorithm::Gradient2(g) => g.baseline(),
            Algorithm::Aimd(a) => a.last_rtt,
            Algorithm::Fixed => None,
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Algorithm::Gradient2(_) => "gradient2",
            Algorithm::Aimd(_) => "aimd",
            Algorithm::Fixed => "fixed",
        }
    }
}

/// The most a window with drops lets the gradient be: a drop always
/// shrinks the limit a little.
const DROP_GRADIENT: f64 = 0.9;

/// Gradient2 (Netflix concurrency-limits), with the long-term latency read
/// as the *no-load* latency:
///
/// ```text
/// gradient  = clamp(tolerance * baseline / rtt, 0.5, 1)
/// target    = gradient * limit + growth
/// growth    = sqrt(limit) while rtt <= (1 + (tolerance - 1) / 2) * baseline, else 0
/// limit'    = (1 - smoothing) * limit + smoothing * target
/// ```
///
/// where `rtt` is the window's mean and `baseline` the lowest window mean
/// seen over the last one to two epochs of `epoch` windows. Netflix's
/// Gradient2 takes an exponential average of every sample as its long-term
/// latency; under sustained queueing that average climbs with the queue it
/// should be measuring, so the limit drifts up with it (it settles near
/// `tolerance` times the capacity, then creeps). A windowed minimum of
/// window means is the latency the upstream shows when it is not queueing
/// (Vegas' and Envoy's `minRTT`, BBR's min filter), while the mean over a
/// whole window keeps single lucky samples out of it. It expires after at
/// most two epochs, so an upstream that became slower for good is
/// re-learnt; so that a limit kept full (and above the capacity) by demand
/// does not let it expire into a queued latency, each epoch starts with a
/// probe: two windows at 3/4 of the limit, as Envoy re-measures its
/// `minRTT` at a low concurrency.
///
/// On a queue with `C` workers holding `L > C` calls, `rtt / baseline =
/// L / C`, so `gradient * limit = tolerance * C`: each step heads for
/// `tolerance * C`, whatever the overshoot (halving at most).
#[derive(Debug, Clone)]
pub(crate) struct Gradient2 {
    tolerance: f64,
    smoothing: f64,
    epoch: u32,
    windows: u32,
    current_min: f64,
    previous_min: f64,
    /// While probing: windows left, and the limit to go back to.
    probe: Option<(u32, f64)>,
}

/// The limit while probing for the no-load latency, as a share of the
/// limit before.
const PROBE_FACTOR: f64 = 0.75;
/// Windows a probe lasts: the first lets a queue drain, the second
/// measures.
const PROBE_WINDOWS: u32 = 2;

impl Gradient2 {
    pub(crate) fn new(tolerance: f64, smoothing: f64, epoch: u32) -> Self {
        Self {
            tolerance,
            smoothing,
            epoch: epoch.max(1),
            windows: 0,
            current_min: f64::INFINITY,
            previous_min: f64::INFINITY,
            probe: None,
        }
    }

    fn baseline(&self) -> Option<f64> {
        let b = self.current_min.min(self.previous_min);
        b.is_finite().then_some(b)
    }

    /// Takes a window mean into the baseline; says whether a new epoch
    /// began.
    fn observe(&mut self, rtt: f64) -> bool {
        self.windows += 1;
        let rotated = self.windows >= self.epoch;
        if rotated {
            self.windows = 0;
            self.previous_min = self.current_min;
            self.current_min = f64::INFINITY;
        }
        self.current_min = self.current_min.min(rtt);
        rotated
    }

    fn update(&mut self, limit: f64, window: &WindowSummary) -> f64 {
        let Some(rtt) = window.rtt.filter(|r| *r > 0.0) else {
            // Nothing timed: only drops speak.
            return if window.drops > 0 {
                limit * DROP_GRADIENT
            } else {
                limit
            };
        };
        let rotated = self.observe(rtt);
        if let Some((left, resume)) = self.probe {
            // Probing: hold the limit low, then resume where it was (the
            // next window decides afresh, against the fresh baseline).
            self.probe = (left > 1).then_some((left - 1, resume));
            return if left > 1 {
                resume * PROBE_FACTOR
            } else {
                resume
            };
        }
        if !window.limited && window.drops == 0 {
            // Demand is below the limit: what the latency says about a
            // limit nobody reaches is noise (Netflix's "app-limited" rule).
            // Shrinking here would refuse the next burst for nothing.
            return limit;
        }
        if rotated && window.limited {
            // A limit that demand keeps full may sit above the capacity for
            // ever, so no window of the epoch saw the upstream without a
            // queue, and the baseline would climb with the queue when the
            // old epoch expires. Envoy re-measures its minRTT at a low
            // concurrency for the same reason; here, two windows at 3/4 of
            // the limit once an epoch.
            self.probe = Some((PROBE_WINDOWS - 1, limit));
            return limit * PROBE_FACTOR;
        }
        let baseline = self.current_min.min(self.previous_min);
        let mut gradient = (self.tolerance * baseline / rtt).clamp(0.5, 1.0);
        if window.drops > 0 {
            gradient = gradient.min(DROP_GRADIENT);
        }
        // Room to grow only while latency is within tolerance, nothing was
        // dropped and demand reached the limit. Netflix adds a queue
        // allowance to every step, which moves the fixed point to
        // `tolerance * C + queue`; added only at gradient 1 it leaves the
        // fixed point at `tolerance * C` and still grows by `sqrt(limit)`
        // (before smoothing), fast from a small limit.
        // Growth stops halfway to the tolerance: between there and the
        // tolerance the limit holds, so it does not hunt around its fixed
        // point.
        let calm = rtt <= baseline * (1.0 + (self.tolerance - 1.0) / 2.0);
        let growth = if calm && gradient >= 1.0 && window.drops == 0 {
            limit.sqrt().max(1.0)
        } else {
            0.0
        };
        let target = gradient * limit + growth;
        (1.0 - self.smoothing) * limit + self.smoothing * target
    }
}

/// Additive increase, multiplicative decrease: `limit * backoff` after a
/// window with a drop or a mean latency above the threshold, `limit +
/// increase` after one that reached the limit, unchanged otherwise.
#[derive(Debug, Clone)]
pub(crate) struct Aimd {
    threshold: f64,
    backoff: f64,
    increase: f64,
    last_rtt: Option<f64>,
}

impl Aimd {
    pub(crate) fn new(threshold: f64, backoff: f64, increase: f64) -> Self {
        Self {
            threshold,
            backoff,
            increase,
            last_rtt: None,
        }
    }

    fn update(&mut self, limit: f64, window: &WindowSummary) -> f64 {
        if window.rtt.is_some() {
            self.last_rtt = window.rtt;
        }
        let slow = window.rtt.is_some_and(|rtt| rtt > self.threshold);
        if window.drops > 0 || slow {
            limit * self.backoff
        } else if window.limited && window.rtt.is_some() {
            limit + self.increase
        } else {
            limit
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn window(rtt: f64, limited: bool) -> WindowSummary {
        WindowSummary {
            rtt: Some(rtt),
            drops: 0,
            limited,
        }
    }

    #[test]
    fn gradient2_grows_by_the_queue_allowance_at_the_baseline() {
        let mut g = Gradient2::new(1.1, 1.0, 100);
        assert_eq!(g.update(16.0, &window(10.0, true)), 16.0 + 4.0);
        // Not limited: no growth, and no shrinking either.
        assert_eq!(g.update(16.0, &window(10.0, false)), 16.0);
        assert_eq!(g.update(16.0, &window(100.0, false)), 16.0);
    }

    #[test]
    fn gradient2_lands_near_the_capacity_in_one_unsmoothed_step() {
        let mut g = Gradient2::new(1.0, 1.0, 100);
        g.update(10.0, &window(10.0, true)); // baseline 10
        // 40 held by 20 workers: twice the latency.
        let next = g.update(40.0, &window(20.0, true));
        assert_eq!(next, 20.0);
    }

    #[test]
    fn gradient2_never_more_than_halves_and_smooths() {
        let mut g = Gradient2::new(1.0, 0.5, 100);
        g.update(10.0, &window(1.0, true));
        let next = g.update(100.0, &window(1_000.0, true));
        assert_eq!(next, 0.5 * 100.0 + 0.5 * 50.0);
    }

    #[test]
    fn gradient2_drops_shrink_and_the_baseline_expires() {
        let mut g = Gradient2::new(1.0, 1.0, 2);
        let dropped = WindowSummary {
            rtt: None,
            drops: 1,
            limited: true,
        };
        assert_eq!(g.update(10.0, &dropped), 9.0);
        g.update(10.0, &window(5.0, true));
        assert_eq!(g.baseline(), Some(5.0));
        // Two epochs of slower windows and the low one is forgotten.
        for _ in 0..4 {
            g.update(10.0, &window(8.0, false));
        }
        assert_eq!(g.baseline(), Some(8.0));
    }

    #[test]
    fn gradient2_probes_below_a_full_limit_once_an_epoch() {
        let mut g = Gradient2::new(1.0, 1.0, 3);
        assert_eq!(g.update(40.0, &window(10.0, true)), 40.0 + 40f64.sqrt());
        assert_eq!(g.update(40.0, &window(10.0, true)), 40.0 + 40f64.sqrt());
        // The epoch ends: two windows at 3/4, then back to the limit.
        assert_eq!(g.update(40.0, &window(12.0, true)), 30.0);
        assert_eq!(g.update(30.0, &window(10.0, true)), 40.0);
        assert_eq!(g.baseline(), Some(10.0));
        assert_eq!(g.update(40.0, &window(10.0, true)), 40.0 + 40f64.sqrt());
    }

    #[test]
    fn aimd_adds_and_multiplies() {
        let mut a = Aimd::new(100.0, 0.5, 2.0);
        assert_eq!(a.update(10.0, &window(50.0, true)), 12.0);
        assert_eq!(a.update(10.0, &window(50.0, false)), 10.0);
        assert_eq!(a.update(10.0, &window(150.0, true)), 5.0);
        let dropped = WindowSummary {
            rtt: Some(1.0),
            drops: 3,
            limited: true,
        };
        assert_eq!(a.update(10.0, &dropped), 5.0);
    }
}
