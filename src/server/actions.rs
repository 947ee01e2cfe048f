//! The mutations the API and the pages' forms ask for: sync (a destroy, for an environment removed from the Project's
//! list), rollback and unpin. The API takes the token as a bearer token, a form in its `token` field (no page ever
//! holds it); both go through the audit trail's permit and record what came of them, and share one action each.

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use super::audit::{Answer, Attempt, Requester};
use super::tokens::{NamedToken, Verb};
use super::{ApiError, ServerState, pages};
use crate::daemon::rollback::RollbackError;

/// A form whose token is missing is refused as a wrong token is (401), not as a malformed form.
#[derive(Deserialize)]
pub(super) struct TokenForm {
    #[serde(default)]
    token: String,
}

/// A form as posted; its token is checked before anything else about it, so a malformed form is refused (and
/// recorded) as any request without the token.
type Posted<T> = Result<axum::Form<T>, FormRejection>;

/// The token a posted form carries.
fn form_token<T>(form: &Posted<T>, token: impl Fn(&T) -> &str) -> Option<String> {
    form.as_ref().ok().map(|axum::Form(form)| token(form).to_owned())
}

#[derive(Deserialize, Default)]
pub(super) struct SyncRequest {
    env: Option<String>,
}

/// `POST /api/v1/sync?env=ENV` (production when none): queues a sync.
pub(super) async fn sync_now(
    State(state): State<Arc<ServerState>>,
    requester: Requester,
    Query(request): Query<SyncRequest>,
) -> Response {
    let name = request.env.unwrap_or_else(|| crate::model::Environment::PRODUCTION.to_owned());
    let attempt = sync_attempt(&state, &requester, &name);
    let holder = match state.permit(&attempt, requester.bearer()).await {
        Ok(holder) => holder,
        Err(refusal) => return refusal.json(),
    };
    let answer = sync(&state, &name, holder).await;
    attempt.record(&state, &holder.name, &answer).await;
    answer.into_response()
}

/// The "Sync now" button.
pub(super) async fn sync_form(
    State(state): State<Arc<ServerState>>,
    requester: Requester,
    Path(name): Path<String>,
    form: Posted<TokenForm>,
) -> Response {
    let attempt = sync_attempt(&state, &requester, &name);
    let holder = match state.permit(&attempt, form_token(&form, |form| &form.token).as_deref()).await {
        Ok(holder) => holder,
        Err(refusal) => return refusal.page(),
    };
    let answer = match form {
        Ok(_) => sync(&state, &name, holder).await,
        Err(rejection) => Answer::error(rejection.status(), rejection.body_text()),
    };
    attempt.record(&state, &holder.name, &answer).await;
    page_answer(answer, &name)
}

/// Syncing an environment removed from the Project's list tears it down: that takes `destroy`. (What the page shows
/// may be behind the list; the worker destroys only when the holder may, see [`sync`].)
fn sync_attempt(state: &ServerState, requester: &Requester, env: &str) -> Attempt {
    let removed = state.daemon.env(env).is_some_and(|handle| handle.state().pending_destroy);
    let verb = if removed { Verb::Destroy } else { Verb::Sync };
    Attempt::new(requester, verb, env, &format!("{verb} {env}"))
}

/// Queues the sync, telling the worker whether the holder may destroy the environment should it turn out to be
/// removed from the list by then.
async fn sync(state: &ServerState, env: &str, holder: &NamedToken) -> Answer {
    let may_destroy = holder.allows(Verb::Destroy, Some(env)).is_ok();
    match state.daemon.sync_requested(env, may_destroy).await {
        Ok(true) => {
            info!(%env, who = %holder.name, "sync requested");
            Answer::new(StatusCode::ACCEPTED, json!({ "env": env, "status": "sync queued" }))
        }
        Ok(false) => Answer::error(StatusCode::NOT_FOUND, ApiError::NoEnvironment(env.to_owned())),
        Err(error) => Answer::error(StatusCode::SERVICE_UNAVAILABLE, ApiError::StoreDown(error.to_string())),
    }
}

/// `POST /api/v1/environments/{env}/rollback`: what the rollback does (`dryRun`) or doing it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RollbackRequest {
    #[serde(default)]
    token: String,
    #[serde(default)]
    commit: String,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    dry_run: bool,
}

impl RollbackRequest {
    fn asked(&self, env: &str) -> String {
        let short: String = self.commit.chars().take(12).collect();
        let force = if self.force { " (force)" } else { "" };
        let dry_run = if self.dry_run { " (dry run)" } else { "" };
        format!("rollback {env} to {short}{force}{dry_run}")
    }
}

pub(super) async fn rollback_api(
    State(state): State<Arc<ServerState>>,
    requester: Requester,
    Path(name): Path<String>,
    request: Result<axum::Json<RollbackRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let asked = match &request {
        Ok(axum::Json(request)) => request.asked(&name),
        Err(_) => format!("rollback {name} (an unreadable request)"),
    };
    let attempt = Attempt::new(&requester, Verb::Rollback, &name, &asked);
    // The token first: a request without one is told so, whatever its body.
    let holder = match state.permit(&attempt, requester.bearer()).await {
        Ok(holder) => holder,
        Err(refusal) => return refusal.json(),
    };
    let answer = match request {
        Ok(axum::Json(request)) => rollback(&state, &name, &request).await,
        Err(rejection) => Answer::error(rejection.status(), rejection.body_text()),
    };
    attempt.record(&state, &holder.name, &answer).await;
    answer.into_response()
}

