//! What an app's page draws: its replicas and CPU over the last 24 hours and the scale changes among them, kept in
//! memory, one point per minute at most, so that a day of an app costs a few kilobytes whatever the interval.

use std::collections::VecDeque;

use serde::Serialize;

/// How far back the page looks.
pub const WINDOW_MS: i64 = 24 * 3600 * 1000;
const BUCKET_MS: i64 = 60 * 1000;

/// One minute of an app: its replica count and, when sampled, its CPU in percent of what it asks for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadPoint {
    pub at_ms: i64,
    pub replicas: u32,
    pub cpu_percent: Option<f64>,
}

/// A change of the replica count and what caused it (`autoscale`, `schedule`, `poll`...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleEvent {
    pub at_ms: i64,
    pub from: u32,
    pub to: u32,
    pub trigger: String,
}

/// The last 24 hours of one app.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AppHistory {
    pub points: VecDeque<LoadPoint>,
    pub events: VecDeque<ScaleEvent>,
}

impl AppHistory {
    /// A sample of the autoscaler: the replicas it found and their load.
    pub fn record_load(&mut self, at_ms: i64, replicas: u32, cpu_percent: Option<f64>) {
        self.push(LoadPoint { at_ms, replicas, cpu_percent });
    }

    /// The replica count a reconcile runs the app at; a change from the last one is a scale event.
    pub fn record_replicas(&mut self, at_ms: i64, replicas: u32, trigger: &str) {
        let last = self.points.back().map(|point| point.replicas);
        if let Some(from) = last.filter(|from| *from != replicas) {
            self.events.push_back(ScaleEvent { at_ms, from, to: replicas, trigger: trigger.to_owned() });
        }
        let cpu_percent =
            self.points.back().filter(|point| same_minute(point.at_ms, at_ms)).and_then(|p| p.cpu_percent);
        self.push(LoadPoint { at_ms, replicas, cpu_percent });
    }

    fn push(&mut self, point: LoadPoint) {
        match self.points.back_mut() {
            Some(last) if same_minute(last.at_ms, point.at_ms) => {
                last.replicas = point.replicas;
                last.cpu_percent = point.cpu_percent.or(last.cpu_percent);
            }
            _ => self.points.push_back(point),
        }
        let oldest = point.at_ms - WINDOW_MS;
        while self.points.front().is_some_and(|p| p.at_ms < oldest) {
            self.points.pop_front();
        }
        while self.events.front().is_some_and(|e| e.at_ms < oldest) {
            self.events.pop_front();
        }
    }
}

fn same_minute(a_ms: i64, b_ms: i64) -> bool {
    a_ms.div_euclid(BUCKET_MS) == b_ms.div_euclid(BUCKET_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    #[test]
    fn one_point_per_minute_and_a_day_at_most() {
        let mut history = AppHistory::default();
        for second in 0..120 {
            history.record_load(second * 1000, 2, Some(f64::from(second as u32)));
        }
        assert_eq!(history.points.len(), 2, "two minutes of samples");
        assert_eq!(history.points[1].cpu_percent, Some(119.0), "the minute's newest sample");
        for minute in 2..(24 * 60 + 10) {
            history.record_load(minute * MINUTE, 2, None);
        }
        assert_eq!(history.points.len(), 24 * 60 + 1);
        assert!(
            history.points.front().is_some_and(|p| p.at_ms >= history.points.back().map_or(0, |b| b.at_ms) - WINDOW_MS)
        );
    }

    #[test]
    fn a_changed_count_is_an_event_with_its_trigger_and_an_unchanged_one_is_not() {
        let mut history = AppHistory::default();
        history.record_replicas(0, 1, "startup");
        history.record_load(MINUTE, 1, Some(140.0));
        history.record_replicas(2 * MINUTE, 3, "autoscale");
        history.record_replicas(3 * MINUTE, 3, "poll");
        history.record_replicas(4 * MINUTE, 2, "schedule");
        let events: Vec<(u32, u32, &str)> = history.events.iter().map(|e| (e.from, e.to, e.trigger.as_str())).collect();
        assert_eq!(events, [(1, 3, "autoscale"), (3, 2, "schedule")]);
        history.record_load(25 * 60 * MINUTE, 2, None);
        assert!(history.events.is_empty(), "events older than a day go");
    }
}
