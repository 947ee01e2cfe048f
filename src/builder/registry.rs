//! The registry a cluster pulls built images from (`build.registry` of the settings file, never git): pushing an
//! image railyard built there through the Docker Engine (bollard), and finding the digest a pushed image has, either
//! from the engine (what it pushed) or from the registry's own HTTP API (what the registry holds, for the Kubernetes
//! backend and `export kubernetes`, which pin every built image as `<address>/<project>/<app>@sha256:...`).
//!
//! A content tag `railyard.local/<project>/<app>:<hash>` is pushed as `<address>/<project>/<app>:<hash>`. A preview
//! pushes only with the previews' own credentials file, never with production's. Credentials never reach a log, an
//! error message or a label: they live in this module's [`Credentials`], whose `Debug` hides them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{PushImageOptions, TagImageOptions};
use futures_util::StreamExt;
use futures_util::future::join_all;

use super::BuildError;
use super::docker::RegistrySettings;
use crate::backend::{Progress, ProgressEvent, Step};
use crate::model::Environment;
use crate::model::build::BUILT_IMAGE_REGISTRY;
use crate::plan::BuildStep;

/// The manifest media types railyard asks the registry for, so that the digest it answers is the one the engine
/// pushed (a registry asked for none may answer a converted, older manifest of another digest).
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
                              application/vnd.docker.distribution.manifest.list.v2+json, \
                              application/vnd.oci.image.manifest.v1+json, \
                              application/vnd.docker.distribution.manifest.v2+json";
/// How long one request to a registry may take.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong asking a registry about an image; the message names the image, the registry and what to do.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "the registry {registry} has no image {reference}; build and push it first (`railyard sync` builds and \
         pushes it when the environment runs on a target with build.registry set)"
    )]
    NotPushed { registry: String, reference: String },
    #[error("the registry {registry} cannot be reached ({message}); check its address and that it runs")]
    Unreachable { registry: String, message: String },
    #[error(
        "the registry {registry} refused to tell the digest of {reference} ({status}); check the credentials file \
         of build.registry in the settings file and that its user may pull {reference}"
    )]
    Refused { registry: String, reference: String, status: String },
    #[error("the registry {registry} gave no digest for {reference}; check that it is a Docker Registry v2 API")]
    NoDigest { registry: String, reference: String },
    #[error("`{image}` is not an image railyard builds (`{BUILT_IMAGE_REGISTRY}/<project>/<app>:<tag>`)")]
    NotBuilt { image: String },
    #[error("{0}")]
    Credentials(#[from] CredentialsError),
}

/// A registry credentials file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "the registry credentials file {} cannot be used: {reason}; it must hold one line `user:password` (settings \
     file, build.registry)",
    .file.display()
)]
pub struct CredentialsError {
    pub file: PathBuf,
    pub reason: String,
}

/// A user and password for a registry, read from a file. `Debug` shows the user only.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("password", &"<redacted>").finish()
    }
}

impl Credentials {
    /// Reads `user:password` (one line; surrounding whitespace ignored) from `file`.
    pub fn read(file: &Path) -> Result<Credentials, CredentialsError> {
        let unusable = |reason: String| CredentialsError { file: file.to_owned(), reason };
        let text = std::fs::read_to_string(file).map_err(|error| unusable(error.to_string()))?;
        let (user, password) =
            text.trim().split_once(':').ok_or_else(|| unusable("it holds no `user:password`".to_owned()))?;
        if user.is_empty() || password.is_empty() || password.contains('\n') {
            return Err(unusable("the user or the password is empty, or it holds several lines".to_owned()));
        }
        Ok(Credentials { user: user.to_owned(), password: password.to_owned() })
    }

    /// `text` with the password replaced, for messages that might quote what a server said.
    fn redact(&self, text: &str) -> String {
        text.replace(&self.password, "<redacted>")
    }
}

/// The credentials an environment's pushes and pulls go with: a preview's only from the previews' own file (none
/// when it is not set), any other environment's from production's file.
pub fn credentials_for(registry: &RegistrySettings, preview: bool) -> Result<Option<Credentials>, CredentialsError> {
    let file = if preview { &registry.preview_credentials_file } else { &registry.credentials_file };
    file.as_deref().map(Credentials::read).transpose()
}

