//! Executes a plan on a cluster. The objects come from [`super::mapping::manifests`] of the plan's desired specs;
//! an object is written (server-side apply) only when its spec-hash annotation differs from the one found, so an
//! unchanged configuration costs one list per kind and no write. An app's Deployment is awaited until available;
//! one that exceeds its progress deadline is rolled back by re-applying the spec of its last-applied annotation.
//! A conflict with another field manager fails the action with the field and the manager, unless the Project says
//! `sync.force`; a repair (drift) takes railyard's own fields back. Objects that the plan no longer holds are
//! pruned; claims stay unless their app said `deleteWithApp`. The apps and Jobs, then the domains, go through the
//! shared [`Executor`]: independent apps are written in parallel, an app waits for its dependencies' rollouts and
//! for the Jobs that run before it (hooks), and a Job that runs after an app waits for its rollout. A Job to run
//! is created and awaited ([`super::jobs`]); a scheduled Job's CronJob is written like any object; a Job removed
//! from git takes its CronJob, its Jobs and its record with it. Jobs are never pruned: a finished one goes after
//! its `ttlSecondsAfterFinished`, and one running keeps running.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kube::api::DynamicObject;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::cluster::{Applied, Cluster, Kind, Listed, deleted_with_app, describe};
use super::events;
use super::jobs::{Runner, Start, job_state, set_record};
use super::mapping::{
    self, ANNOTATION_SPEC_HASH, JOB_RECORD_NAME, KubernetesSettings, LABEL_JOB, LABEL_NAME, Manifests, Object,
    SecretKeys, SecretSource,
};
use super::observe::{health, last_applied};
use super::{KubernetesBackendSettings, KubernetesError};
use crate::backend::resolved_env::ResolvedEnv;
use crate::backend::schedule::{Executor, Operation, Slot};
use crate::backend::{ActionResult, ApplyReport, JobRun, JobTrigger, Progress, ProgressEvent, Step};
use crate::model::kinds::SyncPolicy;
use crate::model::{AppSpec, DesiredState, DomainSpec, HealthState, JobSpec};
use crate::plan::ObjectKind;
use crate::plan::{Action, Change, ChangeKind, Plan};
use crate::secrets::ResolvedSecrets;

/// One plan being applied.
pub struct Applier<'a> {
    pub cluster: &'a Cluster,
    pub settings: &'a KubernetesBackendSettings,
    pub plan: &'a Plan,
    pub secrets: &'a ResolvedSecrets,
    pub progress: &'a dyn Progress,
    /// The objects this apply wrote, for its Events.
    pub written: std::sync::Mutex<Vec<events::Written>>,
}

/// How a Deployment's rollout ended.
enum Rollout {
    Available,
    DeadlineExceeded,
    /// Neither within the backend's rollout timeout.
    TimedOut,
}

/// The objects the plan's actions write and what the cluster held of them, shared by the actions running at once.
struct Work<'a> {
    applier: &'a Applier<'a>,
    manifests: &'a Manifests,
    listed: &'a Listed,
    /// The runs of Jobs this apply made, in the order they ended.
    runs: std::sync::Mutex<Vec<JobRun>>,
    /// The `railyard-jobs` record as this apply leaves it; held while it is written, so that Jobs ending at once
    /// write one after the other, each the whole record.
    records: tokio::sync::Mutex<BTreeMap<String, String>>,
}

impl Operation<JobSpec> for Work<'_> {
    type Error = KubernetesError;

    async fn apply(&self, action: &Action<JobSpec>, slot: Slot) -> Result<ActionResult, KubernetesError> {
        self.applier.job(action, slot, self).await
    }
}

impl Operation<AppSpec> for Work<'_> {
    type Error = KubernetesError;

    async fn apply(&self, action: &Action<AppSpec>, slot: Slot) -> Result<ActionResult, KubernetesError> {
        self.applier.app(action, slot, self.manifests, self.listed).await
    }

    async fn is_available(&self, app: &str) -> Result<bool, KubernetesError> {
        self.applier.is_available(app, self.listed).await
    }
}

