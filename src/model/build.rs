//! Images railyard builds from the config repository (`build:`): the context each App asks for, what the source found
//! there, and the content tag that names the image. Pure: the source inspects the contexts, this module only reads its
//! report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The registry part of every image railyard builds: never a real registry, so that no pull can reach one by mistake
/// and no App may name such an image itself.
pub const BUILT_IMAGE_REGISTRY: &str = "railyard.local";
/// The Dockerfile of a context when `build.dockerfile` is not given.
pub const DEFAULT_DOCKERFILE: &str = "Dockerfile";
/// The largest context sent to a build, unless the daemon is told otherwise.
pub const DEFAULT_MAX_CONTEXT_BYTES: u64 = 200 << 20;

/// Whether `image` is one railyard builds (`railyard.local/...`).
pub fn is_built_image(image: &str) -> bool {
    image.strip_prefix(BUILT_IMAGE_REGISTRY).is_some_and(|rest| rest.starts_with('/'))
}

/// A context to inspect: a directory of the repository and its Dockerfile, both as normalised repository paths
/// (`services/web`, `services/web/Dockerfile`; the root is `.`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContextRequest {
    pub context: String,
    pub dockerfile: String,
}

impl ContextRequest {
    /// The Dockerfile's path inside the context, as the build is told it.
    pub fn dockerfile_in_context(&self) -> &str {
        match self.context.as_str() {
            "." => &self.dockerfile,
            context => {
                self.dockerfile.strip_prefix(context).map_or(&self.dockerfile, |rest| rest.trim_start_matches('/'))
            }
        }
    }
}

/// What the source found of one context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextFacts {
    /// Everything is in place. `digest` changes whenever a file of the context does (a git tree id, or a hash of
    /// the directory's files).
    Found {
        digest: String,
        bytes: u64,
        files: u64,
    },
    Missing,
    NotADirectory,
    NoDockerfile,
    /// A symlink of the context points out of it (the build would read a file the context does not hold).
    SymlinkLeaves {
        link: String,
        target: String,
    },
    TooLarge {
        bytes: u64,
        limit: u64,
    },
    Unreadable {
        reason: String,
    },
}

/// What the source found of every context a config asks for.
pub type ContextReport = BTreeMap<ContextRequest, ContextFacts>;

impl ContextFacts {
    /// Why the context cannot be built, in the user's words; `None` when it can.
    pub fn problem(&self, request: &ContextRequest) -> Option<String> {
        let context = &request.context;
        Some(match self {
            ContextFacts::Found { .. } => return None,
            ContextFacts::Missing => format!(
                "build context `{context}` does not exist at this commit; commit the directory or fix `build.context` \
                 (a path from the repository's root)"
            ),
            ContextFacts::NotADirectory => {
                format!("build context `{context}` is a file, not a directory; name the directory that holds it")
            }
            ContextFacts::NoDockerfile => format!(
                "build context `{context}` has no Dockerfile at `{}`; commit one or set `build.dockerfile`",
                request.dockerfile
            ),
            ContextFacts::SymlinkLeaves { link, target } => format!(
                "build context `{context}`: symlink `{link}` points out of the context (to `{target}`); the build \
                 only sees the context: copy the file in instead"
            ),
            ContextFacts::TooLarge { bytes, limit } => format!(
                "build context `{context}` holds {} MiB, more than the {} MiB a build may send; move what the image \
                 does not need out of it, or point `build.context` at a smaller directory",
                bytes.div_ceil(1 << 20),
                limit / (1 << 20)
            ),
            ContextFacts::Unreadable { reason } => format!("build context `{context}` cannot be read: {reason}"),
        })
    }
}

/// What one build may take. A preview's builds are capped by `previews.limits.build`; others only by the timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    pub timeout_ms: u64,
    /// The build is a preview's: its code is hostile.
    #[serde(default)]
    pub preview: bool,
    /// Base images (`FROM`, `COPY --from`) are pulled, never taken from the host: a preview without
    /// `previews.localImages` must not read production's private or built images through its Dockerfile.
    #[serde(default)]
    pub pull_base: bool,
}

/// A build that takes longer fails.
pub const DEFAULT_BUILD_TIMEOUT_MS: u64 = 600_000;

impl Default for BuildLimits {
    fn default() -> BuildLimits {
        BuildLimits {
            cpu_millis: None,
            memory_bytes: None,
            timeout_ms: DEFAULT_BUILD_TIMEOUT_MS,
            preview: false,
            pull_base: false,
        }
    }
}

/// An App's build in canonical form, as the desired state holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildSpec {
    /// The context's repository path.
    pub context: String,
    /// The Dockerfile, relative to the context.
    pub dockerfile: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
    /// What the source found of the context's content.
    pub context_digest: String,
}

