//! Sync windows, as Argo CD has them: from the daemon settings file only (a commit cannot lift them), each an `allow`
//! or `deny` window that opens at every firing of a cron in its time zone and stays open for its duration, for the
//! environments its globs name. In an active deny window, or outside every allow window when allow windows exist,
//! automatic syncs (poll, webhook, drift repair, schedules, the autoscaler) wait; deny wins over allow. A manual sync
//! goes through only when the windows that block it say `manualSync`. Pure: the daemon asks at an instant.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::scaling::schedule::{last_fire, next_fire, zone};

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WindowKind {
    Allow,
    Deny,
}

/// One window as the settings file writes it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SyncWindowSetting {
    pub kind: WindowKind,
    /// When it opens: a cron (`min hour day month weekday`, or with seconds first), e.g. `0 22 * * *`.
    pub schedule: String,
    /// How long it stays open, e.g. `8h`.
    pub duration: String,
    /// IANA time zone of the schedule; default UTC.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Globs of the environments it applies to (`*` any run of characters); default every environment.
    #[serde(default)]
    pub environments: Vec<String>,
    /// Whether manual syncs (the API, rollbacks) may go through while it blocks.
    #[serde(default)]
    pub manual_sync: bool,
}

/// A window ready to evaluate.
#[derive(Debug, Clone)]
pub struct SyncWindow {
    pub kind: WindowKind,
    pub schedule_text: String,
    schedule: cron::Schedule,
    zone: Tz,
    duration: chrono::Duration,
    environments: Vec<String>,
    pub manual_sync: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    #[error("sync window {index}: `{schedule}` is not a cron expression ({reason}); write e.g. `0 22 * * *`")]
    Cron { index: usize, schedule: String, reason: String },
    #[error("sync window {index}: time zone `{zone}` is not an IANA time zone; write e.g. `Europe/Berlin`")]
    Zone { index: usize, zone: String },
    #[error("sync window {index}: duration `{duration}` is not a duration; write e.g. `1h` or `30m`")]
    Duration { index: usize, duration: String },
}

impl SyncWindowSetting {
    /// The window, checked; `index` counts from 1 in messages.
    pub fn compile(&self, index: usize) -> Result<SyncWindow, WindowError> {
        // Five fields are Argo CD's (minutes first); the cron crate wants seconds first.
        let fields = self.schedule.split_whitespace().count();
        let text = if fields == 5 { format!("0 {}", self.schedule) } else { self.schedule.clone() };
        let schedule = cron::Schedule::from_str(&text).map_err(|error| WindowError::Cron {
            index,
            schedule: self.schedule.clone(),
            reason: error.to_string(),
        })?;
        let zone_name = self.time_zone.clone().unwrap_or_else(|| "UTC".to_owned());
        let zone = zone(&zone_name).map_err(|_| WindowError::Zone { index, zone: zone_name })?;
        let duration = crate::model::units::parse_duration(&self.duration)
            .ok()
            .filter(|duration| !duration.is_zero())
            .and_then(|duration| chrono::Duration::from_std(duration).ok())
            .ok_or_else(|| WindowError::Duration { index, duration: self.duration.clone() })?;
        Ok(SyncWindow {
            kind: self.kind,
            schedule_text: self.schedule.clone(),
            schedule,
            zone,
            duration,
            environments: self.environments.clone(),
            manual_sync: self.manual_sync,
        })
    }
}

impl SyncWindow {
    fn applies_to(&self, env: &str) -> bool {
        self.environments.is_empty()
            || self.environments.iter().any(|glob| glob_matches(glob.as_bytes(), env.as_bytes()))
    }

    /// When the window that is open at `now` closes.
    fn open_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let opened = last_fire(&self.schedule, self.zone, now)?;
        let closes = opened + self.duration;
        (now < closes).then_some(closes)
    }
}

/// What the windows say for one environment at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowState {
    /// The windows open now: `deny 0 22 * * *`, say.
    pub active: Vec<String>,
    pub auto_sync_allowed: bool,
    pub manual_sync_allowed: bool,
    /// When automatic syncs may run next, while they wait.
    pub next_sync_allowed: Option<DateTime<Utc>>,
}

