//! The controller's HTTP API, driven through the router with no server
//! (`tower::ServiceExt::oneshot`), and its web page in a real headless
//! Chromium.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use chrono::{TimeZone, Utc};
use phoenix::controller::api::{
    app, apply_request, check_request, ApiEvent, ApiRequest, AppError, AppState,
};
use phoenix::controller::metrics::Metrics;
use phoenix::controller::state::{
    ConsumerState, HistoryPoint, NodeState, PlanRecord, PlanStatus, ServerInfo, SiteState,
};
use protocol::payloads::{HeatDemand, Telemetry};
use serde_json::Value;
use tokio::sync::mpsc;
use tower::ServiceExt;

fn example_snapshot() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/snapshot.json"
    ))
    .expect("examples/snapshot.json")
}

/// A site with three nodes, a consumer, a plan and some history.
fn populated_site() -> SiteState {
    let snap = scheduler::parse_snapshot(&example_snapshot()).expect("example parses");
    let plan = scheduler::solve(
        &snap,
        &scheduler::SolveOptions {
            with_baseline: true,
            ..Default::default()
        },
    )
    .expect("example solves");
    let t0 = Utc.with_ymd_and_hms(2026, 1, 15, 6, 0, 0).unwrap();
    let mut site = SiteState {
        site: "greenhouse-a".into(),
        ..Default::default()
    };
    for (i, id) in ["g5-01", "g5-02", "x5670-02"].iter().enumerate() {
        site.nodes.insert(
            id.to_string(),
            NodeState {
                info: ServerInfo {
                    id: id.to_string(),
                    cores: 8,
                    mem_gib: 32.0,
                    temp_limit_c: 75.0,
                    heat_loop: Some("gh1".into()),
                    off_w: 5.0,
                },
                on: i < 2,
                online: true,
                stale: i == 1,
                last_seen: Some(t0),
                telemetry: Some(Telemetry {
                    ts: t0,
                    cpu_util: 0.4,
                    cpu_temp_c: Some(50.0 + 10.0 * i as f64),
                    power_w: Some(110.0 + i as f64),
                    energy_j: None,
                    cap_w: None,
                    mem_used_gib: None,
                    mem_total_gib: None,
                    thermal_guard: false,
                    gpus: vec![],
                    vms: None,
                }),
            },
        );
    }
    site.consumers.insert(
        "gh1".into(),
        ConsumerState {
            id: "gh1".into(),
            heat_loop: "gh1".into(),
            stale: false,
            last_seen: Some(t0),
            demand: Some(HeatDemand {
                ts: t0,
                demand_kw: 0.9,
                forecast_kw: None,
                step_s: None,
                heat_value_per_kwh: None,
                supply_temp_c: None,
            }),
            offered_kw: Some(0.5),
        },
    );
    for k in 0..12 {
        site.record(HistoryPoint {
            at: t0 + chrono::Duration::minutes(15 * k),
            demand_kw: 0.9 - 0.02 * k as f64,
            delivered_kw: 0.5 + 0.01 * k as f64,
            it_power_kw: 0.7,
            cost: 0.10,
            baseline_cost: Some(0.12),
        });
    }
    site.latest_plan = Some(PlanRecord {
        id: 7,
        at: t0,
        status: PlanStatus::AwaitingApproval,
        plan,
    });
    site
}

/// The requests the control loop was asked to make.
type Asked = Arc<Mutex<Vec<ApiRequest>>>;

