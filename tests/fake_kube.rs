//! The fake Kubernetes API server's own tests (issue 13): kube-rs's real client, over loopback HTTP, sees what a
//! real API server would answer for the requests the Kubernetes backend sends: server-side apply creating and
//! updating, resourceVersion, label-selector lists, a conflict between two field managers (409 naming the field and
//! the manager) and `force`, deletes, the namespace cascade, a Deployment status the test sets, and the request log.

use crate::support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use support::fake_kube::{FakeKube, Rollout};

/// A namespace applied by `railyard`, as the backend will create one.
async fn apply_namespace(client: &kube::Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": name, "labels": { "app.kubernetes.io/managed-by": "railyard" } },
    });
    namespaces.patch(name, &PatchParams::apply("railyard"), &Patch::Apply(&namespace)).await.expect("apply namespace");
}

/// A Deployment body for `app` in `namespace`, labelled as railyard labels it.
fn deployment(app: &str, image: &str, replicas: Option<i32>) -> Value {
    let mut body = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": app,
            "labels": {
                "app.kubernetes.io/name": app,
                "app.kubernetes.io/part-of": "shop",
                "app.kubernetes.io/managed-by": "railyard",
            },
        },
        "spec": {
            "selector": { "matchLabels": { "app.kubernetes.io/name": app } },
            "template": {
                "metadata": { "labels": { "app.kubernetes.io/name": app } },
                "spec": { "containers": [{ "name": app, "image": image }] },
            },
        },
    });
    if let Some(replicas) = replicas {
        body["spec"]["replicas"] = json!(replicas);
    }
    body
}

async fn apply_deployment(api: &Api<Deployment>, manager: &str, body: &Value) -> Result<Deployment, kube::Error> {
    let name = body["metadata"]["name"].as_str().expect("test body has a name");
    api.patch(name, &PatchParams::apply(manager), &Patch::Apply(body)).await
}

fn resource_version(deployment: &Deployment) -> u64 {
    deployment.metadata.resource_version.as_deref().expect("resourceVersion").parse().expect("numeric resourceVersion")
}

fn image_of(deployment: &Deployment) -> String {
    let spec = &deployment.spec;
    let pod = spec.template.spec.as_ref().expect("pod spec");
    pod.containers[0].image.clone().expect("image")
}

#[tokio::test]
async fn server_side_apply_creates_then_updates_and_bumps_resource_version() {
    let fake = FakeKube::start();
    let client = fake.client();
    apply_namespace(&client, "shop").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");

    let created =
        apply_deployment(&deployments, "railyard", &deployment("web", "web:1", Some(2))).await.expect("create");
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.metadata.namespace.as_deref(), Some("shop"));
    assert!(created.metadata.uid.is_some(), "a created object has a uid");
    let managers: Vec<_> = created.metadata.managed_fields.iter().flatten().collect();
    assert_eq!(managers.len(), 1, "{managers:?}");
    assert_eq!(managers[0].manager.as_deref(), Some("railyard"));
    assert_eq!(managers[0].operation.as_deref(), Some("Apply"));
    let fields = serde_json::to_value(&managers[0].fields_v1).expect("fieldsV1");
    assert_eq!(fields["f:spec"]["f:replicas"], json!({}), "railyard owns spec.replicas: {fields}");

    let again = apply_deployment(&deployments, "railyard", &deployment("web", "web:1", Some(2))).await.expect("no-op");
    assert_eq!(resource_version(&again), resource_version(&created), "an unchanged apply writes nothing");

    let updated =
        apply_deployment(&deployments, "railyard", &deployment("web", "web:2", Some(2))).await.expect("update");
    assert!(resource_version(&updated) > resource_version(&created));
    assert_eq!(updated.metadata.generation, Some(2), "a spec change bumps the generation");
    assert_eq!(updated.metadata.uid, created.metadata.uid);
    let read = deployments.get("web").await.expect("get");
    assert_eq!(image_of(&read), "web:2");
    assert_eq!(resource_version(&read), resource_version(&updated));

    // A field the manager no longer applies is removed (nobody else owns it).
    let without_replicas =
        apply_deployment(&deployments, "railyard", &deployment("web", "web:2", None)).await.expect("apply");
    assert_eq!(without_replicas.spec.replicas, None);
}

