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
/// where `rtt` is the window's mean and `baseline` the latency the upstream
/// shows without a queue. Netflix's Gradient2 takes an exponential average
/// of every sample as its long-term latency; under sustained queueing that
/// average climbs with the queue it should be measuring, so the limit
/// drifts up with it (it settles near `tolerance` times the capacity, then
/// creeps). A minimum of window means would not climb, but it sits below
/// the typical mean by the noise of the means, and on a noisy upstream
/// the limit then shrinks for ever. So the baseline is *measured*, as
/// Envoy measures its `minRTT`: once an epoch (after 10, 20, 40, then every
/// `epoch` windows) a probe holds the limit at 3/4 for two windows (the
/// first drains any queue, the second measures) and the measured mean is
/// averaged into the baseline (half old, half new: noise halves, a lasting
/// change is learnt within a few probes). Before the first probe, the
/// running average of window means stands in.
///
/// On a queue with `C` workers holding `L > C` calls, `rtt / baseline =
/// L / C`, so `gradient * limit = tolerance * C`: each step heads for
/// `tolerance * C`, whatever the overshoot (halving at most).
#[derive(Debug, Clone)]
pub(crate) struct Gradient2 {
    tolerance: f64,
    smoothing: f64,
    epoch: u32,
    /// Windows until the next probe.
    until_probe: u32,
    probes: u32,
    baseline: Option<f64>,
    /// While probing: windows left, and the limit to go back to.
    probe: Option<(u32, f64)>,
}

/// The limit while probing for the no-load latency, as a share of the
/// limit before.
const PROBE_FACTOR: f64 = 0.75;
/// Windows before the first probe (then twice as many before each next,
/// up to the epoch).
const FIRST_PROBE_AFTER: u32 = 10;

impl Gradient2 {
    pub(crate) fn new(tolerance: f64, smoothing: f64, epoch: u32) -> Self {
        let epoch = epoch.max(1);
        Self {
            tolerance,
            smoothing,
            epoch,
            until_probe: FIRST_PROBE_AFTER.min(epoch),
            probes: 0,
            baseline: None,
            probe: None,
        }
    }

    pub(crate) fn baseline(&self) -> Option<f64> {
        self.baseline
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
        if let Some((left, resume)) = self.probe {
            if left > 1 {
                // The draining window: hold.
                self.probe = Some((left - 1, resume));
                return resume * PROBE_FACTOR;
            }
            // The measuring window: no queue left at 3/4 of a limit that
            // was at most a little above the capacity.
            self.probe = None;
            self.baseline = Some(self.baseline.map_or(rtt, |b| (b + rtt) / 2.0));
            return resume;
        }
        if self.probes == 0 {
            // Before the first probe, every window's mean is averaged in (a
            // stand-in: the limit starts small, mostly without a queue).
            self.baseline = Some(self.baseline.map_or(rtt, |b| (b + rtt) / 2.0));
        }
        let baseline = self.baseline.unwrap_or(rtt);
        if !window.limited && window.drops == 0 {
            // Demand is below the limit: what the latency says about a
            // limit nobody reaches is noise (Netflix's "app-limited" rule).
            // Shrinking here would refuse the next burst for nothing.
            return limit;
        }
        self.until_probe = self.until_probe.saturating_sub(1);
        if self.until_probe == 0 && window.drops == 0 {
            self.probes += 1;
            self.until_probe = FIRST_PROBE_AFTER
                .saturating_mul(1 << self.probes.min(16))
                .min(self.epoch);
            self.probe = Some((2, limit));
            return limit * PROBE_FACTOR;
        }
        let mut gradient = (self.tolerance * baseline / rtt).clamp(0.5, 1.0);
        if window.drops > 0 {
            gradient = gradient.min(DROP_GRADIENT);
        }
        // Room to grow only while latency is within tolerance and nothing
        // was dropped. Netflix adds a queue allowance to every step, which
        // moves the fixed point to `tolerance * C + queue`; added only here
        // it leaves the fixed point at `tolerance * C` and still grows by
        // `sqrt(limit)` (before smoothing), fast from a small limit. Growth
        // stops halfway to the tolerance: between there and the tolerance
        // the limit holds, so it does not hunt around its fixed point.
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

#[cfg(all(test, not(palisade_loom)))]
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

    /// Through the first probe, which measures `rtt` as the baseline.
    fn measured(mut g: Gradient2, rtt: f64) -> Gradient2 {
        while g.probes == 0 || g.probe.is_some() {
            g.update(10.0, &window(rtt, true));
        }
        assert_eq!(g.baseline(), Some(rtt));
        g
    }

    #[test]
    fn gradient2_lands_near_the_capacity_in_one_unsmoothed_step() {
        let mut g = measured(Gradient2::new(1.0, 1.0, 100), 10.0);
        // 40 held by 20 workers: twice the latency.
        let next = g.update(40.0, &window(20.0, true));
        assert_eq!(next, 20.0);
    }

    #[test]
    fn gradient2_never_more_than_halves_and_smooths() {
        let mut g = measured(Gradient2::new(1.0, 0.5, 100), 1.0);
        let next = g.update(100.0, &window(1_000.0, true));
        assert_eq!(next, 0.5 * 100.0 + 0.5 * 50.0);
    }

    #[test]
    fn gradient2_drops_shrink() {
        let mut g = Gradient2::new(1.0, 1.0, 100);
        let dropped = WindowSummary {
            rtt: None,
            drops: 1,
            limited: true,
        };
        assert_eq!(g.update(10.0, &dropped), 9.0);
        g.update(10.0, &window(5.0, true));
        let dropped = WindowSummary {
            rtt: Some(5.0),
            drops: 1,
            limited: true,
        };
        assert_eq!(g.update(10.0, &dropped), 9.0);
    }

    #[test]
    fn gradient2_probes_and_measures_the_baseline() {
        let mut g = Gradient2::new(1.0, 1.0, 100);
        assert_eq!(g.update(40.0, &window(12.0, true)), 40.0 + 40f64.sqrt());
        assert_eq!(g.baseline(), Some(12.0)); // window means stand in
        for _ in 0..8 {
            g.update(40.0, &window(12.0, true));
        }
        assert_eq!(g.baseline(), Some(12.0));
        // The tenth window: a probe, two windows at 3/4, then back.
        assert_eq!(g.update(40.0, &window(12.0, true)), 30.0);
        assert_eq!(g.update(30.0, &window(11.0, true)), 30.0); // draining
        assert_eq!(g.update(30.0, &window(10.0, true)), 40.0); // measuring
        assert_eq!(g.baseline(), Some(11.0)); // (12 + 10) / 2
        // The next probe comes 20 windows later.
        for _ in 0..19 {
            assert_ne!(g.update(40.0, &window(11.0, true)), 30.0);
        }
        assert_eq!(g.update(40.0, &window(11.0, true)), 30.0);
    }

    #[test]
    fn gradient2_holds_a_limit_demand_does_not_reach() {
        let mut g = Gradient2::new(1.1, 1.0, 100);
        g.update(10.0, &window(10.0, true));
        assert_eq!(g.update(10.0, &window(100.0, false)), 10.0);
        for _ in 0..50 {
            assert_eq!(
                g.update(10.0, &window(10.0, false)),
                10.0,
                "no probe either"
            );
        }
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
