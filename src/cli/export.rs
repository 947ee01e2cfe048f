//! `railyard schema` and `railyard export`: the kinds' JSON Schemas and the configuration in other tools' formats.

use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use railyard::backend::kubernetes::images;
use railyard::backend::kubernetes::mapping::{self, KubernetesSettings};
use railyard::builder::docker::RegistrySettings;
use railyard::model::kinds::Kind;
use railyard::model::{Environment, schema};

use super::output::{EXIT_FAILED, report_invalid, write_stdout};
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

/// Prints production as a docker-compose file, or writes it to `output`; `build:` contexts are written as the
/// repository's path seen from where the file is read (the output's folder, or the current one for stdout).
pub fn compose(dir: &Path, output: Option<&Path>) -> anyhow::Result<ExitCode> {
    Ok(match load(dir)? {
        Ok(config) => {
            let desired = config.desired(&Environment::production(config.project_name()), None);
            let folder = output.and_then(Path::parent).filter(|parent| !parent.as_os_str().is_empty());
            let repository = relative_path(&absolute(folder.unwrap_or(Path::new(".")))?, &absolute(dir)?);
            let text = railyard::export::compose_yaml_at(&desired, &repository);
            match output {
                Some(file) => std::fs::write(file, text)
                    .with_context(|| format!("cannot write {}; check that its folder is writable", file.display()))?,
                None => write_stdout(&text)?,
            }
            ExitCode::SUCCESS
        }
        Err(invalid) => report_invalid(&invalid),
    })
}

/// `--image-registry` (and its credentials file) as the registry settings, for production and previews alike.
pub fn image_registry(address: String, credentials: Option<PathBuf>) -> RegistrySettings {
    RegistrySettings { address, credentials_file: credentials.clone(), preview_credentials_file: credentials }
}

/// Prints environment `env` as Kubernetes manifests; an App that builds its image runs the digest-pinned reference
/// `registry` holds of it.
pub async fn kubernetes(dir: &Path, env: &str, registry: Option<RegistrySettings>) -> anyhow::Result<ExitCode> {
    let config = match load(dir)? {
        Ok(config) => config,
        Err(invalid) => return Ok(report_invalid(&invalid)),
    };
    let environment = environment_named(&config, &config, DEFAULT_TRACKED_BRANCH, env)?;
    let desired = config.desired(&environment, None);
    // On stderr, so that the manifests on stdout still pipe into kubectl.
    for warning in &desired.warnings {
        eprintln!("warning: {warning}");
    }
    let settings = KubernetesSettings::from_proxy(config.project.doc.proxy.as_ref());
    let mut manifests = mapping::manifests(&desired, &settings);
    let built = images::built_images(&manifests);
    if registry.is_none() && !built.is_empty() {
        let apps: Vec<String> = images::owners(&built).into_iter().map(|app| format!("`{app}`")).collect();
        eprintln!(
            "error: App {} builds its image, and a cluster pulls images from a registry: give --image-registry \
             ADDRESS (where railyard pushes built images: build.registry of the settings file) so that the manifests \
             run the image pushed there, pinned by digest",
            apps.join(", ")
        );
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    if let Err(error) = images::pin(&mut manifests, registry.as_ref(), environment.preview.is_some()).await {
        eprintln!("error: {error}");
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    write_stdout(&railyard::export::kubernetes_yaml_of(&desired, &manifests))?;
    Ok(ExitCode::SUCCESS)
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(path)
        .with_context(|| format!("cannot find the folder {}; create it or name another", path.display()))
}

/// The path that leads from folder `from` to `to` (both absolute, canonical): `../repo`, `.`.
fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path: PathBuf = from[common..].iter().map(|_| Component::ParentDir).collect();
    path.extend(&to[common..]);
    if path.as_os_str().is_empty() { PathBuf::from(".") } else { path }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_is_reached_from_the_output_folder() {
        let path = |text: &str| PathBuf::from(text);
        assert_eq!(relative_path(Path::new("/work/repo"), Path::new("/work/repo")), path("."));
        assert_eq!(relative_path(Path::new("/work/out"), Path::new("/work/repo")), path("../repo"));
        assert_eq!(relative_path(Path::new("/work"), Path::new("/work/repo/cfg")), path("repo/cfg"));
        assert_eq!(relative_path(Path::new("/a/b/c"), Path::new("/d")), path("../../../d"));
    }
}
