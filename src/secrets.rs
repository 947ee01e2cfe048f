//! The secret store: values for `{ secret: NAME }`, read at apply time from `RAILYARD_SECRET_<NAME>` or from a file
//! `<dir>/<NAME>`, never from git. Values are only ever handed to the container that needs them.

use std::path::PathBuf;

use crate::model::DesiredState;
use crate::model::desired::EnvSpec;
use crate::model::redact::digest;

/// Where secret values come from.
#[derive(Debug, Clone, Default)]
pub struct SecretStore {
    /// A directory holding one file per secret, named like the secret (as Docker and Kubernetes mount them).
    pub dir: Option<PathBuf>,
}

/// A secret that the config names but the store lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret `{name}` is not set; export {variable}=... or write it to {file}")]
pub struct MissingSecret {
    pub name: String,
    pub variable: String,
    pub file: String,
}

impl SecretStore {
    /// The value of secret `name`.
    pub fn get(&self, name: &str) -> Result<String, MissingSecret> {
        let variable = crate::export::secret_variable(name);
        if let Ok(value) = std::env::var(&variable) {
            return Ok(value);
        }
        let file = self.dir.as_ref().map(|dir| dir.join(name));
        if let Some(value) = file.as_ref().and_then(|path| std::fs::read_to_string(path).ok()) {
            return Ok(value.trim_end_matches('\n').to_owned());
        }
        Err(MissingSecret {
            name: name.to_owned(),
            variable,
            file: file.map_or_else(|| "<--secrets-dir>/".to_owned() + name, |path| path.display().to_string()),
        })
    }

    /// Fills in the digest of every secret the desired state uses, so that a rotated secret shows as a change and
    /// replaces the containers. Missing secrets keep no digest; applying the app reports them.
    pub fn resolve_digests(&self, desired: &mut DesiredState) {
        for app in desired.apps.values_mut() {
            for value in app.container.env.values_mut() {
                if let EnvSpec::Secret { secret, sha256 } = value {
                    *sha256 = self.get(secret).ok().map(|value| digest(&value));
                }
            }
        }
    }
}
