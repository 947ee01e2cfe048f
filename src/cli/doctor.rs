//! `railyard doctor`: what a backend needs, checked before its first use, with what to fix.

use std::path::PathBuf;
use std::process::ExitCode;

use railyard::backend::kubernetes::KubernetesBackendSettings;
use railyard::backend::kubernetes::doctor::{self, Check, Finding};
use railyard::backend::{self, BackendKind, BackendSettings};

use super::output::EXIT_FAILED;

pub async fn doctor(
    kind: BackendKind,
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
) -> anyhow::Result<ExitCode> {
    let checks = match kind {
        BackendKind::Kubernetes => {
            let settings = KubernetesBackendSettings { kubeconfig, context, ..KubernetesBackendSettings::default() };
            doctor::checkup(&settings).await
        }
        BackendKind::Docker => vec![engine().await],
        BackendKind::Memory => {
            vec![Check { name: "reachable", finding: Finding::Ok("the in-memory backend needs nothing".to_owned()) }]
        }
    };
    for check in &checks {
        println!("{check}");
    }
    Ok(if checks.iter().any(Check::failed) { ExitCode::from(EXIT_FAILED) } else { ExitCode::SUCCESS })
}

/// The Docker Engine answers (Caddy is checked by `plan`, which says when it does not).
async fn engine() -> Check {
    let finding = match backend::connect(BackendKind::Docker, BackendSettings::default()).await {
        Ok(_) => Finding::Ok("the Docker Engine answers".to_owned()),
        Err(error) => Finding::Fail {
            found: error.to_string(),
            fix: "start the Docker Engine, or point DOCKER_HOST at it".to_owned(),
        },
    };
    Check { name: "reachable", finding }
}
