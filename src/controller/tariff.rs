//! The live price and carbon series (DESIGN.md §4.9): from
//! `[controller.prices] electricity_file` (re-read when its modification
//! time changes), from `url` (polled every `refresh_s`, with a token from
//! the environment), or from the retained MQTT topic
//! `phoenix/v1/<site>/tariff`. Whichever updated last is in force.
//!
//! A source that fails (unreadable file, bad line, HTTP error, an
//! ENTSO-E acknowledgement, a bad payload) is logged, counted
//! (`errors{source="tariff"}`) and changes nothing: the previous series
//! stays. The series is *stale* when a source is configured (or a series
//! was ever received) and it does not reach the end of the planning
//! horizon: the planner then uses the fallback (the same time of day of the
//! series' last day, else the flat tariff), and the page (`tariff.stale` on
//! `/api/v1/site`), `/metrics` (`phoenix_tariff_stale`) and the log say so.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use protocol::series::{self, PricePoint, PriceSeries, SeriesError, TariffPayload};
use protocol::topics::Topics;
use serde::Serialize;
use tokio::sync::watch;

use super::config::Prices;
use super::metrics::Metrics;
use super::run::Clock;

/// How often the file is checked for a change and the status refreshed.
const TICK: Duration = Duration::from_secs(2);

/// The retained tariff topic of a site.
pub fn topic(topics: &Topics) -> String {
    format!("{}/tariff", topics.root())
}

#[derive(Debug, Default)]
struct Inner {
    series: Option<PriceSeries>,
    source: Option<String>,
    updated: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

/// The live series, shared (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Live(Arc<RwLock<Inner>>);

impl Live {
    /// The value at `at`, with the series' fallback past its end.
    pub fn point_at(&self, at: DateTime<Utc>) -> Option<PricePoint> {
        let g = self.0.read().unwrap_or_else(|e| e.into_inner());
        g.series.as_ref().and_then(|s| s.at(at)).copied()
    }

    /// Put `series` in force, from `source`.
    pub fn replace(&self, series: PriceSeries, source: &str, now: DateTime<Utc>) {
        let mut g = self.0.write().unwrap_or_else(|e| e.into_inner());
        tracing::info!(
            source,
            values = series.points().len(),
            until = %series.end(),
            "Tariff updated."
        );
        g.series = Some(series);
        g.source = Some(source.to_string());
        g.updated = Some(now);
        g.last_error = None;
    }

    /// Record a failed update (the series in force stays).
    pub fn failed(&self, source: &str, error: &SeriesError) {
        tracing::warn!(source, error = %error, "Tariff update refused; the previous prices stay.");
        let mut g = self.0.write().unwrap_or_else(|e| e.into_inner());
        g.last_error = Some(format!("{source}: {error}"));
    }

    /// Where the series stands at `now` for a horizon ending at `horizon_end`.
    pub fn status(
        &self,
        prices: &Prices,
        now: DateTime<Utc>,
        horizon_end: DateTime<Utc>,
    ) -> TariffStatus {
        let (price, carbon) = prices.at(now);
        let g = self.0.read().unwrap_or_else(|e| e.into_inner());
        let expected =
            prices.electricity_file.is_some() || prices.url.is_some() || g.series.is_some();
        let known_until = g.series.as_ref().map(PriceSeries::end);
        TariffStatus {
            source: g.source.clone(),
            updated: g.updated,
            known_until,
            stale: expected && known_until.is_none_or(|e| e < horizon_end),
            last_error: g.last_error.clone(),
            price_per_kwh: price,
            carbon_g_per_kwh: carbon,
            gas_kg_co2_per_kwh: prices.gas_kg_co2_per_kwh,
            boiler_efficiency: prices.boiler_efficiency,
        }
    }
}

/// The tariff as the page, the API and `/metrics` show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TariffStatus {
    /// Where the series in force came from (`file …`, `url`, `mqtt`).
    pub source: Option<String>,
    /// When it was put in force.
    pub updated: Option<DateTime<Utc>>,
    /// When its last value stops holding.
    pub known_until: Option<DateTime<Utc>>,
    /// A source is expected and the series does not cover the horizon.
    pub stale: bool,
    /// The latest failed update, if it came after the last good one.
    pub last_error: Option<String>,
    /// Price now, per kWh.
    pub price_per_kwh: f64,
    /// Grid carbon intensity now, g CO2/kWh.
    pub carbon_g_per_kwh: f64,
    /// Displaced boiler fuel, kg CO2 per kWh of fuel.
    pub gas_kg_co2_per_kwh: f64,
    /// Displaced boiler efficiency.
    pub boiler_efficiency: f64,
}

