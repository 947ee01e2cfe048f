//! The audit trail: who asked railyard to change what, from where, and what came of it. Every mutation (sync, destroy,
//! rollback, unpin, a Job's run, from the API or a page's form) passes [`ServerState::permit`], which names the token's
//! holder or refuses (401 without a known token, 403 outside its scope) and records the refusal; the handler then
//! records what came of it. Webhook deliveries that triggered something are recorded under the forge and delivery id.
//! Read by the "Audit" page and `GET /api/v1/audit`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::pages::{badge, layout, when};
use super::tokens::{Denied, NamedToken, Verb};
use super::{ApiError, ServerState, query};
use crate::daemon::now_ms;
use crate::store::{AuditEntry, AuditFilter, AuditOutcome, Page, StoredAudit};

/// How long the audit trail is kept by default (`--keep-audit`).
pub const DEFAULT_KEEP_AUDIT: std::time::Duration = std::time::Duration::from_secs(90 * 24 * 3600);

/// Who sent a request: its peer address and the bearer token it carries.
pub struct Requester {
    address: Option<String>,
    bearer: Option<String>,
}

impl Requester {
    pub fn of(parts: &Parts) -> Requester {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(address)| *address);
        Requester { address: peer.map(|peer| address(peer, &parts.headers)), bearer: bearer_of(&parts.headers) }
    }

    pub fn bearer(&self) -> Option<&str> {
        self.bearer.as_deref()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Requester {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Requester, Self::Rejection> {
        Ok(Requester::of(parts))
    }
}

/// The peer, and what `X-Forwarded-For` claims when the peer is a proxy on loopback (anyone else could make it up).
fn address(peer: SocketAddr, headers: &HeaderMap) -> String {
    let forwarded = headers
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok())
        .map(|value| printable(value, 100))
        .filter(|value| !value.is_empty());
    // A dual-stack listener sees a proxy on 127.0.0.1 as ::ffff:127.0.0.1.
    let ip = peer.ip().to_canonical();
    match forwarded {
        Some(forwarded) if ip.is_loopback() => format!("{ip} for {forwarded}"),
        _ => ip.to_string(),
    }
}

pub fn bearer_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| token.trim().to_owned())
}

/// At most `max` characters of `text`, control characters dropped (a header or a name is hostile input).
pub fn printable(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect::<String>().trim().to_owned()
}

/// The longest environment or Job name kept in an audit entry (names are DNS labels; a longer one is hostile).
const MAX_NAME: usize = 100;
/// The longest request description kept in an audit entry.
const MAX_ASKED: usize = 300;

/// A mutation asked for, before it is allowed: what the audit trail records of it either way.
pub struct Attempt {
    verb: Verb,
    /// The action's word in the trail: the verb's, or a finer one (`unpin` needs `rollback`).
    action: &'static str,
    env: Option<String>,
    asked: String,
    address: Option<String>,
}

impl Attempt {
    /// `env` and `asked` come from the request: both are cut to a bounded, printable length.
    pub fn new(requester: &Requester, verb: Verb, env: &str, asked: &str) -> Attempt {
        Attempt {
            verb,
            action: verb.as_str(),
            env: Some(printable(env, MAX_NAME)),
            asked: printable(asked, MAX_ASKED),
            address: requester.address.clone(),
        }
    }

    /// The same attempt, recorded under another action word.
    pub fn named(self, action: &'static str) -> Attempt {
        Attempt { action, ..self }
    }

    fn entry(
        &self,
        who: &str,
        authenticated: bool,
        outcome: AuditOutcome,
        status: StatusCode,
        detail: &str,
    ) -> AuditEntry {
        AuditEntry {
            at_ms: now_ms(),
            who: who.to_owned(),
            authenticated,
            address: self.address.clone(),
            action: self.action.to_owned(),
            delivery: None,
            env: self.env.clone(),
            asked: self.asked.clone(),
            outcome,
            status: status.as_u16(),
            detail: detail.to_owned(),
        }
    }

    /// Records what came of an allowed request: accepted for a 2xx or a redirect, failed otherwise.
    pub async fn record(&self, state: &ServerState, who: &str, answer: &Answer) {
        let outcome = if answer.status.is_success() || answer.status.is_redirection() {
            AuditOutcome::Accepted
        } else {
            AuditOutcome::Failed
        };
        state.record_audit(self.entry(who, true, outcome, answer.status, &answer.detail())).await;
    }
}

