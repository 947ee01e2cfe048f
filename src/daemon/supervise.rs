//! Supervision of the reconcile worker: a worker that panics is reported and started again after a backoff, so that
//! one bad reconcile never stops the daemon silently.

use std::future::Future;
use std::time::{Duration, Instant};

use super::trigger::Backoff;

/// A worker that ran this long before panicking starts its next restart from the shortest backoff again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Runs the worker that `start` makes until it returns or `stop` resolves. When it panics, `on_panic` hears the
/// panic message and the wait before the restart.
pub async fn supervise<Start, Worker>(
    mut start: Start,
    mut on_panic: impl FnMut(String, Duration),
    mut backoff: Backoff,
    stop: impl Future<Output = ()>,
) where
    Start: FnMut() -> Worker,
    Worker: Future<Output = ()> + Send + 'static,
{
    tokio::pin!(stop);
    loop {
        let started = Instant::now();
        let mut worker = tokio::spawn(start());
        let ended = tokio::select! {
            ended = &mut worker => ended,
            () = &mut stop => {
                // The worker stops by itself at its next safe point; give it that chance.
                let _ = worker.await;
                return;
            }
        };
        let panic = match ended {
            Ok(()) => return,
            Err(error) if error.is_panic() => panic_message(error.into_panic()),
            Err(_) => return,
        };
        if started.elapsed() >= HEALTHY_RUN {
            backoff.reset();
        }
        let delay = backoff.next_delay(rand::random::<f64>());
        on_panic(panic, delay);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = &mut stop => return,
        }
    }
}

/// The text a panic was raised with.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_panicking_worker_is_reported_and_restarted_with_backoff() {
        let starts = Arc::new(AtomicU32::new(0));
        let reports = Arc::new(Mutex::new(Vec::new()));
        let finished = Arc::new(AtomicU32::new(0));
        let supervisor = {
            let (starts, reports, finished) = (Arc::clone(&starts), Arc::clone(&reports), Arc::clone(&finished));
            supervise(
                move || {
                    let attempt = starts.fetch_add(1, Ordering::SeqCst);
                    let finished = Arc::clone(&finished);
                    async move {
                        if attempt < 2 {
                            panic!("reconcile {attempt} broke");
                        }
                        finished.fetch_add(1, Ordering::SeqCst);
                    }
                },
                move |message, delay| reports.lock().expect("reports").push((message, delay)),
                Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
                std::future::pending(),
            )
        };
        tokio::time::timeout(Duration::from_secs(600), supervisor).await.expect("the third start returns normally");
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        assert_eq!(finished.load(Ordering::SeqCst), 1);
        let reports = reports.lock().expect("reports").clone();
        let messages: Vec<&str> = reports.iter().map(|(message, _)| message.as_str()).collect();
        assert_eq!(messages, ["reconcile 0 broke", "reconcile 1 broke"]);
        assert!(reports[0].1 <= Duration::from_secs(1) && reports[1].1 >= Duration::from_secs(1), "{reports:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_ends_the_restart_wait() {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let supervisor = tokio::spawn(supervise(
            || async { panic!("always") },
            |_, _| {},
            Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600)),
            async {
                let _ = stopped.await;
            },
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(5), supervisor).await.expect("stops").expect("no panic");
    }
}
