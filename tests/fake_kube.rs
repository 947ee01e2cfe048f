//! The fake Kubernetes API server's own tests (issue 13): kube-rs's real client, over loopback HTTP, sees what a
//! real API server would answer for the requests the Kubernetes backend sends: server-side apply creating and
//! updating, resourceVersion, label-selector lists, a conflict between two field managers (409 naming the field and
//! the manager) and `force`, deletes, the namespace cascade, a Deployment status the test sets, and the request log.
//! Issue 24: each behaviour railyard depends on, stated as the real server has it: lists merged by the keys the
//! official OpenAPI declares (the table checked against it), per-field ownership, defaulting, validation against
//! the OpenAPI (422), immutable fields, namespace termination (403 for new content), status lagging the
//! generation, 401 without a token and 403 for a verb the shipped ClusterRole does not grant.
//! Issue 25: Leases for leader election as the real server keeps them: create once (409 AlreadyExists after),
//! updates (PUT) conditional on `metadata.resourceVersion` (409 Conflict for a stale one, so of two updates from one
//! version exactly one wins), unconditional without it; the User-Agent of each request logged; and a RoleBinding
//! granting only in its own namespace.

use crate::support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::fake_kube::{CONTROLLER_TOKEN, FakeKube, RAILYARD_TOKEN, Rollout};

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

    // A field the manager no longer applies is removed (nobody else owns it), and defaulting puts back the
    // server's default: the count falls to 1.
    let without_replicas =
        apply_deployment(&deployments, "railyard", &deployment("web", "web:2", None)).await.expect("apply");
    assert_eq!(without_replicas.spec.replicas, Some(1));
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

/// Deleting a namespace answers with the namespace, Terminating (`deletionTimestamp` set, the `kubernetes`
/// finalizer held): what is in it stays readable, new objects in it are refused with 403 Forbidden (the
/// NamespaceLifecycle admission plugin, `NamespaceTerminating`), updates of objects already there are let through,
/// and once the namespace controller has run (later reads of namespaces) it is gone with everything in it, other
/// namespaces untouched.
#[tokio::test]
async fn a_deleted_namespace_terminates_refusing_new_content_then_goes_with_what_is_in_it() {
    let fake = FakeKube::start();
    fake.set_namespace_termination_reads(1);
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
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.status.and_then(|status| status.phase).as_deref(), Some("Terminating"));
    assert_eq!(terminating.spec.and_then(|spec| spec.finalizers), Some(vec!["kubernetes".to_string()]));
    assert_eq!(fake.names("deployments", "shop"), ["web"], "its content goes with it, not before");

    let shop: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let error = apply_deployment(&shop, "railyard", &deployment("api", "api:1", None)).await.expect_err("403");
    let kube::Error::Api(status) = error else { panic!("expected an API error, got {error:?}") };
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        status.message,
        "deployments.apps \"api\" is forbidden: unable to create new content in namespace shop because it is being terminated"
    );
    assert_eq!(status.details.expect("details").causes[0].reason, "NamespaceTerminating");
    apply_deployment(&shop, "railyard", &deployment("web", "web:2", None)).await.expect("an update is let through");

    let still = namespaces.get("shop").await.expect("one read still sees it");
    assert!(still.metadata.deletion_timestamp.is_some());
    let left: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(!left.contains(&"shop".to_string()) && left.contains(&"keep".to_string()), "{left:?}");
    assert!(fake.names("deployments", "shop").is_empty());
    assert!(fake.names("horizontalpodautoscalers", "shop").is_empty());
    assert_eq!(fake.names("deployments", "keep"), ["web"]);
    assert_eq!(fake.names("horizontalpodautoscalers", "keep"), ["web"]);
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

    assert!(!fake.set_rollout("shop", "missing", Rollout::Available), "no such Deployment");
}

/// The Deployment controller reacts to a spec change after the write has been answered: the apply's answer still
/// carries the status of the previous generation (`observedGeneration` behind `generation`), and a later read shows
/// the controller's status for the new one. A rule decides the rollout of Deployments the test named none for.
#[tokio::test]
async fn status_catches_up_with_the_generation_only_at_a_later_read() {
    let fake = FakeKube::start();
    let client = fake.client();
    apply_namespace(&client, "shop").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    fake.set_rollout_rule(|body| {
        let image = body.pointer("/spec/template/spec/containers/0/image").and_then(Value::as_str).unwrap_or("");
        Some(if image.ends_with(":broken") { Rollout::ProgressDeadlineExceeded } else { Rollout::Available })
    });
    let broken =
        apply_deployment(&deployments, "railyard", &deployment("api", "api:broken", None)).await.expect("apply");
    assert!(broken.status.is_none(), "the controller has not run yet");
    let read = deployments.get("api").await.expect("get");
    assert_eq!(condition(&read, "Progressing"), Some(("False".into(), Some("ProgressDeadlineExceeded".into()))));
    assert!(resource_version(&read) > resource_version(&broken), "the controller's status write");

    let fixed = apply_deployment(&deployments, "railyard", &deployment("api", "api:1", None)).await.expect("apply");
    assert_eq!(fixed.metadata.generation, Some(2));
    assert_eq!(fixed.status.as_ref().and_then(|status| status.observed_generation), Some(1), "still the old one");
    let read = deployments.get("api").await.expect("get");
    assert_eq!(condition(&read, "Available").map(|found| found.0), Some("True".into()));
    assert_eq!(read.status.as_ref().and_then(|status| status.observed_generation), Some(2));
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
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "CronJob",
            "Deployment",
            "Event",
            "HorizontalPodAutoscaler",
            "Ingress",
            "Job",
            "Lease",
            "Namespace",
            "NetworkPolicy",
            "PersistentVolumeClaim",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Secret",
            "Service",
            "ServiceAccount"
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
    let token = format!("Bearer {RAILYARD_TOKEN}");
    let headers = [("Content-Type", "application/apply-patch+yaml"), ("Authorization", token.as_str())];
    let (code, body) = support::http(fake.port(), "PATCH", path, &headers, yaml.as_bytes());
    assert_eq!(code, 201, "{body}");
    let stored = fake.object("persistentvolumeclaims", "default", "data").expect("stored");
    assert_eq!(stored["spec"]["resources"]["requests"]["storage"], "1Gi");

    let merge = [("Content-Type", "application/merge-patch+json"), ("Authorization", token.as_str())];
    let (code, body) = support::http(fake.port(), "PATCH", path, &merge, b"{}");
    assert_eq!(code, 415, "only server-side apply is served: {body}");
    let (code, body) = support::http(
        fake.port(),
        "GET",
        "/api/v1/namespaces/default/persistentvolumeclaims?labelSelector=app.kubernetes.io%2Fmanaged-by%3Drailyard",
        &[("Authorization", token.as_str())],
        b"",
    );
    assert_eq!(code, 200);
    let list: Value = serde_json::from_str(&body).expect("JSON list");
    assert_eq!(list["kind"], "PersistentVolumeClaimList");
    assert_eq!(list["items"][0]["metadata"]["name"], "data");
}

