//! `kubernetes-validate --strict` (PyPI, installed by scripts/install-deps into `.venv-tools`): manifests checked
//! against the official Kubernetes OpenAPI schemas, unknown fields rejected.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The versions every manifest is checked against: 1.30, and the newest the tool knows (its default).
const VERSIONS: [Option<&str>; 2] = [Some("1.30.0"), None];

fn tool() -> PathBuf {
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-tools/bin/kubernetes-validate");
    assert!(
        tool.exists(),
        "{} is missing; install it with scripts/install-deps (a virtualenv with kubernetes-validate from PyPI)",
        tool.display()
    );
    tool
}

/// Fails the test, naming `what` and the version, unless every object in `file` passes for every version.
pub fn assert_valid_kubernetes(file: &Path, what: &str) {
    let tool = tool();
    for version in VERSIONS {
        let mut command = Command::new(&tool);
        command.arg("--strict").arg("--no-warn");
        if let Some(version) = version {
            command.args(["-k", version]);
        }
        let output = command.arg(file).output().expect("kubernetes-validate runs");
        assert!(
            output.status.success(),
            "kubernetes-validate --strict (Kubernetes {}) rejects {what}:\n{}{}",
            version.unwrap_or("newest"),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
