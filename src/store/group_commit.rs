//! Group commit of webhook deliveries' store writes: one writer takes every write waiting when it is free and commits
//! them in one transaction, then answers each request its own result. Under load many concurrent deliveries share a
//! commit (one WAL append, one round trip) instead of paying for one each; alone, a delivery is committed at once.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{DeliveryWrite, StoreError};

/// The most writes committed in one transaction: a transaction holds the database while it runs, and a commit that
/// fails fails all of its writes.
pub const MOST_IN_ONE_COMMIT: usize = 256;

/// What a writer answers each write: the write's own result, or the failure of the transaction it was part of.
type Answer = Result<bool, Arc<StoreError>>;

struct Waiting {
    write: DeliveryWrite,
    answer: oneshot::Sender<Answer>,
}

/// The queue in front of one writer. Dropping it stops the writer once the writes queued before are committed.
pub struct GroupCommit {
    queue: mpsc::UnboundedSender<Waiting>,
}

impl GroupCommit {
    /// A writer on a thread of its own, for a blocking engine (SQLite): `commit` does a batch in one transaction.
    pub fn on_thread(
        name: &str,
        mut commit: impl FnMut(&[DeliveryWrite]) -> Result<Vec<bool>, StoreError> + Send + 'static,
    ) -> std::io::Result<GroupCommit> {
        let (queue, mut waiting) = mpsc::unbounded_channel();
        std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            while let Some(first) = waiting.blocking_recv() {
                let (writes, answers) = with_the_rest(first, &mut waiting);
                answer(answers, commit(&writes));
            }
        })?;
        Ok(GroupCommit { queue })
    }

    /// A writer task on the current Tokio runtime, for an async engine (PostgreSQL).
    pub fn on_task<F>(mut commit: impl FnMut(Vec<DeliveryWrite>) -> F + Send + 'static) -> GroupCommit
    where
        F: Future<Output = Result<Vec<bool>, StoreError>> + Send,
    {
        let (queue, mut waiting) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(first) = waiting.recv().await {
                let (writes, answers) = with_the_rest(first, &mut waiting);
                answer(answers, commit(writes).await);
            }
        });
        GroupCommit { queue }
    }

    /// Queues `write` and waits for the commit it is part of: its answer (see [`DeliveryWrite`]), or `None` when
    /// the writer is gone (its runtime shut down), so that the caller writes it alone.
    pub async fn write(&self, write: DeliveryWrite) -> Option<Result<bool, StoreError>> {
        let (answer, answered) = oneshot::channel();
        self.queue.send(Waiting { write, answer }).ok()?;
        let answer = answered.await.ok()?;
        Some(answer.map_err(StoreError::Shared))
    }
}

/// `first` and whatever else waits already, up to [`MOST_IN_ONE_COMMIT`]: the writes, and where to answer each.
fn with_the_rest(
    first: Waiting,
    waiting: &mut mpsc::UnboundedReceiver<Waiting>,
) -> (Vec<DeliveryWrite>, Vec<oneshot::Sender<Answer>>) {
    let mut batch = vec![first];
    while batch.len() < MOST_IN_ONE_COMMIT {
        match waiting.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    batch.into_iter().map(|waiting| (waiting.write, waiting.answer)).unzip()
}

/// Hands each waiting request its answer; a failed commit fails every write of it (and no other).
fn answer(answers: Vec<oneshot::Sender<Answer>>, committed: Result<Vec<bool>, StoreError>) {
    let committed = committed.and_then(|results| {
        if results.len() == answers.len() {
            Ok(results)
        } else {
            Err(StoreError::Worker(format!(
                "the store answered {} of {} webhook delivery writes",
                results.len(),
                answers.len()
            )))
        }
    });
    match committed {
        Ok(results) => {
            for (answer, result) in answers.into_iter().zip(results) {
                // The request may be gone (its client hung up): its write is done all the same.
                let _ = answer.send(Ok(result));
            }
        }
        Err(error) => {
            let error = Arc::new(error);
            for answer in answers {
                let _ = answer.send(Err(Arc::clone(&error)));
            }
        }
    }
}