/// Whether automatic and manual syncs of `env` may run at `now`, and when automatic ones may run next.
pub fn evaluate(windows: &[SyncWindow], env: &str, now: DateTime<Utc>) -> WindowState {
    let (auto_sync_allowed, manual_sync_allowed) = allowed(windows, env, now);
    let active = windows
        .iter()
        .filter(|window| window.applies_to(env) && window.open_until(now).is_some())
        .map(|window| format!("{} {}", kind_name(window.kind), window.schedule_text))
        .collect();
    let next_sync_allowed = if auto_sync_allowed { None } else { next_allowed(windows, env, now) };
    WindowState { active, auto_sync_allowed, manual_sync_allowed, next_sync_allowed }
}

fn kind_name(kind: WindowKind) -> &'static str {
    match kind {
        WindowKind::Allow => "allow",
        WindowKind::Deny => "deny",
    }
}

/// (automatic, manual) at `now`.
fn allowed(windows: &[SyncWindow], env: &str, now: DateTime<Utc>) -> (bool, bool) {
    let mine: Vec<&SyncWindow> = windows.iter().filter(|window| window.applies_to(env)).collect();
    let denying: Vec<&&SyncWindow> =
        mine.iter().filter(|w| w.kind == WindowKind::Deny && w.open_until(now).is_some()).collect();
    if !denying.is_empty() {
        return (false, denying.iter().all(|window| window.manual_sync));
    }
    let allows: Vec<&&SyncWindow> = mine.iter().filter(|window| window.kind == WindowKind::Allow).collect();
    if allows.is_empty() || allows.iter().any(|window| window.open_until(now).is_some()) {
        return (true, true);
    }
    (false, allows.iter().any(|window| window.manual_sync))
}

/// The first instant after `now` at which automatic syncs are allowed: walks from the end of each blocking deny
/// window and from each allow window's next opening.
fn next_allowed(windows: &[SyncWindow], env: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mine: Vec<&SyncWindow> = windows.iter().filter(|window| window.applies_to(env)).collect();
    let mut at = now;
    for _ in 0..256 {
        if allowed(windows, env, at).0 {
            return Some(at);
        }
        let deny_ends = mine.iter().filter(|w| w.kind == WindowKind::Deny).filter_map(|w| w.open_until(at)).max();
        at = match deny_ends {
            Some(end) => end,
            None => mine
                .iter()
                .filter(|window| window.kind == WindowKind::Allow)
                .filter_map(|window| next_fire(&window.schedule, window.zone, at))
                .min()?,
        };
    }
    None
}

fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    match pattern {
        [] => text.is_empty(),
        [b'*', rest @ ..] => (0..=text.len()).any(|skip| glob_matches(rest, &text[skip..])),
        [first, rest @ ..] => text.first() == Some(first) && glob_matches(rest, &text[1..]),
    }
}

