//! The bounds a ScalingRule's schedules put in force at a moment, and when they change next.
//!
//! Crons are read in the Project's time zone on the local wall clock, so that `0 0 8 * * Mon-Fri` means 08:00 in
//! Berlin in summer and in winter. Daylight saving neither skips nor doubles a change: a time that the clock jumps
//! over fires at the first instant after the jump, and a time the clock passes twice fires the first time only.

use std::str::FromStr;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::model::desired::{Autoscale, ScheduledBounds};

/// Replica bounds in force, and what set them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bounds {
    pub min: u32,
    pub max: u32,
    pub source: BoundsSource,
}

/// What put the bounds in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum BoundsSource {
    /// The rule's own `min`/`max`: no schedule has fired since the rule appeared.
    Rule,
    /// The schedule entry at this index of `schedules`, which fired at `since`.
    Schedule { index: usize, since: DateTime<Utc> },
}

/// The next schedule boundary: when it comes and the bounds it brings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NextChange {
    pub at: DateTime<Utc>,
    pub bounds: Bounds,
}

/// A rule that validation would have refused reached the scheduler.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("time zone `{0}` is not an IANA time zone; correct the Project's `timezone`, e.g. `Europe/Berlin`")]
    TimeZone(String),
    #[error("`{cron}` is not a cron expression ({reason}); correct the ScalingRule's schedule")]
    Cron { cron: String, reason: String },
}

/// How many steps to walk over boundaries that the clock passes twice before giving up on finding the next one;
/// far more than any real zone needs.
const MAX_STEPS: usize = 64;

/// The bounds in force at `now` for a rule that appeared at `appeared`: those of the entry that fired most recently
/// since then (the later entry when two fire at once), else the rule's own.
pub fn bounds_at(rule: &Autoscale, appeared: DateTime<Utc>, now: DateTime<Utc>) -> Result<Bounds, ScheduleError> {
    let zone = zone(&rule.timezone)?;
    let mut newest: Option<(DateTime<Utc>, usize)> = None;
    for (index, entry) in rule.schedules.iter().enumerate() {
        let Some(fired) = last_fire(&cron(entry)?, zone, now) else { continue };
        if fired > appeared && newest.is_none_or(|(time, _)| fired >= time) {
            newest = Some((fired, index));
        }
    }
    Ok(match newest {
        Some((since, index)) => scheduled(rule, index, since),
        None => Bounds { min: rule.min, max: rule.max, source: BoundsSource::Rule },
    })
}

/// The first boundary after `now`, when the rule has schedules.
pub fn next_change(rule: &Autoscale, now: DateTime<Utc>) -> Result<Option<NextChange>, ScheduleError> {
    let zone = zone(&rule.timezone)?;
    let mut first: Option<(DateTime<Utc>, usize)> = None;
    for (index, entry) in rule.schedules.iter().enumerate() {
        let Some(at) = next_fire(&cron(entry)?, zone, now) else { continue };
        if first.is_none_or(|(time, _)| at <= time) {
            first = Some((at, index));
        }
    }
    Ok(first.map(|(at, index)| NextChange { at, bounds: scheduled(rule, index, at) }))
}

fn scheduled(rule: &Autoscale, index: usize, since: DateTime<Utc>) -> Bounds {
    let entry = &rule.schedules[index];
    Bounds { min: entry.min, max: entry.max, source: BoundsSource::Schedule { index, since } }
}

pub(crate) fn zone(name: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(name).map_err(|_| ScheduleError::TimeZone(name.to_owned()))
}

fn cron(entry: &ScheduledBounds) -> Result<cron::Schedule, ScheduleError> {
    cron::Schedule::from_str(&entry.cron)
        .map_err(|error| ScheduleError::Cron { cron: entry.cron.clone(), reason: error.to_string() })
}

/// The wall-clock time `local` in `zone` as an instant: the first of two when the clock passes it twice, the end
/// of the jump when the clock skips it.
fn instant(zone: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(time) | LocalResult::Ambiguous(time, _) => time.with_timezone(&Utc),
        LocalResult::None => {
            // Jumps begin on whole minutes and last at most a few hours: the first minute that exists ends it.
            let minute = local.with_second(0).unwrap_or(local);
            (1..=24 * 60)
                .map(|step| minute + Duration::minutes(step))
                .find_map(|later| zone.from_local_datetime(&later).earliest())
                .map_or_else(|| Utc.from_utc_datetime(&local), |time| time.with_timezone(&Utc))
        }
    }
}

/// Crons run on the wall clock: the cron crate walks naive local times (given as UTC, which has no jumps) and each
/// is then placed in the zone.
fn wall_clock(zone: Tz, now: DateTime<Utc>) -> DateTime<Utc> {
    Utc.from_utc_datetime(&now.with_timezone(&zone).naive_local())
}