impl Operation<DomainSpec> for Work<'_> {
    type Error = KubernetesError;

    async fn apply(&self, action: &Action<DomainSpec>, _slot: Slot) -> Result<ActionResult, KubernetesError> {
        self.applier.domain(action, self.manifests, self.listed).await
    }
}

impl Applier<'_> {
    /// Applies the plan, then tells what it did as Kubernetes Events (which never fail the apply).
    pub async fn run(&self) -> Result<ApplyReport, KubernetesError> {
        let applied = self.converge().await;
        let written = std::mem::take(&mut *self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let (outcomes, failure) = match &applied {
            Ok(report) => (report.outcomes.as_slice(), None),
            Err(error) => (&[][..], Some(error.to_string())),
        };
        let events = events::of_sync(self.plan, &written, outcomes, failure.as_deref());
        let instance = events::instance(self.settings.user_agent.as_deref());
        events::publish(self.cluster.client(), self.namespace(), &instance, &events).await;
        applied
    }

    async fn converge(&self) -> Result<ApplyReport, KubernetesError> {
        let desired = self.desired();
        let manifests = self.manifests(&desired).await?;
        let mut listed = self.cluster.list(self.namespace(), &self.plan.env.name).await?;
        if self.cluster.namespace_terminating(self.namespace(), &listed).await? {
            let (poll, timeout) = (self.settings.poll_interval, self.settings.rollout_timeout);
            self.cluster.await_namespace_gone(self.namespace(), poll, timeout).await?;
            listed = self.cluster.list(self.namespace(), &self.plan.env.name).await?;
        }
        self.write_environment(&manifests, &listed).await?;
        self.write_secret(&desired, &manifests, &listed).await?;
        let records = super::jobs::record_data(listed.get(&(Kind::ConfigMap, JOB_RECORD_NAME.to_owned())));
        let work = Work {
            applier: self,
            manifests: &manifests,
            listed: &listed,
            runs: std::sync::Mutex::new(Vec::new()),
            records: tokio::sync::Mutex::new(records),
        };
        let executor = Executor::new(self.settings.parallel, self.progress);
        let mut outcomes = executor.run_workloads(self.plan, &work).await?;
        // An Ingress is written once the Service it routes to is.
        outcomes.extend(executor.run(&self.plan.domains, &work).await?);
        self.prune(&manifests, &listed).await?;
        let job_runs = work.runs.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(ApplyReport { outcomes, job_runs })
    }

    /// The namespace (unless someone else made it) and its NetworkPolicy, which every app needs first.
    async fn write_environment(&self, manifests: &Manifests, listed: &Listed) -> Result<(), KubernetesError> {
        let foreign_namespace = self.foreign_namespace(listed).await?;
        for object in manifests.objects.iter().filter(|object| is_environment_object(object)) {
            if foreign_namespace && matches!(object, Object::Namespace(_)) {
                continue;
            }
            if let Some(Applied::Conflict(message)) = self.write(object, listed, false).await? {
                let object = describe(kind_of(object), self.namespace(), object.name());
                return Err(KubernetesError::Conflict { object, message });
            }
        }
        Ok(())
    }

    fn namespace(&self) -> &str {
        &self.plan.env.project
    }

    /// The objects of `desired`, each built image pinned to its digest in the target's registry (asked with a
    /// preview's credentials for a preview), before anything is written.
    async fn manifests(&self, desired: &DesiredState) -> Result<Manifests, KubernetesError> {
        let mut manifests = mapping::manifests(desired, &self.mapping());
        let preview = self.plan.env.preview.is_some();
        super::images::pin(&mut manifests, self.settings.image_registry.as_ref(), preview).await?;
        Ok(manifests)
    }

    /// The plan's own Project settings when it carries any (the daemon's backend serves many Projects' branches),
    /// else the backend's.
    fn mapping(&self) -> KubernetesSettings {
        if self.plan.platform.is_unset() {
            return self.settings.mapping.clone();
        }
        KubernetesSettings {
            volume_size: self.settings.mapping.volume_size.clone(),
            ..KubernetesSettings::from_platform(&self.plan.platform)
        }
    }

    /// A namespace that exists without railyard's labels was made by someone else: railyard puts its objects in it
    /// but never labels it as its own, so that destroying the environment removes railyard's objects and not the
    /// namespace. Asked only when the labelled listing did not find it.
    async fn foreign_namespace(&self, listed: &Listed) -> Result<bool, KubernetesError> {
        if listed.contains_key(&(Kind::Namespace, self.namespace().to_owned())) {
            return Ok(false);
        }
        self.cluster.namespace_exists(self.namespace()).await
    }

    /// The desired state the plan converges to: every app and domain it keeps.
    fn desired(&self) -> DesiredState {
        DesiredState {
            env: self.plan.env.clone(),
            commit: self.plan.commit.clone(),
            sync: SyncPolicy::Auto,
            jobs: self
                .plan
                .jobs
                .iter()
                .filter_map(|action| action.desired.clone())
                .map(|job| (job.name.clone(), job))
                .collect(),
            apps: self
                .plan
                .apps
                .iter()
                .filter_map(|action| action.desired.clone())
                .map(|a| (a.name.clone(), a))
                .collect(),
            domains: self
                .plan
                .domains
                .iter()
                .filter_map(|action| action.desired.clone())
                .map(|domain| (domain.host.clone(), domain))
                .collect(),
            warnings: Vec::new(),
            blockers: Vec::new(),
            platform: self.plan.platform.clone(),
            builds: Default::default(),
            build_limits: Default::default(),
        }
    }

    /// Applies `object` unless the cluster holds it with the same spec hash (`always` writes it anyway); `None`
    /// when nothing was sent.
    async fn write(&self, object: &Object, listed: &Listed, always: bool) -> Result<Option<Applied>, KubernetesError> {
        let kind = kind_of(object);
        let found = listed.get(&(kind, object.name().to_owned()));
        if !always && found.is_some_and(|found| spec_hash(found) == object_hash(object)) {
            return Ok(None);
        }
        let body = serde_json::to_value(object).unwrap_or(Value::Null);
        self.send(kind, object.name(), &body, always).await.map(Some)
    }

    /// Server-side apply; forced when the Project says `sync.force` or when `take_back` (a repair or rollback
    /// restores railyard's own fields).
    async fn send(&self, kind: Kind, name: &str, body: &Value, take_back: bool) -> Result<Applied, KubernetesError> {
        let force = self.settings.force || self.plan.platform.force || take_back;
        let applied = self.cluster.apply(kind, self.namespace(), name, body, force).await?;
        if let Applied::Written(object) = &applied {
            let mut written = self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            written.push(events::Written { kind, object: (**object).clone() });
        }
        Ok(applied)
    }

    /// The namespace's Secret, written when the secrets' digests changed. Its values come from `secrets` and the
    /// apps' sensitive literals, and go nowhere else.
    async fn write_secret(
        &self,
        desired: &DesiredState,
        manifests: &Manifests,
        listed: &Listed,
    ) -> Result<(), KubernetesError> {
        let Some(keys) = &manifests.secret else { return Ok(()) };
        let hash = secrets_hash(desired);
        let found = listed.get(&(Kind::Secret, keys.name.clone()));
        if found.is_some_and(|found| spec_hash(found) == Some(hash.as_str())) {
            return Ok(());
        }
        let values = self.secret_values(keys, desired)?;
        let mut labels =
            manifests.objects.first().and_then(|namespace| namespace.metadata().labels.clone()).unwrap_or_default();
        labels.insert(LABEL_NAME.to_owned(), keys.name.clone());
        labels.insert(mapping::LABEL_INSTANCE.to_owned(), keys.name.clone());
        let mut secret = mapping::secret_object(keys, labels, values);
        secret.metadata.annotations = Some(BTreeMap::from([(ANNOTATION_SPEC_HASH.to_owned(), hash)]));
        let body = serde_json::to_value(&secret).unwrap_or(Value::Null);
        match self.send(Kind::Secret, &keys.name, &body, false).await? {
            Applied::Written(_) => Ok(()),
            Applied::Conflict(message) => {
                Err(KubernetesError::Conflict { object: describe(Kind::Secret, self.namespace(), &keys.name), message })
            }
        }
    }

    fn secret_values(
        &self,
        keys: &SecretKeys,
        desired: &DesiredState,
    ) -> Result<BTreeMap<String, String>, KubernetesError> {
        keys.keys
            .iter()
            .map(|(key, source)| {
                let value = match source {
                    SecretSource::Store(name) => self.secrets.get(name).map_err(|source| {
                        KubernetesError::MissingSecret { name: name.clone(), app: apps_reading(desired, name), source }
                    })?,
                    SecretSource::Literal { app, variable } => containers(desired)
                        .find(|(name, _)| name == app)
                        .and_then(|(_, container)| container.env.get(variable))
                        .and_then(|value| value.container_value(|_| Err(())).ok())
                        .unwrap_or_default(),
                };
                Ok((key.clone(), value))
            })
            .collect()
    }

    /// Writes an app's objects whose spec hash changed (all of them for a repair) and, when its Deployment was
    /// written, awaits the rollout without holding `slot`; a rollout that fails is rolled back.
    async fn app(
        &self,
        action: &Action<AppSpec>,
        mut slot: Slot,
        manifests: &Manifests,
        listed: &Listed,
    ) -> Result<ActionResult, KubernetesError> {
        let Some(spec) = &action.desired else { return self.delete_app(&action.name, listed).await };
        let repair = matches!(action.change, Change::Repair { .. });
        // A rule gone: `replicas` comes back from the autoscaler's controller, which owns the field by now.
        let reclaims_replicas = spec.autoscale.is_none()
            && matches!(&action.change, Change::Update { fields } if fields.iter().any(|field| field == "autoscale"));
        let mut deployment = None;
        for object in app_objects(manifests, &action.name) {
            let found = listed.get(&(kind_of(object), object.name().to_owned()));
            if !repair && found.is_some_and(|found| spec_hash(found) == object_hash(object)) {
                continue;
            }
            let mut found = found;
            if let Some(old) = found.filter(|old| selector_changes(object, old)) {
                // A selector cannot change: the Deployment is replaced (the plan said so, see `selector_change`).
                let name = old.metadata.name.as_deref().unwrap_or_default();
                let container = format!("{}/{name}", Kind::Deployment.as_str());
                self.progress.event(&ProgressEvent::app(&action.name, Step::Removing { container }));
                self.cluster.delete(Kind::Deployment, self.namespace(), name).await?;
                found = None;
            }
            self.progress.event(&ProgressEvent::app(&action.name, Step::Creating { container: reference(object) }));
            if let Some(found) = found.filter(|found| leaves_replicas_railyard_owns(object, found)) {
                self.hand_over_replicas(object.name(), found).await?;
            }
            let body = serde_json::to_value(object).unwrap_or(Value::Null);
            let take_back = repair || (reclaims_replicas && kind_of(object) == Kind::Deployment);
            match self.send(kind_of(object), object.name(), &body, take_back).await? {
                Applied::Conflict(message) => return Ok(conflict(object, &message)),
                Applied::Written(written) if kind_of(object) == Kind::Deployment => deployment = Some(written),
                Applied::Written(_) => {}
            }
        }
        // Waiting is not work: the next app's objects are written while this Deployment rolls out.
        slot.release();
        let Some(deployment) = deployment else { return Ok(ActionResult::Done) };
        let replicas = usize::try_from(spec.replicas).unwrap_or(usize::MAX);
        self.progress.event(&ProgressEvent::app(&action.name, Step::WaitingHealthy { replicas }));
        match self.await_rollout(&action.name, *deployment).await? {
            Rollout::Available => {
                self.progress.event(&ProgressEvent::app(&action.name, Step::Healthy));
                Ok(ActionResult::Done)
            }
            Rollout::DeadlineExceeded => self.roll_back(action, listed, "exceeded its progress deadline").await,
            Rollout::TimedOut => self.roll_back(action, listed, "did not become available in time").await,
        }
    }

    /// Makes the Deployment's current replica count co-owned by [`HANDOVER_MANAGER`] before railyard applies it
    /// without the field: a field its only applier leaves out is removed, and the API server would default it to 1
    /// before the autoscaler acts ("Transferring ownership" in the Kubernetes server-side apply docs). The
    /// autoscaler's controller takes the field over at its first scale.
    async fn hand_over_replicas(&self, name: &str, found: &DynamicObject) -> Result<(), KubernetesError> {
        let Some(replicas) = found.data.pointer("/spec/replicas").cloned() else { return Ok(()) };
        let body = serde_json::json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": name },
            "spec": { "replicas": replicas },
        });
        match self.cluster.apply_as(HANDOVER_MANAGER, Kind::Deployment, self.namespace(), name, &body, false).await? {
            Applied::Written(_) => Ok(()),
            Applied::Conflict(message) => {
                Err(KubernetesError::Conflict { object: describe(Kind::Deployment, self.namespace(), name), message })
            }
        }
    }

    /// Whether `app`, which this plan leaves unchanged, is available: once its Deployment as found finishes rolling
    /// out (one the cluster lacks holds up nothing).
    async fn is_available(&self, app: &str, listed: &Listed) -> Result<bool, KubernetesError> {
        let Some(found) = listed.get(&(Kind::Deployment, app.to_owned())) else { return Ok(true) };
        Ok(matches!(self.await_rollout(app, found.clone()).await?, Rollout::Available))
    }

    /// Re-applies the Deployment of the spec that ran before (its last-applied annotation), or, for an app that
    /// had none, reports the failure.
    async fn roll_back(
        &self,
        action: &Action<AppSpec>,
        listed: &Listed,
        what: &str,
    ) -> Result<ActionResult, KubernetesError> {
        let previous: Option<AppSpec> = listed.get(&(Kind::Deployment, action.name.clone())).and_then(last_applied);
        let Some(previous) = previous else {
            return Ok(ActionResult::Failed { error: format!("Deployment {} {what}", action.name) });
        };
        let before = DesiredState { apps: BTreeMap::from([(previous.name.clone(), previous)]), ..self.desired() };
        let manifests = self.manifests(&before).await?;
        if let Some(object) = app_objects(&manifests, &action.name).find(|object| kind_of(object) == Kind::Deployment) {
            let body = serde_json::to_value(object).unwrap_or(Value::Null);
            self.send(Kind::Deployment, object.name(), &body, true).await?;
        }
        Ok(ActionResult::RolledBack {
            reason: format!("Deployment {} {what}; the previous spec was applied again", action.name),
        })
    }

    async fn await_rollout(&self, name: &str, written: DynamicObject) -> Result<Rollout, KubernetesError> {
        let deadline = Instant::now() + self.settings.rollout_timeout;
        let mut current = written;
        loop {
            match health(&current) {
                HealthState::Healthy => return Ok(Rollout::Available),
                HealthState::Unhealthy => return Ok(Rollout::DeadlineExceeded),
                HealthState::Starting | HealthState::None => {}
            }
            if Instant::now() >= deadline {
                return Ok(Rollout::TimedOut);
            }
            tokio::time::sleep(self.settings.poll_interval.min(Duration::from_secs(5))).await;
            match self.cluster.deployment(self.namespace(), name).await? {
                Some(found) => current = found,
                None => return Ok(Rollout::TimedOut),
            }
        }
    }

    /// Deletes an app's Deployment, Service and autoscaler, and its claims that say `deleteWithApp`.
    async fn delete_app(&self, app: &str, listed: &Listed) -> Result<ActionResult, KubernetesError> {
        for ((kind, name), object) in listed.iter().rev() {
            let of_app = matches!(kind, Kind::Deployment | Kind::Service | Kind::HorizontalPodAutoscaler)
                || (*kind == Kind::PersistentVolumeClaim && deleted_with_app(object));
            if of_app && label_of(object, LABEL_NAME) == Some(app) {
                self.progress
                    .event(&ProgressEvent::app(app, Step::Removing { container: format!("{}/{name}", kind.as_str()) }));
                self.cluster.delete(*kind, self.namespace(), name).await?;
            }
        }
        Ok(ActionResult::Done)
    }

    async fn domain(
        &self,
        action: &Action<DomainSpec>,
        manifests: &Manifests,
        listed: &Listed,
    ) -> Result<ActionResult, KubernetesError> {
        if action.change.kind() == ChangeKind::Delete {
            let found = listed.iter().find(|((kind, _), object)| {
                *kind == Kind::Ingress && last_applied::<DomainSpec>(object).is_some_and(|d| d.host == action.name)
            });
            if let Some(((_, name), _)) = found {
                self.cluster.delete(Kind::Ingress, self.namespace(), name).await?;
            }
            return Ok(ActionResult::Done);
        }
        let repair = matches!(action.change, Change::Repair { .. });
        let ingress = manifests.objects.iter().find(|object| {
            kind_of(object) == Kind::Ingress
                && object_last_applied::<DomainSpec>(object).is_some_and(|d| d.host == action.name)
        });
        let Some(ingress) = ingress else { return Ok(ActionResult::Done) };
        Ok(match self.write(ingress, listed, repair).await? {
            None | Some(Applied::Written(_)) => ActionResult::Done,
            Some(Applied::Conflict(message)) => conflict(ingress, &message),
        })
    }

    /// One Job's action: a run (created or attached to, awaited, recorded), its CronJob written, or everything of
    /// it deleted.
    async fn job(
        &self,
        action: &Action<JobSpec>,
        mut slot: Slot,
        work: &Work<'_>,
    ) -> Result<ActionResult, KubernetesError> {
        let Some(spec) = &action.desired else { return self.delete_job(&action.name, work).await };
        if let Some(why) = work.manifests.refused_jobs.get(&action.name) {
            return Ok(ActionResult::Failed { error: why.clone() });
        }
        // Its volumes' claims first: a hook may run before the app that declares the volume was ever applied.
        let claims = work.manifests.objects.iter().filter(|object| {
            matches!(object, Object::PersistentVolumeClaim(_))
                && spec.container.volumes.iter().any(|volume| volume.name == object.name())
        });
        for claim in claims {
            if let Some(Applied::Conflict(message)) = self.write(claim, work.listed, false).await? {
                return Ok(conflict(claim, &message));
            }
        }
        let object = work.manifests.objects.iter().find(|object| {
            matches!(object, Object::Job(_) | Object::CronJob(_))
                && object.metadata().labels.as_ref().and_then(|labels| labels.get(LABEL_JOB)) == Some(&action.name)
        });
        let Some(object) = object else { return Ok(ActionResult::Done) };
        match (action.change.kind(), object) {
            (ChangeKind::Run, Object::Job(_)) => {
                slot.release();
                self.run_job(spec, object, work).await
            }
            (ChangeKind::Create | ChangeKind::Update, Object::CronJob(_)) => {
                self.progress.event(&ProgressEvent {
                    kind: ObjectKind::Job,
                    name: action.name.clone(),
                    step: Step::Creating { container: reference(object) },
                });
                Ok(match self.write(object, work.listed, false).await? {
                    Some(Applied::Conflict(message)) => conflict(object, &message),
                    _ => ActionResult::Done,
                })
            }
            _ => Ok(ActionResult::Done),
        }
    }

    /// Runs the Job `object` of `spec` to its end: a Job of that name still active (a restart in the middle of a
    /// run) is waited for rather than created again, and one that completed before the restart is taken as run.
    async fn run_job(&self, spec: &JobSpec, object: &Object, work: &Work<'_>) -> Result<ActionResult, KubernetesError> {
        let name = object.name();
        let hash = spec.spec_hash();
        let recorded = work.records.lock().await.get(&spec.name).cloned();
        let found = self.cluster.get(Kind::Job, self.namespace(), name).await?;
        let tell =
            |step: Step| self.progress.event(&ProgressEvent { kind: ObjectKind::Job, name: spec.name.clone(), step });
        let start = match found {
            Some(found) if job_state(&found) == super::jobs::JobState::Active => {
                tell(Step::Starting { container: format!("Job/{name}") });
                Start::Attach(found)
            }
            Some(found)
                if job_state(&found) == super::jobs::JobState::Succeeded && recorded.as_deref() != Some(&hash) =>
            {
                Start::Finished(found)
            }
            _ => {
                tell(Step::Creating { container: format!("Job/{name}") });
                Start::Create(serde_json::to_value(object).unwrap_or(Value::Null))
            }
        };
        let runner = self.runner();
        let redactor = ResolvedEnv::redactor(&spec.container, self.secrets);
        let run = runner.run(spec, name, start, JobTrigger::Apply, &redactor).await?;
        let failure = run.failure();
        if run.succeeded() {
            let mut records = work.records.lock().await;
            set_record(&mut records, &spec.name, Some(spec));
            runner.write_records(&records).await?;
        }
        self.progress.job_finished(&run);
        work.runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(run);
        Ok(match failure {
            Some(error) => ActionResult::Failed { error },
            None => ActionResult::Done,
        })
    }

    fn runner(&self) -> Runner<'_> {
        Runner {
            cluster: self.cluster,
            env: &self.plan.env,
            poll_interval: self.settings.poll_interval,
            force: self.settings.force || self.plan.platform.force,
        }
    }

    /// Deletes a Job git no longer declares: its CronJob, its Jobs (their pods go with them) and its record.
    async fn delete_job(&self, job: &str, work: &Work<'_>) -> Result<ActionResult, KubernetesError> {
        for ((kind, name), object) in work.listed.iter().rev() {
            let of_job = object.metadata.labels.as_ref().and_then(|labels| labels.get(LABEL_JOB)).map(String::as_str)
                == Some(job);
            if matches!(kind, Kind::Job | Kind::CronJob) && of_job {
                self.progress.event(&ProgressEvent {
                    kind: ObjectKind::Job,
                    name: job.to_owned(),
                    step: Step::Removing { container: format!("{}/{name}", kind.as_str()) },
                });
                self.cluster.delete(*kind, self.namespace(), name).await?;
            }
        }
        let mut records = work.records.lock().await;
        if records.contains_key(job) {
            set_record(&mut records, job, None);
            self.runner().write_records(&records).await?;
        }
        Ok(ActionResult::Done)
    }

    /// Deletes railyard's objects of the environment that the manifests no longer hold (claims only with
    /// `deleteWithApp`).
    async fn prune(&self, manifests: &Manifests, listed: &Listed) -> Result<(), KubernetesError> {
        let mut kept: BTreeSet<(Kind, String)> =
            manifests.objects.iter().map(|object| (kind_of(object), object.name().to_owned())).collect();
        if let Some(keys) = &manifests.secret {
            kept.insert((Kind::Secret, keys.name.clone()));
        }
        for ((kind, name), object) in listed.iter().rev() {
            // A Job ends by itself (and goes after its TTL), the record outlives every Job: neither is pruned.
            let prunable = !matches!(kind, Kind::Namespace | Kind::Job | Kind::ConfigMap)
                && (*kind != Kind::PersistentVolumeClaim || deleted_with_app(object));
            if prunable && !kept.contains(&(*kind, name.clone())) {
                self.cluster.delete(*kind, self.namespace(), name).await?;
            }
        }
        Ok(())
    }
}

