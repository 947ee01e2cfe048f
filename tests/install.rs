//! Installing railyard itself (issue 25). docker/kubernetes-ha.yaml runs two replicas on two nodes that elect a
//! leader through a Lease and keep their history in PostgreSQL: it passes the official schemas, holds what a highly
//! available install needs (anti-affinity, a PodDisruptionBudget, probes, a locked-down security context, the store
//! from a Secret, the identity from the downward API), and its RBAC grants Leases in railyard's namespace only.
//! Both install files (it and docker/kubernetes.yaml) are applied, every document, to the fake API server and read
//! back. docker/Dockerfile's image, assembled by scripts/build-image from Debian packages, builds here without a
//! registry, answers `--version`, and serves `/healthz` as uid 65532 on a read-only root filesystem.

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::fake_kube::{CONTROLLER_TOKEN, FakeKube, RAILYARD_TOKEN};
use support::kubernetes_validate::assert_valid_kubernetes;

fn repository_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn ha_manifest() -> PathBuf {
    repository_file("docker/kubernetes-ha.yaml")
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_saphyr::from_multiple(&text).unwrap_or_else(|error| panic!("{} is not YAML: {error}", path.display()))
}

/// The one document of `kind` in the HA manifest.
fn ha_object(kind: &str) -> Value {
    let mut found = documents(&ha_manifest()).into_iter().filter(|document| document["kind"] == kind);
    let first = found.next().unwrap_or_else(|| panic!("docker/kubernetes-ha.yaml has no {kind}"));
    assert!(found.next().is_none(), "docker/kubernetes-ha.yaml has one {kind}");
    first
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
}

/// docker/kubernetes.yaml is checked by tests/kubernetes_manifest.rs the same way, for the same versions.
#[test]
fn the_ha_manifest_passes_the_kubernetes_schemas_of_1_30_and_the_newest() {
    assert_valid_kubernetes(&ha_manifest(), "docker/kubernetes-ha.yaml");
}

/// The environment variable `name` of the railyard container.
fn env_var<'a>(container: &'a Value, name: &str) -> &'a Value {
    let env = container["env"].as_array().expect("the container has an environment");
    env.iter().find(|variable| variable["name"] == name).unwrap_or_else(|| panic!("{name} is not set"))
}

