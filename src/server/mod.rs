//! The HTTP side: webhooks, the JSON API, `/metrics`, `/healthz` and `/readyz`. It reads the daemon's state and the
//! store and fires triggers; it never calls a backend itself.

pub mod webhooks;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use tracing::info;

use crate::daemon::Daemon;
use crate::daemon::trigger::Trigger;
use crate::store::Delivery;
use webhooks::{Forge, judge};

/// Largest webhook body accepted by default; GitHub's push payloads are far smaller unless thousands of commits.
pub const DEFAULT_WEBHOOK_LIMIT: usize = 1 << 20;

/// What the handlers share.
pub struct ServerState {
    pub daemon: Arc<Daemon>,
    pub branch: String,
    pub webhook_secret: Option<Vec<u8>>,
    pub api_token: Option<String>,
    pub webhook_limit: usize,
}

pub fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/environments", get(environments))
        .route("/api/v1/environments/{env}", get(environment))
        .route("/api/v1/syncs", get(syncs))
        .route("/api/v1/syncs/{id}", get(sync_detail))
        .route("/api/v1/webhooks", get(deliveries))
        .route("/api/v1/sync", post(sync_now))
        .route("/hooks/{forge}", post(webhook))
        .with_state(state)
}

fn problem(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn readyz(State(state): State<Arc<ServerState>>) -> Response {
    if state.daemon.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "the config repository has not been fetched yet\n").into_response()
    }
}

async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.daemon.metrics.render(),
    )
        .into_response()
}

async fn environments(State(state): State<Arc<ServerState>>) -> Response {
    let summaries: Vec<serde_json::Value> = state
        .daemon
        .environments()
        .iter()
        .map(|env| {
            let env = env.state();
            json!({
                "name": env.name,
                "project": env.project,
                "commit": env.commit,
                "syncStatus": env.sync_status,
                "health": env.health,
                "lastSyncMs": env.last_sync_ms,
                "lastSyncDurationMs": env.last_sync_duration_ms,
                "apps": env.apps.len(),
                "error": env.error,
            })
        })
        .collect();
    Json(summaries).into_response()
}

async fn environment(State(state): State<Arc<ServerState>>, Path(name): Path<String>) -> Response {
    match state.daemon.env(&name) {
        Some(env) => Json(env.state()).into_response(),
        None => problem(StatusCode::NOT_FOUND, format!("no environment `{name}`")),
    }
}

#[derive(Deserialize)]
struct HistoryQuery {
    env: Option<String>,
    #[serde(default)]
    page: u32,
}

async fn syncs(State(state): State<Arc<ServerState>>, Query(query): Query<HistoryQuery>) -> Response {
    match state.daemon.store.syncs(query.env.as_deref(), query.page) {
        Ok(page) => Json(page).into_response(),
        Err(error) => problem(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

async fn sync_detail(State(state): State<Arc<ServerState>>, Path(id): Path<i64>) -> Response {
    match state.daemon.store.sync(id) {
        Ok(Some(record)) => Json(record).into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, format!("no sync {id}")),
        Err(error) => problem(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

async fn deliveries(State(state): State<Arc<ServerState>>, Query(query): Query<HistoryQuery>) -> Response {
    match state.daemon.store.deliveries(query.page) {
        Ok(page) => Json(page).into_response(),
        Err(error) => problem(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

/// True when the request carries the API token as a bearer token.
pub fn authorized(state: &ServerState, headers: &HeaderMap) -> bool {
    let Some(token) = &state.api_token else { return false };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    given.is_some_and(|given| bool::from(given.trim().as_bytes().ct_eq(token.as_bytes())))
}

#[derive(Deserialize, Default)]
struct SyncRequest {
    env: Option<String>,
}

async fn sync_now(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    Query(query): Query<SyncRequest>,
) -> Response {
    if state.api_token.is_none() {
        return problem(
            StatusCode::FORBIDDEN,
            "the API is read-only: start railyard with --api-token-file or RAILYARD_API_TOKEN",
        );
    }
    if !authorized(&state, &headers) {
        return problem(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let name = query.env.unwrap_or_else(|| crate::model::Environment::PRODUCTION.to_owned());
    let Some(env) = state.daemon.env(&name) else {
        return problem(StatusCode::NOT_FOUND, format!("no environment `{name}`"));
    };
    env.trigger.fire(Trigger::Api);
    info!(env = %name, "sync requested through the API");
    (StatusCode::ACCEPTED, Json(json!({ "env": name, "status": "sync queued" }))).into_response()
}

async fn webhook(
    State(state): State<Arc<ServerState>>,
    Path(forge): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(forge) = Forge::parse(&forge) else {
        return problem(
            StatusCode::NOT_FOUND,
            format!("no webhook `{forge}`; use github, gitlab, gitea, forgejo or generic"),
        );
    };
    let Some(secret) = &state.webhook_secret else {
        return problem(
            StatusCode::FORBIDDEN,
            "webhooks are off: start railyard with --webhook-secret-file or RAILYARD_WEBHOOK_SECRET",
        );
    };
    let body: Bytes = match axum::body::to_bytes(body, state.webhook_limit).await {
        Ok(body) => body,
        Err(_) => {
            record(&state, forge, "", false, "body over the size limit");
            return problem(StatusCode::PAYLOAD_TOO_LARGE, format!("body over {} bytes", state.webhook_limit));
        }
    };
    let verdict = judge(forge, &headers, &body, secret, &state.branch);
    record(&state, forge, &verdict.event, verdict.accepted(), &verdict.reason);
    if verdict.sync {
        state.daemon.production.trigger.fire(Trigger::Webhook);
    }
    let body =
        if verdict.accepted() { json!({ "status": verdict.reason }) } else { json!({ "error": verdict.reason }) };
    (verdict.status, Json(body)).into_response()
}

fn record(state: &ServerState, forge: Forge, event: &str, accepted: bool, reason: &str) {
    state.daemon.metrics.count_webhook(forge.as_str(), if accepted { "accepted" } else { "rejected" });
    let received_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let delivery = Delivery {
        received_ms,
        forge: forge.as_str().to_owned(),
        event: event.to_owned(),
        accepted,
        reason: reason.to_owned(),
    };
    if let Err(error) = state.daemon.store.record_delivery(&delivery) {
        tracing::error!(%error, "cannot record the webhook delivery");
    }
}