#[tokio::test]
async fn apply_into_a_missing_namespace_is_not_found() {
    let fake = FakeKube::start();
    let deployments: Api<Deployment> = Api::namespaced(fake.client(), "nowhere");
    let error = apply_deployment(&deployments, "railyard", &deployment("web", "web:1", None)).await.expect_err("404");
    let kube::Error::Api(status) = error else { panic!("expected an API error, got {error:?}") };
    assert_eq!(status.code, 404);
    assert!(status.message.contains("namespaces \"nowhere\" not found"), "{}", status.message);
}

#[tokio::test]
async fn lists_filter_by_label_selector() {
    let fake = FakeKube::start();
    let client = fake.client();
    apply_namespace(&client, "shop").await;
    apply_namespace(&client, "other").await;
    let services: Api<Service> = Api::namespaced(client.clone(), "shop");
    for (name, part_of, tier) in [("web", "shop", "front"), ("api", "shop", "back"), ("db", "shop", "data")] {
        let service = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": name, "labels": { "app.kubernetes.io/part-of": part_of, "tier": tier } },
            "spec": { "ports": [{ "name": "http", "port": 80 }] },
        });
        services.patch(name, &PatchParams::apply("railyard"), &Patch::Apply(&service)).await.expect("apply service");
    }
    let stranger = json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "stranger" } });
    services.patch("stranger", &PatchParams::apply("kubectl"), &Patch::Apply(&stranger)).await.expect("apply");
    let elsewhere = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": "web", "labels": { "app.kubernetes.io/part-of": "shop" } },
    });
    Api::<Service>::namespaced(client.clone(), "other")
        .patch("web", &PatchParams::apply("railyard"), &Patch::Apply(&elsewhere))
        .await
        .expect("apply in other namespace");

    let names = |selector: &'static str| {
        let services = services.clone();
        async move {
            let list = services.list(&ListParams::default().labels(selector)).await.expect("list");
            let mut names: Vec<String> = list.items.into_iter().filter_map(|item| item.metadata.name).collect();
            names.sort();
            names
        }
    };
    assert_eq!(names("app.kubernetes.io/part-of=shop").await, ["api", "db", "web"]);
    assert_eq!(names("app.kubernetes.io/part-of==shop,tier!=data").await, ["api", "web"]);
    assert_eq!(names("tier in (front, data)").await, ["db", "web"]);
    assert_eq!(names("tier notin (front)").await, ["api", "db", "stranger"]);
    assert_eq!(names("tier").await, ["api", "db", "web"]);
    assert_eq!(names("!tier").await, ["stranger"]);
    assert_eq!(names("").await, ["api", "db", "stranger", "web"]);

    let everywhere: Api<Service> = Api::all(client.clone());
    let all = everywhere.list(&ListParams::default().labels("app.kubernetes.io/part-of=shop")).await.expect("list");
    assert_eq!(all.items.len(), 4, "a cluster-wide list spans namespaces");
}

#[tokio::test]
async fn a_second_manager_conflicts_naming_field_and_manager_until_it_forces() {
    let fake = FakeKube::start();
    let client = fake.client();
    apply_namespace(&client, "shop").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    apply_deployment(&deployments, "railyard", &deployment("web", "web:1", Some(2))).await.expect("railyard applies");

    // The same value is shared ownership, not a conflict.
    apply_deployment(
        &deployments,
        "other-tool",
        &json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web" }, "spec": { "replicas": 2 },
        }),
    )
    .await
    .expect("applying the value already there is no conflict");

    let takeover = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web" }, "spec": { "replicas": 5 },
    });
    let error = apply_deployment(&deployments, "other-tool", &takeover).await.expect_err("409");
    let kube::Error::Api(status) = error else { panic!("expected an API error, got {error:?}") };
    assert_eq!(status.code, 409);
    assert_eq!(status.reason, "Conflict");
    assert_eq!(
        status.message,
        "Apply failed with 1 conflict: conflict with \"railyard\" using apps/v1: .spec.replicas"
    );
    let causes = status.details.expect("details").causes;
    assert_eq!(causes.len(), 1);
    assert_eq!(causes[0].field, ".spec.replicas");
    assert_eq!(causes[0].reason, "FieldManagerConflict");
    assert_eq!(deployments.get("web").await.expect("get").spec.replicas, Some(2), "nothing written");

    let forced = deployments
        .patch("web", &PatchParams::apply("other-tool").force(), &Patch::Apply(&takeover))
        .await
        .expect("force takes ownership");
    assert_eq!(forced.spec.replicas, Some(5));
    let owner_of_replicas: Vec<String> = forced
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            let fields = serde_json::to_value(&entry.fields_v1).unwrap_or_default();
            fields["f:spec"].get("f:replicas").is_some()
        })
        .filter_map(|entry| entry.manager.clone())
        .collect();
    assert_eq!(owner_of_replicas, ["other-tool"], "force moved the field's ownership");

    // railyard now conflicts in turn; leaving replicas out (as it does under an HPA) keeps the other's value.
    let error =
        apply_deployment(&deployments, "railyard", &deployment("web", "web:2", Some(2))).await.expect_err("409");
    let kube::Error::Api(status) = error else { panic!("expected an API error, got {error:?}") };
    assert!(status.message.contains("conflict with \"other-tool\""), "{}", status.message);
    let left_alone =
        apply_deployment(&deployments, "railyard", &deployment("web", "web:2", None)).await.expect("apply");
    assert_eq!(left_alone.spec.replicas, Some(5));
    assert_eq!(image_of(&left_alone), "web:2");
}

