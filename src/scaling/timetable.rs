//! When scheduled Jobs fire on railyard's own clock (Docker): the next firing of any of them, and the one missed
//! firing to make up after railyard was down, as Kubernetes' CronJob controller does: at most one, and none older
//! than the Job's `startingDeadline`. Crons are read on the Project's wall clock, as the ScalingRules' are. Pure.

use std::str::FromStr;

use chrono::{DateTime, Utc};

use super::schedule::{last_fire, next_fire, zone};
use crate::model::JobSpec;

/// The next instant after `now` at which any of `jobs` fires, with the names of those that fire then.
pub fn next_firing(jobs: &[JobSpec], now: DateTime<Utc>) -> Option<(DateTime<Utc>, Vec<String>)> {
    let firings: Vec<(DateTime<Utc>, &str)> =
        jobs.iter().filter_map(|job| Some((next_of(job, now)?, job.name.as_str()))).collect();
    let first = firings.iter().map(|(at, _)| *at).min()?;
    let names = firings.iter().filter(|(at, _)| *at == first).map(|(_, name)| (*name).to_owned()).collect();
    Some((first, names))
}

/// The firing of `job` to make up at `now`, given when it last fired: the latest one after `last_fired` and not
/// after `now`, unless it is older than the Job's starting deadline. A Job that never fired has nothing to make up.
pub fn missed(job: &JobSpec, last_fired: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let last_fired = last_fired?;
    let schedule = job.schedule.as_ref()?;
    let cron = cron::Schedule::from_str(&schedule.cron).ok()?;
    let latest = last_fire(&cron, zone(&schedule.timezone).ok()?, now)?;
    let late = (now - latest).to_std().unwrap_or_default();
    let in_time = schedule.starting_deadline_ms.is_none_or(|deadline| late.as_millis() <= u128::from(deadline));
    (latest > last_fired && in_time).then_some(latest)
}

fn next_of(job: &JobSpec, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let schedule = job.schedule.as_ref()?;
    let cron = cron::Schedule::from_str(&schedule.cron).ok()?;
    next_fire(&cron, zone(&schedule.timezone).ok()?, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::job::JobSchedule;
    use crate::model::kinds::Concurrency;

    fn job(name: &str, cron: &str, deadline_ms: Option<u64>) -> JobSpec {
        let schedule = JobSchedule {
            cron: cron.to_owned(),
            timezone: "Europe/Berlin".to_owned(),
            concurrency: Concurrency::Forbid,
            starting_deadline_ms: deadline_ms,
        };
        JobSpec { schedule: Some(schedule), ..JobSpec::bare(name) }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).map(|time| time.with_timezone(&Utc)).unwrap_or_default()
    }

    #[test]
    fn the_next_firing_is_read_on_the_projects_wall_clock_and_names_every_job_due_then() {
        let jobs =
            [job("cleanup", "0 0 3 * * *", None), job("report", "0 0 3 * * *", None), job("x", "0 30 * * * *", None)];
        // 03:00 in Berlin in winter is 02:00 UTC; the half hour comes first.
        assert_eq!(
            next_firing(&jobs, at("2026-12-05T01:40:00Z")),
            Some((at("2026-12-05T02:00:00Z"), vec!["cleanup".into(), "report".into()]))
        );
        assert_eq!(
            next_firing(&jobs, at("2026-12-05T01:10:00Z")),
            Some((at("2026-12-05T01:30:00Z"), vec!["x".into()]))
        );
        assert_eq!(next_firing(&[], at("2026-12-05T01:10:00Z")), None);
    }

    #[test]
    fn one_missed_firing_is_made_up_within_the_deadline() {
        let nightly = job("cleanup", "0 0 3 * * *", None);
        let last = at("2026-12-01T02:00:00Z");
        // Down for three nights: one run, for the latest.
        assert_eq!(missed(&nightly, Some(last), at("2026-12-04T09:00:00Z")), Some(at("2026-12-04T02:00:00Z")));
        assert_eq!(
            missed(&nightly, Some(at("2026-12-04T02:00:00Z")), at("2026-12-04T09:00:00Z")),
            None,
            "nothing missed"
        );
        assert_eq!(missed(&nightly, None, at("2026-12-04T09:00:00Z")), None, "a new Job has nothing to make up");
        let strict = job("cleanup", "0 0 3 * * *", Some(3_600_000));
        assert_eq!(missed(&strict, Some(last), at("2026-12-04T02:30:00Z")), Some(at("2026-12-04T02:00:00Z")));
        assert_eq!(missed(&strict, Some(last), at("2026-12-04T09:00:00Z")), None, "past its startingDeadline");
    }
}
