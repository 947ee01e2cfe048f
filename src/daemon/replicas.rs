//! Several replicas, one leader. Only the leader reconciles: its environment workers, listing, previews, timers and
//! autoscaler wait until it leads ([`Daemon::until_leading`]), and its backends are fenced by the lease
//! ([`crate::backend::fenced`]). A replica that follows takes webhooks and API requests and queues them in the store
//! for the leader ([`Daemon::route`]); it serves the pages from the statuses the leader publishes there. Without
//! `--leader-election` this process leads alone and nothing here runs.
//!
//! The store may go away (a PostgreSQL restarting): the daemon then reconciles nothing, since it could not record
//! what it did, says so on `/readyz`, the pages and `railyard_store_up`, and catches up when the store answers again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::{Daemon, EnvState, now_ms, read, write};
use crate::daemon::previews::PullRequestAction;
use crate::daemon::trigger::Trigger;
use crate::leader::Leadership;
use crate::model::ListedEnvironment;
use crate::store::{Request, StoreError};

/// The election's task, and how to tell it to give the lease up.
pub(super) struct Election {
    give_up: tokio::sync::oneshot::Sender<()>,
    running: tokio::task::JoinHandle<()>,
}

/// How often a replica that does not lead refreshes the statuses the leader published, and how often the leader
/// takes the queued requests, when there is no election to set the pace.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

impl Daemon {
    /// Whether this replica leads (always, without an election).
    pub fn leads(&self) -> bool {
        self.settings.leader.as_ref().is_none_or(|elector| elector.leads())
    }

    /// Who leads, with an election.
    pub fn leadership(&self) -> Option<Leadership> {
        self.settings.leader.as_ref().map(|elector| elector.leadership())
    }

    /// Resolves once this replica may reconcile: it leads and the store answers.
    pub(super) async fn until_leading(&self) {
        loop {
            if let Some(elector) = &self.settings.leader {
                elector.until_leading().await;
            }
            if read(&self.store_trouble).is_none() {
                return;
            }
            let mut changes = self.store_state.subscribe();
            let _ = changes.wait_for(|up| *up).await;
        }
    }

    /// Why the store cannot be reached, while it cannot.
    pub fn store_trouble(&self) -> Option<String> {
        read(&self.store_trouble).clone()
    }

    /// Work asked of this replica (a webhook, the API): done here when it leads, else queued in the store for the
    /// leader, so that none is lost whichever replica a load balancer picked.
    pub(super) async fn route(&self, request: Request) -> Result<(), StoreError> {
        if self.leads() {
            self.take(request).await;
            Ok(())
        } else {
            info!(?request, "queued for the leader");
            self.store.request(&request, now_ms()).await
        }
    }

    async fn take(&self, request: Request) {
        match request {
            Request::Pushed { branch } => {
                self.pushed_here(&branch);
            }
            Request::Sync { env, trigger, destroy } => {
                self.fire_here(&env, trigger, destroy);
            }
            Request::PullRequest { action, pr } => {
                self.pull_request_here(action, pr).await;
            }
        }
    }

    /// The tasks of several replicas, alongside [`Daemon::run`]'s own: the store's watch, and with an election the
    /// rest. The election comes apart: it gives the lease up when told, once the workers have stopped, so that no
    /// write of this replica is still on its way when another one takes over.
    pub(super) fn spawn_replica_tasks(self: &Arc<Self>) -> (Vec<tokio::task::JoinHandle<()>>, Option<Election>) {
        let mut tasks = vec![tokio::spawn(Arc::clone(self).watch_store())];
        let Some(elector) = self.settings.leader.clone() else { return (tasks, None) };
        let (give_up, told) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(async move {
            elector
                .run(async move {
                    let _ = told.await;
                })
                .await;
        });
        let election = Election { give_up, running };
        tasks.push(tokio::spawn(Arc::clone(self).on_leadership()));
        tasks.push(tokio::spawn(Arc::clone(self).take_requests()));
        tasks.push(tokio::spawn(Arc::clone(self).publish_statuses()));
        tasks.push(tokio::spawn(Arc::clone(self).follow_statuses()));
        (tasks, Some(election))
    }

