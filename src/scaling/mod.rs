//! Scaling at run time: which bounds a ScalingRule's schedules put in force ([`schedule`]) and how many replicas the
//! CPU autoscaler asks for within them ([`decide`]). Both are pure: the caller brings the clock and the samples.

pub mod decide;
pub mod history;
pub mod schedule;
pub mod timetable;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use decide::{Autoscaler, Decision, Reason};
pub use schedule::{Bounds, BoundsSource, NextChange, ScheduleError, bounds_at, next_change};

use crate::model::DesiredState;

/// What the schedules put in force for one app, for the page and API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppScaling {
    pub app: String,
    pub bounds: Bounds,
    /// The cron of the entry that set the bounds, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<NextChange>,
    /// The schedule boundaries of the last 24 hours, oldest first, for the app's chart.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recent_boundaries: Vec<DateTime<Utc>>,
}

/// At most this many boundaries are drawn per day (a cron firing every second would otherwise fill the chart).
const MAX_DRAWN_BOUNDARIES: usize = 288;
/// How many boundaries are walked at most to find them.
const MAX_WALKED_BOUNDARIES: usize = 10_000;

/// Puts the bounds in force at `now` on every app with a ScalingRule: its replicas and its autoscale bounds (which the
/// Kubernetes backend hands to the HorizontalPodAutoscaler) are those bounds. `appeared(app)` says since when the
/// app has had a rule. A rule the scheduler cannot read keeps the rule's own bounds and becomes a plan warning.
pub fn put_in_force(
    desired: &mut DesiredState,
    appeared: impl Fn(&str) -> DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<AppScaling> {
    let mut scaling = Vec::new();
    for app in desired.apps.values_mut() {
        let Some(rule) = app.autoscale.as_mut() else { continue };
        let found = bounds_at(rule, appeared(&app.name), now).and_then(|bounds| Ok((bounds, next_change(rule, now)?)));
        let (bounds, next) = match found {
            Ok(found) => found,
            Err(error) => {
                desired.warnings.push(format!("the ScalingRule for `{}` keeps its own bounds: {error}", app.name));
                continue;
            }
        };
        let set_by = match bounds.source {
            BoundsSource::Schedule { index, .. } => rule.schedules.get(index).map(|entry| entry.cron.clone()),
            BoundsSource::Rule => None,
        };
        (rule.min, rule.max) = (bounds.min, bounds.max);
        app.replicas = rule.declared.clamp(bounds.min, bounds.max.max(bounds.min));
        let recent_boundaries = boundaries_since(rule, now - chrono::Duration::milliseconds(history::WINDOW_MS), now);
        scaling.push(AppScaling { app: app.name.clone(), bounds, set_by, next, recent_boundaries });
    }
    scaling
}

/// The newest boundaries after `from` up to `now`.
fn boundaries_since(
    rule: &crate::model::desired::Autoscale,
    from: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let mut found = std::collections::VecDeque::new();
    let mut after = from;
    // A cron firing every second would be 86,400 steps a day: the walk stops there and keeps the newest.
    for _ in 0..MAX_WALKED_BOUNDARIES {
        match next_change(rule, after) {
            Ok(Some(next)) if next.at <= now => {
                if found.len() == MAX_DRAWN_BOUNDARIES {
                    found.pop_front();
                }
                found.push_back(next.at);
                after = next.at;
            }
            _ => break,
        }
    }
    found.into()
}

/// The replica bounds the CPU autoscaler moves `app` within, when its rule has a CPU target and the app says how
/// much CPU it asks for.
pub fn cpu_bounds(app: &crate::model::AppSpec) -> Option<(u32, u32)> {
    let rule = app.autoscale.as_ref()?;
    rule.target_cpu_percent?;
    app.container.cpu_millis?;
    Some((rule.min, rule.max.max(rule.min)))
}

/// The soonest of the apps' next changes.
pub fn next_boundary(scaling: &[AppScaling]) -> Option<DateTime<Utc>> {
    scaling.iter().filter_map(|app| app.next.map(|next| next.at)).min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{self, RepoFile};

    fn desired(rule: &str) -> DesiredState {
        let files = vec![
            RepoFile::text("railyard.yaml", "kind: Project\nname: shop\ntimezone: Europe/Berlin\n"),
            RepoFile::text("web.yaml", "kind: App\nname: web\nimage: busybox\nreplicas: 3\n"),
            RepoFile::text("api.yaml", "kind: App\nname: api\nimage: busybox\n"),
            RepoFile::text("scaling.yaml", rule),
        ];
        let config = model::load(&files).expect("valid");
        config.desired(&model::Environment::production("shop"), None)
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).expect("a test time").with_timezone(&Utc)
    }

    const BUSINESS_HOURS: &str = "kind: ScalingRule\napp: web\nmin: 2\nmax: 6\nschedules:\n  \
                                  - { cron: \"0 0 8 * * Mon-Fri\", min: 5 }\n  - { cron: \"0 0 20 * * *\", max: 2 }\n";

    #[test]
    fn the_bounds_in_force_clamp_the_apps_own_count_and_the_autoscaler_bounds() {
        let long_ago = |_: &str| at("2026-01-01T00:00:00Z");
        let mut morning = desired(BUSINESS_HOURS);
        let scaling = put_in_force(&mut morning, long_ago, at("2026-03-04T10:00:00Z")); // a Wednesday, 11:00 CET
        let web = &morning.apps["web"];
        assert_eq!(web.replicas, 5, "the 3 the app asks for, raised to the morning's min");
        let rule = web.autoscale.as_ref().expect("web has a rule");
        assert_eq!((rule.min, rule.max), (5, 6), "the HorizontalPodAutoscaler gets the bounds in force");
        assert_eq!(morning.apps["api"].replicas, 1, "an app without a rule is left alone");
        assert_eq!(scaling.len(), 1);
        assert_eq!(scaling[0].set_by.as_deref(), Some("0 0 8 * * Mon-Fri"));
        assert_eq!(next_boundary(&scaling), Some(at("2026-03-04T19:00:00Z")), "20:00 in Berlin");
        assert_eq!(
            scaling[0].recent_boundaries,
            [at("2026-03-03T19:00:00Z"), at("2026-03-04T07:00:00Z")],
            "the chart marks yesterday's 20:00 and this morning's 08:00"
        );

        let mut evening = desired(BUSINESS_HOURS);
        put_in_force(&mut evening, long_ago, at("2026-03-04T21:00:00Z"));
        assert_eq!(evening.apps["web"].replicas, 2, "the 3 the app asks for, lowered to the evening's max");
    }

    #[test]
    fn the_horizontal_pod_autoscaler_gets_the_bounds_in_force() {
        use crate::backend::kubernetes::mapping::{KubernetesSettings, Object, manifests};
        let hpa_bounds = |desired: &DesiredState| {
            manifests(desired, &KubernetesSettings::default()).objects.into_iter().find_map(|object| match object {
                Object::HorizontalPodAutoscaler(hpa) => Some((hpa.spec.min_replicas, hpa.spec.max_replicas)),
                _ => None,
            })
        };
        let long_ago = |_: &str| at("2026-01-01T00:00:00Z");
        let mut morning = desired(BUSINESS_HOURS);
        put_in_force(&mut morning, long_ago, at("2026-03-04T10:00:00Z"));
        assert_eq!(hpa_bounds(&morning), Some((Some(5), 6)));
        let mut evening = desired(BUSINESS_HOURS);
        put_in_force(&mut evening, long_ago, at("2026-03-04T21:00:00Z"));
        assert_eq!(hpa_bounds(&evening), Some((Some(2), 2)), "the evening entry caps max at 2; min stays the rule's");
    }

    #[test]
    fn a_rule_changed_by_a_commit_between_two_ticks_takes_effect_at_once_from_its_own_entries() {
        let appeared = |_: &str| at("2026-03-01T00:00:00Z");
        // 10:00 Berlin on a Wednesday: the morning entry (min 5) is in force.
        let mut before = desired(BUSINESS_HOURS);
        put_in_force(&mut before, appeared, at("2026-03-04T09:00:00Z"));
        assert_eq!(before.apps["web"].replicas, 5);
        // A commit at 10:30 moves the morning to 10:15 with min 4 and adds a lunch entry at 10:20 with max 3.
        let changed = "kind: ScalingRule\napp: web\nmin: 2\nmax: 6\nschedules:\n  \
                       - { cron: \"0 15 10 * * Mon-Fri\", min: 4 }\n  - { cron: \"0 20 10 * * Mon-Fri\", max: 3 }\n";
        let mut after = desired(changed);
        let scaling = put_in_force(&mut after, appeared, at("2026-03-04T09:30:00Z"));
        assert_eq!(after.apps["web"].replicas, 3, "the new rule's latest entry (10:20, max 3) holds");
        assert_eq!(scaling[0].set_by.as_deref(), Some("0 20 10 * * Mon-Fri"));
        assert_eq!(next_boundary(&scaling), Some(at("2026-03-05T09:15:00Z")), "tomorrow's 10:15, not today's 20:00");
    }

    #[test]
    fn a_rule_that_just_appeared_keeps_its_own_bounds_until_a_schedule_fires() {
        let mut fresh = desired(BUSINESS_HOURS);
        let scaling = put_in_force(&mut fresh, |_| at("2026-03-04T09:00:00Z"), at("2026-03-04T10:00:00Z"));
        assert_eq!(fresh.apps["web"].replicas, 3);
        assert_eq!(scaling[0].bounds.source, BoundsSource::Rule);
        assert_eq!(scaling[0].set_by, None);
    }
}