/// Whether `object` is a Deployment whose selector differs from the one found (which the API server refuses to
/// change).
fn selector_changes(object: &Object, found: &DynamicObject) -> bool {
    let Object::Deployment(deployment) = object else { return false };
    let wanted = serde_json::to_value(&deployment.spec.selector.match_labels).unwrap_or(Value::Null);
    found.data.pointer("/spec/selector/matchLabels").is_some_and(|has| *has != wanted)
}

/// The field manager that keeps a Deployment's replica count while railyard hands it to an autoscaler.
pub const HANDOVER_MANAGER: &str = "railyard-handover";

/// Whether `object` is a Deployment that leaves `spec.replicas` out (an autoscaler owns the count) while the one
/// found has it from railyard's own apply.
fn leaves_replicas_railyard_owns(object: &Object, found: &DynamicObject) -> bool {
    let Object::Deployment(deployment) = object else { return false };
    deployment.spec.replicas.is_none()
        && found.metadata.managed_fields.iter().flatten().any(|entry| {
            entry.manager.as_deref() == Some(mapping::MANAGER)
                && entry.fields_v1.as_ref().is_some_and(|fields| fields.0.pointer("/f:spec/f:replicas").is_some())
        })
}

fn is_environment_object(object: &Object) -> bool {
    matches!(object, Object::Namespace(_) | Object::NetworkPolicy(_))
}