    /// Gives the lease up (after the workers stopped) and waits, briefly, for the election to end.
    pub(super) async fn end_election(election: Election) {
        let _ = election.give_up.send(());
        let _ = tokio::time::timeout(Duration::from_secs(3), election.running).await;
    }

    /// Sets the leader gauge, and wakes every worker when this replica starts leading: each environment reconciles
    /// afresh, as at a start.
    async fn on_leadership(self: Arc<Self>) {
        let Some(elector) = self.settings.leader.clone() else { return };
        let labels = super::metrics::IdentityLabels { identity: elector.identity().to_owned() };
        let mut was_leading = false;
        loop {
            let leading = elector.leads();
            self.metrics.leader.get_or_create(&labels).set(i64::from(leading));
            if leading && !was_leading {
                self.listing.fire(Trigger::Startup);
                self.previews_trigger.fire(Trigger::Startup);
                self.fire_all(Trigger::Startup);
            }
            if leading != was_leading {
                let _ = self.changes.send(());
            }
            was_leading = leading;
            tokio::time::sleep(elector.timings().retry.min(FOLLOW_EVERY)).await;
        }
    }

    /// While leading: takes what the other replicas queued.
    async fn take_requests(self: Arc<Self>) {
        loop {
            tokio::time::sleep(FOLLOW_EVERY).await;
            if !self.leads() {
                continue;
            }
            match self.store.take_requests().await {
                Ok(requests) => {
                    for request in requests {
                        info!(?request, "taking a request another replica queued");
                        self.take(request).await;
                    }
                }
                Err(error) => warn!(%error, "cannot take the requests queued for the leader"),
            }
        }
    }

    /// While leading: publishes every environment's status when something changed, for the replicas that follow.
    async fn publish_statuses(self: Arc<Self>) {
        let mut changes = self.changes.subscribe();
        // What this replica last published, by environment: only what changed since is written again.
        let mut published: BTreeMap<String, String> = BTreeMap::new();
        loop {
            let _ = tokio::time::timeout(Duration::from_secs(10), changes.recv()).await;
            // Changes come in bursts (an apply's progress): one write for the burst.
            tokio::time::sleep(Duration::from_millis(200)).await;
            changes = changes.resubscribe();
            if !self.leads() {
                // Another leader may publish meanwhile: leading again, everything is written afresh.
                published.clear();
                continue;
            }
            if let Err(error) = self.publish_changed(&mut published).await {
                warn!(%error, "cannot publish the environments' status");
                published.clear();
            }
        }
    }

    /// Writes the statuses that differ from `published` (which it keeps up to date), and drops those of
    /// environments gone.
    async fn publish_changed(&self, published: &mut BTreeMap<String, String>) -> Result<(), StoreError> {
        let states: Vec<EnvState> = self.environments().iter().map(|env| env.state()).collect();
        let now = now_ms();
        for state in &states {
            let Ok(body) = serde_json::to_string(state) else { continue };
            if published.get(&state.name) != Some(&body) {
                self.store.publish_status(&state.name, &body, now).await?;
                published.insert(state.name.clone(), body);
            }
        }
        let names: Vec<String> = states.into_iter().map(|state| state.name).collect();
        if published.keys().any(|name| !names.contains(name)) || published.is_empty() {
            self.store.retain_statuses(&names).await?;
            published.retain(|name, _| names.contains(name));
        }
        Ok(())
    }

    /// While following: shows the environments and statuses the leader published.
    async fn follow_statuses(self: Arc<Self>) {
        loop {
            tokio::time::sleep(FOLLOW_EVERY).await;
            if self.leads() {
                continue;
            }
            if let Err(error) = self.follow_once().await {
                warn!(%error, "cannot read what the leader published");
            }
        }
    }