#[tokio::test]
async fn an_out_of_band_edit_takes_the_changed_fields() {
    let fake = FakeKube::start();
    let client = fake.client();
    apply_namespace(&client, "shop").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let applied =
        apply_deployment(&deployments, "railyard", &deployment("web", "web:1", Some(2))).await.expect("apply");
    assert!(fake.edit("deployments", "shop", "web", "kubectl-scale", |body| body["spec"]["replicas"] = json!(7)));
    let drifted = deployments.get("web").await.expect("get");
    assert_eq!(drifted.spec.replicas, Some(7));
    assert!(resource_version(&drifted) > resource_version(&applied));
    let error =
        apply_deployment(&deployments, "railyard", &deployment("web", "web:1", Some(2))).await.expect_err("409");
    let kube::Error::Api(status) = error else { panic!("expected an API error, got {error:?}") };
    assert!(status.message.contains("\"kubectl-scale\" using apps/v1: .spec.replicas"), "{}", status.message);
}

#[tokio::test]
async fn delete_removes_one_object() {
    let fake = FakeKube::start();
    let client = fake.client();
    apply_namespace(&client, "shop").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "shop");
    for name in ["one", "two"] {
        let secret =
            json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": name }, "stringData": { "k": "v" } });
        secrets.patch(name, &PatchParams::apply("railyard"), &Patch::Apply(&secret)).await.expect("apply secret");
    }
    let stored = secrets.get("one").await.expect("get");
    let data = stored.data.expect("stringData is stored as data");
    assert_eq!(data["k"].0, b"v".to_vec());
    assert_eq!(stored.string_data, None);
    let again =
        json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "one" }, "stringData": { "k": "v" } });
    let reapplied = secrets.patch("one", &PatchParams::apply("railyard"), &Patch::Apply(&again)).await.expect("apply");
    assert_eq!(reapplied.metadata.resource_version, stored.metadata.resource_version, "the same secret is a no-op");
    secrets.delete("one", &DeleteParams::default()).await.expect("delete");
    assert_eq!(fake.names("secrets", "shop"), ["two"]);
    let error = secrets.get("one").await.expect_err("gone");
    let kube::Error::Api(status) = error else { panic!("expected an API error, got {error:?}") };
    assert_eq!(status.code, 404);
    assert_eq!(status.message, "secrets \"one\" not found");
    let error = secrets.delete("one", &DeleteParams::default()).await.expect_err("already gone");
    assert!(matches!(error, kube::Error::Api(status) if status.code == 404));
}