// Issue 24: server-side apply as structured-merge-diff does it, and defaulting as the API server does it.

/// The `_definitions.json` of the OpenAPI documents that `kubernetes-validate` ships for the version the fake
/// claims (installed by scripts/install-deps into `.venv-tools`).
fn openapi_definitions() -> Value {
    let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-tools/lib");
    let python = std::fs::read_dir(&lib)
        .unwrap_or_else(|error| panic!("{} unreadable ({error}); run scripts/install-deps", lib.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.join("site-packages/kubernetes_validate").is_dir())
        .unwrap_or_else(|| panic!("no kubernetes_validate under {}; run scripts/install-deps", lib.display()));
    let file = python.join("site-packages/kubernetes_validate/kubernetes-json-schema/v1.37.0-local/_definitions.json");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|error| panic!("{}: {error}", file.display()));
    serde_json::from_str(&text).expect("the OpenAPI definitions are JSON")
}

/// Every list in `kind` (status left out) that the OpenAPI declares `map` or `set`: (kind, path, description).
fn declared_list_types(definitions: &Value, group: &str, version: &str, kind: &str) -> Vec<(String, String, String)> {
    fn reference(schema: &Value) -> Option<&str> {
        let reference = schema.get("$ref").or_else(|| schema.pointer("/allOf/0/$ref"))?.as_str()?;
        reference.rsplit('/').next()
    }
    fn walk(
        definitions: &Value,
        kind: &str,
        schema: &Value,
        path: &str,
        seen: &mut Vec<String>,
        found: &mut Vec<(String, String, String)>,
    ) {
        let mut schema = schema;
        let mut entered = false;
        if let Some(name) = reference(schema) {
            if seen.iter().any(|visited| visited == name) {
                return;
            }
            seen.push(name.to_string());
            entered = true;
            schema = &definitions["$defs"][name];
        }
        for (field, property) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
            let path = if path.is_empty() { field.clone() } else { format!("{path}.{field}") };
            if path == "status" || path == "metadata.managedFields" {
                continue;
            }
            let is_array = match property.get("type") {
                Some(Value::String(kind)) => kind == "array",
                Some(Value::Array(kinds)) => kinds.contains(&json!("array")),
                _ => false,
            };
            if is_array {
                match property.get("x-kubernetes-list-type").and_then(Value::as_str) {
                    Some("map") => {
                        let keys = property["x-kubernetes-list-map-keys"].as_array().expect("map keys");
                        let keys: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
                        found.push((kind.into(), path.clone(), format!("map by {}", keys.join("+"))));
                    }
                    Some("set") => found.push((kind.into(), path.clone(), "set".into())),
                    _ => {}
                }
                walk(definitions, kind, &property["items"], &format!("{path}[]"), seen, found);
            } else {
                walk(definitions, kind, property, &path, seen, found);
            }
        }
        if entered {
            seen.pop();
        }
    }
    let definition = support::fake_kube::openapi_definition_name(group, version, kind);
    let root = json!({ "$ref": format!("#/$defs/{definition}") });
    let mut found = Vec::new();
    walk(definitions, kind, &root, "", &mut Vec::new(), &mut found);
    found
}

/// The fake merges lists by the keys the official OpenAPI declares (`x-kubernetes-list-type`,
/// `x-kubernetes-list-map-keys`), as structured-merge-diff does on the real server; its table is exactly what the
/// OpenAPI documents shipped in `kubernetes-validate` declare for every kind it serves, no list more or less.
#[test]
fn the_list_merge_table_is_the_one_the_openapi_declares() {
    use support::fake_kube::{LIST_TYPES, ListType, served_kinds};
    let definitions = openapi_definitions();
    let mut declared: Vec<(String, String, String)> = served_kinds()
        .into_iter()
        .flat_map(|(group, version, kind)| declared_list_types(&definitions, group, version, kind))
        .collect();
    declared.sort();
    let mut table: Vec<(String, String, String)> = LIST_TYPES
        .iter()
        .map(|(kind, path, list)| {
            let described = match list {
                ListType::Map(keys) => format!("map by {}", keys.join("+")),
                ListType::Set => "set".into(),
            };
            (kind.to_string(), path.to_string(), described)
        })
        .collect();
    table.sort();
    assert!(declared.iter().any(|(kind, path, _)| kind == "Deployment" && path == "spec.template.spec.containers"));
    assert_eq!(table, declared, "LIST_TYPES in tests/support/fake_kube.rs differs from the OpenAPI");
}

/// `railyard`'s web Deployment with env `LOG_LEVEL` and a port, the shape the backend applies.
fn web_with_env(image: &str, env: &[(&str, &str)]) -> Value {
    let mut body = deployment("web", image, Some(2));
    let env: Vec<Value> = env.iter().map(|(name, value)| json!({ "name": name, "value": value })).collect();
    body["spec"]["template"]["spec"]["containers"][0]["env"] = json!(env);
    body["spec"]["template"]["spec"]["containers"][0]["ports"] = json!([{ "name": "http", "containerPort": 8080 }]);
    body
}

fn container_env(deployment: &Deployment) -> Vec<(String, String)> {
    let pod = deployment.spec.template.spec.as_ref().expect("pod spec");
    pod.containers[0]
        .env
        .iter()
        .flatten()
        .map(|var| (var.name.clone(), var.value.clone().unwrap_or_default()))
        .collect()
}

fn fields_of(deployment: &Deployment, manager: &str) -> Value {
    let entry =
        deployment.metadata.managed_fields.iter().flatten().find(|entry| entry.manager.as_deref() == Some(manager));
    entry.map(|entry| serde_json::to_value(&entry.fields_v1).expect("fieldsV1")).unwrap_or(Value::Null)
}