/// Handle a message on the tariff topic: a valid payload replaces the
/// series; a bad one is refused (logged, counted) and changes nothing.
pub fn on_message(prices: &Prices, metrics: &Metrics, payload: &[u8], now: DateTime<Utc>) {
    match TariffPayload::decode(payload) {
        Ok(s) => prices.live.replace(s, "mqtt", now),
        Err(e) => {
            metrics.error("tariff");
            prices.live.failed("mqtt", &e);
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The URL with its token: `{token}` replaced, else a bearer header.
fn request(client: &reqwest::Client, url: &str, token: Option<&str>) -> reqwest::RequestBuilder {
    match token {
        Some(t) if url.contains("{token}") => client.get(url.replace("{token}", t)),
        Some(t) => client.get(url).bearer_auth(t),
        None => client.get(url),
    }
}

async fn poll_url(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> Result<PriceSeries, SeriesError> {
    let http = |e: reqwest::Error| SeriesError::Invalid(format!("HTTP: {}", e.without_url()));
    let resp = request(client, url, token).send().await.map_err(http)?;
    let status = resp.status();
    let body = resp.text().await.map_err(http)?;
    if !status.is_success() {
        // ENTSO-E answers a refused query with an acknowledgement document.
        if let Err(e @ SeriesError::NoData { .. }) = series::parse_text(&body) {
            return Err(e);
        }
        return Err(SeriesError::Invalid(format!("HTTP status {status}")));
    }
    series::parse_text(&body)
}

/// Keep the live series up to date and its status in `status` (shown by
/// `GET /api/v1/site`; the site state is the control loop's alone) and in
/// `/metrics` until `shutdown`.
pub fn spawn(
    prices: Prices,
    horizon_s: f64,
    status_out: Arc<RwLock<Option<TariffStatus>>>,
    metrics: Arc<Metrics>,
    clock: Clock,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let token = prices
            .token_env
            .as_deref()
            .and_then(|v| std::env::var(v).ok());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        let mut seen: Option<SystemTime> = None;
        let mut next_poll = tokio::time::Instant::now();
        let mut was_stale = false;
        loop {
            let now = clock.now();
            if let Some(path) = &prices.electricity_file {
                let m = modified(path);
                if m.is_some() && m != seen {
                    seen = m;
                    let source = format!("file {}", path.display());
                    match series::load(path) {
                        Ok(s) => prices.live.replace(s, &source, now),
                        Err(e) => {
                            metrics.error("tariff");
                            prices.live.failed(&source, &e);
                        }
                    }
                }
            }
            if let Some(url) = &prices.url {
                if tokio::time::Instant::now() >= next_poll {
                    next_poll =
                        tokio::time::Instant::now() + Duration::from_secs_f64(prices.refresh_s);
                    match poll_url(&client, url, token.as_deref()).await {
                        Ok(s) => prices.live.replace(s, "url", now),
                        Err(e) => {
                            metrics.error("tariff");
                            prices.live.failed("url", &e);
                        }
                    }
                }
            }
            let horizon_end = now + chrono::Duration::milliseconds((horizon_s * 1000.0) as i64);
            let status = prices.live.status(&prices, now, horizon_end);
            if status.stale != was_stale {
                was_stale = status.stale;
                if was_stale {
                    tracing::warn!(known_until = ?status.known_until, "Tariff is stale: the horizon reaches past the known prices; planning on the fallback.");
                } else {
                    tracing::info!("Tariff covers the horizon again.");
                }
            }
            metrics.observe_tariff(&status);
            *status_out.write().unwrap_or_else(|e| e.into_inner()) = Some(status);
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    })
}