#[tokio::test]
async fn deleting_a_namespace_deletes_what_is_in_it() {
    let fake = FakeKube::start();
    let client = fake.client();
    apply_namespace(&client, "shop").await;
    apply_namespace(&client, "keep").await;
    for namespace in ["shop", "keep"] {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
        apply_deployment(&deployments, "railyard", &deployment("web", "web:1", None)).await.expect("apply");
        let hpa = json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": { "name": "web" },
            "spec": {
                "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "web" },
                "minReplicas": 2, "maxReplicas": 6,
            },
        });
        Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), namespace)
            .patch("web", &PatchParams::apply("railyard"), &Patch::Apply(&hpa))
            .await
            .expect("apply hpa");
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let deleted = namespaces.delete("shop", &DeleteParams::default()).await.expect("delete namespace");
    let terminating = deleted.left().expect("a deleted namespace is answered with the namespace");
    assert_eq!(terminating.status.and_then(|status| status.phase).as_deref(), Some("Terminating"));

    assert!(fake.names("deployments", "shop").is_empty());
    assert!(fake.names("horizontalpodautoscalers", "shop").is_empty());
    assert_eq!(fake.names("deployments", "keep"), ["web"]);
    assert_eq!(fake.names("horizontalpodautoscalers", "keep"), ["web"]);
    let left: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(!left.contains(&"shop".to_string()) && left.contains(&"keep".to_string()), "{left:?}");
}

fn condition(deployment: &Deployment, kind: &str) -> Option<(String, Option<String>)> {
    let conditions = deployment.status.as_ref()?.conditions.as_ref()?;
    let found = conditions.iter().find(|condition| condition.type_.as_deref() == Some(kind))?;
    Some((found.status.clone()?, found.reason.clone()))
}

#[tokio::test]
async fn a_deployment_status_set_by_the_test_is_read_back() {
    let fake = FakeKube::start();
    let client = fake.client();
    apply_namespace(&client, "shop").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let created =
        apply_deployment(&deployments, "railyard", &deployment("web", "web:1", Some(3))).await.expect("apply");
    assert!(created.status.is_none(), "no controller saw it yet");

    assert!(fake.set_rollout("shop", "web", Rollout::Available));
    let available = deployments.get_status("web").await.expect("get status");
    let status = available.status.as_ref().expect("status");
    assert_eq!(status.available_replicas, Some(3));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(condition(&available, "Available"), Some(("True".into(), Some("MinimumReplicasAvailable".into()))));

    assert!(fake.set_rollout("shop", "web", Rollout::ProgressDeadlineExceeded));
    let stuck = deployments.get("web").await.expect("get");
    assert_eq!(condition(&stuck, "Progressing"), Some(("False".into(), Some("ProgressDeadlineExceeded".into()))));
    assert!(resource_version(&stuck) > resource_version(&available));

    // A rule decides for Deployments the test named none for, at every spec change.
    fake.set_rollout_rule(|body| {
        let image = body.pointer("/spec/template/spec/containers/0/image").and_then(Value::as_str).unwrap_or("");
        Some(if image.ends_with(":broken") { Rollout::ProgressDeadlineExceeded } else { Rollout::Available })
    });
    let broken =
        apply_deployment(&deployments, "railyard", &deployment("api", "api:broken", None)).await.expect("apply");
    assert_eq!(condition(&broken, "Progressing"), Some(("False".into(), Some("ProgressDeadlineExceeded".into()))));
    let fixed = apply_deployment(&deployments, "railyard", &deployment("api", "api:1", None)).await.expect("apply");
    assert_eq!(condition(&fixed, "Available").map(|found| found.0), Some("True".into()));
    assert_eq!(fixed.status.as_ref().and_then(|status| status.observed_generation), Some(2));
    assert!(!fake.set_rollout("shop", "missing", Rollout::Available), "no such Deployment");
}

#[tokio::test]
async fn the_request_log_counts_what_was_sent() {
    let fake = FakeKube::start();
    let client = fake.client();
    apply_namespace(&client, "shop").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    for app in ["web", "api", "worker"] {
        apply_deployment(&deployments, "railyard", &deployment(app, "img:1", None)).await.expect("apply");
    }
    fake.clear_requests();
    let listed = deployments.list(&ListParams::default().labels("app.kubernetes.io/part-of=shop")).await.expect("list");
    assert_eq!(listed.items.len(), 3);
    deployments.get("web").await.expect("get");
    apply_deployment(&deployments, "railyard", &deployment("web", "img:2", None)).await.expect("apply");

    let requests = fake.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].path, "/apis/apps/v1/namespaces/shop/deployments");
    assert!(requests[0].query.contains("labelSelector=app.kubernetes.io%2Fpart-of%3Dshop"), "{}", requests[0].query);
    assert_eq!(requests[1].path, "/apis/apps/v1/namespaces/shop/deployments/web");
    assert_eq!((requests[2].method.as_str(), requests[2].is_write()), ("PATCH", true));
    assert!(requests[2].query.contains("fieldManager=railyard"), "{}", requests[2].query);
    assert_eq!(requests.iter().filter(|request| request.is_write()).count(), 1);
}