/// Containers and env merge by `name` (`x-kubernetes-list-map-keys`): a variable `kubectl set env` added (an
/// Update) is kept and stays its manager's when the applier applies its own list again, with no conflict; the
/// applier owns its items one by one in `managedFields` (`k:{"name":"web"}` with `"."`), as the real server
/// writes them.
#[tokio::test]
async fn env_items_merge_by_name_and_a_variable_another_manager_added_stays_theirs() {
    let fake = FakeKube::start();
    let client = fake.client();
    apply_namespace(&client, "shop").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let mine = web_with_env("web:1", &[("LOG_LEVEL", "info")]);
    let applied = apply_deployment(&deployments, "railyard", &mine).await.expect("apply");
    let fields = fields_of(&applied, "railyard");
    let container = &fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
    assert_eq!(container["."], json!({}), "{fields}");
    assert_eq!(container["f:env"]["k:{\"name\":\"LOG_LEVEL\"}"]["f:value"], json!({}), "{fields}");
    assert_eq!(
        container["f:ports"]["k:{\"containerPort\":8080,\"protocol\":\"TCP\"}"]["f:name"],
        json!({}),
        "ports are keyed by containerPort and protocol (defaulted to TCP): {fields}"
    );

    assert!(fake.edit("deployments", "shop", "web", "kubectl-set", |body| {
        let env = body["spec"]["template"]["spec"]["containers"][0]["env"].as_array_mut().expect("env");
        env.push(json!({ "name": "DEBUG", "value": "1" }));
    }));
    let again = apply_deployment(&deployments, "railyard", &mine).await.expect("no conflict: DEBUG is not railyard's");
    assert_eq!(
        container_env(&again),
        [("LOG_LEVEL".into(), "info".into()), ("DEBUG".into(), "1".into())],
        "the other manager's variable is kept"
    );
    let theirs = fields_of(&again, "kubectl-set");
    let env = &theirs["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["f:env"];
    assert_eq!(
        env.as_object().map(|items| items.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["k:{\"name\":\"DEBUG\"}".to_string()])
    );

    // A new variable of the applier's joins the list; the other manager's stays.
    let more = web_with_env("web:1", &[("LOG_LEVEL", "info"), ("PORT", "8080")]);
    let merged = apply_deployment(&deployments, "railyard", &more).await.expect("apply");
    let names: Vec<String> = container_env(&merged).into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["LOG_LEVEL", "DEBUG", "PORT"]);
}

/// A changed value inside a keyed item that another manager owns (`kubectl edit` of the image) is a 409 Conflict
/// in the real `Status` shape, the field named with its item's key (`containers[name="web"].image`); `force=true`
/// takes it over.
#[tokio::test]
async fn a_keyed_field_another_manager_owns_conflicts_naming_the_item_until_forced() {
    let fake = FakeKube::start();
    let client = fake.client();
    apply_namespace(&client, "shop").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    apply_deployment(&deployments, "railyard", &web_with_env("web:1", &[])).await.expect("apply");
    assert!(fake.edit("deployments", "shop", "web", "kubectl-edit", |body| {
        body["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:hotfix");
    }));
    let error = apply_deployment(&deployments, "railyard", &web_with_env("web:2", &[])).await.expect_err("409");
    let kube::Error::Api(status) = error else { panic!("expected an API error, got {error:?}") };
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        status.message,
        "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using apps/v1: \
         .spec.template.spec.containers[name=\"web\"].image"
    );
    let details = status.details.expect("details");
    assert_eq!((details.name.as_str(), details.group.as_str(), details.kind.as_str()), ("web", "apps", "deployments"));
    assert_eq!(details.causes[0].field, ".spec.template.spec.containers[name=\"web\"].image");
    let forced = deployments
        .patch("web", &PatchParams::apply("railyard").force(), &Patch::Apply(&web_with_env("web:2", &[])))
        .await
        .expect("force");
    assert_eq!(image_of(&forced), "web:2");
    assert!(fields_of(&forced, "kubectl-edit").is_null(), "kubectl-edit owned nothing else and is gone");
}

/// Applying without an item the applier owned removes it (nobody else owns it); an item another manager owns
/// stays, as structured-merge-diff removes only the applier's own fields.
#[tokio::test]
async fn an_item_the_applier_leaves_out_is_removed_and_another_managers_item_stays() {
    let fake = FakeKube::start();
    let client = fake.client();
    apply_namespace(&client, "shop").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let both = web_with_env("web:1", &[("A", "1"), ("B", "2")]);
    apply_deployment(&deployments, "railyard", &both).await.expect("apply");
    let other = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web" },
        "spec": { "template": { "spec": { "containers": [{ "name": "web", "env": [{ "name": "C", "value": "3" }] }] } } },
    });
    apply_deployment(&deployments, "other-tool", &other).await.expect("a second applier adds C");
    let without_b =
        apply_deployment(&deployments, "railyard", &web_with_env("web:1", &[("A", "1")])).await.expect("apply");
    let names: Vec<String> = container_env(&without_b).into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["A", "C"]);
}

/// Defaulting (`SetDefaults_Deployment`, `SetDefaults_PodSpec`, `SetDefaults_Container`): what a reader of a
/// Deployment applied with only a selector, a template and an image sees on a real cluster.
#[tokio::test]
async fn a_deployment_reads_back_with_the_servers_defaults() {
    let fake = FakeKube::start();
    let client = fake.client();
    apply_namespace(&client, "shop").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let mut body = deployment("web", "web:1.2", None);
    body["spec"]["template"]["spec"]["containers"].as_array_mut().expect("containers").extend([
        json!({ "name": "latest", "image": "sidecar:latest" }),
        json!({ "name": "untagged", "image": "registry:5000/sidecar" }),
    ]);
    let read = apply_deployment(&deployments, "railyard", &body).await.expect("apply");
    let spec = read.spec.clone();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.revision_history_limit, Some(10));
    assert_eq!(spec.progress_deadline_seconds, Some(600));
    let strategy = serde_json::to_value(spec.strategy.expect("strategy")).expect("json");
    assert_eq!(
        strategy,
        json!({ "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": "25%", "maxSurge": "25%" } })
    );
    let pod = spec.template.spec.expect("pod spec");
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirst"));
    assert_eq!(pod.restart_policy.as_deref(), Some("Always"));
    assert_eq!(pod.scheduler_name.as_deref(), Some("default-scheduler"));
    assert_eq!(pod.termination_grace_period_seconds, Some(30));
    let pulls: Vec<Option<&str>> = pod.containers.iter().map(|c| c.image_pull_policy.as_deref()).collect();
    assert_eq!(pulls, [Some("IfNotPresent"), Some("Always"), Some("Always")], "a port in the registry is no tag");
    assert_eq!(pod.containers[0].termination_message_path.as_deref(), Some("/dev/termination-log"));
    assert_eq!(pod.containers[0].termination_message_policy.as_deref(), Some("File"));
    assert!(fields_of(&read, "railyard")["f:spec"].get("f:revisionHistoryLimit").is_none(), "defaults are nobody's");
}

