//! docker/kubernetes.yaml, which runs railyard itself in a cluster: it passes the official schemas, its RBAC names
//! every resource and verb (no wildcard) and covers every kind railyard writes, and the Deployment runs
//! `serve --backend kubernetes` as the bound service account with its state on the claim and secrets from Secrets.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use railyard::backend::kubernetes::cluster::Kind;
use railyard::backend::kubernetes::mapping::{self, KubernetesSettings};
use railyard::model::{Environment, load};
use serde_json::Value;
use support::kubernetes_validate::assert_valid_kubernetes;

fn manifest_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/kubernetes.yaml")
}

fn documents() -> Vec<Value> {
    let text = std::fs::read_to_string(manifest_path()).expect("docker/kubernetes.yaml is readable");
    serde_saphyr::from_multiple(&text).expect("docker/kubernetes.yaml is YAML")
}

fn object(kind: &str) -> Value {
    let mut found = documents().into_iter().filter(|document| document["kind"] == kind);
    let first = found.next().unwrap_or_else(|| panic!("docker/kubernetes.yaml has no {kind}"));
    assert!(found.next().is_none(), "docker/kubernetes.yaml has one {kind}");
    first
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
}

/// (API group, resource) -> verbs, as the RBAC roles of the manifest grant them.
fn grants() -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut grants: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for role in documents().iter().filter(|document| matches!(document["kind"].as_str(), Some("ClusterRole" | "Role")))
    {
        for rule in role["rules"].as_array().expect("a role has rules") {
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    grants.entry((group.clone(), resource)).or_default().extend(strings(&rule["verbs"]));
                }
            }
        }
    }
    grants
}

#[test]
fn the_manifest_passes_the_kubernetes_schemas() {
    assert_valid_kubernetes(&manifest_path(), "docker/kubernetes.yaml");
}

#[test]
fn its_rbac_names_every_resource_and_verb_and_grants_no_more_than_railyard_uses() {
    for role in documents().iter().filter(|document| matches!(document["kind"].as_str(), Some("ClusterRole" | "Role")))
    {
        for rule in role["rules"].as_array().expect("a role has rules") {
            for field in ["apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"] {
                assert!(!strings(&rule[field]).iter().any(|item| item.contains('*')), "wildcard in {field}: {rule}");
            }
            assert!(rule.get("nonResourceURLs").is_none(), "railyard calls no non-resource URL: {rule}");
        }
    }
    let manage: BTreeSet<String> =
        ["get", "list", "watch", "create", "patch", "delete"].into_iter().map(str::to_owned).collect();
    let mut expected: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    expected.insert(
        (String::new(), "namespaces".into()),
        ["get", "list", "create", "patch", "delete"].into_iter().map(str::to_owned).collect(),
    );
    for (group, resource) in [
        ("", "services"),
        ("", "persistentvolumeclaims"),
        ("", "secrets"),
        ("", "configmaps"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
        ("apps", "deployments"),
        ("autoscaling", "horizontalpodautoscalers"),
        ("networking.k8s.io", "ingresses"),
        ("networking.k8s.io", "networkpolicies"),
    ] {
        expected.insert((group.into(), resource.into()), manage.clone());
    }
    expected.insert(("apps".into(), "deployments/status".into()), BTreeSet::from(["get".to_owned()]));
    // A Job run's pods, for its exit code and the end of its log.
    expected.insert((String::new(), "pods".into()), ["get", "list"].into_iter().map(str::to_owned).collect());
    expected.insert((String::new(), "pods/log".into()), BTreeSet::from(["get".to_owned()]));
    // An Event per object each sync wrote, and per failure.
    expected.insert(("events.k8s.io".into(), "events".into()), BTreeSet::from(["create".to_owned()]));
    // Read only: the apps' CPU, and what `railyard doctor` checks Domains will use.
    for (group, resource) in
        [("metrics.k8s.io", "pods"), ("networking.k8s.io", "ingressclasses"), ("cert-manager.io", "clusterissuers")]
    {
        expected.insert((group.into(), resource.into()), ["get", "list"].into_iter().map(str::to_owned).collect());
    }
    assert_eq!(grants(), expected);
}

/// The API group and resource of each kind the mapping writes.
fn resource_of(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "Namespace" => ("", "namespaces"),
        "NetworkPolicy" => ("networking.k8s.io", "networkpolicies"),
        "PersistentVolumeClaim" => ("", "persistentvolumeclaims"),
        "Deployment" => ("apps", "deployments"),
        "Service" => ("", "services"),
        "HorizontalPodAutoscaler" => ("autoscaling", "horizontalpodautoscalers"),
        "Ingress" => ("networking.k8s.io", "ingresses"),
        "Secret" => ("", "secrets"),
        "ConfigMap" => ("", "configmaps"),
        "Job" => ("batch", "jobs"),
        "CronJob" => ("batch", "cronjobs"),
        other => panic!("the mapping writes {other}: name its resource here and grant it in docker/kubernetes.yaml"),
    }
}