/// The history page's "Roll back" button.
pub(super) async fn rollback_form(
    State(state): State<Arc<ServerState>>,
    requester: Requester,
    Path(name): Path<String>,
    form: Posted<RollbackRequest>,
) -> Response {
    let asked = match &form {
        Ok(axum::Form(form)) => {
            RollbackRequest { token: String::new(), commit: form.commit.clone(), force: false, dry_run: false }
                .asked(&name)
        }
        Err(_) => format!("rollback {name} (an unreadable form)"),
    };
    let attempt = Attempt::new(&requester, Verb::Rollback, &name, &asked);
    let holder = match state.permit(&attempt, form_token(&form, |form| &form.token).as_deref()).await {
        Ok(holder) => holder,
        Err(refusal) => return refusal.page(),
    };
    let answer = match form {
        Ok(axum::Form(form)) => {
            let request = RollbackRequest { force: false, dry_run: false, ..form };
            rollback(&state, &name, &request).await
        }
        Err(rejection) => Answer::error(rejection.status(), rejection.body_text()),
    };
    attempt.record(&state, &holder.name, &answer).await;
    page_answer(answer, &name)
}

async fn rollback(state: &ServerState, env: &str, request: &RollbackRequest) -> Answer {
    let done = if request.dry_run {
        state.daemon.plan_rollback(env, &request.commit, request.force).await
    } else {
        state.daemon.rollback(env, &request.commit, request.force).await
    };
    match done {
        Ok((commit, plan)) => {
            if !request.dry_run {
                info!(%env, %commit, "rolled back; auto-sync paused");
            }
            let status = if request.dry_run { "planned" } else { "rolling back; auto-sync paused" };
            let text = crate::plan::render::text(&plan, false);
            let body = json!({ "env": env, "commit": commit, "status": status, "plan": plan, "text": text });
            Answer::new(StatusCode::ACCEPTED, body)
        }
        Err(error) => rollback_refused(&error),
    }
}

fn rollback_refused(error: &RollbackError) -> Answer {
    let status = match error {
        RollbackError::NoEnvironment(_) => StatusCode::NOT_FOUND,
        RollbackError::NeverSynced { .. } | RollbackError::Invalid { .. } | RollbackError::Read { .. } => {
            StatusCode::CONFLICT
        }
        RollbackError::Plan(_) | RollbackError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    Answer::error(status, error)
}

/// Unpinning follows the branch again after a rollback: it takes `rollback`, and is recorded as `unpin`.
fn unpin_attempt(requester: &Requester, env: &str) -> Attempt {
    Attempt::new(requester, Verb::Rollback, env, &format!("unpin {env}")).named("unpin")
}

/// `POST /api/v1/environments/{env}/unpin`.
pub(super) async fn unpin_api(
    State(state): State<Arc<ServerState>>,
    requester: Requester,
    Path(name): Path<String>,
) -> Response {
    let attempt = unpin_attempt(&requester, &name);
    let holder = match state.permit(&attempt, requester.bearer()).await {
        Ok(holder) => holder,
        Err(refusal) => return refusal.json(),
    };
    let answer = unpin(&state, &name).await;
    attempt.record(&state, &holder.name, &answer).await;
    answer.into_response()
}

pub(super) async fn unpin_form(
    State(state): State<Arc<ServerState>>,
    requester: Requester,
    Path(name): Path<String>,
    form: Posted<TokenForm>,
) -> Response {
    let attempt = unpin_attempt(&requester, &name);
    let holder = match state.permit(&attempt, form_token(&form, |form| &form.token).as_deref()).await {
        Ok(holder) => holder,
        Err(refusal) => return refusal.page(),
    };
    let answer = match form {
        Ok(_) => unpin(&state, &name).await,
        Err(rejection) => Answer::error(rejection.status(), rejection.body_text()),
    };
    attempt.record(&state, &holder.name, &answer).await;
    page_answer(answer, &name)
}

async fn unpin(state: &ServerState, env: &str) -> Answer {
    match state.daemon.unpin(env).await {
        Ok(()) => Answer::new(StatusCode::ACCEPTED, json!({ "env": env, "status": "following its branch again" })),
        Err(error) => rollback_refused(&error),
    }
}

/// A form's answer: back to the environment's page when it was done, else a page that says why.
fn page_answer(answer: Answer, env: &str) -> Response {
    if answer.status.is_success() {
        return axum::response::Redirect::to(&format!("/env/{env}")).into_response();
    }
    let said = answer.body.get("error").and_then(serde_json::Value::as_str).unwrap_or("It could not be done.");
    (answer.status, pages::not_found(said)).into_response()
}