/// Why a request may not do what it asked.
#[derive(Debug)]
pub enum Refusal {
    /// No API token is set: nothing can be changed through the API.
    ReadOnly,
    /// No token, or not one of serve's.
    Unknown,
    /// A known token outside its scope.
    Scope(Denied),
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::ReadOnly | Refusal::Scope(_) => StatusCode::FORBIDDEN,
            Refusal::Unknown => StatusCode::UNAUTHORIZED,
        }
    }

    /// The API's answer.
    pub fn json(&self) -> Response {
        match self {
            Refusal::ReadOnly => ApiError::ReadOnly.into_response(),
            Refusal::Unknown => ApiError::Unauthorized.into_response(),
            Refusal::Scope(denied) => {
                (StatusCode::FORBIDDEN, Json(json!({ "error": denied.to_string() }))).into_response()
            }
        }
    }

    /// A page form's answer.
    pub fn page(&self) -> Response {
        let said = match self {
            Refusal::ReadOnly => ApiError::PageSyncOff.to_string(),
            Refusal::Unknown => "Wrong API token.".to_owned(),
            Refusal::Scope(denied) => denied.to_string(),
        };
        (self.status(), super::pages::not_found(&said)).into_response()
    }
}

/// What a mutation came to: its status and its JSON answer (with `status` or `error` in words).
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    pub fn new(status: StatusCode, body: Value) -> Answer {
        Answer { status, body }
    }

    pub fn error(status: StatusCode, error: impl std::fmt::Display) -> Answer {
        Answer { status, body: json!({ "error": error.to_string() }) }
    }

    /// Its `status` or `error` line, for the audit trail.
    fn detail(&self) -> String {
        let said = self.body.get("status").or_else(|| self.body.get("error")).and_then(Value::as_str);
        said.unwrap_or_default().to_owned()
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl ServerState {
    /// The token's holder when `given` may do what `attempt` asks; otherwise the refusal, recorded.
    pub async fn permit(&self, attempt: &Attempt, given: Option<&str>) -> Result<&NamedToken, Refusal> {
        if self.api_tokens.is_empty() {
            return Err(self.refused(attempt, "anonymous", false, Refusal::ReadOnly).await);
        }
        let Some(holder) = given.and_then(|given| self.api_tokens.identify(given)) else {
            return Err(self.refused(attempt, "anonymous", false, Refusal::Unknown).await);
        };
        match holder.allows(attempt.verb, attempt.env.as_deref()) {
            Ok(()) => Ok(holder),
            Err(denied) => Err(self.refused(attempt, &holder.name, true, Refusal::Scope(denied)).await),
        }
    }

    async fn refused(&self, attempt: &Attempt, who: &str, authenticated: bool, refusal: Refusal) -> Refusal {
        let detail = match &refusal {
            Refusal::ReadOnly => "no API token is set".to_owned(),
            Refusal::Unknown => "missing or wrong token".to_owned(),
            Refusal::Scope(denied) => denied.to_string(),
        };
        tracing::warn!(who, action = attempt.action, env = attempt.env.as_deref().unwrap_or("-"), %detail, "refused a request");
        let entry = attempt.entry(who, authenticated, AuditOutcome::Refused, refusal.status(), &detail);
        self.record_audit(entry).await;
        refusal
    }

    /// A read refused (a wrong password or token, or a token without `read` there): recorded like any refusal.
    pub async fn read_refused(&self, parts: &Parts, who: &str, authenticated: bool, status: StatusCode, detail: &str) {
        let requester = Requester::of(parts);
        let env = super::env_of_read(&parts.uri).unwrap_or_default();
        let mut attempt = Attempt::new(&requester, Verb::Read, &env, &format!("read {}", parts.uri.path()));
        if env.is_empty() {
            attempt.env = None;
        }
        self.record_audit(attempt.entry(who, authenticated, AuditOutcome::Refused, status, detail)).await;
    }

    /// A webhook delivery that triggered something, under the forge's name and its delivery id.
    pub async fn record_delivery_audit(&self, requester: &Requester, delivery: DeliveryAudit<'_>) {
        let envs: Vec<Option<String>> =
            if delivery.envs.is_empty() { vec![None] } else { delivery.envs.iter().cloned().map(Some).collect() };
        for env in envs {
            let entry = AuditEntry {
                at_ms: now_ms(),
                who: delivery.forge.to_owned(),
                authenticated: true,
                address: requester.address.clone(),
                action: delivery.action.to_owned(),
                delivery: delivery.id.map(|id| printable(id, MAX_NAME)),
                env,
                asked: printable(&delivery.asked, 300),
                outcome: AuditOutcome::Accepted,
                status: delivery.status.as_u16(),
                detail: printable(delivery.detail, 300),
            };
            self.record_audit(entry).await;
        }
    }

    /// Writes an entry; a store that cannot take it is logged, never a reason to refuse the request.
    async fn record_audit(&self, entry: AuditEntry) {
        if let Err(error) = query(self.daemon.store.record_audit(&entry, self.keep_audit_ms)).await {
            tracing::error!(%error, "cannot record the audit entry");
        }
    }
}

/// A webhook delivery for the audit trail.
pub struct DeliveryAudit<'a> {
    pub forge: &'a str,
    pub id: Option<&'a str>,
    /// `push` or `pull_request`.
    pub action: &'a str,
    pub envs: Vec<String>,
    pub asked: String,
    pub status: StatusCode,
    pub detail: &'a str,
}