/// The API's state, with a stand-in for the control loop that answers
/// every request as the loop does (check, apply) but without a database —
/// or refuses every one with `refuse` (a database that takes no writes).
fn state_with(
    site: SiteState,
    token: Option<&str>,
    refuse: Option<&'static str>,
) -> (AppState, Asked) {
    let (tx, mut rx) = mpsc::unbounded_channel::<ApiEvent>();
    let st = AppState {
        site: Arc::new(RwLock::new(site)),
        metrics: Arc::new(Metrics::new()),
        token: token.map(str::to_string),
        events: tx,
        ready: Arc::new(AtomicBool::new(false)),
        fault: Arc::new(RwLock::new(None)),
        tariff: Arc::new(RwLock::new(None)),
        bridge: None,
    };
    let asked: Asked = Arc::default();
    let (site, log) = (st.site.clone(), asked.clone());
    tokio::spawn(async move {
        while let Some(ApiEvent { request, reply }) = rx.recv().await {
            log.lock().unwrap().push(request.clone());
            let answer = match refuse {
                Some(why) => Err(AppError::Unavailable(why.into())),
                None => {
                    let mut site = site.write().unwrap();
                    check_request(&site, &request).map(|()| apply_request(&mut site, &request))
                }
            };
            let _ = reply.send(answer);
        }
    });
    (st, asked)
}

fn state(site: SiteState, token: Option<&str>) -> (AppState, Asked) {
    state_with(site, token, None)
}