/// The objects of one app (claims, Deployment, Service, autoscaler), in apply order.
fn app_objects<'m>(manifests: &'m Manifests, app: &'m str) -> impl Iterator<Item = &'m Object> + 'm {
    manifests.objects.iter().filter(move |object| {
        !is_environment_object(object)
            && !matches!(object, Object::Ingress(_) | Object::Job(_) | Object::CronJob(_))
            && object.metadata().labels.as_ref().and_then(|labels| labels.get(LABEL_NAME)).map(String::as_str)
                == Some(app)
    })
}

fn kind_of(object: &Object) -> Kind {
    match object {
        Object::Namespace(_) => Kind::Namespace,
        Object::NetworkPolicy(_) => Kind::NetworkPolicy,
        Object::PersistentVolumeClaim(_) => Kind::PersistentVolumeClaim,
        Object::Deployment(_) => Kind::Deployment,
        Object::Service(_) => Kind::Service,
        Object::HorizontalPodAutoscaler(_) => Kind::HorizontalPodAutoscaler,
        Object::Ingress(_) => Kind::Ingress,
        Object::Job(_) => Kind::Job,
        Object::CronJob(_) => Kind::CronJob,
    }
}

/// `Deployment/web`, for progress.
fn reference(object: &Object) -> String {
    format!("{}/{}", object.kind(), object.name())
}