    async fn follow_once(self: &Arc<Self>) -> Result<(), StoreError> {
        let known = self.store.known_environments().await?;
        let published = self.store.published_statuses().await?;
        // One change of the list at a time, and none once this replica leads (it may have won the lease meanwhile):
        // its own workers then know better than what the old leader published.
        let _one_at_a_time = self.listing_changes.lock().await;
        if self.leads() {
            return Ok(());
        }
        // The pull requests the leader knows, so that this replica, leading one day, neither tears down a preview
        // opened meanwhile nor brings back one closed.
        self.restore_pull_requests().await;
        let before: Vec<String> = self.environments().iter().map(|env| env.name.clone()).collect();
        for env in &known {
            if self.env(&env.name).is_none() {
                let listed =
                    ListedEnvironment { name: env.name.clone(), branch: env.branch.clone(), host_template: None };
                self.add_env(&listed, &env.project);
            }
        }
        let gone: Vec<_> =
            self.environments().into_iter().filter(|env| !known.iter().any(|known| known.name == env.name)).collect();
        if !gone.is_empty() {
            write(&self.envs).retain(|env| known.iter().any(|known| known.name == env.name));
            for env in gone {
                env.end();
            }
        }
        for status in published {
            let (Some(handle), Ok(state)) = (self.env(&status.env), serde_json::from_str::<EnvState>(&status.body))
            else {
                continue;
            };
            handle.show(state);
        }
        // A state that changed has told live pages already; a list that changed tells them here.
        if self.environments().iter().map(|env| &env.name).ne(before.iter()) {
            let _ = self.changes.send(());
        }
        Ok(())
    }

    /// Checks the store every second while it is down, and whenever a write to it failed; reconciles wait while it
    /// is down and every environment reconciles once it is back.
    async fn watch_store(self: Arc<Self>) {
        loop {
            let healthy = self.store.ping().await;
            let was_down = read(&self.store_trouble).is_some();
            match healthy {
                Ok(()) if was_down => {
                    info!("the store answers again: reconciles resume");
                    *write(&self.store_trouble) = None;
                    self.store_state.send_replace(true);
                    self.metrics.store_up.set(1);
                    // A push or pull request refused meanwhile may have changed the list or the previews.
                    self.listing.fire(Trigger::Retry);
                    self.previews_trigger.fire(Trigger::Retry);
                    self.fire_all(Trigger::Retry);
                    let _ = self.changes.send(());
                }
                Ok(()) => {}
                Err(error) if !was_down => {
                    let trouble = format!(
                        "the store cannot be reached ({}); nothing is reconciled until it answers, since nothing could be recorded",
                        crate::error_chain::chain(&error)
                    );
                    warn!(%trouble, "store down");
                    *write(&self.store_trouble) = Some(trouble);
                    self.store_state.send_replace(false);
                    self.metrics.store_up.set(0);
                    let _ = self.changes.send(());
                }
                Err(_) => {}
            }
            if read(&self.store_trouble).is_none() {
                self.record_what_waited().await;
            }
            let wait =
                if read(&self.store_trouble).is_some() { Duration::from_secs(1) } else { Duration::from_secs(5) };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.store_failed.notified() => {}
            }
        }
    }

    /// Writes the syncs the store could not take when they happened, oldest first; those it still cannot take wait
    /// for the next look.
    async fn record_what_waited(&self) {
        let waiting = std::mem::take(&mut *self.unrecorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for (index, record) in waiting.iter().enumerate() {
            if let Err(error) = self.store.record_sync(record, self.settings.keep_syncs).await {
                warn!(%error, "the store still cannot take the syncs that waited");
                let mut unrecorded = self.unrecorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let newer = std::mem::take(&mut *unrecorded);
                unrecorded.extend(waiting[index..].iter().cloned().chain(newer));
                return;
            }
        }
        if !waiting.is_empty() {
            info!(count = waiting.len(), "recorded the syncs that waited for the store");
        }
    }

    /// Tells the store's watch that a write failed, so that it looks at once.
    pub(super) fn store_write_failed(&self) {
        self.store_failed.notify_one();
    }
}

impl Daemon {
    /// A pull request event (from a webhook), routed to the leader.
    pub async fn pull_request_event(
        &self,
        action: PullRequestAction,
        pr: crate::previews::PullRequest,
    ) -> Result<String, StoreError> {
        let env = format!("pr-{}", pr.number);
        self.route(Request::PullRequest { action, pr }).await?;
        Ok(env)
    }
}