async fn call(
    st: &AppState,
    method: &str,
    uri: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(Body::from(body.unwrap_or("").to_string()))
        .expect("request");
    let resp = app(st.clone()).oneshot(req).await.expect("router answers");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn health_is_ok_and_readiness_waits_for_the_first_plan() {
    let (st, _rx) = state(SiteState::default(), None);
    assert_eq!(
        call(&st, "GET", "/healthz", None, None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&st, "GET", "/readyz", None, None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    st.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        call(&st, "GET", "/readyz", None, None).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn site_and_plan_show_the_latest_state() {
    let (st, _rx) = state(populated_site(), None);
    let (status, body) = call(&st, "GET", "/api/v1/site", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let site: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(site["site"], "greenhouse-a");
    assert_eq!(site["nodes"]["g5-02"]["stale"], true);
    assert_eq!(site["consumers"]["gh1"]["demand"]["demand_kw"], 0.9);
    assert!((site["total_gain"].as_f64().unwrap() - 0.24).abs() < 1e-9);
    // A node that is on draws what it last reported; one that is off, its
    // off_w — not the power of its last report.
    assert_eq!(site["nodes"]["g5-01"]["power_w"], 110.0);
    let off = &site["nodes"]["x5670-02"];
    assert_eq!(off["on"], false);
    assert_eq!(off["telemetry"]["power_w"], 112.0);
    assert_eq!(off["power_w"], 5.0);
    assert_eq!(off["off_w"], 5.0);

    let (status, body) = call(&st, "GET", "/api/v1/plan", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let plan: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(plan["id"], 7);
    assert_eq!(plan["plan"]["schema"], "phoenix.plan/v1");

    let (empty, _rx) = state(SiteState::default(), None);
    let (status, body) = call(&empty, "GET", "/api/v1/plan", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("no plan"), "{body}");
}

#[tokio::test]
async fn dry_run_plans_a_snapshot_and_names_bad_fields() {
    let (st, _rx) = state(SiteState::default(), None);
    let (status, body) = call(
        &st,
        "POST",
        "/api/v1/plan/dry-run",
        Some(&example_snapshot()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let plan: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(plan["schema"], "phoenix.plan/v1");
    assert!(plan["baseline_cost"].is_number());

    let broken = example_snapshot().replacen("\"mem_gib\": 32", "\"mem_gib\": \"lots\"", 1);
    let (status, body) = call(&st, "POST", "/api/v1/plan/dry-run", Some(&broken), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("servers[0].mem_gib"), "{body}");

    let (status, body) = call(
        &st,
        "POST",
        "/api/v1/plan/dry-run?solver=magic",
        Some(&example_snapshot()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("magic"), "{body}");
}

#[tokio::test]
async fn writes_need_the_token_when_one_is_configured() {
    let (st, rx) = state(SiteState::default(), Some("s3cret"));
    let vm = r#"{"id":"web42","vcpus":2,"mem_gib":4,"kind":"interactive","load":0.3}"#;
    let (status, _) = call(&st, "POST", "/api/v1/vms", Some(vm), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&st, "POST", "/api/v1/vms", Some(vm), Some("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        st.site.read().unwrap().vms.is_empty(),
        "refused writes change nothing"
    );
    assert!(rx.lock().unwrap().is_empty(), "nor reach the loop");

    let (status, body) = call(&st, "POST", "/api/v1/vms", Some(vm), Some("s3cret")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(matches!(rx.lock().unwrap().as_slice(), [ApiRequest::AdmitVm(v)] if v.id == "web42"));
    // Reads stay open.
    assert_eq!(
        call(&st, "GET", "/api/v1/site", None, None).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn vm_admission_validates_and_removal_works() {
    let (st, rx) = state(SiteState::default(), None);
    let cases = [
        ("not json", "malformed"),
        (
            r#"{"id":"a","vcpus":0,"mem_gib":1,"kind":"interactive","load":0.1}"#,
            "vcpus",
        ),
        (
            r#"{"id":"a","vcpus":1,"mem_gib":1,"kind":"interactive","load":1.5}"#,
            "load",
        ),
        (
            r#"{"id":"a","vcpus":1,"mem_gib":1,"kind":"batch"}"#,
            "work_core_h",
        ),
        (
            r#"{"id":"a","vcpus":1,"mem_gib":1,"kind":"interactive","load":0.1,"host":"s1"}"#,
            "host",
        ),
        (
            r#"{"id":"a/b","vcpus":1,"mem_gib":1,"kind":"interactive","load":0.1}"#,
            "id",
        ),
        (
            r#"{"id":"a","vcpus":1,"mem_gb":1,"kind":"interactive","load":0.1}"#,
            "mem_gb",
        ),
    ];
    for (body, needle) in cases {
        let (status, resp) = call(&st, "POST", "/api/v1/vms", Some(body), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {resp}");
        assert!(
            resp.contains(needle),
            "{body} → {resp} should name {needle}"
        );
    }
    assert!(st.site.read().unwrap().vms.is_empty());
    assert!(
        rx.lock().unwrap().is_empty(),
        "bad input never reaches the loop"
    );

    let vm = r#"{"id":"b1","vcpus":4,"mem_gib":8,"kind":"batch","work_core_h":3,"deadline":"2026-01-16T00:00:00Z"}"#;
    assert_eq!(
        call(&st, "POST", "/api/v1/vms", Some(vm), None).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        call(&st, "POST", "/api/v1/vms", Some(vm), None).await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        call(&st, "DELETE", "/api/v1/vms/b1", None, None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&st, "DELETE", "/api/v1/vms/b1", None, None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_plan_awaiting_approval_can_be_approved_once() {
    let (st, rx) = state(populated_site(), None);
    assert_eq!(
        call(&st, "POST", "/api/v1/plan/6/approve", None, None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&st, "POST", "/api/v1/plan/7/approve", None, None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        st.site.read().unwrap().latest_plan.as_ref().unwrap().status,
        PlanStatus::Applied
    );
    assert_eq!(
        rx.lock().unwrap().last(),
        Some(&ApiRequest::DecidePlan {
            id: 7,
            approve: true
        })
    );
    assert_eq!(
        call(&st, "POST", "/api/v1/plan/7/reject", None, None)
            .await
            .0,
        StatusCode::CONFLICT
    );
}

#[tokio::test]
async fn a_write_the_state_database_cannot_record_is_refused_and_readiness_says_why() {
    let (st, rx) = state_with(
        SiteState::default(),
        None,
        Some("the change cannot be recorded"),
    );
    let vm = r#"{"id":"web1","vcpus":1,"mem_gib":1,"kind":"interactive","load":0.1}"#;
    let (status, body) = call(&st, "POST", "/api/v1/vms", Some(vm), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("cannot be recorded"), "{body}");
    assert_eq!(rx.lock().unwrap().len(), 1, "the loop was asked");
    assert!(st.site.read().unwrap().vms.is_empty());

    st.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    *st.fault.write().unwrap() = Some("the state database cannot be written: disk full".into());
    let (status, body) = call(&st, "GET", "/readyz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("disk full"), "{body}");
}

#[tokio::test]
async fn metrics_expose_plan_heat_and_nodes() {
    let (st, _rx) = state(populated_site(), None);
    st.metrics.error("modbus");
    let (status, body) = call(&st, "GET", "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    for needle in [
        "phoenix_plan_cost ",
        "phoenix_plan_baseline_cost ",
        "phoenix_plan_gain ",
        "phoenix_heat_demand_kw{consumer=\"gh1\"} 0.9",
        "phoenix_node_power_w{node=\"g5-01\"} 110",
        "phoenix_stale_nodes 1",
        "phoenix_errors_total{source=\"modbus\"} 1",
        "# EOF",
    ] {
        assert!(body.contains(needle), "metrics lack {needle}:\n{body}");
    }
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let (st, _rx) = state(SiteState::default(), None);
    let (status, body) = call(&st, "GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_str(&body).expect("valid JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/site",
        "/api/v1/plan",
        "/api/v1/plan/dry-run",
        "/api/v1/plan/{id}/approve",
        "/api/v1/plan/{id}/reject",
        "/api/v1/vms",
        "/api/v1/vms/{id}",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi.json lacks {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium (scripts/install-test-deps)"]
async fn the_web_page_renders_the_site_in_headless_chromium() {
    let (st, _rx) = state(populated_site(), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move { axum::serve(listener, app(st)).await });
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("page.png");
    let url = format!("http://127.0.0.1:{port}/");
    let profile = dir.path().join("profile");
    let dom = run_chromium(&profile, &url, "--dump-dom".into()).await;
    let html = String::from_utf8_lossy(&dom.stdout);
    for needle in [
        "greenhouse-a",               // site name filled in
        "class=\"tile\"",             // a server tile that is on
        "class=\"tile off\"",         // a server tile that is off
        "off · 5 W",                  // …shown at its off_w, not its last report
        "class=\"tile stale\"",       // a stale node
        "class=\"series-demand\"",    // the demand line
        "class=\"series-delivered\"", // the delivered line
        "awaiting approval",          // plan status
        ">0.24<",                     // savings vs baseline
    ] {
        assert!(html.contains(needle), "page lacks {needle}:\n{html}");
    }
    let out = run_chromium(&profile, &url, format!("--screenshot={}", shot.display())).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Ok(keep) = std::env::var("PHOENIX_KEEP_SCREENSHOT") {
        let _ = std::fs::copy(&shot, keep);
    }
    server.abort();
}

/// Run headless Chromium on `url` with one extra flag (the machine's closed
/// network needs the background-networking flags).
async fn run_chromium(profile: &std::path::Path, url: &str, extra: String) -> std::process::Output {
    let args = vec![
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        format!("--user-data-dir={}", profile.display()),
        "--virtual-time-budget=5000".into(),
        "--window-size=1280,900".into(),
        extra,
        url.to_string(),
    ];
    tokio::task::spawn_blocking(move || std::process::Command::new("chromium").args(args).output())
        .await
        .expect("join")
        .expect("chromium runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs prometheus (scripts/install-test-deps)"]
async fn a_real_prometheus_scrapes_the_metrics() {
    let (st, _rx) = state(populated_site(), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move { axum::serve(listener, app(st)).await });
    let prom = testkit::Prometheus::start("phoenix", &[format!("127.0.0.1:{port}")], 1)
        .expect("prometheus starts");
    let url = format!(
        "{}/api/v1/query?query={}",
        prom.url(),
        testkit::url_encode("phoenix_stale_nodes")
    );
    let found = tokio::task::spawn_blocking(move || {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok((200, body)) = testkit::http("GET", &url, None) {
                let v: Value = serde_json::from_str(&body).unwrap_or_default();
                if let Some(r) = v["data"]["result"].as_array().and_then(|r| r.first()) {
                    return Some(r["value"][1].as_str().unwrap_or_default().to_string());
                }
            }
            if std::time::Instant::now() > until {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    })
    .await
    .unwrap();
    assert_eq!(
        found.as_deref(),
        Some("1"),
        "Prometheus never scraped phoenix_stale_nodes"
    );
    server.abort();
}
