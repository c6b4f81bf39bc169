//! `phoenix demo` end to end, in-process: the embedded broker, the twin, the
//! bridge polling the twin's Modbus devices and the controller planning on
//! an accelerated clock — plans are made and applied, heat is delivered,
//! the API answers, and the demo stops by itself.

use std::net::SocketAddr;

use phoenix::demo::{self, DemoOptions};
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_plans_delivers_heat_and_stops_by_itself() {
    let (_stop, stopped) = watch::channel(false);
    let opts = DemoOptions {
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        // 15-minute periods every 1.5 s; 12 s ≈ 2 site hours.
        speed: 600.0,
        duration_s: Some(12.0),
        seed: 7,
        print: false,
    };
    let summary = demo::run(opts, stopped).await.expect("the demo runs");
    assert!(summary.site_hours > 1.5, "{summary:?}");
    assert!(
        summary.plans >= 4,
        "a plan every control period: {summary:?}"
    );
    assert!(summary.heat_demand_kwh > 0.0, "{summary:?}");
    assert!(
        summary.heat_delivered_kwh > 0.0
            && summary.heat_delivered_kwh <= summary.heat_demand_kwh + 1e-9,
        "{summary:?}"
    );
    assert!(
        summary.max_temp_c > 24.0 && summary.max_temp_c <= 80.5,
        "{summary:?}"
    );
}