#[test]
fn the_ha_deployment_runs_two_replicas_on_two_nodes_electing_a_leader_with_the_history_in_postgresql() {
    let deployment = ha_object("Deployment");
    let spec = &deployment["spec"];
    let pod = &spec["template"]["spec"];
    let pod_labels = &spec["template"]["metadata"]["labels"];
    assert_eq!(spec["replicas"], 2);
    // Required, not preferred: two replicas on one node would both go with it.
    let anti_affinity = &pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(anti_affinity["topologyKey"], "kubernetes.io/hostname");
    for (label, value) in anti_affinity["labelSelector"]["matchLabels"].as_object().expect("matchLabels") {
        assert_eq!(&pod_labels[label], value, "the anti-affinity selects railyard's own pods by {label}");
    }
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxSurge"], 0, "a surge pod would need a third node");

    let container = &pod["containers"][0];
    let args = strings(&container["args"]);
    assert_eq!(args[..3], ["serve", "--backend", "kubernetes"], "{args:?}");
    assert!(args.windows(2).any(|pair| pair == ["--leader-election", "kubernetes"]), "{args:?}");
    let store = env_var(container, "RAILYARD_STORE");
    assert_eq!(store["valueFrom"]["secretKeyRef"]["key"], "store-url", "{store}");
    assert!(store["valueFrom"]["secretKeyRef"]["optional"].is_null(), "no store, no HA install: required");
    assert_eq!(env_var(container, "RAILYARD_IDENTITY")["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    assert_eq!(
        env_var(container, "RAILYARD_LEASE_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    // The password file is the Secret's `store-password` key, mounted where the variable says.
    let password_file = env_var(container, "RAILYARD_STORE_PASSWORD_FILE")["value"].as_str().expect("a path");
    let (mount_path, file_name) = password_file.rsplit_once('/').expect("a path in a directory");
    let mount =
        container["volumeMounts"].as_array().into_iter().flatten().find(|mount| mount["mountPath"] == mount_path);
    let mount = mount.unwrap_or_else(|| panic!("nothing is mounted at {mount_path}"));
    let volume = pod["volumes"].as_array().into_iter().flatten().find(|volume| volume["name"] == mount["name"]);
    let secret = &volume.expect("the mounted volume")["secret"];
    assert_eq!(secret["secretName"], store["valueFrom"]["secretKeyRef"]["name"], "one Secret holds URL and password");
    assert_eq!(secret["items"], json!([{ "key": "store-password", "path": file_name }]));

    // The history is in PostgreSQL: the state directory is scratch space (git checkouts), as is /tmp.
    let state_dir = args.windows(2).find(|pair| pair[0] == "--state-dir").map(|pair| pair[1].clone());
    for path in [state_dir.expect("--state-dir is given").as_str(), "/tmp"] {
        let mount = container["volumeMounts"].as_array().into_iter().flatten().find(|mount| mount["mountPath"] == path);
        let name = &mount.unwrap_or_else(|| panic!("{path} is not a mount"))["name"];
        let volume = pod["volumes"].as_array().into_iter().flatten().find(|volume| volume["name"] == *name);
        assert!(volume.expect("the mounted volume")["emptyDir"].is_object(), "{path} is an emptyDir");
    }
    assert!(!documents(&ha_manifest()).iter().any(|document| document["kind"] == "PersistentVolumeClaim"));

    assert_eq!(container["livenessProbe"]["httpGet"], json!({ "path": "/healthz", "port": "http" }));
    assert_eq!(container["readinessProbe"]["httpGet"], json!({ "path": "/readyz", "port": "http" }));
    assert_eq!(container["ports"], json!([{ "name": "http", "containerPort": 8700 }]));
    for kind in ["requests", "limits"] {
        assert!(container["resources"][kind]["memory"].is_string(), "memory {kind}");
    }
    assert_eq!(
        pod["securityContext"],
        json!({ "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532, "seccompProfile": { "type": "RuntimeDefault" } })
    );
    assert_eq!(
        container["securityContext"],
        json!({ "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": { "drop": ["ALL"] } })
    );
    for variable in container["env"].as_array().expect("environment") {
        let name = variable["name"].as_str().unwrap_or_default();
        if ["TOKEN", "SECRET", "PASSWORD", "STORE"].iter().any(|word| name.ends_with(word)) {
            assert!(variable.get("value").is_none(), "{name} has a value in the manifest");
        }
    }
    assert!(!documents(&ha_manifest()).iter().any(|document| document["kind"] == "Secret"), "no secret ships");

    let budget = ha_object("PodDisruptionBudget");
    assert_eq!(budget["spec"]["minAvailable"], 1);
    let service = ha_object("Service");
    for selector in [&budget["spec"]["selector"]["matchLabels"], &service["spec"]["selector"]] {
        for (label, value) in selector.as_object().expect("a selector") {
            assert_eq!(&pod_labels[label], value, "selects the railyard pods by {label}");
        }
    }
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
}

/// The HA file is the single-replica file plus what HA needs: the same ClusterRole, bound the same way, the same
/// settings; and one Role more, get/create/update on Leases, bound in namespace `railyard` only.
#[test]
fn the_ha_rbac_is_the_single_replica_one_plus_leases_in_its_own_namespace() {
    let single = documents(&repository_file("docker/kubernetes.yaml"));
    let single_of = |kind: &str| single.iter().find(|document| document["kind"] == kind).cloned().expect(kind);
    assert_eq!(ha_object("ClusterRole"), single_of("ClusterRole"));
    assert_eq!(ha_object("ClusterRoleBinding"), single_of("ClusterRoleBinding"));
    assert_eq!(ha_object("ServiceAccount"), single_of("ServiceAccount"));

    let role = ha_object("Role");
    assert_eq!(role["metadata"]["namespace"], "railyard");
    assert_eq!(
        role["rules"],
        json!([{ "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"] }])
    );
    let binding = ha_object("RoleBinding");
    assert_eq!(binding["metadata"]["namespace"], "railyard");
    assert_eq!(
        binding["roleRef"],
        json!({ "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"] })
    );
    assert_eq!(binding["subjects"], json!([{ "kind": "ServiceAccount", "name": "railyard", "namespace": "railyard" }]));

    let container_of = |deployment: &Value| deployment["spec"]["template"]["spec"]["containers"][0].clone();
    let single_container = container_of(&single_of("Deployment"));
    let ha_container = container_of(&ha_object("Deployment"));
    for variable in single_container["env"].as_array().expect("environment") {
        let name = variable["name"].as_str().expect("a name");
        assert_eq!(env_var(&ha_container, name), variable, "{name} is set as in docker/kubernetes.yaml");
    }
    let single_args = strings(&single_container["args"]);
    assert_eq!(strings(&ha_container["args"])[..single_args.len()], single_args[..]);
}

/// (apiVersion, kind) -> (URL prefix of the group version, plural, namespaced), from the fake's discovery
/// documents, as kubectl finds where to send a manifest's documents.
fn discovered(fake: &FakeKube) -> BTreeMap<(String, String), (String, String, bool)> {
    let admin = format!("Bearer {CONTROLLER_TOKEN}");
    let get = |path: &str| -> Value {
        let (code, body) = support::http(fake.port(), "GET", path, &[("Authorization", admin.as_str())], b"");
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("a discovery document")
    };
    let mut group_versions = vec![("v1".to_owned(), "/api/v1".to_owned())];
    for group in get("/apis")["groups"].as_array().expect("groups") {
        for version in group["versions"].as_array().expect("versions") {
            let group_version = version["groupVersion"].as_str().expect("groupVersion").to_owned();
            group_versions.push((group_version.clone(), format!("/apis/{group_version}")));
        }
    }
    let mut resources = BTreeMap::new();
    for (group_version, prefix) in group_versions {
        for resource in get(&prefix)["resources"].as_array().expect("resources") {
            let plural = resource["name"].as_str().expect("name");
            if plural.contains('/') {
                continue;
            }
            let kind = resource["kind"].as_str().expect("kind").to_owned();
            let namespaced = resource["namespaced"].as_bool().expect("namespaced");
            resources.insert((group_version.clone(), kind), (prefix.clone(), plural.to_owned(), namespaced));
        }
    }
    resources
}

/// The URL of one document's object on the fake.
fn object_path(resources: &BTreeMap<(String, String), (String, String, bool)>, document: &Value) -> String {
    let api_version = document["apiVersion"].as_str().expect("apiVersion").to_owned();
    let kind = document["kind"].as_str().expect("kind").to_owned();
    let (prefix, plural, namespaced) = resources
        .get(&(api_version.clone(), kind.clone()))
        .unwrap_or_else(|| panic!("the fake serves no {kind} {api_version}"));
    let name = document["metadata"]["name"].as_str().expect("a name");
    match (namespaced, document["metadata"]["namespace"].as_str()) {
        (true, Some(namespace)) => format!("{prefix}/namespaces/{namespace}/{plural}/{name}"),
        (true, None) => panic!("{kind} {name} is namespaced and names no namespace"),
        (false, _) => format!("{prefix}/{plural}/{name}"),
    }
}

/// Whether `stored` holds every field of `applied` with its value (the server adds its defaults and metadata);
/// the first difference otherwise.
fn holds(stored: &Value, applied: &Value, at: &str) -> Result<(), String> {
    match (stored, applied) {
        (Value::Object(stored), Value::Object(applied)) => applied.iter().try_for_each(|(field, value)| {
            let inside = format!("{at}.{field}");
            stored.get(field).map_or_else(|| Err(format!("{inside} is missing")), |held| holds(held, value, &inside))
        }),
        (Value::Array(stored), Value::Array(applied)) if stored.len() == applied.len() => stored
            .iter()
            .zip(applied)
            .enumerate()
            .try_for_each(|(index, (held, value))| holds(held, value, &format!("{at}[{index}]"))),
        _ if stored == applied => Ok(()),
        _ => Err(format!("{at} is {stored}, applied {applied}")),
    }
}

/// What `kubectl apply --server-side -f FILE` does, and what the install steps create by hand: every document is
/// applied (as the cluster's admin, who installs railyard), in the file's order, then read back holding what was
/// applied; a second apply of the file changes nothing (no resourceVersion moves).
fn install(fake: &FakeKube, file: &Path) -> usize {
    let resources = discovered(fake);
    let admin = format!("Bearer {CONTROLLER_TOKEN}");
    let apply = |document: &Value| {
        let path = format!("{}?fieldManager=kubectl&force=true", object_path(&resources, document));
        let headers = [("Authorization", admin.as_str()), ("Content-Type", "application/apply-patch+yaml")];
        let (code, body) = support::http(fake.port(), "PATCH", &path, &headers, document.to_string().as_bytes());
        assert!(code == 200 || code == 201, "{} rejects {path}: {code} {body}", file.display());
        serde_json::from_str::<Value>(&body).expect("the stored object")
    };
    let documents = documents(file);
    let first: Vec<Value> = documents.iter().map(apply).collect();
    for (document, stored) in documents.iter().zip(&first) {
        let path = object_path(&resources, document);
        let (code, body) = support::http(fake.port(), "GET", &path, &[("Authorization", admin.as_str())], b"");
        assert_eq!(code, 200, "GET {path}: {body}");
        let read: Value = serde_json::from_str(&body).expect("JSON");
        if let Err(difference) = holds(&read, document, "") {
            panic!("{} read back from {path} differs: {difference}\n{read}", file.display());
        }
        assert_eq!(read["metadata"]["resourceVersion"], stored["metadata"]["resourceVersion"]);
    }
    for (document, stored) in documents.iter().zip(&first) {
        let again = apply(document);
        assert_eq!(
            again["metadata"]["resourceVersion"],
            stored["metadata"]["resourceVersion"],
            "re-applying {} moved it",
            object_path(&resources, document)
        );
    }
    documents.len()
}

/// The Secrets the install steps create with kubectl (placeholder values), so that every name the Deployment
/// refers to exists.
fn create_install_secrets(fake: &FakeKube) {
    let admin = format!("Bearer {CONTROLLER_TOKEN}");
    for (name, data) in [
        (
            "railyard-store",
            json!({ "store-url": "postgres://railyard@postgres.railyard.svc:5432/railyard?sslmode=require", "store-password": "not-a-real-password" }),
        ),
        ("railyard", json!({ "api-token": "not-a-real-token" })),
    ] {
        let secret = json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": name, "namespace": "railyard" }, "stringData": data });
        let headers = [("Authorization", admin.as_str()), ("Content-Type", "application/json")];
        let (code, body) = support::http(
            fake.port(),
            "POST",
            "/api/v1/namespaces/railyard/secrets",
            &headers,
            secret.to_string().as_bytes(),
        );
        assert_eq!(code, 201, "{body}");
    }
}

#[test]
fn both_install_files_apply_to_the_fake_api_server_and_read_back() {
    for file in [repository_file("docker/kubernetes.yaml"), ha_manifest()] {
        let fake = FakeKube::start();
        let applied = install(&fake, &file);
        assert!(applied >= 6, "{}: {applied} documents", file.display());
        create_install_secrets(&fake);
        // What the Deployment refers to exists: its service account, and the Secrets' keys.
        let deployment = fake.object("deployments", "railyard", "railyard").expect("the Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        assert!(
            fake.object("serviceaccounts", "railyard", pod["serviceAccountName"].as_str().expect("an account"))
                .is_some()
        );
        for variable in pod["containers"][0]["env"].as_array().expect("environment") {
            let Some(reference) = variable["valueFrom"]["secretKeyRef"].as_object() else { continue };
            if reference.get("optional") == Some(&json!(true)) {
                continue;
            }
            let secret =
                fake.object("secrets", "railyard", reference["name"].as_str().expect("a name")).expect("the Secret");
            assert!(secret["data"][reference["key"].as_str().expect("a key")].is_string(), "{variable}");
        }
        assert_eq!(
            fake.object("services", "railyard", "railyard").expect("the Service")["spec"]["ports"][0]["protocol"],
            "TCP"
        );
    }
    let fake = FakeKube::start();
    install(&fake, &ha_manifest());
    assert_eq!(fake.names("roles", "railyard"), ["railyard-leader-election"]);
    assert_eq!(fake.names("rolebindings", "railyard"), ["railyard-leader-election"]);
    assert_eq!(fake.names("poddisruptionbudgets", "railyard"), ["railyard"]);
    assert_eq!(fake.names("clusterroles", ""), ["railyard"]);
    assert_eq!(fake.object("deployments", "railyard", "railyard").expect("the Deployment")["spec"]["replicas"], 2);
}

/// With the HA file's RBAC, railyard's service account reads, creates and updates the Lease in namespace
/// `railyard`, and nothing more on Leases: not in another namespace, not across namespaces, no delete. With the
/// single-replica file's RBAC it has no Lease at all (that install runs no election). The cluster-wide rights
/// stay: railyard still applies an environment's Deployment in a namespace it creates.
#[test]
fn the_ha_rbac_grants_leases_only_in_railyards_namespace() {
    let fake = FakeKube::start_with_rbac(&ha_manifest());
    install(&fake, &ha_manifest());
    let railyard = format!("Bearer {RAILYARD_TOKEN}");
    let request = |method: &str, path: &str, body: &Value| {
        let headers = [("Authorization", railyard.as_str()), ("Content-Type", "application/json")];
        let body = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
        support::http(fake.port(), method, path, &headers, &body)
    };
    let lease = |namespace: &str| {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": { "name": "railyard", "namespace": namespace },
            "spec": { "holderIdentity": "railyard-7d9f-abcde", "leaseDurationSeconds": 15 },
        })
    };
    let leases = "/apis/coordination.k8s.io/v1/namespaces/railyard/leases";
    let (code, body) = request("GET", &format!("{leases}/railyard"), &Value::Null);
    assert_eq!(code, 404, "get is granted, and there is no Lease yet: {body}");
    let (code, body) = request("POST", leases, &lease("railyard"));
    assert_eq!(code, 201, "{body}");
    let mut renewed: Value = serde_json::from_str(&body).expect("the Lease");
    renewed["spec"]["renewTime"] = json!("2026-01-01T00:00:10.000000Z");
    let (code, body) = request("PUT", &format!("{leases}/railyard"), &renewed);
    assert_eq!(code, 200, "{body}");
    let (code, body) = request("DELETE", &format!("{leases}/railyard"), &Value::Null);
    assert_eq!(code, 403, "{body}");
    let (code, body) = request("GET", "/apis/coordination.k8s.io/v1/leases", &Value::Null);
    assert_eq!(code, 403, "{body}");

    let (code, body) =
        request("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases", &lease("kube-system"));
    assert_eq!(code, 403, "{body}");
    let status: Value = serde_json::from_str(&body).expect("a Status");
    assert_eq!(
        status["message"],
        "leases.coordination.k8s.io is forbidden: User \"system:serviceaccount:railyard:railyard\" cannot create \
         resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"kube-system\""
    );
    let (code, body) =
        request("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-1", &Value::Null);
    assert_eq!(code, 403, "{body}");

    let apply = |path: &str, body: &Value| {
        let headers = [("Authorization", railyard.as_str()), ("Content-Type", "application/apply-patch+yaml")];
        support::http(
            fake.port(),
            "PATCH",
            &format!("{path}?fieldManager=railyard"),
            &headers,
            body.to_string().as_bytes(),
        )
    };
    let namespace = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "shop" } });
    let (code, body) = apply("/api/v1/namespaces/shop", &namespace);
    assert_eq!(code, 201, "{body}");
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web", "namespace": "shop" },
        "spec": {
            "selector": { "matchLabels": { "app.kubernetes.io/name": "web" } },
            "template": {
                "metadata": { "labels": { "app.kubernetes.io/name": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "web:1" }] },
            },
        },
    });
    let (code, body) = apply("/apis/apps/v1/namespaces/shop/deployments/web", &deployment);
    assert_eq!(code, 201, "{body}");

    let single = FakeKube::start();
    install(&single, &repository_file("docker/kubernetes.yaml"));
    let headers = [("Authorization", railyard.as_str())];
    let (code, body) = support::http(single.port(), "GET", &format!("{leases}/railyard"), &headers, b"");
    assert_eq!(code, 403, "the single-replica install elects nobody: {body}");
}