/// Defaulting of a Service (`SetDefaults_Service`, `SetDefaults_ServicePort`) and the cluster IP allocated to it.
#[tokio::test]
async fn a_service_reads_back_with_type_protocol_target_port_and_a_cluster_ip() {
    let fake = FakeKube::start();
    let client = fake.client();
    apply_namespace(&client, "shop").await;
    let services: Api<Service> = Api::namespaced(client.clone(), "shop");
    let body = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": { "name": "web" },
        "spec": { "selector": { "app": "web" }, "ports": [{ "name": "http", "port": 80 }] },
    });
    let read = services.patch("web", &PatchParams::apply("railyard"), &Patch::Apply(&body)).await.expect("apply");
    let spec = read.spec.expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.session_affinity.as_deref(), Some("None"));
    let port = &spec.ports.expect("ports")[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert_eq!(serde_json::to_value(&port.target_port).expect("json"), json!(80));
    let ip = spec.cluster_ip.expect("a cluster IP is allocated");
    assert!(ip.starts_with("10.96."), "{ip}");
    assert_eq!(spec.cluster_ips, Some(vec![ip]));
}

/// A no-op apply stays a no-op on a defaulting server: the defaults the server added are not the applier's and
/// applying the same body again writes nothing (same resourceVersion, same generation).
#[tokio::test]
async fn applying_the_same_body_over_its_defaults_writes_nothing() {
    let fake = FakeKube::start();
    let client = fake.client();
    apply_namespace(&client, "shop").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let body = web_with_env("web:1", &[("LOG_LEVEL", "info")]);
    let first = apply_deployment(&deployments, "railyard", &body).await.expect("apply");
    let second = apply_deployment(&deployments, "railyard", &body).await.expect("apply again");
    assert_eq!(resource_version(&second), resource_version(&first));
    assert_eq!(second.metadata.generation, Some(1));
}

/// A Deployment applied without `replicas` keeps its current count only when another manager owns the field
/// (the HPA's controller scaled it, an Update): the applier's leaving it out removes nothing of theirs. When the
/// applier was its only owner, the field is removed and defaulted back to 1 (the drop the Kubernetes docs warn of
/// under "Transferring ownership").
#[tokio::test]
async fn replicas_left_out_are_kept_only_when_another_manager_owns_them() {
    let fake = FakeKube::start();
    let client = fake.client();
    apply_namespace(&client, "shop").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    apply_deployment(&deployments, "railyard", &deployment("web", "web:1", Some(4))).await.expect("apply");
    apply_deployment(&deployments, "railyard", &deployment("api", "api:1", Some(4))).await.expect("apply");
    assert!(fake.edit("deployments", "shop", "web", "kube-controller-manager", |body| {
        body["spec"]["replicas"] = json!(6);
    }));
    let web = apply_deployment(&deployments, "railyard", &deployment("web", "web:1", None)).await.expect("apply");
    assert_eq!(web.spec.replicas, Some(6), "the autoscaler's count stays");
    let api = apply_deployment(&deployments, "railyard", &deployment("api", "api:1", None)).await.expect("apply");
    assert_eq!(api.spec.replicas, Some(1), "railyard's own count falls to the default");
}

/// The definitions `kind`s reach in `definitions`, descriptions left out: what the fake validates against.
fn served_definitions(definitions: &Value) -> Value {
    fn references(value: &Value, into: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    match (key.as_str(), child.as_str()) {
                        ("$ref", Some(reference)) => into.extend(reference.rsplit('/').next().map(str::to_string)),
                        _ => references(child, into),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| references(item, into)),
            _ => {}
        }
    }
    fn without_descriptions(value: &Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .filter(|(key, _)| key.as_str() != "description")
                    .map(|(key, child)| (key.clone(), without_descriptions(child)))
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(without_descriptions).collect()),
            other => other.clone(),
        }
    }
    let mut pending: Vec<String> = support::fake_kube::served_kinds()
        .into_iter()
        .map(|(group, version, kind)| support::fake_kube::openapi_definition_name(group, version, kind))
        .collect();
    let mut reached = serde_json::Map::new();
    while let Some(name) = pending.pop() {
        if reached.contains_key(&name) {
            continue;
        }
        let definition = &definitions["$defs"][&name];
        references(definition, &mut pending);
        reached.insert(name, without_descriptions(definition));
    }
    json!({ "$defs": reached })
}

/// The fake validates against the OpenAPI that `kubernetes-validate` ships for Kubernetes 1.37: its fixture holds
/// exactly the definitions the served kinds reach there. `UPDATE_GOLDEN=1` rewrites it.
#[test]
fn the_validation_schemas_are_the_openapi_of_kubernetes_validate() {
    let expected = served_definitions(&openapi_definitions());
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(support::fake_kube::OPENAPI_FILE);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        // One space per level, as the file has always been written: a regeneration shows only what changed.
        let mut text = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b" ");
        serde::Serialize::serialize(&expected, &mut serde_json::Serializer::with_formatter(&mut text, formatter))
            .expect("JSON");
        text.push(b'\n');
        std::fs::write(&file, text).expect("write the OpenAPI fixture");
    }
    let held: Value = serde_json::from_str(&std::fs::read_to_string(&file).expect("the fixture")).expect("JSON");
    assert!(held["$defs"]["io.k8s.api.core.v1.PodSpec"].is_object());
    assert!(
        held == expected,
        "{} is not what kubernetes-validate ships; run with UPDATE_GOLDEN=1 to regenerate it",
        file.display()
    );
}