#[test]
fn its_rbac_lets_railyard_apply_list_and_prune_every_kind_it_writes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Every kind the backend lists, applies and deletes, and every kind the mapping writes for the fixtures.
    let mut written: BTreeSet<(&str, &str)> = Kind::ALL.into_iter().map(|kind| resource_of(kind.as_str())).collect();
    for dir in [root.join("examples/repo-layout"), root.join("tests/fixtures/kubernetes/every-field")] {
        let files = railyard::source::local::read_dir(&dir).expect("fixture is readable");
        let config = load(&files).expect("fixture is valid");
        for listed in config.environments("main") {
            let desired = config.desired(&Environment::listed(config.project_name(), &listed), None);
            let settings = KubernetesSettings::from_proxy(config.project.doc.proxy.as_ref());
            written.extend(
                mapping::manifests(&desired, &settings).objects.iter().map(|object| resource_of(object.kind())),
            );
        }
    }
    assert_eq!(written.len(), 11, "{written:?}");
    let grants = grants();
    for (group, resource) in written {
        let verbs = grants.get(&(group.to_owned(), resource.to_owned())).cloned().unwrap_or_default();
        for verb in ["get", "list", "create", "patch", "delete"] {
            assert!(verbs.contains(verb), "railyard cannot {verb} {resource} ({group:?}) with docker/kubernetes.yaml");
        }
    }
}

#[test]
fn the_deployment_serves_on_kubernetes_as_the_bound_account_with_state_on_the_claim() {
    let deployment = object("Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args = strings(&container["args"]);
    assert_eq!(args[..3], ["serve", "--backend", "kubernetes"], "{args:?}");

    let account = pod["serviceAccountName"].as_str().expect("a service account");
    assert_eq!(object("ServiceAccount")["metadata"]["name"], account);
    let binding = object("ClusterRoleBinding");
    assert_eq!(binding["subjects"][0]["name"], account);
    assert_eq!(binding["subjects"][0]["namespace"], deployment["metadata"]["namespace"]);
    assert_eq!(binding["roleRef"]["name"], object("ClusterRole")["metadata"]["name"]);

    let state_dir = args.windows(2).find(|pair| pair[0] == "--state-dir").map(|pair| pair[1].clone());
    let state_dir = state_dir.expect("--state-dir is given");
    let mount = container["volumeMounts"].as_array().into_iter().flatten().find(|m| m["mountPath"] == state_dir);
    let volume_name = &mount.expect("the state directory is a mount")["name"];
    let volumes = pod["volumes"].as_array().expect("volumes");
    let volume = volumes.iter().find(|volume| volume["name"] == *volume_name).expect("the mounted volume");
    assert_eq!(volume["persistentVolumeClaim"]["claimName"], object("PersistentVolumeClaim")["metadata"]["name"]);

    let env = container["env"].as_array().expect("environment");
    let repo = env.iter().find(|variable| variable["name"] == "RAILYARD_REPO").expect("RAILYARD_REPO is set");
    assert!(repo["value"].as_str().is_some_and(|url| !url.is_empty()), "{repo}");
    for variable in env {
        let name = variable["name"].as_str().unwrap_or_default();
        if ["TOKEN", "SECRET", "PASSWORD"].iter().any(|word| name.ends_with(word)) {
            assert!(variable.get("value").is_none(), "{name} has a value in the manifest");
            assert!(variable["valueFrom"]["secretKeyRef"]["name"].is_string(), "{name} comes from a Secret");
        }
    }
    assert!(!documents().iter().any(|document| document["kind"] == "Secret"), "no secret value ships in the file");

    let service = object("Service");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (label, value) in service["spec"]["selector"].as_object().expect("a selector") {
        assert_eq!(&pod_labels[label], value, "the Service selects the pod by {label}");
    }
    let port_names = strings(&Value::Array(
        container["ports"].as_array().into_iter().flatten().map(|port| port["name"].clone()).collect(),
    ));
    assert!(port_names.contains(&service["spec"]["ports"][0]["targetPort"].as_str().unwrap_or_default().to_owned()));
}