fn conflict(object: &Object, message: &str) -> ActionResult {
    ActionResult::Failed {
        error: format!(
            "{} {}: {message}; another field manager changed it: undo that change, or set `sync: {{ force: true }}` \
             in the Project to take the fields over",
            object.kind(),
            object.name()
        ),
    }
}

fn spec_hash(found: &DynamicObject) -> Option<&str> {
    found.metadata.annotations.as_ref()?.get(ANNOTATION_SPEC_HASH).map(String::as_str)
}

fn object_hash(object: &Object) -> Option<&str> {
    object.metadata().annotations.as_ref()?.get(ANNOTATION_SPEC_HASH).map(String::as_str)
}

fn object_last_applied<T: serde::de::DeserializeOwned>(object: &Object) -> Option<T> {
    let text = object.metadata().annotations.as_ref()?.get(mapping::ANNOTATION_LAST_APPLIED)?;
    serde_json::from_str(text).ok()
}

fn label_of<'o>(object: &'o DynamicObject, key: &str) -> Option<&'o str> {
    object.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// Names the Secret's content without holding a value: the keyed digests railyard keeps of every secret value
/// (redacted forms), so that a rotated secret writes the Secret again.
fn secrets_hash(desired: &DesiredState) -> String {
    // An `EnvSpec` serialises redacted: sensitive literals and secrets as their digests.
    let redacted: Vec<(&str, &str, &crate::model::desired::EnvSpec)> = containers(desired)
        .flat_map(|(name, container)| {
            container.env.iter().map(move |(variable, value)| (name, variable.as_str(), value))
        })
        .filter(|(_, _, value)| !matches!(value, crate::model::desired::EnvSpec::Value(_)))
        .collect();
    hex::encode(&Sha256::digest(serde_json::to_vec(&redacted).unwrap_or_default())[..8])
}

fn apps_reading(desired: &DesiredState, secret: &str) -> String {
    let apps: Vec<&str> = containers(desired)
        .filter(|(_, container)| {
            container.env.values().any(
                |value| matches!(value, crate::model::desired::EnvSpec::Secret { secret: name, .. } if name == secret),
            )
        })
        .map(|(name, _)| name)
        .collect();
    apps.join(", ")
}

/// The containers of the apps, then of the Jobs, by name (names of apps and Jobs never collide).
fn containers(desired: &DesiredState) -> impl Iterator<Item = (&str, &crate::model::ContainerSpec)> {
    let apps = desired.apps.values().map(|app| (app.name.as_str(), &app.container));
    apps.chain(desired.jobs.values().map(|job| (job.name.as_str(), &job.container)))
}