/// `?who=&env=&action=&outcome=&page=`; empty fields are no filter.
#[derive(Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    who: String,
    #[serde(default)]
    env: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    page: u32,
}

impl AuditQuery {
    fn filter(&self) -> AuditFilter {
        let given = |value: &str| Some(value.trim().to_owned()).filter(|value| !value.is_empty());
        AuditFilter {
            who: given(&self.who),
            env: given(&self.env),
            action: given(&self.action),
            outcome: given(&self.outcome),
        }
    }

    /// The query string of the same filter on another page.
    fn on_page(&self, page: u32) -> String {
        let pairs = [("who", &self.who), ("env", &self.env), ("action", &self.action), ("outcome", &self.outcome)];
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in pairs.iter().filter(|(_, value)| !value.is_empty()) {
            query.append_pair(key, value);
        }
        query.append_pair("page", &page.to_string());
        format!("?{}", query.finish())
    }
}

/// `GET /api/v1/audit`: a page of entries, newest first.
pub async fn audit_api(State(state): State<Arc<ServerState>>, Query(asked): Query<AuditQuery>) -> Response {
    match query(state.daemon.store.audit(&asked.filter(), asked.page)).await {
        Ok(page) => Json(page).into_response(),
        Err(error) => ApiError::History(error).into_response(),
    }
}

/// `/audit`: the trail with its filters.
pub async fn audit_page(State(state): State<Arc<ServerState>>, Query(asked): Query<AuditQuery>) -> Response {
    match query(state.daemon.store.audit(&asked.filter(), asked.page)).await {
        Ok(page) => audit_view(&asked, &page, now_ms()).into_response(),
        Err(error) => ApiError::History(error).into_response(),
    }
}

const ACTIONS: [&str; 9] = ["", "sync", "destroy", "rollback", "unpin", "run", "read", "push", "pull_request"];

fn audit_view(asked: &AuditQuery, page: &Page<StoredAudit>, now_ms: i64) -> Markup {
    layout(
        "Audit",
        html! {
            h1 { "Audit" }
            form.sync.filters method="get" action="/audit" {
                input type="text" name="who" placeholder="who" value=(asked.who);
                input type="text" name="env" placeholder="environment" value=(asked.env);
                select name="action" {
                    @for action in ACTIONS {
                        option value=(action) selected[asked.action == action] { @if action.is_empty() { "any action" } @else { (action) } }
                    }
                }
                select name="outcome" {
                    @for outcome in ["", "accepted", "refused", "failed"] {
                        option value=(outcome) selected[asked.outcome == outcome] { @if outcome.is_empty() { "any outcome" } @else { (outcome) } }
                    }
                }
                button type="submit" { "Filter" }
            }
            table id="audit" {
                thead { tr { th { "When" } th { "Who" } th.wide { "From" } th { "Asked" } th { "Outcome" } th.wide { "Detail" } } }
                tbody {
                    @for stored in &page.items {
                        @let entry = &stored.entry;
                        tr.entry {
                            td { (when(entry.at_ms, now_ms)) }
                            td.who {
                                (entry.who)
                                @if let Some(delivery) = &entry.delivery { " " span.muted { "delivery " (delivery) } }
                                @if !entry.authenticated { " " span.muted { "(unauthenticated)" } }
                            }
                            td.wide.mono { (entry.address.as_deref().unwrap_or("-")) }
                            td.asked {
                                (entry.asked)
                                @if let Some(env) = &entry.env { " " a href={ "/env/" (env) } { "→" } }
                            }
                            td { (badge(outcome_class(entry.outcome), entry.outcome.as_str())) span.muted { " " (entry.status) } }
                            td.wide.muted.detail { (entry.detail) }
                        }
                    }
                }
            }
            @if page.items.is_empty() { p.muted { "Nothing recorded." } }
            div.pager {
                @if page.page > 0 { a href=(asked.on_page(page.page - 1)) { "← newer" } }
                @if page.has_more { a href=(asked.on_page(page.page + 1)) { "older →" } }
            }
        },
    )
}

fn outcome_class(outcome: AuditOutcome) -> &'static str {
    match outcome {
        AuditOutcome::Accepted => "done",
        AuditOutcome::Refused => "failed",
        AuditOutcome::Failed => "error",
    }
}