impl BuildSpec {
    /// The content tag of the image: `railyard.local/<compose project>/<app>:<hash of context, Dockerfile, target
    /// and args>`. Each environment builds under its own name, so that no environment runs an image another built.
    pub fn image(&self, project: &str, app: &str) -> String {
        let mut hasher = Sha256::new();
        for part in [self.context_digest.as_str(), self.dockerfile.as_str(), self.target.as_deref().unwrap_or("")] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        for (name, value) in &self.args {
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update(value.as_bytes());
            hasher.update([0]);
        }
        let hash = hex::encode(hasher.finalize());
        format!("{BUILT_IMAGE_REGISTRY}/{project}/{app}:{}", &hash[..24])
    }
}

/// A repository path written in the config, made canonical: relative, `/`-separated, without `.` or `..` parts
/// (`.` for the root). An error says why it cannot be one.
pub fn normalize_path(written: &str) -> Result<String, String> {
    if written.starts_with('/') || written.contains('\\') || written.chars().any(char::is_control) {
        return Err(format!(
            "`{written}` must be a relative path with `/` between its parts, from the repository's root"
        ));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in written.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("`{written}` leads out of the repository; name a directory inside it"));
                }
            }
            part => parts.push(part),
        }
    }
    Ok(if parts.is_empty() { ".".to_owned() } else { parts.join("/") })
}

/// `relative` (a Dockerfile) joined to `context`, as a repository path; an error when it leaves the context.
pub fn join_in_context(context: &str, relative: &str) -> Result<String, String> {
    let inside = normalize_path(relative)
        .map_err(|_| format!("`{relative}` must be a relative path inside the context `{context}`"))?;
    if inside == "." {
        return Err(format!("`{relative}` names the context itself; name the Dockerfile inside it"));
    }
    Ok(if context == "." { inside } else { format!("{context}/{inside}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_canonical_and_never_leave_the_repository() {
        assert_eq!(normalize_path("services/web").as_deref(), Ok("services/web"));
        assert_eq!(normalize_path("./services//web/").as_deref(), Ok("services/web"));
        assert_eq!(normalize_path("services/../web").as_deref(), Ok("web"));
        assert_eq!(normalize_path(".").as_deref(), Ok("."));
        assert!(normalize_path("../web").unwrap_err().contains("out of the repository"));
        assert!(normalize_path("a/../../web").is_err());
        assert!(normalize_path("/etc").is_err());
        assert!(normalize_path("a\\b").is_err());
        assert_eq!(
            join_in_context("services/web", "docker/Dockerfile").as_deref(),
            Ok("services/web/docker/Dockerfile")
        );
        assert_eq!(join_in_context(".", "Dockerfile").as_deref(), Ok("Dockerfile"));
        assert!(join_in_context("services/web", "../Dockerfile").is_err());
        assert!(join_in_context("services/web", ".").is_err());
    }

    #[test]
    fn the_content_tag_changes_with_every_input_and_only_with_them() {
        let spec = BuildSpec {
            context: "services/web".into(),
            dockerfile: "Dockerfile".into(),
            target: None,
            args: BTreeMap::new(),
            context_digest: "tree-1".into(),
        };
        let tag = spec.image("shop", "web");
        assert!(tag.starts_with("railyard.local/shop/web:"), "{tag}");
        // The same inputs written otherwise: args in another order, the spec read back from JSON as the store holds
        // it, and another context path: the path is not hashed, since `context_digest` covers the content, so that
        // moving a directory without changing it rebuilds nothing.
        let with_args = |args: &[(&str, &str)]| BuildSpec {
            args: args.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect(),
            ..spec.clone()
        };
        let ordered = with_args(&[("A", "1"), ("B", "2")]).image("shop", "web");
        assert_eq!(with_args(&[("B", "2"), ("A", "1")]).image("shop", "web"), ordered);
        let read: BuildSpec = serde_json::from_str(
            r#"{"args":{"B":"2","A":"1"},"contextDigest":"tree-1","dockerfile":"Dockerfile","context":"moved/web"}"#,
        )
        .expect("a BuildSpec");
        assert_eq!(read.image("shop", "web"), ordered);
        assert_ne!(ordered, tag);
        // An arg's name and value are delimited: moving a character from one to the other is another tag.
        assert_ne!(with_args(&[("AB", "")]).image("shop", "web"), with_args(&[("A", "B")]).image("shop", "web"));
        let changed = [
            BuildSpec { context_digest: "tree-2".into(), ..spec.clone() },
            BuildSpec { dockerfile: "Dockerfile.prod".into(), ..spec.clone() },
            BuildSpec { target: Some("runtime".into()), ..spec.clone() },
            BuildSpec { args: BTreeMap::from([("MODE".into(), "prod".into())]), ..spec.clone() },
        ];
        for other in changed {
            assert_ne!(other.image("shop", "web"), tag, "{other:?}");
        }
        assert_ne!(spec.image("shop-pr-1", "web"), tag, "each environment builds under its own name");
        assert!(is_built_image(&tag));
        assert!(!is_built_image("railyard.localhost/x:1") && !is_built_image("ghcr.io/railyard.local/x"));
    }
}
