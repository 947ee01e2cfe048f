//! The clock history, pages and decisions count time with.

/// Milliseconds since the epoch, as history and pages count time.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The wall clock that policies read (sync windows, schedules): the system's, or one that starts at a chosen time and
/// moves with Tokio's clock, so that tests with paused time can walk through a window opening without sleeping.
#[derive(Debug, Clone, Copy, Default)]
pub enum Clock {
    #[default]
    System,
    /// `start` at the moment `since` on Tokio's clock.
    FollowsTokio { start: chrono::DateTime<chrono::Utc>, since: tokio::time::Instant },
}

impl Clock {
    /// A clock that reads `start` now and moves with Tokio's (paused or not) clock from here.
    pub fn starting_at(start: chrono::DateTime<chrono::Utc>) -> Clock {
        Clock::FollowsTokio { start, since: tokio::time::Instant::now() }
    }

    pub fn now(self) -> chrono::DateTime<chrono::Utc> {
        match self {
            Clock::System => chrono::Utc::now(),
            Clock::FollowsTokio { start, since } => {
                let elapsed = chrono::Duration::from_std(since.elapsed()).unwrap_or(chrono::Duration::MAX);
                start.checked_add_signed(elapsed).unwrap_or(start)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_clock_that_follows_tokio_moves_with_paused_time() {
        let start = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let clock = Clock::starting_at(start);
        assert_eq!(clock.now(), start);
        tokio::time::sleep(std::time::Duration::from_secs(90)).await;
        assert_eq!(clock.now(), start + chrono::Duration::seconds(90));
    }
}