/// The latest firing at or before `now`. Placing wall-clock times in the zone keeps their order, so the latest
/// wall-clock firing not after `now`'s wall clock is the latest instant.
pub(crate) fn last_fire(schedule: &cron::Schedule, zone: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let wall = wall_clock(zone, now);
    schedule
        .after(&(wall + Duration::seconds(1)))
        .rev()
        .take(MAX_STEPS)
        .map(|local| instant(zone, local.naive_utc()))
        .find(|fired| *fired <= now)
}

/// The first firing after `now`; wall-clock times the clock passed a second time are skipped.
pub(crate) fn next_fire(schedule: &cron::Schedule, zone: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule
        .after(&wall_clock(zone, now))
        .take(MAX_STEPS)
        .map(|local| instant(zone, local.naive_utc()))
        .find(|fires| *fires > now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(timezone: &str, schedules: &[(&str, u32, u32)]) -> Autoscale {
        Autoscale {
            schedules: schedules
                .iter()
                .map(|(cron, min, max)| ScheduledBounds { cron: (*cron).to_owned(), min: *min, max: *max })
                .collect(),
            timezone: timezone.to_owned(),
            ..Autoscale::new(2, 6, None)
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).expect("a test time").with_timezone(&Utc)
    }

    fn long_ago() -> DateTime<Utc> {
        at("2000-01-01T00:00:00Z")
    }

    #[test]
    fn before_any_schedule_fires_the_rule_sets_the_bounds() {
        let weekday_mornings = rule("UTC", &[("0 0 8 * * Mon-Fri", 4, 6)]);
        let appeared = at("2026-03-02T07:00:00Z"); // a Monday
        let bounds = bounds_at(&weekday_mornings, appeared, at("2026-03-02T07:59:59Z")).expect("bounds");
        assert_eq!(bounds, Bounds { min: 2, max: 6, source: BoundsSource::Rule });
        let bounds = bounds_at(&weekday_mornings, appeared, at("2026-03-02T08:00:00Z")).expect("bounds");
        assert_eq!((bounds.min, bounds.max), (4, 6), "the boundary itself is in force");
    }

    #[test]
    fn the_most_recent_entry_wins_and_the_later_one_on_a_tie() {
        let day_and_night = rule("UTC", &[("0 0 8 * * *", 4, 6), ("0 0 20 * * *", 1, 3), ("0 0 20 * * Sat", 5, 5)]);
        let appeared = long_ago();
        let morning = bounds_at(&day_and_night, appeared, at("2026-03-04T12:00:00Z")).expect("bounds");
        assert_eq!((morning.min, morning.max), (4, 6));
        assert_eq!(morning.source, BoundsSource::Schedule { index: 0, since: at("2026-03-04T08:00:00Z") });
        let night = bounds_at(&day_and_night, appeared, at("2026-03-05T03:00:00Z")).expect("bounds");
        assert_eq!((night.min, night.max), (1, 3), "the evening entry fired after the morning one");
        let saturday_night = bounds_at(&day_and_night, appeared, at("2026-03-07T21:00:00Z")).expect("bounds");
        assert_eq!((saturday_night.min, saturday_night.max), (5, 5), "both fired at 20:00: the later entry wins");
    }

    #[test]
    fn an_entry_that_fired_before_the_rule_appeared_does_not_count() {
        let mornings = rule("UTC", &[("0 0 8 * * *", 4, 6)]);
        let bounds = bounds_at(&mornings, at("2026-03-04T09:00:00Z"), at("2026-03-04T12:00:00Z")).expect("bounds");
        assert_eq!(bounds.source, BoundsSource::Rule);
    }

    #[test]
    fn the_next_change_is_the_first_boundary_after_now() {
        let day_and_night = rule("UTC", &[("0 0 8 * * *", 4, 6), ("0 0 20 * * *", 1, 3)]);
        let next = next_change(&day_and_night, at("2026-03-04T12:00:00Z")).expect("valid").expect("a next change");
        assert_eq!(next.at, at("2026-03-04T20:00:00Z"));
        assert_eq!((next.bounds.min, next.bounds.max), (1, 3));
        let next = next_change(&day_and_night, at("2026-03-04T20:00:00Z")).expect("valid").expect("a next change");
        assert_eq!(next.at, at("2026-03-05T08:00:00Z"), "a boundary at now is not the next one");
        assert_eq!(next_change(&rule("UTC", &[]), at("2026-03-04T12:00:00Z")), Ok(None));
    }

    #[test]
    fn crons_are_read_on_the_zones_wall_clock_in_winter_and_summer() {
        let berlin_mornings = rule("Europe/Berlin", &[("0 0 8 * * *", 4, 6)]);
        let winter = next_change(&berlin_mornings, at("2026-01-15T00:00:00Z")).expect("valid").expect("next");
        assert_eq!(winter.at, at("2026-01-15T07:00:00Z"), "08:00 CET");
        let summer = next_change(&berlin_mornings, at("2026-07-15T00:00:00Z")).expect("valid").expect("next");
        assert_eq!(summer.at, at("2026-07-15T06:00:00Z"), "08:00 CEST");
    }

    /// Every boundary between `from` and `to`, found by asking for the next one again and again.
    fn boundaries(rule: &Autoscale, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut found = Vec::new();
        let mut now = from;
        while let Some(next) = next_change(rule, now).expect("valid") {
            if next.at > to {
                break;
            }
            found.push(next.at);
            now = next.at;
        }
        found
    }

    #[test]
    fn a_time_the_clock_skips_in_spring_fires_once_right_after_the_jump() {
        // Europe/Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC); 02:30 does not exist.
        let half_past_two = rule("Europe/Berlin", &[("0 30 2 * * *", 4, 6)]);
        let fired = boundaries(&half_past_two, at("2026-03-28T00:00:00Z"), at("2026-03-31T00:00:00Z"));
        assert_eq!(
            fired,
            [at("2026-03-28T01:30:00Z"), at("2026-03-29T01:00:00Z"), at("2026-03-30T00:30:00Z")],
            "the day before (CET), right after the jump, the day after (CEST)"
        );
        let during_jump_day = bounds_at(&half_past_two, long_ago(), at("2026-03-29T01:00:30Z")).expect("bounds");
        assert_eq!(during_jump_day.source, BoundsSource::Schedule { index: 0, since: at("2026-03-29T01:00:00Z") });
        let just_before = bounds_at(&half_past_two, long_ago(), at("2026-03-29T00:59:59Z")).expect("bounds");
        assert_eq!(just_before.source, BoundsSource::Schedule { index: 0, since: at("2026-03-28T01:30:00Z") });
    }

    #[test]
    fn an_hourly_cron_across_the_spring_jump_neither_skips_nor_doubles() {
        let hourly = rule("Europe/Berlin", &[("0 30 * * * *", 3, 3)]);
        let fired = boundaries(&hourly, at("2026-03-28T23:00:00Z"), at("2026-03-29T03:00:00Z"));
        assert_eq!(
            fired,
            [
                at("2026-03-28T23:30:00Z"), // 00:30 CET
                at("2026-03-29T00:30:00Z"), // 01:30 CET
                at("2026-03-29T01:00:00Z"), // 02:30 skipped by the clock: at the jump, 03:00 CEST
                at("2026-03-29T01:30:00Z"), // 03:30 CEST
                at("2026-03-29T02:30:00Z"), // 04:30 CEST
            ]
        );
    }

    #[test]
    fn a_time_the_clock_passes_twice_in_autumn_fires_once() {
        // Europe/Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00 UTC); 02:30 happens twice.
        let half_past_two = rule("Europe/Berlin", &[("0 30 2 * * *", 4, 6)]);
        let fired = boundaries(&half_past_two, at("2026-10-24T00:00:00Z"), at("2026-10-27T00:00:00Z"));
        assert_eq!(
            fired,
            [at("2026-10-24T00:30:00Z"), at("2026-10-25T00:30:00Z"), at("2026-10-26T01:30:00Z")],
            "the first 02:30 (CEST) only"
        );
        let second_pass = bounds_at(&half_past_two, long_ago(), at("2026-10-25T01:45:00Z")).expect("bounds");
        assert_eq!(second_pass.source, BoundsSource::Schedule { index: 0, since: at("2026-10-25T00:30:00Z") });
    }

    #[test]
    fn an_hourly_cron_across_the_autumn_fall_back_fires_once_per_wall_clock_time() {
        let hourly = rule("Europe/Berlin", &[("0 30 * * * *", 3, 3)]);
        let fired = boundaries(&hourly, at("2026-10-24T23:00:00Z"), at("2026-10-25T03:00:00Z"));
        assert_eq!(
            fired,
            [
                at("2026-10-24T23:30:00Z"), // 01:30 CEST
                at("2026-10-25T00:30:00Z"), // 02:30 CEST; its second pass (02:30 CET) does not fire
                at("2026-10-25T02:30:00Z"), // 03:30 CET
            ]
        );
    }

    #[test]
    fn a_bad_zone_or_cron_is_an_error_naming_it() {
        let bad_zone = rule("Mars/Olympus", &[("0 0 8 * * *", 1, 2)]);
        assert_eq!(
            bounds_at(&bad_zone, long_ago(), at("2026-01-01T00:00:00Z")),
            Err(ScheduleError::TimeZone("Mars/Olympus".to_owned()))
        );
        let bad_cron = rule("UTC", &[("not a cron", 1, 2)]);
        let error = next_change(&bad_cron, at("2026-01-01T00:00:00Z")).expect_err("refused");
        assert!(error.to_string().starts_with("`not a cron` is not a cron expression"), "{error}");
    }
}