/// Where a content tag goes in `registry`: the repository (`<address>/<project>/<app>`) and the tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub repository: String,
    pub tag: String,
}

impl Pushed {
    /// `image` (`railyard.local/<project>/<app>:<tag>`) as pushed to `registry`; `None` for another image.
    pub fn of(registry: &RegistrySettings, image: &str) -> Option<Pushed> {
        let path = image.strip_prefix(BUILT_IMAGE_REGISTRY)?.strip_prefix('/')?;
        let (name, tag) = path.rsplit_once(':').filter(|(name, tag)| !name.is_empty() && !tag.contains('/'))?;
        let address = registry.address.trim_end_matches('/');
        Some(Pushed { repository: format!("{address}/{name}"), tag: tag.to_owned() })
    }

    /// `<repository>:<tag>`.
    pub fn tagged(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }

    /// `<repository>@<digest>`.
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}@{digest}", self.repository)
    }

    /// The registry's host (and port), and the repository's name in it.
    fn host_and_name(&self) -> (&str, &str) {
        self.repository.split_once('/').unwrap_or((&self.repository, ""))
    }
}

fn not_built(registry: &RegistrySettings, app: &str, image: &str) -> BuildError {
    BuildError::Push {
        app: app.to_owned(),
        registry: registry.address.clone(),
        message: format!("`{image}` is not an image railyard built"),
    }
}

/// Pushes the image `step` built to `registry`, returning the digest-pinned reference (`<registry>/<project>/<app>@sha256:...`).
pub async fn push(
    docker: &Docker,
    registry: &RegistrySettings,
    env: &Environment,
    step: &BuildStep,
    progress: &dyn Progress,
) -> Result<String, BuildError> {
    let failed =
        |message: String| BuildError::Push { app: step.app.clone(), registry: registry.address.clone(), message };
    let target = Pushed::of(registry, &step.image).ok_or_else(|| not_built(registry, &step.app, &step.image))?;
    let credentials = credentials_for(registry, step.limits.preview || env.preview.is_some())
        .map_err(|error| failed(error.to_string()))?;
    let tag = TagImageOptions { repo: Some(target.repository.clone()), tag: Some(target.tag.clone()) };
    docker
        .tag_image(&step.image, Some(tag))
        .await
        .map_err(|error| failed(format!("tagging {}: {error}", step.image)))?;
    let auth = credentials.as_ref().map(|credentials| DockerCredentials {
        username: Some(credentials.user.clone()),
        password: Some(credentials.password.clone()),
        serveraddress: Some(target.host_and_name().0.to_owned()),
        ..DockerCredentials::default()
    });
    let redact = |text: String| credentials.as_ref().map_or_else(|| text.clone(), |c| c.redact(&text));
    let options = PushImageOptions { tag: Some(target.tag.clone()), platform: None };
    let mut stream = docker.push_image(&target.repository, Some(options), auth);
    let mut digest = None;
    while let Some(item) = stream.next().await {
        let info = item.map_err(|error| failed(redact(error.to_string())))?;
        let Some(status) = info.status else { continue };
        // Layer progress ("Pushing" with a byte count) would flood the page; what each layer ended as is kept.
        if info.progress_detail.is_none_or(|detail| detail.total.is_none()) {
            let line = format!("push {}: {}", target.tagged(), redact(status.clone()));
            progress.event(&ProgressEvent::app(&step.app, Step::BuildOutput { line }));
        }
        digest = digest.or_else(|| digest_in_status(&status));
    }
    let digest = match digest {
        Some(digest) => digest,
        None => repo_digest(docker, &step.image, &target)
            .await
            .map_err(failed)?
            .ok_or_else(|| failed("the engine reported no digest for the pushed image; push it again".to_owned()))?,
    };
    tracing::info!(app = %step.app, image = %step.image, pushed = %target.pinned(&digest), "image pushed");
    Ok(target.pinned(&digest))
}