/// How long until `instant`, from `now` (zero when it has passed).
pub fn until(instant: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (instant - now).to_std().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(kind: WindowKind, schedule: &str, duration: &str, zone: Option<&str>, manual: bool) -> SyncWindow {
        SyncWindowSetting {
            kind,
            schedule: schedule.to_owned(),
            duration: duration.to_owned(),
            time_zone: zone.map(str::to_owned),
            environments: Vec::new(),
            manual_sync: manual,
        }
        .compile(1)
        .expect("a valid window")
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).expect("a test time").with_timezone(&Utc)
    }

    #[test]
    fn a_deny_window_blocks_automatic_syncs_until_it_closes() {
        let deny = [window(WindowKind::Deny, "0 22 * * *", "8h", None, false)];
        let inside = evaluate(&deny, "production", at("2026-11-24T23:00:00Z"));
        assert!(!inside.auto_sync_allowed && !inside.manual_sync_allowed);
        assert_eq!(inside.active, ["deny 0 22 * * *"]);
        assert_eq!(inside.next_sync_allowed, Some(at("2026-11-25T06:00:00Z")));
        let outside = evaluate(&deny, "production", at("2026-11-25T06:00:00Z"));
        assert!(outside.auto_sync_allowed && outside.active.is_empty() && outside.next_sync_allowed.is_none());
    }

    #[test]
    fn deny_wins_over_allow_and_manual_sync_goes_through_only_when_every_blocking_window_says_so() {
        let windows = [
            window(WindowKind::Allow, "0 8 * * *", "10h", None, false),
            window(WindowKind::Deny, "0 12 * * *", "1h", None, true),
        ];
        let noon = evaluate(&windows, "production", at("2026-11-24T12:30:00Z"));
        assert!(!noon.auto_sync_allowed && noon.manual_sync_allowed, "{noon:?}");
        assert_eq!(noon.next_sync_allowed, Some(at("2026-11-24T13:00:00Z")), "the allow window is open again then");
        assert!(evaluate(&windows, "production", at("2026-11-24T09:00:00Z")).auto_sync_allowed);
        let night = evaluate(&windows, "production", at("2026-11-24T20:00:00Z"));
        assert!(!night.auto_sync_allowed && !night.manual_sync_allowed, "outside every allow window");
        assert_eq!(night.next_sync_allowed, Some(at("2026-11-25T08:00:00Z")));
    }

    #[test]
    fn overlapping_deny_windows_block_until_the_last_one_closes() {
        let windows = [
            window(WindowKind::Deny, "0 10 * * *", "2h", None, false),
            window(WindowKind::Deny, "0 11 * * *", "3h", None, false),
        ];
        let state = evaluate(&windows, "production", at("2026-11-24T10:30:00Z"));
        assert_eq!(state.next_sync_allowed, Some(at("2026-11-24T14:00:00Z")));
    }

    #[test]
    fn windows_read_their_own_time_zone_across_daylight_saving() {
        let berlin = [window(WindowKind::Deny, "0 9 * * *", "1h", Some("Europe/Berlin"), false)];
        // 09:00 in Berlin is 07:00 UTC in summer and 08:00 UTC in winter.
        assert!(!evaluate(&berlin, "production", at("2026-07-01T07:30:00Z")).auto_sync_allowed);
        assert!(evaluate(&berlin, "production", at("2026-07-01T08:30:00Z")).auto_sync_allowed);
        assert!(evaluate(&berlin, "production", at("2026-12-01T07:30:00Z")).auto_sync_allowed);
        assert!(!evaluate(&berlin, "production", at("2026-12-01T08:30:00Z")).auto_sync_allowed);
        // The night the clocks go back (25 Oct 2026, 03:00 → 02:00): a 02:30 window opens once, at the first 02:30.
        let night = [window(WindowKind::Deny, "30 2 * * *", "20m", Some("Europe/Berlin"), false)];
        assert!(!evaluate(&night, "production", at("2026-10-25T00:40:00Z")).auto_sync_allowed, "first 02:30 CEST");
        assert!(evaluate(&night, "production", at("2026-10-25T01:40:00Z")).auto_sync_allowed, "second 02:30 CET");
    }

    #[test]
    fn windows_apply_to_the_environments_their_globs_name() {
        let mut setting = SyncWindowSetting {
            kind: WindowKind::Deny,
            schedule: "0 0 * * *".into(),
            duration: "24h".into(),
            time_zone: None,
            environments: vec!["prod*".into()],
            manual_sync: false,
        };
        let windows = [setting.compile(1).expect("valid")];
        let now = at("2026-11-24T12:00:00Z");
        assert!(!evaluate(&windows, "production", now).auto_sync_allowed);
        assert!(evaluate(&windows, "staging", now).auto_sync_allowed);
        assert!(evaluate(&windows, "pr-7", now).auto_sync_allowed);
        setting.schedule = "not a cron".into();
        assert!(setting.compile(2).expect_err("invalid").to_string().contains("sync window 2"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_until_a_window_closes_is_what_a_timer_sleeps() {
        let deny = [window(WindowKind::Deny, "0 22 * * *", "8h", None, false)];
        let now = at("2026-11-24T23:00:00Z");
        let opens = evaluate(&deny, "production", now).next_sync_allowed.expect("it opens");
        let started = tokio::time::Instant::now();
        tokio::time::sleep(until(opens, now)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(7 * 3600));
    }
}
