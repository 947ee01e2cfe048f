//! The CPU autoscaler's decision, computed as Kubernetes' HorizontalPodAutoscaler computes it, so that an app scales
//! alike on one Docker host and on a cluster:
//! `ceil(current × utilisation / target)`, nothing within the tolerance, the lowest recommendation over the scale-up
//! window and the highest over the scale-down window, at most one scale-up per period, always within the bounds.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::model::desired::ScalingPace;

/// Why the autoscaler asked for the replicas it asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Reason {
    /// Load is within the tolerance of the target.
    WithinTolerance,
    ScaleUp,
    ScaleDown,
    /// A lower recommendation in the scale-up window, or a higher one in the scale-down window, holds the count.
    Stabilising,
    /// The last scale-up is more recent than the scale-up period.
    CoolingDown,
    /// The bounds in force moved the count (a schedule, or a rule changed by a commit).
    Bounded,
    /// No replica reported load: nothing to go by.
    NoLoad,
}

/// One decision, with the figures that led to it, for the history and the page.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub replicas: u32,
    pub reason: Reason,
    /// Average CPU use per replica, in percent of what the app asks for; `None` without samples.
    pub utilisation_percent: Option<f64>,
    /// What load alone asked for, within the bounds, before stabilisation and cool-down.
    pub recommended: u32,
}

/// One app's autoscaler: the recommendations it remembers and its last scale-up.
#[derive(Debug, Clone, Default)]
pub struct Autoscaler {
    recommendations: VecDeque<(Instant, u32)>,
    last_scale_up: Option<Instant>,
}

impl Autoscaler {
    /// The replicas the app should run at `now`, given how many run and their average CPU use in percent of what
    /// they ask for (`None` when no replica reported any).
    pub fn decide(
        &mut self,
        now: Instant,
        current: u32,
        utilisation_percent: Option<f64>,
        target_percent: u32,
        (min, max): (u32, u32),
        pace: &ScalingPace,
    ) -> Decision {
        let max = max.max(min);
        let Some(utilisation) = utilisation_percent.filter(|u| u.is_finite() && *u >= 0.0) else {
            let replicas = current.clamp(min, max);
            let reason = if replicas == current { Reason::NoLoad } else { Reason::Bounded };
            return Decision { replicas, reason, utilisation_percent: None, recommended: replicas };
        };
        let recommended = recommend(current, utilisation, target_percent, pace.tolerance_percent).clamp(min, max);
        self.remember(now, recommended, pace);
        let lowest_recent = self.extreme_within(now, pace.scale_up_window_ms, Iterator::min);
        let highest_recent = self.extreme_within(now, pace.scale_down_window_ms, Iterator::max);
        let (mut replicas, mut reason) = if recommended > current {
            (lowest_recent.unwrap_or(recommended).max(current), Reason::ScaleUp)
        } else if recommended < current {
            (highest_recent.unwrap_or(recommended).min(current), Reason::ScaleDown)
        } else {
            (current, Reason::WithinTolerance)
        };
        if replicas == current && recommended != current {
            reason = Reason::Stabilising;
        }
        let cooling = self.last_scale_up.is_some_and(|last| now.duration_since(last) < millis(pace.scale_up_period_ms));
        if replicas > current && cooling {
            (replicas, reason) = (current, Reason::CoolingDown);
        }
        if !(min..=max).contains(&replicas) {
            (replicas, reason) = (replicas.clamp(min, max), Reason::Bounded);
        }
        if replicas > current {
            self.last_scale_up = Some(now);
        }
        Decision { replicas, reason, utilisation_percent: Some(utilisation), recommended }
    }

    fn remember(&mut self, now: Instant, recommended: u32, pace: &ScalingPace) {
        let keep = millis(pace.scale_up_window_ms.max(pace.scale_down_window_ms));
        while self.recommendations.front().is_some_and(|(at, _)| now.duration_since(*at) > keep) {
            self.recommendations.pop_front();
        }
        self.recommendations.push_back((now, recommended));
    }

    fn extreme_within(
        &self,
        now: Instant,
        window_ms: u64,
        pick: fn(std::vec::IntoIter<u32>) -> Option<u32>,
    ) -> Option<u32> {
        let window = millis(window_ms);
        let recent: Vec<u32> = self
            .recommendations
            .iter()
            .filter(|(at, _)| now.duration_since(*at) <= window)
            .map(|(_, replicas)| *replicas)
            .collect();
        pick(recent.into_iter())
    }
}