/// The digest in the engine's last push status: `<tag>: digest: sha256:<hex> size: <n>`.
fn digest_in_status(status: &str) -> Option<String> {
    let digest = status.split_whitespace().skip_while(|word| *word != "digest:").nth(1)?;
    is_digest(digest).then(|| digest.to_owned())
}

fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The digest of `image` in `target`'s repository, from the local image's RepoDigests (what the engine pushed or
/// pulled); `None` when it holds none for that repository or the image is not on the engine.
async fn repo_digest(docker: &Docker, image: &str, target: &Pushed) -> Result<Option<String>, String> {
    let inspected = match docker.inspect_image(image).await {
        Ok(inspected) => inspected,
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => return Ok(None),
        Err(error) => return Err(format!("inspecting {image}: {error}")),
    };
    let prefix = format!("{}@", target.repository);
    Ok(inspected
        .repo_digests
        .unwrap_or_default()
        .iter()
        .filter_map(|pinned| pinned.strip_prefix(&prefix))
        .find(|digest| is_digest(digest))
        .map(str::to_owned))
}

/// The digest-pinned reference of `image` (a content tag) in `registry`, when it was pushed there.
pub async fn pushed(docker: &Docker, registry: &RegistrySettings, image: &str) -> Result<Option<String>, BuildError> {
    let Some(target) = Pushed::of(registry, image) else { return Ok(None) };
    let digest = repo_digest(docker, image, &target).await.map_err(|message| BuildError::Engine {
        doing: format!("tell whether {image} was pushed to {}", registry.address),
        message,
    })?;
    Ok(digest.map(|digest| target.pinned(&digest)))
}

/// The digest-pinned references of `images` (content tags) as `registry` holds them now, by content tag, asked of
/// the registry's HTTP API with the credentials of a preview or of production (see [`credentials_for`]).
pub async fn resolve(
    registry: &RegistrySettings,
    images: impl IntoIterator<Item = &str>,
    preview: bool,
) -> Result<BTreeMap<String, String>, RegistryError> {
    let credentials = credentials_for(registry, preview)?;
    let client = RegistryClient::new(registry, credentials);
    let mut pinned = BTreeMap::new();
    for image in images {
        let target = Pushed::of(registry, image).ok_or_else(|| RegistryError::NotBuilt { image: image.to_owned() })?;
        let digest = client.manifest_digest(&target).await?;
        pinned.insert(image.to_owned(), target.pinned(&digest));
    }
    Ok(pinned)
}

/// Of `images` (content tags), those `registry` holds now, asked of its HTTP API (`HEAD` of each manifest) with
/// the credentials of a preview or of production: what the engine has locally says nothing of that (an image
/// collected on this host, another host after a failover).
pub async fn present(
    registry: &RegistrySettings,
    images: &[String],
    preview: bool,
) -> Result<BTreeSet<String>, RegistryError> {
    let client = RegistryClient::new(registry, credentials_for(registry, preview)?);
    let checks = images.iter().map(|image| {
        let client = &client;
        async move {
            let target = Pushed::of(registry, image).ok_or_else(|| RegistryError::NotBuilt { image: image.clone() })?;
            match client.manifest_digest(&target).await {
                Ok(_) => Ok(Some(image.clone())),
                Err(RegistryError::NotPushed { .. }) => Ok(None),
                Err(error) => Err(error),
            }
        }
    });
    join_all(checks).await.into_iter().filter_map(Result::transpose).collect()
}

/// Talks to one registry's Docker Registry v2 HTTP API. Loopback registries are spoken to over plain HTTP, as the
/// Docker Engine does; every other over HTTPS.
struct RegistryClient<'r> {
    registry: &'r RegistrySettings,
    credentials: Option<Credentials>,
    http: reqwest::Client,
}