fn api_error(error: kube::Error) -> kube::core::Status {
    match error {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Every write is validated as the API server validates it: against the OpenAPI schema (a missing required
/// field, a wrong type, a field the schema does not declare), answered 422 Invalid in the server's Status shape
/// (`<Kind>.<group> "<name>" is invalid: [<field>: <why>, ...]`, one cause per field), nothing written.
#[tokio::test]
async fn a_body_the_schema_refuses_is_422_invalid_naming_each_field() {
    let fake = FakeKube::start();
    let client = fake.client();
    apply_namespace(&client, "shop").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let mut body = deployment("web", "web:1", None);
    body["spec"]["replicas"] = json!("two");
    body["spec"]["template"]["spec"]["containers"][0]["imageName"] = json!("web:1");
    body["spec"].as_object_mut().expect("spec").remove("selector");
    let status = api_error(apply_deployment(&deployments, "railyard", &body).await.expect_err("422"));
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(status.message.starts_with("Deployment.apps \"web\" is invalid: ["), "{}", status.message);
    let details = status.details.expect("details");
    assert_eq!((details.kind.as_str(), details.group.as_str()), ("Deployment", "apps"));
    let causes: Vec<(String, String)> =
        details.causes.iter().map(|cause| (cause.field.clone(), cause.reason.clone())).collect();
    for expected in [
        ("spec.selector", "FieldValueRequired"),
        ("spec.replicas", "FieldValueInvalid"),
        ("spec.template.spec.containers[0].imageName", "FieldValueInvalid"),
    ] {
        assert!(causes.contains(&(expected.0.into(), expected.1.into())), "{expected:?} in {causes:?}");
    }
    assert!(fake.object("deployments", "shop", "web").is_none(), "nothing written");
}

/// Names and labels as k8s.io/apimachinery validates them: a Service's name is a DNS-1035 label of at most 63
/// characters, a label value at most 63 characters, a container port's name at most 15 (IANA service name).
#[tokio::test]
async fn names_and_labels_past_their_limits_are_invalid() {
    let fake = FakeKube::start();
    let client = fake.client();
    apply_namespace(&client, "shop").await;
    let services: Api<Service> = Api::namespaced(client.clone(), "shop");
    let long = "a".repeat(64);
    let service = json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": long } });
    let status = api_error(
        services.patch(&long, &PatchParams::apply("railyard"), &Patch::Apply(&service)).await.expect_err("422"),
    );
    assert_eq!(
        status.message,
        format!(
            "Service \"{long}\" is invalid: metadata.name: Invalid value: \"{long}\": must be no more than 63 characters"
        )
    );

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let mut labelled = deployment("web", "web:1", None);
    labelled["metadata"]["labels"]["app.kubernetes.io/instance"] = json!(long);
    labelled["spec"]["template"]["spec"]["containers"][0]["ports"] =
        json!([{ "name": "metrics-endpoint", "containerPort": 9090 }]);
    let status = api_error(apply_deployment(&deployments, "railyard", &labelled).await.expect_err("422"));
    assert!(
        status
            .message
            .contains(&format!("metadata.labels: Invalid value: \"{long}\": must be no more than 63 characters")),
        "{}",
        status.message
    );
    assert!(
        status.message.contains(
            "spec.template.spec.containers[0].ports[0].name: Invalid value: \"metrics-endpoint\": must be no more than 15 characters"
        ),
        "{}",
        status.message
    );
}

/// Fields that may not change once set are refused with 422 (`field is immutable`): a Deployment's
/// `spec.selector`, a Service's `spec.clusterIP`, and a PersistentVolumeClaim's spec except
/// `resources.requests` (which may grow).
#[tokio::test]
async fn immutable_fields_are_refused_once_set() {
    let fake = FakeKube::start();
    let client = fake.client();
    apply_namespace(&client, "shop").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    apply_deployment(&deployments, "railyard", &deployment("web", "web:1", None)).await.expect("apply");
    let mut reselected = deployment("web", "web:1", None);
    reselected["spec"]["selector"]["matchLabels"]["tier"] = json!("front");
    reselected["spec"]["template"]["metadata"]["labels"]["tier"] = json!("front");
    let status = api_error(apply_deployment(&deployments, "railyard", &reselected).await.expect_err("422"));
    assert!(status.message.starts_with("Deployment.apps \"web\" is invalid: spec.selector: Invalid value: "));
    assert!(status.message.ends_with(": field is immutable"), "{}", status.message);

    let services: Api<Service> = Api::namespaced(client.clone(), "shop");
    let service = |ip: Option<&str>| {
        let mut body = json!({
            "apiVersion": "v1", "kind": "Service", "metadata": { "name": "web" },
            "spec": { "ports": [{ "port": 80 }] },
        });
        if let Some(ip) = ip {
            body["spec"]["clusterIP"] = json!(ip);
        }
        body
    };
    let apply_service = |body: Value| {
        let services = services.clone();
        async move { services.patch("web", &PatchParams::apply("railyard"), &Patch::Apply(&body)).await }
    };
    let created = apply_service(service(None)).await.expect("apply");
    let allocated = created.spec.and_then(|spec| spec.cluster_ip).expect("an IP");
    let status = api_error(apply_service(service(Some("10.96.9.9"))).await.expect_err("422"));
    assert_eq!(
        status.message,
        "Service \"web\" is invalid: spec.clusterIP: Invalid value: \"10.96.9.9\": field is immutable"
    );
    apply_service(service(Some(&allocated))).await.expect("the same IP is no change");

    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> = Api::namespaced(client.clone(), "shop");
    let claim = |size: &str, class: &str| {
        json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": { "name": "data" },
            "spec": {
                "accessModes": ["ReadWriteOnce"], "storageClassName": class,
                "resources": { "requests": { "storage": size } },
            },
        })
    };
    let apply_claim = |body: Value| {
        let claims = claims.clone();
        async move { claims.patch("data", &PatchParams::apply("railyard"), &Patch::Apply(&body)).await }
    };
    apply_claim(claim("1Gi", "standard")).await.expect("create");
    apply_claim(claim("2Gi", "standard")).await.expect("requests may grow");
    let status = api_error(apply_claim(claim("2Gi", "fast")).await.expect_err("422"));
    assert_eq!(
        status.message,
        "PersistentVolumeClaim \"data\" is invalid: spec: Forbidden: spec is immutable after creation except \
         resources.requests and volumeAttributesClassName for bound claims"
    );
}

/// Authentication: a request without a bearer token (or with one the server does not know) is 401 Unauthorized in
/// the real Status shape, whatever it asks for.
#[test]
fn a_request_without_a_known_token_is_401() {
    let fake = FakeKube::start();
    for headers in [vec![], vec![("Authorization", "Bearer someone-elses")]] {
        let (code, body) = support::http(fake.port(), "GET", "/api/v1/namespaces", &headers, b"");
        assert_eq!(code, 401, "{body}");
        let status: Value = serde_json::from_str(&body).expect("a Status");
        assert_eq!(
            (status["reason"].as_str(), status["message"].as_str()),
            (Some("Unauthorized"), Some("Unauthorized"))
        );
    }
    let (code, _) =
        support::http(fake.port(), "GET", "/api/v1/namespaces", &[("Authorization", "Bearer fake-token")], b"");
    assert_eq!(code, 200);
}

/// Authorization: railyard's token gets exactly the ClusterRole of docker/kubernetes.yaml (the shipped RBAC). A
/// verb it does not grant is 403 Forbidden naming the user, verb, resource, group and scope as the real server
/// does; an apply that would create an object needs `create` besides `patch`. (Every other test in the
/// Kubernetes suites runs under this RBAC: their passing shows the shipped role is enough.)
#[tokio::test]
async fn a_verb_the_shipped_role_does_not_grant_is_403() {
    let fake = FakeKube::start();
    let client = fake.client();
    apply_namespace(&client, "shop").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let created = apply_deployment(&deployments, "railyard", &deployment("web", "web:1", None)).await.expect("apply");
    let replaced = deployments.replace("web", &kube::api::PostParams::default(), &created).await;
    let status = api_error(replaced.expect_err("no update verb in the role"));
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        status.message,
        "deployments.apps \"web\" is forbidden: User \"system:serviceaccount:railyard:railyard\" cannot update \
         resource \"deployments\" in API group \"apps\" in the namespace \"shop\""
    );
    let all: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let status =
        api_error(all.delete_collection(&DeleteParams::default(), &ListParams::default()).await.expect_err("403"));
    assert!(status.message.contains("cannot deletecollection resource \"deployments\""), "{}", status.message);

    fake.revoke("apps", "deployments", "create");
    let status = api_error(
        apply_deployment(&deployments, "railyard", &deployment("api", "api:1", None)).await.expect_err("403"),
    );
    assert!(status.message.contains("cannot create resource \"deployments\""), "{}", status.message);
    apply_deployment(&deployments, "railyard", &deployment("web", "web:2", None))
        .await
        .expect("patching one there needs no create");
    fake.revoke("", "namespaces", "delete");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let status = api_error(namespaces.delete("shop", &DeleteParams::default()).await.expect_err("403"));
    assert!(
        status.message.ends_with("cannot delete resource \"namespaces\" in API group \"\" at the cluster scope"),
        "{}",
        status.message
    );
}