#[tokio::test]
async fn the_kubeconfig_file_and_discovery_reach_the_fake() {
    let fake = FakeKube::start();
    let kubeconfig = kube::config::Kubeconfig::read_from(fake.kubeconfig_path()).expect("read the fake kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .expect("config from the fake kubeconfig");
    assert_eq!(config.default_namespace, "default");
    let client = kube::Client::try_from(config).expect("client");
    let version = client.apiserver_version().await.expect("version");
    assert_eq!(version.major, "1");

    let discovery = kube::discovery::Discovery::new(client.clone()).run().await.expect("discovery");
    let mut kinds: Vec<String> =
        discovery.groups().flat_map(|group| group.recommended_resources()).map(|(resource, _)| resource.kind).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "Deployment",
            "HorizontalPodAutoscaler",
            "Ingress",
            "Namespace",
            "NetworkPolicy",
            "PersistentVolumeClaim",
            "Secret",
            "Service"
        ]
    );
    let namespaces: Api<Namespace> = Api::all(client);
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"default".to_string()), "{names:?}");
}

#[tokio::test]
async fn create_posts_once_and_a_stale_resource_version_conflicts() {
    let fake = FakeKube::start();
    let client = fake.client();
    apply_namespace(&client, "shop").await;
    let services: Api<Service> = Api::namespaced(client.clone(), "shop");
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": { "name": "web" },
        "spec": { "ports": [{ "name": "http", "port": 80 }] },
    }))
    .expect("service");
    let created = services.create(&kube::api::PostParams::default(), &service).await.expect("create");
    assert_eq!(created.metadata.generation, Some(1));
    let error = services.create(&kube::api::PostParams::default(), &service).await.expect_err("duplicate");
    let kube::Error::Api(status) = error else { panic!("expected an API error, got {error:?}") };
    assert_eq!((status.code, status.reason.as_str()), (409, "AlreadyExists"));

    let stale = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": "web", "resourceVersion": "1" },
        "spec": { "ports": [{ "name": "http", "port": 8080 }] },
    });
    let error = services.patch("web", &PatchParams::apply("railyard"), &Patch::Apply(&stale)).await.expect_err("stale");
    let kube::Error::Api(status) = error else { panic!("expected an API error, got {error:?}") };
    assert_eq!(status.code, 409);
    assert!(status.message.contains("the object has been modified"), "{}", status.message);
}

/// Sync tests (those driving the railyard binary) use the fake too: it runs on its own thread. The apply body here
/// is YAML, as `application/apply-patch+yaml` allows.
#[test]
fn a_sync_test_applies_yaml_over_plain_http() {
    let fake = FakeKube::start();
    let yaml = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data\n  labels:\n    app.kubernetes.io/managed-by: railyard\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: 1Gi\n";
    let path = "/api/v1/namespaces/default/persistentvolumeclaims/data?fieldManager=railyard";
    let headers = [("Content-Type", "application/apply-patch+yaml")];
    let (code, body) = support::http(fake.port(), "PATCH", path, &headers, yaml.as_bytes());
    assert_eq!(code, 201, "{body}");
    let stored = fake.object("persistentvolumeclaims", "default", "data").expect("stored");
    assert_eq!(stored["spec"]["resources"]["requests"]["storage"], "1Gi");

    let (code, body) =
        support::http(fake.port(), "PATCH", path, &[("Content-Type", "application/merge-patch+json")], b"{}");
    assert_eq!(code, 415, "only server-side apply is served: {body}");
    let (code, body) = support::http(
        fake.port(),
        "GET",
        "/api/v1/namespaces/default/persistentvolumeclaims?labelSelector=app.kubernetes.io%2Fmanaged-by%3Drailyard",
        &[],
        b"",
    );
    assert_eq!(code, 200);
    let list: Value = serde_json::from_str(&body).expect("JSON list");
    assert_eq!(list["kind"], "PersistentVolumeClaimList");
    assert_eq!(list["items"][0]["metadata"]["name"], "data");
}
