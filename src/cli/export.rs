//! `railyard schema` and `railyard export`: the kinds' JSON Schemas and the configuration in other tools' formats.

use std::path::Path;
use std::process::ExitCode;

use railyard::backend::kubernetes::mapping::KubernetesSettings;
use railyard::model::kinds::Kind;
use railyard::model::{Environment, schema};

use super::output::{report_invalid, write_stdout};
use super::target::{DEFAULT_TRACKED_BRANCH, environment_named, load};

/// Prints the schema of one kind, of all kinds, or of the settings file.
pub fn schema(kind: Option<Kind>, settings: bool) -> anyhow::Result<ExitCode> {
    let text = match kind {
        _ if settings => railyard::settings::schema_json(),
        Some(kind) => schema::schema_json(kind),
        None => all_schemas()?,
    };
    write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn all_schemas() -> anyhow::Result<String> {
    let all: serde_json::Map<String, serde_json::Value> = Kind::ALL
        .into_iter()
        .map(|kind| Ok((kind.to_string(), serde_json::from_str(&schema::schema_json(kind))?)))
        .collect::<Result<_, serde_json::Error>>()?;
    Ok(serde_json::to_string_pretty(&all)? + "\n")
}

/// Prints production as a docker-compose file.
pub fn compose(dir: &Path) -> anyhow::Result<ExitCode> {
    Ok(match load(dir)? {
        Ok(config) => {
            let desired = config.desired(&Environment::production(config.project_name()), None);
            write_stdout(&railyard::export::compose_yaml(&desired))?;
            ExitCode::SUCCESS
        }
        Err(invalid) => report_invalid(&invalid),
    })
}

/// Prints environment `env` as Kubernetes manifests.
pub fn kubernetes(dir: &Path, env: &str) -> anyhow::Result<ExitCode> {
    Ok(match load(dir)? {
        Ok(config) => {
            let environment = environment_named(&config, &config, DEFAULT_TRACKED_BRANCH, env)?;
            let desired = config.desired(&environment, None);
            // On stderr, so that the manifests on stdout still pipe into kubectl.
            for warning in &desired.warnings {
                eprintln!("warning: {warning}");
            }
            let settings = KubernetesSettings::from_proxy(config.project.doc.proxy.as_ref());
            write_stdout(&railyard::export::kubernetes_yaml(&desired, &settings))?;
            ExitCode::SUCCESS
        }
        Err(invalid) => report_invalid(&invalid),
    })
}