/// The `scale` subresource of a Deployment (autoscaling/v1 `Scale`), through which the HorizontalPodAutoscaler's
/// controller reads and sets the replica count: a change there is an Update of `spec.replicas` by that manager,
/// listed with `subresource: scale` in `managedFields`.
#[tokio::test]
async fn the_scale_subresource_reads_and_sets_replicas_as_its_managers_update() {
    let fake = FakeKube::start();
    apply_namespace(&fake.client(), "shop").await;
    let deployments: Api<Deployment> = Api::namespaced(fake.client(), "shop");
    apply_deployment(&deployments, "railyard", &deployment("web", "web:1", Some(2))).await.expect("apply");
    let controller: Api<Deployment> = Api::namespaced(fake.client_with_token(Some(CONTROLLER_TOKEN)), "shop");
    let scale = controller.get_scale("web").await.expect("get scale");
    assert_eq!(scale.spec.and_then(|spec| spec.replicas), Some(2));
    assert_eq!(scale.status.map(|status| status.selector), Some(Some("app.kubernetes.io/name=web".into())));
    let params = PatchParams { field_manager: Some("kube-controller-manager".into()), ..PatchParams::default() };
    let scaled = controller
        .patch_scale("web", &params, &Patch::Merge(json!({ "spec": { "replicas": 5 } })))
        .await
        .expect("patch scale");
    assert_eq!(scaled.spec.and_then(|spec| spec.replicas), Some(5));
    let read = deployments.get("web").await.expect("get");
    assert_eq!(read.spec.replicas, Some(5));
    let entry = read
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|entry| entry.manager.as_deref() == Some("kube-controller-manager"))
        .expect("the controller's entry");
    assert_eq!((entry.operation.as_deref(), entry.subresource.as_deref()), (Some("Update"), Some("scale")));
    assert!(fields_of(&read, "railyard")["f:spec"].get("f:replicas").is_none(), "the field moved");
}

/// metrics.k8s.io: a cluster without metrics-server answers 404 for the group; with it, PodMetrics carry their
/// pod's labels (a label selector filters them) and each container's CPU in nanocores.
#[tokio::test]
async fn pod_metrics_are_served_once_metrics_server_runs() {
    use kube::api::{ApiResource, DynamicObject};
    let fake = FakeKube::start();
    apply_namespace(&fake.client(), "shop").await;
    let deployments: Api<Deployment> = Api::namespaced(fake.client(), "shop");
    apply_deployment(&deployments, "railyard", &deployment("web", "web:1", Some(2))).await.expect("apply");
    let resource = ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    };
    let metrics: Api<DynamicObject> = Api::namespaced_with(fake.client(), "shop", &resource);
    let status = api_error(metrics.list(&ListParams::default()).await.expect_err("no metrics-server"));
    assert_eq!(status.code, 404);
    assert!(fake.set_pod_cpu("shop", "web", &[250, 750]));
    let listed = metrics.list(&ListParams::default().labels("app.kubernetes.io/name=web")).await.expect("list");
    let cpu: Vec<&str> =
        listed.items.iter().filter_map(|pod| pod.data.pointer("/containers/0/usage/cpu")?.as_str()).collect();
    assert_eq!(cpu, ["250000000n", "750000000n"]);
    let none = metrics.list(&ListParams::default().labels("app.kubernetes.io/name=api")).await.expect("list");
    assert!(none.items.is_empty());
}

// Issue 25: Leases, updates and namespaced RBAC, for leader election.

/// The Lease railyard's leader election holds in `namespace`, held by `holder`.
fn lease(namespace: &str, holder: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": { "name": "railyard", "namespace": namespace },
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "acquireTime": "2026-01-01T00:00:00.000000Z",
            "renewTime": "2026-01-01T00:00:00.000000Z",
            "leaseTransitions": 0,
        },
    })
}

