//! A generated day-ahead price year at 15-minute resolution, with its grid
//! carbon intensity: the shipped `scenarios/prices-2026.csv`
//! (`cargo run -p phoenix-simulator --example price_year`).
//!
//! Deterministic (ChaCha8 seeded with [`SEED`]) and shaped like a
//! continental European day-ahead market with much solar, in EUR/MWh before
//! the conversion to per kWh:
//! - a seasonal level, 95 in mid-January to 55 in mid-July;
//! - a daily shape: night trough (−15 at 03:00), morning ramp (+20 at
//!   08:00), evening peak (+45 at 19:00);
//! - a midday solar dip: the sine of the sun's elevation at 51° N × the
//!   day's sunniness (0.05–1, a random walk) × 1.3 × (35 in winter to 85 in
//!   summer);
//! - weekends −12;
//! - a day-level random level (AR(1), σ 12) and quarter-hour noise (σ 3);
//!
//! so that sunny spring and summer weekend middays fall below zero (451
//! quarter hours, about 113 hours, in the shipped year; mean 71.4 EUR/MWh,
//! −28.4 to 156.4) and winter evenings are the dearest. The carbon
//! intensity follows the same drivers: 380 g/kWh in winter to 300 in
//! summer, −220 × the solar term at midday, +40 in the evening peak,
//! noise σ 15, at least 40. Network fees and taxes (a fixed adder per kWh)
//! are not included: they do not change when to run.

use std::fmt::Write;

use chrono::{DateTime, Datelike, Duration, Timelike, Utc, Weekday};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Seed of the shipped year.
pub const SEED: u64 = 2026;

/// One quarter hour of the generated year.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quarter {
    /// Start.
    pub start: DateTime<Utc>,
    /// Day-ahead price, EUR/MWh.
    pub eur_per_mwh: f64,
    /// Grid carbon intensity, g CO2/kWh.
    pub carbon_g_per_kwh: f64,
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    // Box–Muller.
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Sine of the sun's elevation at 51° N (0 below the horizon).
fn sun(t: DateTime<Utc>) -> f64 {
    let lat = 51f64.to_radians();
    let doy = f64::from(t.ordinal());
    let decl = (23.44f64).to_radians() * (std::f64::consts::TAU * (doy + 284.0) / 365.0).sin();
    let hour = f64::from(t.hour()) + f64::from(t.minute()) / 60.0 + 0.125;
    // Solar noon ≈ 11:30 UTC in central Europe (10° E, UTC+1 zone).
    let h = (hour - 11.5) * 15f64.to_radians();
    (lat.sin() * decl.sin() + lat.cos() * decl.cos() * h.cos()).max(0.0)
}

/// A bump of height 1 at `at_h` hours, width `w_h` (Gaussian).
fn bump(hour: f64, at_h: f64, w_h: f64) -> f64 {
    let d = (hour - at_h + 12.0).rem_euclid(24.0) - 12.0;
    (-(d * d) / (2.0 * w_h * w_h)).exp()
}

/// The quarter hours of `year` (UTC), generated from `seed`.
pub fn generate(year: i32, seed: u64) -> Vec<Quarter> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let start = chrono::NaiveDate::from_ymd_opt(year, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .unwrap_or_default();
    let end = start
        .with_year(year + 1)
        .unwrap_or(start + Duration::days(365));
    let n = ((end - start).num_minutes() / 15) as usize;
    let mut out = Vec::with_capacity(n);
    let (mut level, mut sunny) = (0.0, 0.7);
    for i in 0..n {
        let t = start + Duration::minutes(15 * i as i64);
        if t.hour() == 0 && t.minute() == 0 {
            level = 0.6 * level + 12.0 * 0.8 * normal(&mut rng);
            sunny = (0.5 * sunny + 0.5 * rng.random::<f64>()).clamp(0.05, 1.0);
        }
        let season = (std::f64::consts::TAU * (f64::from(t.ordinal()) - 15.0) / 365.0).cos();
        let hour = f64::from(t.hour()) + f64::from(t.minute()) / 60.0;
        let solar = sun(t) * sunny;
        let weekend = matches!(t.weekday(), Weekday::Sat | Weekday::Sun);
        let price = 75.0 + 20.0 * season - 15.0 * bump(hour, 3.0, 2.0)
            + 20.0 * bump(hour, 8.0, 1.5)
            + 45.0 * bump(hour, 19.0, 1.8)
            - (60.0 - 25.0 * season) * solar * 1.3
            - if weekend { 12.0 } else { 0.0 }
            + level
            + 3.0 * normal(&mut rng);
        let carbon = (340.0 + 40.0 * season - 220.0 * solar
            + 40.0 * bump(hour, 19.0, 1.8)
            + 0.8 * level
            + 15.0 * normal(&mut rng))
        .max(40.0);
        out.push(Quarter {
            start: t,
            eur_per_mwh: (price * 100.0).round() / 100.0,
            carbon_g_per_kwh: carbon.round(),
        });
    }
    out
}

/// The year as the CSV format of DESIGN.md §4.9 (prices per kWh).
pub fn csv(quarters: &[Quarter]) -> String {
    let mut s = String::with_capacity(quarters.len() * 44);
    s.push_str("time,price_per_kwh,carbon_g_per_kwh\n");
    for q in quarters {
        let _ = writeln!(
            s,
            "{},{:.5},{}",
            q.start.format("%Y-%m-%dT%H:%M:%SZ"),
            q.eur_per_mwh / 1000.0,
            q.carbon_g_per_kwh
        );
    }
    s
}
