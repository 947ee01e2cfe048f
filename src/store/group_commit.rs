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

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::sync::mpsc;

    use futures_util::poll;

    use super::*;
    use crate::store::{Delivery, DeliveryRecord};

    fn write(reason: &str) -> DeliveryWrite {
        let delivery = Delivery {
            received_ms: 0,
            forge: "github".to_owned(),
            event: "push".to_owned(),
            accepted: true,
            reason: reason.to_owned(),
            authenticated: true,
        };
        DeliveryWrite::Record(DeliveryRecord { delivery, keep: 10 })
    }

    fn reason(write: &DeliveryWrite) -> &str {
        write.recorded(true).map_or("", |record| record.delivery.reason.as_str())
    }

    /// A writer whose commits wait for the test: it says how many writes each batch has, then waits to be released;
    /// a batch with a `poison` write fails.
    fn held_writer() -> (GroupCommit, mpsc::Receiver<Vec<String>>, mpsc::Sender<()>) {
        let (entered, batches) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let writer = GroupCommit::on_thread("test-deliveries", move |writes| {
            let _ = entered.send(writes.iter().map(|write| reason(write).to_owned()).collect());
            let _ = released.recv();
            if writes.iter().any(|write| reason(write) == "poison") {
                return Err(StoreError::Worker("the disk is full".to_owned()));
            }
            Ok(vec![true; writes.len()])
        })
        .expect("a writer thread");
        (writer, batches, release)
    }

    #[tokio::test]
    async fn writes_waiting_while_one_commits_share_the_next_commit() {
        let (writer, batches, release) = held_writer();
        let mut first = pin!(writer.write(write("first")));
        assert!(poll!(&mut first).is_pending());
        assert_eq!(batches.recv().ok(), Some(vec!["first".to_owned()]), "alone, a write is committed at once");
        let mut waiting: Vec<_> = ["second", "third", "fourth"].map(|name| Box::pin(writer.write(write(name)))).into();
        for write in &mut waiting {
            assert!(poll!(write).is_pending(), "queued behind the commit under way");
        }
        release.send(()).expect("release");
        assert!(matches!(first.await, Some(Ok(true))));
        assert_eq!(batches.recv().ok(), Some(vec!["second".to_owned(), "third".to_owned(), "fourth".to_owned()]));
        release.send(()).expect("release");
        for write in waiting {
            assert!(matches!(write.await, Some(Ok(true))));
        }
    }

    #[tokio::test]
    async fn a_failed_commit_fails_each_write_of_its_batch_and_no_other() {
        let (writer, batches, release) = held_writer();
        let mut first = pin!(writer.write(write("first")));
        assert!(poll!(&mut first).is_pending());
        assert_eq!(batches.recv().ok().map(|batch| batch.len()), Some(1));
        let mut doomed: Vec<_> = ["second", "poison", "third"].map(|name| Box::pin(writer.write(write(name)))).into();
        for write in &mut doomed {
            assert!(poll!(write).is_pending());
        }
        release.send(()).expect("release");
        assert!(matches!(first.await, Some(Ok(true))), "the batch before is not touched");
        assert_eq!(batches.recv().ok().map(|batch| batch.len()), Some(3));
        release.send(()).expect("release");
        for write in doomed {
            match write.await {
                Some(Err(error)) => {
                    assert!(error.to_string().contains("the disk is full"), "{error}");
                    assert!(error.is_unavailable(), "told as the failure it is: {error:?}");
                }
                answer => panic!("a write of the failed commit got {answer:?}"),
            }
        }
        release.send(()).expect("release");
        assert!(matches!(writer.write(write("after")).await, Some(Ok(true))), "the batch after is not touched");
    }

    #[tokio::test]
    async fn a_task_writer_commits_what_waits_together() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = Arc::clone(&sizes);
        let writer = GroupCommit::on_task(move |writes| {
            let recorded = Arc::clone(&recorded);
            async move {
                recorded.lock().expect("sizes").push(writes.len());
                tokio::task::yield_now().await;
                Ok(writes.iter().map(|write| reason(write) != "seen").collect())
            }
        });
        let answers =
            futures_util::future::join_all(["a", "seen", "b", "c"].map(|name| writer.write(write(name)))).await;
        let answers: Vec<Option<bool>> = answers.into_iter().map(|answer| answer.and_then(Result::ok)).collect();
        assert_eq!(answers, [Some(true), Some(false), Some(true), Some(true)], "each its own answer");
        assert_eq!(sizes.lock().expect("sizes").iter().sum::<usize>(), 4);
    }
}
