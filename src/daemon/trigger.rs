//! Coalescing triggers and retry backoff. Per environment one reconcile runs and at most one waits: triggers that
//! arrive while one is pending merge into it, so a burst of any size costs at most two reconciles.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

pub use crate::outcome::Trigger;
use crate::telemetry::TraceParent;

/// A trigger taken from a [`Coalescer`], with the moment the newest trigger that needs a fetch was fired: a fetch
/// started after it has seen every commit that trigger was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub trigger: Trigger,
    pub fetch_after: Option<Instant>,
}

/// The pending trigger of one environment and the signal that wakes its worker.
#[derive(Default)]
pub struct Coalescer {
    pending: Mutex<Pending>,
    wake: Notify,
}

#[derive(Default)]
struct Pending {
    taken: Option<Taken>,
    /// The trace of the newest trigger that came with one (a webhook's `traceparent`): the reconcile joins it.
    parent: Option<TraceParent>,
}

impl Coalescer {
    /// Asks for a reconcile. An explicit request (a rollback, then a manual sync) outranks the others when they merge, so that a manual sync
    /// is never swallowed by a poll that happened to be pending; a drift check ranks last.
    pub fn fire(&self, trigger: Trigger) {
        self.fire_traced(trigger, None);
    }

    /// [`Coalescer::fire`] for a trigger that belongs to a trace (`parent`, a webhook's), which the reconcile joins.
    pub fn fire_traced(&self, trigger: Trigger, parent: Option<TraceParent>) {
        self.fire_at(trigger, Instant::now(), parent);
    }

    /// [`Coalescer::fire_traced`] for a trigger that came at `at`: workers woken by one event (a push to a branch
    /// fifty environments follow) then ask for the same fetch, instead of each for one after its own moment, which
    /// a fetch started by the first woken worker may precede.
    pub fn fire_at(&self, trigger: Trigger, at: Instant, parent: Option<TraceParent>) {
        self.merge(trigger, trigger.needs_fetch().then_some(at), parent);
    }

    /// [`Coalescer::fire`] for a trigger whose commits any fetch started after `fetch_after` has seen (a preview
    /// started from a fetch that the previews worker just made need not fetch again).
    pub fn fire_seen(&self, trigger: Trigger, fetch_after: Option<Instant>) {
        self.merge(trigger, fetch_after, None);
    }

    fn merge(&self, trigger: Trigger, fetch_after: Option<Instant>, parent: Option<TraceParent>) {
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if parent.is_some() {
            pending.parent = parent;
        }
        let earlier = pending.taken;
        pending.taken = Some(Taken {
            // A drift check merged into a push is that push.
            trigger: match (earlier.map(|taken| taken.trigger), trigger) {
                (Some(Trigger::Rollback), _) => Trigger::Rollback,
                (Some(Trigger::Api), later) if later != Trigger::Rollback => Trigger::Api,
                (Some(earlier), Trigger::Drift) => earlier,
                _ => trigger,
            },
            fetch_after: fetch_after.or(earlier.and_then(|taken| taken.fetch_after)),
        });
        self.wake.notify_one();
    }

    /// Waits for the next pending trigger and takes it.
    pub async fn next(&self) -> Taken {
        self.next_traced().await.0
    }

    /// [`Coalescer::next`], with the trace the trigger belongs to, if any.
    pub async fn next_traced(&self) -> (Taken, Option<TraceParent>) {
        loop {
            if let Some(taken) = self.take() {
                return taken;
            }
            self.wake.notified().await;
        }
    }

    fn take(&self) -> Option<(Taken, Option<TraceParent>)> {
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let taken = pending.taken.take()?;
        Some((taken, pending.parent.take()))
    }
}

/// Capped exponential backoff with jitter: attempt n waits a random time in [d/2, d] with d = base * 2^n, at most
/// `cap`.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff { base, cap, attempt: 0 }
    }

    /// The wait before the next retry; `unit` in [0, 1) supplies the jitter.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let full = self.base.saturating_mul(2u32.saturating_pow(self.attempt)).min(self.cap);
        self.attempt = self.attempt.saturating_add(1).min(32);
        full.mul_f64(0.5 + unit.clamp(0.0, 1.0) / 2.0)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// `interval` moved randomly by up to a tenth either way, so that many railyards do not poll in step.
pub fn jittered(interval: Duration, unit: f64) -> Duration {
    interval.mul_f64(0.9 + unit.clamp(0.0, 1.0) * 0.2)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_a_thousand_triggers_costs_at_most_two_reconciles() {
        let coalescer = Arc::new(Coalescer::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let worker = {
            let (coalescer, runs) = (Arc::clone(&coalescer), Arc::clone(&runs));
            tokio::spawn(async move {
                loop {
                    coalescer.next().await;
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            })
        };
        coalescer.fire(Trigger::Webhook);
        tokio::task::yield_now().await;
        for _ in 0..1000 {
            coalescer.fire(Trigger::Webhook);
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        worker.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn an_api_sync_is_not_swallowed_by_a_later_poll() {
        let coalescer = Coalescer::default();
        coalescer.fire(Trigger::Api);
        coalescer.fire(Trigger::Poll);
        assert_eq!(coalescer.next().await.trigger, Trigger::Api);
        coalescer.fire(Trigger::Poll);
        assert_eq!(coalescer.next().await.trigger, Trigger::Poll);
    }

    #[tokio::test]
    async fn a_traced_push_keeps_its_trace_through_merges_and_hands_it_over_once() {
        let mut headers = axum::http::HeaderMap::new();
        headers
            .insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().expect("value"));
        let parent = TraceParent::from_headers(&headers);
        assert!(parent.is_some());
        let coalescer = Coalescer::default();
        coalescer.fire_traced(Trigger::Webhook, parent.clone());
        coalescer.fire(Trigger::Drift);
        let (taken, trace) = coalescer.next_traced().await;
        assert_eq!((taken.trigger, trace), (Trigger::Webhook, parent), "a drift check merged into a push is that push");
        coalescer.fire(Trigger::Poll);
        assert_eq!(coalescer.next_traced().await.1, None, "a later reconcile starts a trace of its own");
    }

    #[tokio::test]
    async fn merged_triggers_ask_for_a_fetch_after_the_newest_push_and_drift_asks_for_none() {
        let coalescer = Coalescer::default();
        coalescer.fire(Trigger::Drift);
        assert_eq!(coalescer.next().await.fetch_after, None);
        coalescer.fire(Trigger::Webhook);
        std::thread::sleep(Duration::from_millis(2));
        let second = Instant::now();
        coalescer.fire(Trigger::Webhook);
        coalescer.fire(Trigger::Drift);
        let taken = coalescer.next().await;
        assert_eq!(taken.trigger, Trigger::Webhook, "a drift check merged into a push is that push");
        assert!(taken.fetch_after.is_some_and(|after| after >= second), "the fetch must see the second push");
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(backoff.next_delay(1.0), Duration::from_secs(1));
        assert_eq!(backoff.next_delay(1.0), Duration::from_secs(2));
        assert_eq!(backoff.next_delay(0.0), Duration::from_secs(2));
        for _ in 0..20 {
            assert!(backoff.next_delay(1.0) <= Duration::from_secs(60));
        }
        assert_eq!(backoff.next_delay(0.0), Duration::from_secs(30));
        backoff.reset();
        assert_eq!(backoff.next_delay(1.0), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_a_tenth() {
        let minute = Duration::from_secs(60);
        assert_eq!(jittered(minute, 0.0), Duration::from_secs(54));
        assert_eq!(jittered(minute, 1.0), Duration::from_secs(66));
    }
}
