//! Every integration test in one binary: the shared helpers (`support`: the Docker guard, git repositories, the
//! fake Kubernetes API server and forge) are compiled and linked once instead of once per file. Each file of
//! `tests/` is a module; `scripts/test --fast` picks the tier that needs no Docker by module (`test(/^plan::/)`).

mod support;

mod audit;
mod browser;
mod build_daemon;
mod build_docker;
mod build_kubernetes;
mod caddy;
mod converge;
mod daemon;
mod dashboard;
mod docker;
mod docs;
mod doctor;
mod environments;
mod export_build;
mod fake_kube;
mod forge;
mod hybrid;
mod install;
mod jobs_api;
mod jobs_daemon;
mod jobs_docker;
mod jobs_plan;
mod kubernetes_backend;
mod kubernetes_cluster;
mod kubernetes_events;
mod kubernetes_export;
mod kubernetes_jobs;
mod kubernetes_manifest;
mod logs_api;
mod logs_docker;
mod logs_kubernetes;
mod plan;
mod policies;
mod previews;
mod quickstart;
mod readme;
mod replicas;
mod schema_export;
mod secrets;
mod settings;
mod sops;
mod source;
mod status;
mod store;
mod targets;
mod tracing_otlp;
mod validation;