// The image.

/// A name unique to this run, for images and containers.
fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("rytest-{what}-{}-{nanos:x}", std::process::id())
}

/// Removes an image tag on drop (the layers go with it when nothing else uses them).
struct ImageGuard(String);

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["image", "rm", "--force", &self.0]).output();
    }
}

/// Removes a container on drop, running or not.
struct ContainerGuard(String);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "--force", "--volumes", &self.0]).output();
    }
}

/// The image, built from this test's own railyard binary by scripts/build-image (no registry, no network beyond
/// Debian's package mirror), answers `--version`; run as docker/kubernetes-ha.yaml runs it (read-only root
/// filesystem, /tmp and the state directory writable, every capability dropped, no privilege escalation), `serve`
/// answers `/healthz` on a port published to 127.0.0.1, and its process runs as uid and gid 65532.
#[test]
fn the_image_builds_from_debian_packages_and_serves_as_uid_65532() {
    support::require_docker();
    let image = ImageGuard(format!("railyard-test/railyard:{}", unique("image")));
    let output = Command::new(repository_file("scripts/build-image"))
        .args(["--binary", env!("CARGO_BIN_EXE_railyard"), "--tag", &image.0])
        .output()
        .expect("scripts/build-image runs");
    assert!(output.status.success(), "scripts/build-image failed:\n{}", String::from_utf8_lossy(&output.stderr));

    let inspected: Value =
        serde_json::from_str(&support::docker(&["image", "inspect", &image.0])).expect("docker image inspect is JSON");
    let config = &inspected[0]["Config"];
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(config["Entrypoint"], json!(["/usr/local/bin/railyard"]));
    assert_eq!(config["Cmd"], json!(["serve", "--listen", "0.0.0.0:8700", "--state-dir", "/var/lib/railyard"]));

    let version = support::docker(&["run", "--rm", &image.0, "--version"]);
    assert_eq!(version, format!("railyard {}", env!("CARGO_PKG_VERSION")));

    // A config repository to follow (a plain directory), readable by uid 65532.
    let config_repo = tempfile::tempdir().expect("tempdir");
    std::fs::write(config_repo.path().join("railyard.yaml"), "kind: Project\nname: imagetest\n").expect("write");
    std::fs::set_permissions(config_repo.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let container = ContainerGuard(unique("serve"));
    let mount = format!("{}:/config:ro", config_repo.path().display());
    support::docker(&[
        "run",
        "--detach",
        "--name",
        &container.0,
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--tmpfs",
        "/var/lib/railyard:uid=65532,gid=65532",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--volume",
        &mount,
        "--publish",
        "127.0.0.1::8700",
        &image.0,
        "serve",
        "--repo",
        "/config",
        "--listen",
        "0.0.0.0:8700",
        "--state-dir",
        "/var/lib/railyard",
    ]);
    let published = support::docker(&["port", &container.0, "8700/tcp"]);
    let first = published.lines().next().unwrap_or_default();
    assert!(first.starts_with("127.0.0.1:"), "published on {first}, not 127.0.0.1");
    let port: u16 = first.rsplit(':').next().and_then(|port| port.parse().ok()).expect("a port");
    let healthy = support::eventually(Duration::from_secs(30), || {
        support::http_get(port, "/healthz").is_some_and(|(code, body)| code == 200 && body.trim() == "ok")
    });
    let logs = || {
        let output = Command::new("docker").args(["logs", &container.0]).output().expect("docker logs");
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
    };
    assert!(healthy, "/healthz never answered 200 in the container:\n{}", logs());

    let processes = support::docker(&["top", &container.0, "-o", "pid,uid,gid,comm"]);
    let railyard = processes.lines().skip(1).find(|line| line.ends_with("railyard"));
    let fields: Vec<&str> =
        railyard.unwrap_or_else(|| panic!("no railyard process:\n{processes}")).split_whitespace().collect();
    assert_eq!(fields[1..3], ["65532", "65532"], "{processes}");
}