/// A client with the cluster controllers' token (RBAC lets it do anything), and namespace `railyard` made.
async fn admin_with_railyard_namespace(fake: &FakeKube) -> kube::Client {
    let admin = fake.client_with_token(Some(CONTROLLER_TOKEN));
    apply_namespace(&admin, "railyard").await;
    admin
}

fn lease_version(lease: &Lease) -> String {
    lease.metadata.resource_version.clone().expect("a stored Lease has a resourceVersion")
}

fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref().and_then(|spec| spec.holder_identity.clone())
}

/// The leader election's first steps: GET of a Lease nobody made is 404 NotFound, POST creates it (201, a
/// resourceVersion), a second POST of the name is 409 AlreadyExists in the real Status shape, and discovery lists
/// the resource with the verbs leader election uses.
#[tokio::test]
async fn a_lease_is_created_once_and_a_second_create_is_already_exists() {
    let fake = FakeKube::start();
    let client = admin_with_railyard_namespace(&fake).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "railyard");
    let missing = api_error(leases.get("railyard").await.expect_err("no Lease yet"));
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "leases.coordination.k8s.io \"railyard\" not found");

    let body: Lease = serde_json::from_value(lease("railyard", "railyard-a")).expect("a Lease");
    let created = leases.create(&PostParams::default(), &body).await.expect("create the Lease");
    assert_eq!(holder(&created).as_deref(), Some("railyard-a"));
    assert!(!lease_version(&created).is_empty());
    assert_eq!(leases.get("railyard").await.expect("read back"), created);

    let taken = api_error(leases.create(&PostParams::default(), &body).await.expect_err("the name is taken"));
    assert_eq!((taken.code, taken.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(taken.message, "leases.coordination.k8s.io \"railyard\" already exists");
    let details = taken.details.expect("details");
    assert_eq!(
        (details.name.as_str(), details.group.as_str(), details.kind.as_str()),
        ("railyard", "coordination.k8s.io", "leases")
    );

    let (code, body) = support::http(
        fake.port(),
        "GET",
        "/apis/coordination.k8s.io/v1",
        &[("Authorization", &format!("Bearer {RAILYARD_TOKEN}"))],
        b"",
    );
    assert_eq!(code, 200, "{body}");
    let list: Value = serde_json::from_str(&body).expect("an APIResourceList");
    let resource = &list["resources"][0];
    assert_eq!((resource["name"].as_str(), resource["namespaced"].as_bool()), (Some("leases"), Some(true)));
    for verb in ["get", "create", "update", "patch", "list", "delete"] {
        assert!(resource["verbs"].as_array().expect("verbs").contains(&json!(verb)), "{resource}");
    }
}

/// An update (PUT) carrying the stored resourceVersion replaces the Lease and bumps its version; one carrying an
/// older version is 409 Conflict with the real server's message, nothing written; one without a resourceVersion is
/// an unconditional update, as on the real server.
#[tokio::test]
async fn an_update_with_a_stale_resource_version_is_409_conflict_and_without_one_is_unconditional() {
    let fake = FakeKube::start();
    let client = admin_with_railyard_namespace(&fake).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "railyard");
    let created: Lease = leases
        .create(&PostParams::default(), &serde_json::from_value(lease("railyard", "railyard-a")).expect("a Lease"))
        .await
        .expect("create");

    let mut renewed = created.clone();
    if let Some(spec) = renewed.spec.as_mut() {
        spec.renew_time = Some(serde_json::from_value(json!("2026-01-01T00:00:10.000000Z")).expect("a MicroTime"));
    }
    let stored = leases.replace("railyard", &PostParams::default(), &renewed).await.expect("renew the Lease");
    assert_ne!(lease_version(&stored), lease_version(&created), "an update bumps the resourceVersion");
    assert_eq!(stored.metadata.uid, created.metadata.uid, "an update keeps the uid");
    assert_eq!(stored.metadata.creation_timestamp, created.metadata.creation_timestamp);

    let mut stale = created.clone();
    if let Some(spec) = stale.spec.as_mut() {
        spec.holder_identity = Some("railyard-b".into());
    }
    let conflict = api_error(leases.replace("railyard", &PostParams::default(), &stale).await.expect_err("stale"));
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        conflict.message,
        "Operation cannot be fulfilled on leases.coordination.k8s.io \"railyard\": the object has been modified; \
         please apply your changes to the latest version and try again"
    );
    let now = leases.get("railyard").await.expect("read");
    assert_eq!((holder(&now).as_deref(), lease_version(&now)), (Some("railyard-a"), lease_version(&stored)));

    let mut unconditional = stale.clone();
    unconditional.metadata.resource_version = None;
    let taken = leases.replace("railyard", &PostParams::default(), &unconditional).await.expect("unconditional");
    assert_eq!(holder(&taken).as_deref(), Some("railyard-b"));
    assert_ne!(lease_version(&taken), lease_version(&stored));
}

/// Two replicas that read the same Lease version and both try to take it: the fake answers one at a time, as etcd
/// orders writes, so exactly one update wins and the other is 409 Conflict. Run many times over, since the order
/// between the two varies.
#[tokio::test]
async fn of_two_concurrent_updates_from_one_resource_version_exactly_one_wins() {
    let fake = FakeKube::start();
    let client = admin_with_railyard_namespace(&fake).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "railyard");
    leases
        .create(&PostParams::default(), &serde_json::from_value(lease("railyard", "nobody")).expect("a Lease"))
        .await
        .expect("create");
    for round in 0..20 {
        let read = leases.get("railyard").await.expect("read");
        let take = |identity: &str| {
            let mut wanted = read.clone();
            if let Some(spec) = wanted.spec.as_mut() {
                spec.holder_identity = Some(format!("{identity}-{round}"));
            }
            let leases = leases.clone();
            async move { leases.replace("railyard", &PostParams::default(), &wanted).await }
        };
        let (first, second) = tokio::join!(take("railyard-a"), take("railyard-b"));
        let outcomes = [&first, &second];
        let winners: Vec<&Lease> = outcomes.iter().filter_map(|outcome| outcome.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one update wins: {first:?} / {second:?}");
        let loser = outcomes.into_iter().find_map(|outcome| outcome.as_ref().err()).expect("one loses");
        let kube::Error::Api(status) = loser else { panic!("expected an API error, got {loser:?}") };
        assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
        let now = leases.get("railyard").await.expect("read");
        assert_eq!(holder(&now), holder(winners[0]), "the stored holder is the winner's");
    }
}

