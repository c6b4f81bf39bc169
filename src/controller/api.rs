//! The controller's HTTP API (axum): health, readiness, Prometheus metrics,
//! the site and its latest plan, a dry-run planner, VM admission and
//! removal, plan approval, the OpenAPI document and the web page.
//!
//! [`app`] builds the router from an [`AppState`], so tests drive it with
//! `tower::ServiceExt::oneshot` and no server. Bad input is answered with a
//! clear 4xx and a JSON body `{"error": "…"}`; internal failures with a 500
//! whose detail goes to the log. When a token is configured, every write
//! (POST, DELETE) needs `Authorization: Bearer <token>`.
//!
//! Handlers only read the site state. A write (admit or remove a VM, decide
//! on a plan) is sent to the control loop as an [`ApiEvent`]; the loop — the
//! single owner of the state — checks it ([`check_request`]), records it in
//! the state database, applies it ([`apply_request`]) and answers on the
//! event's reply channel, so a 201 or 204 means the change is durable.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use scheduler::model::{Vm, VmKind};
use scheduler::{PlanError, SolveOptions};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::metrics::Metrics;
use super::state::{PlanStatus, SiteState};

/// The page served at `/` (no build step: one file, embedded).
const INDEX_HTML: &str = include_str!("web/index.html");
/// The OpenAPI 3.1 description of this API.
const OPENAPI_JSON: &str = include_str!("web/openapi.json");
/// Largest request body accepted (a 1,000-server snapshot is ~3 MB).
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// How long a write waits for the control loop's answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// A change the API asks of the control loop.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiRequest {
    /// Admit a VM (pending placement; its fields already checked).
    AdmitVm(Vm),
    /// Remove a VM.
    RemoveVm(String),
    /// An operator approves (true) or rejects (false) plan `id`.
    DecidePlan {
        /// Plan id.
        id: u64,
        /// Approved or rejected.
        approve: bool,
    },
}

/// A request for the control loop and the channel it answers on.
#[derive(Debug)]
pub struct ApiEvent {
    /// What is asked.
    pub request: ApiRequest,
    /// The loop's answer: `Ok` once the change is recorded and applied.
    pub reply: oneshot::Sender<Result<(), AppError>>,
}

/// Whether `request` can be applied to `site`: 409 for a VM that exists or
/// a plan not awaiting approval, 404 for an unknown VM or plan.
pub fn check_request(site: &SiteState, request: &ApiRequest) -> Result<(), AppError> {
    match request {
        ApiRequest::AdmitVm(vm) if site.vms.contains_key(&vm.id) => {
            Err(AppError::Conflict(format!("vm {} already exists", vm.id)))
        }
        ApiRequest::RemoveVm(id) if !site.vms.contains_key(id) => {
            Err(AppError::NotFound(format!("no vm {id}")))
        }
        ApiRequest::DecidePlan { id, .. } => {
            let rec = site
                .latest_plan
                .as_ref()
                .filter(|p| p.id == *id)
                .ok_or_else(|| AppError::NotFound(format!("plan {id} is not the latest plan")))?;
            if rec.status != PlanStatus::AwaitingApproval {
                return Err(AppError::Conflict(format!(
                    "plan {id} is not awaiting approval (it is {})",
                    rec.status.as_str()
                )));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Apply a checked `request` to `site`.
pub fn apply_request(site: &mut SiteState, request: &ApiRequest) {
    match request {
        ApiRequest::AdmitVm(vm) => {
            site.vms.insert(vm.id.clone(), vm.clone());
        }
        ApiRequest::RemoveVm(id) => {
            site.vms.remove(id);
        }
        ApiRequest::DecidePlan { id, approve } => {
            if let Some(rec) = site.latest_plan.as_mut().filter(|p| p.id == *id) {
                rec.status = if *approve {
                    PlanStatus::Applied
                } else {
                    PlanStatus::Rejected
                };
            }
        }
    }
}

/// Shared state of the API.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The controller's view of the site.
    pub site: Arc<RwLock<SiteState>>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Bearer token guarding writes, when configured.
    pub token: Option<String>,
    /// Events for the control loop.
    pub events: mpsc::UnboundedSender<ApiEvent>,
    /// Whether the controller is ready (connected, first plan made).
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// Why the controller cannot work now (the state database cannot be
    /// written): `/readyz` answers 503 with it.
    pub fault: Arc<RwLock<Option<String>>>,
    /// The tariff in force and whether it is stale, as the tariff task last
    /// saw it (`None` until it first reports); `GET /api/v1/site` shows it
    /// as `tariff`.
    pub tariff: Arc<RwLock<Option<super::tariff::TariffStatus>>>,
    /// The facility bridge, whose counters `/metrics` reports (none in
    /// tests that run the API alone).
    pub bridge: Option<hvac_bridge::BridgeHandle>,
}

/// An API error: a status and a message for the client.
#[derive(Debug)]
pub enum AppError {
    /// 400: the request is malformed or invalid.
    BadRequest(String),
    /// 401: a write without the right token.
    Unauthorized,
    /// 404: no such resource.
    NotFound(String),
    /// 409: conflicts with the current state.
    Conflict(String),
    /// 422: well-formed but cannot be satisfied (infeasible snapshot).
    Unprocessable(String),
    /// 503: the change cannot be made now (the state database cannot be
    /// written, or the control loop does not answer).
    Unavailable(String),
    /// 500: an internal failure (detail logged, not returned).
    Internal(String),
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, msg) = match self {
            AppError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            AppError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "a bearer token is required for writes".to_string(),
            ),
            AppError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            AppError::Conflict(m) => (StatusCode::CONFLICT, m),
            AppError::Unprocessable(m) => (StatusCode::UNPROCESSABLE_ENTITY, m),
            AppError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
            AppError::Internal(detail) => {
                tracing::error!(%detail, "Internal error in an API request.");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error (see the controller's log)".to_string(),
                )
            }
        };
        let mut resp = (status, Json(json!({ "error": msg }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
        }
        resp
    }
}

impl From<PlanError> for AppError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::Parse { .. } | PlanError::Invalid { .. } => {
                AppError::BadRequest(e.to_string())
            }
            PlanError::Infeasible { .. } | PlanError::NoPlanFound { .. } => {
                AppError::Unprocessable(e.to_string())
            }
            PlanError::Solver(m) => AppError::Internal(m),
        }
    }
}

