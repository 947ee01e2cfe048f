//! `railyard doctor --backend kubernetes` against the fake API server (issue 24): what answers is reported ok, what
//! a user would miss is a warning with its fix, and a cluster that does not answer fails with exit status 1.

use std::process::Command;

use crate::support::fake_kube::FakeKube;
use crate::support::{free_loopback_port, railyard_binary, stderr, stdout};

fn doctor(kubeconfig: &std::path::Path) -> std::process::Output {
    Command::new(railyard_binary())
        .args(["doctor", "--backend", "kubernetes", "--kubeconfig"])
        .arg(kubeconfig)
        .env_remove("KUBECONFIG")
        .output()
        .expect("railyard runs")
}

#[test]
fn doctor_reports_what_the_cluster_has_and_what_to_fix() {
    let cluster = FakeKube::start();
    let checked = doctor(&cluster.kubeconfig_path());
    let said = stdout(&checked);
    assert_eq!(checked.status.code(), Some(0), "nothing must be fixed first:\n{said}{}", stderr(&checked));
    assert!(said.contains("ok    reachable: Kubernetes v"), "{said}");
    assert!(
        said.contains(
            "ok    permissions: 55 verbs on 11 kinds granted, reading pods and their logs, and writing Events"
        ),
        "the shipped RBAC is enough:\n{said}"
    );
    assert!(said.contains("warn  ingress class: no IngressClass"), "{said}");
    assert!(said.contains("cert-manager is not installed") && said.contains("fix: install cert-manager"), "{said}");
    assert!(said.contains("warn  metrics: metrics-server is not installed"), "{said}");

    // An ingress controller installed, and a grant taken away: the permission is named and must be fixed first.
    cluster.add_ingress_class("nginx");
    cluster.revoke("apps", "deployments", "create");
    let checked = doctor(&cluster.kubeconfig_path());
    let said = stdout(&checked);
    assert_eq!(checked.status.code(), Some(1), "{said}");
    assert!(said.contains("ok    ingress class: nginx"), "{said}");
    assert!(said.contains("FAIL  permissions: not granted: create deployments.apps"), "{said}");
    assert!(said.contains("fix: bind railyard's service account or user to the ClusterRole of docker/kubernetes.yaml"));
}

#[test]
fn doctor_fails_on_a_cluster_that_does_not_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    let server = format!("http://127.0.0.1:{}", free_loopback_port());
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: {server}\ncontexts:\n- name: gone\n  \
         context:\n    cluster: gone\n    user: gone\ncurrent-context: gone\nusers:\n- name: gone\n  user:\n    token: t\n"
    );
    std::fs::write(&kubeconfig, text).expect("kubeconfig");
    let checked = doctor(&kubeconfig);
    assert_eq!(checked.status.code(), Some(1), "{}", stdout(&checked));
    assert!(stdout(&checked).starts_with("FAIL  reachable: "), "{}", stdout(&checked));
    assert!(stdout(&checked).contains("fix: check the kubeconfig's server address"), "{}", stdout(&checked));
}