impl<'r> RegistryClient<'r> {
    fn new(registry: &'r RegistrySettings, credentials: Option<Credentials>) -> RegistryClient<'r> {
        let http = reqwest::Client::builder()
            .timeout(REGISTRY_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .unwrap_or_default();
        RegistryClient { registry, credentials, http }
    }

    /// `HEAD /v2/<name>/manifests/<tag>` → `Docker-Content-Digest`, answering a Bearer challenge with a token
    /// asked of the challenge's realm.
    async fn manifest_digest(&self, target: &Pushed) -> Result<String, RegistryError> {
        let (host, name) = target.host_and_name();
        let url = format!("{}://{host}/v2/{name}/manifests/{}", scheme(host), target.tag);
        let mut response = self.head(&url, self.basic()).await?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED
            && let Some(challenge) = bearer_challenge(&response)
        {
            let token = self.token(&challenge, name).await?;
            response = self.head(&url, Some(format!("Bearer {token}"))).await?;
        }
        let reference = target.tagged();
        match response.status() {
            status if status.is_success() => response
                .headers()
                .get("docker-content-digest")
                .and_then(|value| value.to_str().ok())
                .filter(|digest| is_digest(digest))
                .map(str::to_owned)
                .ok_or_else(|| RegistryError::NoDigest { registry: self.registry.address.clone(), reference }),
            reqwest::StatusCode::NOT_FOUND => {
                Err(RegistryError::NotPushed { registry: self.registry.address.clone(), reference })
            }
            status => Err(RegistryError::Refused {
                registry: self.registry.address.clone(),
                reference,
                status: status.to_string(),
            }),
        }
    }

    async fn head(&self, url: &str, authorization: Option<String>) -> Result<reqwest::Response, RegistryError> {
        let mut request = self.http.head(url).header(reqwest::header::ACCEPT, MANIFEST_TYPES);
        if let Some(authorization) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        request.send().await.map_err(|error| self.unreachable(&error))
    }

    fn basic(&self) -> Option<String> {
        use base64::Engine;
        let credentials = self.credentials.as_ref()?;
        let pair = format!("{}:{}", credentials.user, credentials.password);
        Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)))
    }

    /// A pull token for repository `name` from the challenge's realm (token authentication, as Docker Hub, GHCR
    /// and Harbor use).
    async fn token(&self, challenge: &BTreeMap<String, String>, name: &str) -> Result<String, RegistryError> {
        let refused = |status: String| RegistryError::Refused {
            registry: self.registry.address.clone(),
            reference: name.to_owned(),
            status,
        };
        let realm = challenge.get("realm").ok_or_else(|| refused("a Bearer challenge without a realm".to_owned()))?;
        let mut url = url::Url::parse(realm).map_err(|_| refused(format!("a Bearer challenge's realm `{realm}`")))?;
        url.query_pairs_mut().append_pair("scope", &format!("repository:{name}:pull"));
        if let Some(service) = challenge.get("service") {
            url.query_pairs_mut().append_pair("service", service);
        }
        let mut request = self.http.get(url);
        if let Some(credentials) = &self.credentials {
            request = request.basic_auth(&credentials.user, Some(&credentials.password));
        }
        let response = request.send().await.map_err(|error| self.unreachable(&error))?;
        if !response.status().is_success() {
            return Err(refused(format!("the token service answered {}", response.status())));
        }
        let body: serde_json::Value =
            response.json().await.map_err(|_| refused("the token service's answer is not JSON".to_owned()))?;
        ["token", "access_token"]
            .iter()
            .find_map(|field| body.get(field).and_then(serde_json::Value::as_str))
            .map(str::to_owned)
            .ok_or_else(|| refused("the token service gave no token".to_owned()))
    }

    /// The error of a request that got no answer, its innermost cause named (never a URL's credentials: none are in
    /// URLs).
    fn unreachable(&self, error: &reqwest::Error) -> RegistryError {
        let mut cause: &(dyn std::error::Error + 'static) = error;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        RegistryError::Unreachable { registry: self.registry.address.clone(), message: cause.to_string() }
    }
}

/// `http` for a loopback registry (the Docker Engine allows those without TLS), `https` for any other.
fn scheme(host: &str) -> &'static str {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let loopback = name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback { "http" } else { "https" }
}

/// The parameters of a `WWW-Authenticate: Bearer realm="...",service="...",scope="..."` challenge.
fn bearer_challenge(response: &reqwest::Response) -> Option<BTreeMap<String, String>> {
    let header = response.headers().get(reqwest::header::WWW_AUTHENTICATE)?.to_str().ok()?;
    let parameters = header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer "))?;
    Some(challenge_parameters(parameters))
}