/// Build the router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/site", get(site))
        .route("/api/v1/plan", get(plan))
        .route("/api/v1/plan/dry-run", post(dry_run))
        .route("/api/v1/plan/{id}/approve", post(approve))
        .route("/api/v1/plan/{id}/reject", post(reject))
        .route("/api/v1/vms", post(admit_vm))
        .route("/api/v1/vms/{id}", delete(remove_vm))
        .route("/api/v1/openapi.json", get(openapi))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn require_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    let is_write = matches!(
        *req.method(),
        Method::POST | Method::DELETE | Method::PUT | Method::PATCH
    );
    // A dry run changes nothing: it is open like the reads.
    let is_dry_run = req.uri().path() == "/api/v1/plan/dry-run";
    if let (true, false, Some(token)) = (is_write, is_dry_run, &state.token) {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return AppError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let fault = state
        .fault
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let Some(why) = fault {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")).into_response()
    } else if state.ready.load(std::sync::atomic::Ordering::Relaxed) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no plan made yet",
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    {
        let site = state.site.read().unwrap_or_else(|e| e.into_inner());
        state.metrics.observe(&site);
    }
    if let Some(b) = &state.bridge {
        state.metrics.observe_bridge(&b.figures());
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn site(State(state): State<AppState>) -> Response {
    let site = state.site.read().unwrap_or_else(|e| e.into_inner());
    let gain = site.total_gain();
    let mut body = serde_json::to_value(&*site).unwrap_or_else(|_| json!({}));
    body["total_gain"] = json!(gain);
    body["tariff"] = json!(*state.tariff.read().unwrap_or_else(|e| e.into_inner()));
    // Each node's draw now: an off server at its `off_w`, not its last report.
    for (id, n) in &site.nodes {
        if let Some(node) = body["nodes"].get_mut(id) {
            node["power_w"] = json!(n.power_w());
        }
    }
    Json(body).into_response()
}

async fn plan(State(state): State<AppState>) -> Result<Response, AppError> {
    let site = state.site.read().unwrap_or_else(|e| e.into_inner());
    match &site.latest_plan {
        Some(p) => Ok(Json(p).into_response()),
        None => Err(AppError::NotFound("no plan has been made yet".into())),
    }
}

#[derive(Debug, Deserialize)]
struct DryRunQuery {
    solver: Option<String>,
    time_limit_ms: Option<u64>,
}

async fn dry_run(
    axum::extract::Query(q): axum::extract::Query<DryRunQuery>,
    body: String,
) -> Result<Response, AppError> {
    let snap = scheduler::parse_snapshot(&body)?;
    let solver = match q.solver.as_deref() {
        None => scheduler::SolverKind::default(),
        Some(s) => s.parse().map_err(AppError::BadRequest)?,
    };
    let opts = SolveOptions {
        solver,
        time_limit: q.time_limit_ms.map(std::time::Duration::from_millis),
        with_baseline: true,
        ..Default::default()
    };
    let plan = tokio::task::spawn_blocking(move || scheduler::solve(&snap, &opts))
        .await
        .map_err(|e| AppError::Internal(format!("planner task failed: {e}")))??;
    Ok(Json(plan).into_response())
}

fn check_vm(vm: &Vm) -> Result<(), AppError> {
    let bad = |field: &str, problem: &str| {
        Err(AppError::BadRequest(format!(
            "invalid field `{field}`: {problem}"
        )))
    };
    if vm.id.is_empty() || vm.id.len() > 128 || !protocol::topics::valid_level(&vm.id) {
        return bad("id", "must be 1–128 characters without / + #");
    }
    if vm.vcpus == 0 {
        return bad("vcpus", "must be at least 1");
    }
    if !(vm.mem_gib.is_finite() && vm.mem_gib >= 0.0) {
        return bad("mem_gib", "must be a non-negative number");
    }
    if vm.host.is_some() {
        return bad(
            "host",
            "a new VM is admitted pending; the planner places it",
        );
    }
    match vm.kind {
        VmKind::Interactive => match vm.load {
            Some(l) if (0.0..=1.0).contains(&l) => {}
            _ => return bad("load", "an interactive VM needs a load in [0, 1]"),
        },
        VmKind::Batch => {
            if !vm.work_core_h.is_some_and(|w| w.is_finite() && w >= 0.0) {
                return bad(
                    "work_core_h",
                    "a batch VM needs non-negative remaining work",
                );
            }
            if vm.deadline.is_none() {
                return bad("deadline", "a batch VM needs a deadline");
            }
        }
    }
    Ok(())
}

/// Ask the control loop to make `request`, and wait for its answer.
async fn ask(state: &AppState, request: ApiRequest) -> Result<(), AppError> {
    let (reply, answer) = oneshot::channel();
    state
        .events
        .send(ApiEvent { request, reply })
        .map_err(|_| AppError::Unavailable("the control loop has stopped".into()))?;
    match tokio::time::timeout(REPLY_TIMEOUT, answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(AppError::Unavailable(
            "the control loop dropped the request".into(),
        )),
        Err(_) => Err(AppError::Unavailable(format!(
            "the control loop did not answer within {} s; the change may still be made (see GET /api/v1/site)",
            REPLY_TIMEOUT.as_secs()
        ))),
    }
}

async fn admit_vm(State(state): State<AppState>, body: String) -> Result<Response, AppError> {
    let de = &mut serde_json::Deserializer::from_str(&body);
    let vm: Vm = serde_path_to_error::deserialize(de).map_err(|e| {
        AppError::BadRequest(format!("malformed VM at `{}`: {}", e.path(), e.inner()))
    })?;
    check_vm(&vm)?;
    ask(&state, ApiRequest::AdmitVm(vm.clone())).await?;
    tracing::info!(vm = %vm.id, vcpus = vm.vcpus, "VM admitted; it will be placed by the next plan.");
    Ok((StatusCode::CREATED, Json(vm)).into_response())
}

async fn remove_vm(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    ask(&state, ApiRequest::RemoveVm(id.clone())).await?;
    tracing::info!(vm = %id, "VM removed.");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn decide(state: &AppState, id: u64, approve: bool) -> Result<Response, AppError> {
    ask(state, ApiRequest::DecidePlan { id, approve }).await?;
    tracing::info!(plan = id, approve, "Operator decided on a plan.");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn approve(State(state): State<AppState>, Path(id): Path<u64>) -> Result<Response, AppError> {
    decide(&state, id, true).await
}

async fn reject(State(state): State<AppState>, Path(id): Path<u64>) -> Result<Response, AppError> {
    decide(&state, id, false).await
}