/// A PUT on a missing object: a Lease is created by it (its strategy allows create-on-update) unless it carries
/// a resourceVersion; a Deployment is 404. A PUT whose body names another object is 400.
#[test]
fn a_put_creates_a_missing_lease_but_not_a_missing_deployment() {
    let fake = FakeKube::start();
    let admin = format!("Bearer {}", CONTROLLER_TOKEN);
    let headers = [("Authorization", admin.as_str()), ("Content-Type", "application/json")];
    let put = |path: &str, body: &Value| support::http(fake.port(), "PUT", path, &headers, body.to_string().as_bytes());
    let (code, body) = put(
        "/api/v1/namespaces/railyard",
        &json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "railyard" } }),
    );
    assert_eq!(code, 404, "a Namespace is not created by a PUT: {body}");
    let path = "/apis/coordination.k8s.io/v1/namespaces/default/leases/railyard";
    let mut versioned = lease("default", "railyard-a");
    versioned["metadata"]["resourceVersion"] = json!("7");
    let (code, body) = put(path, &versioned);
    assert_eq!(code, 404, "a PUT with a resourceVersion never creates: {body}");
    let (code, body) = put(path, &lease("default", "railyard-a"));
    assert_eq!(code, 201, "{body}");
    assert_eq!(fake.object("leases", "default", "railyard").expect("created")["spec"]["holderIdentity"], "railyard-a");
    let (code, body) = put("/apis/coordination.k8s.io/v1/namespaces/default/leases/other", &lease("default", "x"));
    assert_eq!(code, 400, "{body}");
    let (code, body) = put("/apis/apps/v1/namespaces/default/deployments/web", &deployment("web", "web:1", None));
    assert_eq!(code, 404, "{body}");
}

/// Every request's User-Agent is logged, so a test can attribute each write to the railyard replica that sent it;
/// an update without `fieldManager` is managed under the User-Agent's program name, as the real server names it.
#[test]
fn the_request_log_keeps_each_user_agent_and_an_update_is_managed_under_it() {
    let fake = FakeKube::start();
    let admin = format!("Bearer {}", CONTROLLER_TOKEN);
    let path = "/apis/coordination.k8s.io/v1/namespaces/default/leases/railyard";
    for (replica, holder) in
        [("railyard/0.1.0 (railyard-a)", "railyard-a"), ("railyard/0.1.0 (railyard-b)", "railyard-b")]
    {
        let headers =
            [("Authorization", admin.as_str()), ("Content-Type", "application/json"), ("User-Agent", replica)];
        let (code, body) =
            support::http(fake.port(), "PUT", path, &headers, lease("default", holder).to_string().as_bytes());
        assert!(code == 200 || code == 201, "{body}");
    }
    let agents: Vec<String> =
        fake.requests().into_iter().filter(|request| request.is_write()).map(|request| request.user_agent).collect();
    assert_eq!(agents, ["railyard/0.1.0 (railyard-a)", "railyard/0.1.0 (railyard-b)"]);
    let stored = fake.object("leases", "default", "railyard").expect("the Lease");
    let managers: Vec<&str> = stored["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .filter_map(|entry| entry["manager"].as_str())
        .collect();
    assert_eq!(managers, ["railyard"], "{stored}");
    let (_, _) = support::http(fake.port(), "GET", "/version", &[("Authorization", admin.as_str())], b"");
    assert_eq!(fake.requests().last().expect("logged").user_agent, "", "no User-Agent header, logged empty");
}

/// RBAC by namespace: a Role bound by a RoleBinding grants only in the binding's namespace (403 elsewhere and
/// across all namespaces), while a ClusterRoleBinding grants everywhere; a binding to another subject grants
/// railyard nothing.
#[tokio::test]
async fn a_role_binding_grants_only_in_its_own_namespace() {
    let manifest = tempfile::NamedTempFile::new().expect("a temporary manifest");
    std::fs::write(
        manifest.path(),
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: namespaces }
rules: [{ apiGroups: [""], resources: [namespaces], verbs: [get, list, create, patch] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: { name: namespaces }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: namespaces }
subjects: [{ kind: ServiceAccount, name: railyard, namespace: railyard }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: { name: leases, namespace: railyard }
rules: [{ apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get, create, update] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: leases, namespace: railyard }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: leases }
subjects: [{ kind: ServiceAccount, name: railyard }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: { name: secrets, namespace: railyard }
rules: [{ apiGroups: [""], resources: [secrets], verbs: [get] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: secrets, namespace: railyard }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: secrets }
subjects: [{ kind: ServiceAccount, name: someone-else, namespace: railyard }]
"#,
    )
    .expect("write the manifest");
    let fake = FakeKube::start_with_rbac(manifest.path());
    let client = fake.client();
    apply_namespace(&client, "railyard").await;
    apply_namespace(&client, "shop").await;
    let body: Lease = serde_json::from_value(lease("railyard", "railyard-a")).expect("a Lease");
    let in_railyard: Api<Lease> = Api::namespaced(client.clone(), "railyard");
    let created = in_railyard.create(&PostParams::default(), &body).await.expect("create in railyard");
    in_railyard.replace("railyard", &PostParams::default(), &created).await.expect("update in railyard");

    let in_shop: Api<Lease> = Api::namespaced(client.clone(), "shop");
    let status = api_error(in_shop.get("railyard").await.expect_err("no grant in shop"));
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        status.message,
        "leases.coordination.k8s.io \"railyard\" is forbidden: User \"system:serviceaccount:railyard:railyard\" \
         cannot get resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"shop\""
    );
    let mut body_in_shop = body.clone();
    body_in_shop.metadata.namespace = Some("shop".into());
    let status = api_error(in_shop.create(&PostParams::default(), &body_in_shop).await.expect_err("403"));
    assert_eq!(status.code, 403, "{}", status.message);
    let everywhere: Api<Lease> = Api::all(client.clone());
    let status = api_error(everywhere.list(&ListParams::default()).await.expect_err("403 across namespaces"));
    assert!(
        status
            .message
            .ends_with("cannot list resource \"leases\" in API group \"coordination.k8s.io\" at the cluster scope"),
        "{}",
        status.message
    );
    let status = api_error(in_railyard.delete("railyard", &DeleteParams::default()).await.expect_err("no delete"));
    assert_eq!(status.code, 403, "{}", status.message);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "railyard");
    let status = api_error(secrets.get("x").await.expect_err("bound to someone else"));
    assert_eq!(status.code, 403, "{}", status.message);
}