/// The HPA's formula: replicas in proportion to load over target, unchanged within the tolerance.
fn recommend(current: u32, utilisation: f64, target_percent: u32, tolerance_percent: u32) -> u32 {
    let ratio = utilisation / f64::from(target_percent.max(1));
    if current == 0 || (ratio - 1.0).abs() <= f64::from(tolerance_percent) / 100.0 {
        return current;
    }
    let wanted = (f64::from(current) * ratio).ceil();
    // Saturating: a runaway sample must not wrap around; the bounds cut it down anyway.
    if wanted >= f64::from(u32::MAX) { u32::MAX } else { wanted as u32 }
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const PACE: ScalingPace = ScalingPace {
        tolerance_percent: 10,
        scale_up_window_ms: 0,
        scale_up_period_ms: 30_000,
        scale_down_window_ms: 300_000,
    };

    fn seconds(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn the_formula_is_the_hpas_with_its_tolerance() {
        let cases = [
            // (current, utilisation %, target %, expected, why)
            (2, 140.0, 70, 4, "twice the target doubles"),
            (3, 100.0, 70, 5, "ceil(3 × 100/70) = ceil(4.29)"),
            (4, 35.0, 70, 2, "half the target halves"),
            (4, 76.0, 70, 4, "within 10 % above"),
            (4, 64.0, 70, 4, "within 10 % below"),
            (4, 78.0, 70, 5, "just beyond the tolerance"),
            (1, 0.0, 70, 0, "idle: as few as the formula says (the bounds then hold)"),
            (0, 500.0, 70, 0, "no replica: no ratio to scale"),
        ];
        for (current, utilisation, target, expected, why) in cases {
            assert_eq!(recommend(current, utilisation, target, 10), expected, "{why}");
        }
        assert_eq!(recommend(2, f64::MAX, 70, 10), u32::MAX, "a runaway sample saturates");
    }

    #[test]
    fn load_scales_up_at_once_then_waits_for_the_period() {
        let start = Instant::now();
        let mut autoscaler = Autoscaler::default();
        let first = autoscaler.decide(start, 2, Some(140.0), 70, (1, 10), &PACE);
        assert_eq!((first.replicas, first.reason), (4, Reason::ScaleUp));
        let soon = autoscaler.decide(seconds(start, 15), 4, Some(140.0), 70, (1, 10), &PACE);
        assert_eq!((soon.replicas, soon.reason, soon.recommended), (4, Reason::CoolingDown, 8));
        let later = autoscaler.decide(seconds(start, 30), 4, Some(140.0), 70, (1, 10), &PACE);
        assert_eq!((later.replicas, later.reason), (8, Reason::ScaleUp));
    }

    #[test]
    fn scale_down_waits_for_the_highest_recommendation_of_the_window_to_fall() {
        let start = Instant::now();
        let mut autoscaler = Autoscaler::default();
        autoscaler.decide(start, 4, Some(70.0), 70, (1, 10), &PACE);
        let idle = autoscaler.decide(seconds(start, 60), 4, Some(10.0), 70, (1, 10), &PACE);
        assert_eq!((idle.replicas, idle.reason, idle.recommended), (4, Reason::Stabilising, 1));
        let still = autoscaler.decide(seconds(start, 299), 4, Some(10.0), 70, (1, 10), &PACE);
        assert_eq!(still.replicas, 4, "the 4 recommended at the start is still in the window");
        let after = autoscaler.decide(seconds(start, 301), 4, Some(10.0), 70, (1, 10), &PACE);
        assert_eq!((after.replicas, after.reason), (1, Reason::ScaleDown));
    }

    #[test]
    fn a_spike_is_damped_by_a_scale_up_window() {
        let pace = ScalingPace { scale_up_window_ms: 60_000, ..PACE };
        let start = Instant::now();
        let mut autoscaler = Autoscaler::default();
        autoscaler.decide(start, 2, Some(70.0), 70, (1, 10), &pace);
        let spike = autoscaler.decide(seconds(start, 10), 2, Some(280.0), 70, (1, 10), &pace);
        assert_eq!((spike.replicas, spike.reason), (2, Reason::Stabilising));
        let sustained = autoscaler.decide(seconds(start, 71), 2, Some(280.0), 70, (1, 10), &pace);
        assert_eq!((sustained.replicas, sustained.reason), (8, Reason::ScaleUp));
    }

    #[test]
    fn new_bounds_apply_at_once_whatever_the_windows_say() {
        let start = Instant::now();
        let mut autoscaler = Autoscaler::default();
        autoscaler.decide(start, 6, Some(70.0), 70, (1, 10), &PACE);
        let evening = autoscaler.decide(seconds(start, 1), 6, Some(70.0), 70, (1, 3), &PACE);
        assert_eq!((evening.replicas, evening.reason), (3, Reason::Bounded));
        let morning = autoscaler.decide(seconds(start, 2), 3, None, 70, (5, 8), &PACE);
        assert_eq!((morning.replicas, morning.reason), (5, Reason::Bounded));
        let idle = autoscaler.decide(seconds(start, 3), 5, None, 70, (5, 8), &PACE);
        assert_eq!((idle.replicas, idle.reason), (5, Reason::NoLoad));
    }

    proptest! {
        #[test]
        fn every_decision_lies_within_the_bounds(
            steps in proptest::collection::vec(
                (0u64..120, 0u32..40, proptest::option::of(0.0f64..1000.0), 1u32..200, 0u32..20, 0u32..20),
                1..40,
            ),
            tolerance in 0u32..=100,
            up_window in 0u64..600_000,
            period in 0u64..600_000,
            down_window in 0u64..600_000,
        ) {
            let pace = ScalingPace {
                tolerance_percent: tolerance,
                scale_up_window_ms: up_window,
                scale_up_period_ms: period,
                scale_down_window_ms: down_window,
            };
            let mut autoscaler = Autoscaler::default();
            let mut now = Instant::now();
            for (advance, current, utilisation, target, min, span) in steps {
                now += Duration::from_secs(advance);
                let max = min + span;
                let decision = autoscaler.decide(now, current, utilisation, target, (min, max), &pace);
                prop_assert!((min..=max).contains(&decision.replicas), "{decision:?} outside {min}..={max}");
            }
        }
    }
}