/// `key="value",key2="value, with comma"` as a map.
fn challenge_parameters(text: &str) -> BTreeMap<String, String> {
    let mut parameters = BTreeMap::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let (value, remainder) = match after.strip_prefix('"') {
            Some(quoted) => quoted.split_once('"').unwrap_or((quoted, "")),
            None => after.split_once(',').unwrap_or((after, "")),
        };
        parameters.insert(key, value.to_owned());
        rest = remainder.trim_start_matches([',', ' ']);
    }
    parameters
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(address: &str) -> RegistrySettings {
        RegistrySettings { address: address.to_owned(), ..RegistrySettings::default() }
    }

    #[test]
    fn a_content_tag_goes_to_the_project_and_app_repository_of_the_registry() {
        let pushed = Pushed::of(&registry("127.0.0.1:5000/team"), "railyard.local/shop/web:0123abcd").unwrap();
        assert_eq!(pushed.repository, "127.0.0.1:5000/team/shop/web");
        assert_eq!(pushed.tag, "0123abcd");
        assert_eq!(pushed.host_and_name(), ("127.0.0.1:5000", "team/shop/web"));
        assert_eq!(pushed.pinned("sha256:ab"), "127.0.0.1:5000/team/shop/web@sha256:ab");
        assert_eq!(Pushed::of(&registry("r:1"), "ghcr.io/acme/web:1"), None);
        assert_eq!(Pushed::of(&registry("r:1"), "railyard.local/shop/web"), None);
    }

    #[test]
    fn only_loopback_registries_are_spoken_to_without_tls() {
        for host in ["127.0.0.1:5000", "localhost:5000", "[::1]:5000", "127.1.2.3"] {
            assert_eq!(scheme(host), "http", "{host}");
        }
        for host in ["registry.example.com", "10.0.0.1:5000", "ghcr.io"] {
            assert_eq!(scheme(host), "https", "{host}");
        }
    }

    #[test]
    fn the_digest_is_read_from_the_engines_last_push_status() {
        let hex = "a".repeat(64);
        assert_eq!(digest_in_status(&format!("abc: digest: sha256:{hex} size: 527")), Some(format!("sha256:{hex}")));
        assert_eq!(digest_in_status("Pushed"), None);
        assert_eq!(digest_in_status("x: digest: sha256:short size: 1"), None);
    }

    #[test]
    fn a_bearer_challenge_is_read_with_quoted_commas() {
        let parameters = challenge_parameters(
            r#"realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(parameters["realm"], "https://auth.example.com/token");
        assert_eq!(parameters["service"], "registry.example.com");
        assert_eq!(parameters["scope"], "repository:a/b:pull,push");
    }

    #[test]
    fn a_preview_reads_only_the_previews_credentials_and_no_password_is_shown() {
        let dir = tempfile::tempdir().unwrap();
        let production = dir.path().join("production");
        let previews = dir.path().join("previews");
        std::fs::write(&production, "deploy:production-password\n").unwrap();
        std::fs::write(&previews, "previews:preview-password").unwrap();
        let mut settings = RegistrySettings {
            address: "127.0.0.1:5000".to_owned(),
            credentials_file: Some(production.clone()),
            preview_credentials_file: None,
        };
        assert_eq!(credentials_for(&settings, false).unwrap().unwrap().user, "deploy");
        assert_eq!(credentials_for(&settings, true).unwrap(), None, "a preview never gets production's");
        settings.preview_credentials_file = Some(previews);
        let preview = credentials_for(&settings, true).unwrap().unwrap();
        assert_eq!(preview.user, "previews");
        assert!(!format!("{preview:?}").contains("preview-password"));
        assert_eq!(preview.redact("bad preview-password here"), "bad <redacted> here");
        std::fs::write(&production, "no separator").unwrap();
        let error = credentials_for(&settings, false).unwrap_err().to_string();
        assert!(error.contains("user:password") && error.contains("production"), "{error}");
    }
}
