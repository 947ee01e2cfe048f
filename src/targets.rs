//! Where each environment runs: the settings file's `targets` (never git) name a backend, and for Kubernetes a
//! kubeconfig and context, per environment, for every preview (`previews`) and for the rest (`default`, else
//! `--backend`). Environments on the same target share one connection; a target is known by its [`Target::name`]
//! (`docker`, `kubernetes/prod`), which the pages, the API, the metrics and the store use. Pure.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::backend::BackendKind;

/// The key of the settings' `targets` map for every preview.
pub const PREVIEWS: &str = "previews";
/// The key for every environment not named otherwise.
pub const DEFAULT: &str = "default";

/// One place environments run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Target {
    /// `docker` (this host's engine) or `kubernetes`.
    #[schemars(with = "TargetBackend")]
    pub backend: BackendKind,
    /// Kubernetes only: the kubeconfig file (default: KUBECONFIG, ~/.kube/config, the service account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubernetes only: the kubeconfig's context (default: its current context). It names the target:
    /// `kubernetes/CONTEXT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

// The schema's view of `BackendKind` in a target.
/// Where an environment's apps run.
#[derive(JsonSchema)]
#[schemars(rename_all = "camelCase")]
#[allow(dead_code)]
enum TargetBackend {
    Docker,
    Kubernetes,
}

impl Target {
    /// A target of `backend` with its defaults.
    pub fn of(backend: BackendKind) -> Target {
        Target { backend, kubeconfig: None, context: None }
    }

    /// The move an environment that last ran on `self` makes to `next`, when they are two targets.
    pub fn moving_to(&self, next: &Target) -> Option<crate::plan::Move> {
        (self.name() != next.name()).then(|| crate::plan::Move { from: self.name(), to: next.name() })
    }

    /// How the target is shown and stored: the backend, and the context when one is named (`kubernetes/prod`).
    pub fn name(&self) -> String {
        match &self.context {
            Some(context) => format!("{}/{context}", self.backend.as_str()),
            None => self.backend.as_str().to_owned(),
        }
    }
}

/// Why the settings' `targets` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "target `{key}` sets `{field}`, which a Docker target does not take (one host, one engine); remove it or set \
         `backend: kubernetes`"
    )]
    KubernetesOnly { key: String, field: &'static str },
    #[error(
        "targets `{first}` and `{second}` both name `{name}` with different kubeconfig files; give each cluster its \
         own context name"
    )]
    SameNameTwoClusters { first: String, second: String, name: String },
}

/// Every environment's target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    default: Target,
    previews: Option<Target>,
    /// By environment name.
    named: BTreeMap<String, Target>,
}

impl Targets {
    /// Every environment on `default`.
    pub fn single(default: Target) -> Targets {
        Targets { default, previews: None, named: BTreeMap::new() }
    }

    /// The settings' `targets` over `fallback` (from `--backend`) for what they do not name.
    pub fn from_settings(settings: &BTreeMap<String, Target>, fallback: Target) -> Result<Targets, TargetError> {
        for (key, target) in settings {
            if target.backend == BackendKind::Docker {
                let field = [("kubeconfig", target.kubeconfig.is_some()), ("context", target.context.is_some())]
                    .into_iter()
                    .find_map(|(field, set)| set.then_some(field));
                if let Some(field) = field {
                    return Err(TargetError::KubernetesOnly { key: key.clone(), field });
                }
            }
        }
        let mut by_name: BTreeMap<String, (&String, &Target)> = BTreeMap::new();
        for (key, target) in settings {
            if let Some((first, other)) = by_name.insert(target.name(), (key, target))
                && other.kubeconfig != target.kubeconfig
            {
                return Err(TargetError::SameNameTwoClusters {
                    first: first.clone(),
                    second: key.clone(),
                    name: target.name(),
                });
            }
        }
        let mut named = settings.clone();
        let default = named.remove(DEFAULT).unwrap_or(fallback);
        let previews = named.remove(PREVIEWS);
        Ok(Targets { default, previews, named })
    }

    /// Where environment `env` runs: its own entry, else `previews` for a preview, else the default.
    pub fn of(&self, env: &str) -> &Target {
        if let Some(target) = self.named.get(env) {
            return target;
        }
        match &self.previews {
            Some(previews) if crate::model::preview::is_preview_name(env) => previews,
            _ => &self.default,
        }
    }

    /// Every distinct target, by name.
    pub fn all(&self) -> BTreeMap<String, &Target> {
        std::iter::once(&self.default)
            .chain(&self.previews)
            .chain(self.named.values())
            .map(|target| (target.name(), target))
            .collect()
    }

    /// The target of environments the settings do not name.
    pub fn default_target(&self) -> &Target {
        &self.default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubernetes(context: &str) -> Target {
        Target { backend: BackendKind::Kubernetes, kubeconfig: None, context: Some(context.to_owned()) }
    }

    fn settings(entries: &[(&str, Target)]) -> BTreeMap<String, Target> {
        entries.iter().map(|(key, target)| ((*key).to_owned(), target.clone())).collect()
    }

    #[test]
    fn an_environment_runs_on_its_own_target_a_preview_on_the_previews_and_the_rest_on_the_default() {
        let targets = Targets::from_settings(
            &settings(&[
                ("production", kubernetes("prod")),
                ("staging", kubernetes("staging")),
                (PREVIEWS, Target::of(BackendKind::Docker)),
            ]),
            Target::of(BackendKind::Kubernetes),
        )
        .expect("valid");
        assert_eq!(targets.of("production").name(), "kubernetes/prod");
        assert_eq!(targets.of("staging").name(), "kubernetes/staging");
        assert_eq!(targets.of("pr-7").name(), "docker");
        assert_eq!(targets.of("branch-feature-x").name(), "docker");
        assert_eq!(targets.of("qa").name(), "kubernetes", "the rest on --backend's");
        let names: Vec<String> = targets.all().into_keys().collect();
        assert_eq!(names, ["docker", "kubernetes", "kubernetes/prod", "kubernetes/staging"]);
    }

    #[test]
    fn a_default_entry_wins_over_the_flag_and_without_targets_everything_runs_on_the_flags() {
        let targets =
            Targets::from_settings(&settings(&[(DEFAULT, kubernetes("prod"))]), Target::of(BackendKind::Docker))
                .expect("valid");
        assert_eq!(targets.of("pr-1").name(), "kubernetes/prod");
        let single = Targets::single(Target::of(BackendKind::Docker));
        assert_eq!(single.of("production").name(), "docker");
        assert_eq!(single.all().len(), 1);
    }

    #[test]
    fn kubernetes_fields_on_docker_and_one_name_for_two_clusters_are_refused() {
        let docker_with_context = Target { context: Some("prod".to_owned()), ..Target::of(BackendKind::Docker) };
        let refused =
            Targets::from_settings(&settings(&[("staging", docker_with_context)]), Target::of(BackendKind::Docker));
        assert_eq!(refused, Err(TargetError::KubernetesOnly { key: "staging".to_owned(), field: "context" }));
        let other_file = Target { kubeconfig: Some(PathBuf::from("/etc/other")), ..kubernetes("prod") };
        let twice = Targets::from_settings(
            &settings(&[("production", kubernetes("prod")), ("staging", other_file)]),
            Target::of(BackendKind::Docker),
        );
        let message = twice.err().map(|error| error.to_string()).unwrap_or_default();
        assert!(message.contains("both name `kubernetes/prod`"), "{message}");
    }
}
