//! Outdoor weather: constant, synthetic (seeded), or an EnergyPlus weather
//! (EPW) file.
//!
//! [`Weather::at`] gives the outdoor dry-bulb temperature and the global
//! horizontal irradiance (GHI) at a number of seconds after the run's start.
//!
//! - Synthetic: `mean − seasonal·cos(2π(doy − 15)/365) +
//!   diurnal·cos(2π(hour − 15)/24)` plus hourly AR(1) noise (φ = 0.95,
//!   stationary standard deviation `noise_c`) from a ChaCha8 stream seeded
//!   with the scenario's seed; the sun is a clear-sky Haurwitz model
//!   (`1098·cos z·exp(−0.057/cos z)` W/m²) scaled by `clearness`, with the
//!   solar declination of the day and the hour angle of UTC solar time.
//! - EPW: the EnergyPlus/ASHRAE format: 8 header lines, then one
//!   comma-separated row per hour with the dry-bulb temperature (°C, field 7)
//!   and global horizontal radiation (Wh/m², field 14). Rows are placed at
//!   the middle of their hour (EPW hours are "hour ending"); a file shorter
//!   than a year repeats itself. Missing values (99.9, 9999) carry the last
//!   valid value forward.

use std::path::Path;

use chrono::{DateTime, Datelike, Timelike, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::ScenarioError;
use crate::scenario::{WeatherKind, WeatherSection};

/// Outdoor conditions at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Dry-bulb temperature, °C.
    pub outdoor_c: f64,
    /// Global horizontal irradiance, W/m².
    pub ghi_w_per_m2: f64,
}

/// Hourly data from an EPW file.
#[derive(Debug, Clone, PartialEq)]
pub struct EpwData {
    /// Location line of the header (city, country).
    pub location: String,
    /// Hour of year (0-based, from Jan 1 00:00) of the first row.
    pub first_hour_of_year: usize,
    /// Dry-bulb temperature per row, °C.
    pub temp_c: Vec<f64>,
    /// Global horizontal radiation per row, Wh/m² (= mean W/m² over the hour).
    pub ghi_w_per_m2: Vec<f64>,
}

const DAYS_BEFORE_MONTH: [usize; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];

/// Parse EPW text. `path` is used in errors only.
pub fn parse_epw(text: &str, path: &Path) -> Result<EpwData, ScenarioError> {
    let err = |line: usize, problem: String| ScenarioError::Epw {
        path: path.to_path_buf(),
        line,
        problem,
    };
    let mut lines = text.lines().enumerate();
    let (_, first) = lines.next().ok_or_else(|| err(1, "empty file".into()))?;
    if !first.starts_with("LOCATION") {
        return Err(err(
            1,
            "an EPW file starts with a LOCATION header line".into(),
        ));
    }
    let location = first
        .split(',')
        .skip(1)
        .take(3)
        .collect::<Vec<_>>()
        .join(", ");
    for _ in 0..7 {
        lines
            .next()
            .ok_or_else(|| err(1, "fewer than the 8 header lines of an EPW file".into()))?;
    }
    let mut temp_c = Vec::new();
    let mut ghi = Vec::new();
    let mut first_hour_of_year = None;
    for (i, line) in lines {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 14 {
            return Err(err(
                n,
                format!("{} fields, a data row has at least 14", f.len()),
            ));
        }
        let num = |k: usize, what: &str| -> Result<f64, ScenarioError> {
            f[k].trim().parse::<f64>().map_err(|_| {
                err(
                    n,
                    format!("field {} ({what}) `{}` is not a number", k + 1, f[k]),
                )
            })
        };
        let month = num(1, "month")? as usize;
        let day = num(2, "day")? as usize;
        let hour = num(3, "hour")? as usize;
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || !(1..=24).contains(&hour) {
            return Err(err(
                n,
                format!("date {month}/{day} hour {hour} is not valid"),
            ));
        }
        if first_hour_of_year.is_none() {
            first_hour_of_year =
                Some(((DAYS_BEFORE_MONTH[month - 1] + day - 1) * 24 + hour - 1) % 8760);
        }
        let t = num(6, "dry bulb temperature")?;
        let g = num(13, "global horizontal radiation")?;
        let t = if t >= 99.9 {
            *temp_c
                .last()
                .ok_or_else(|| err(n, "the first row's temperature is missing (99.9)".into()))?
        } else {
            t
        };
        let g = if g >= 9999.0 {
            ghi.last().copied().unwrap_or(0.0)
        } else {
            g.max(0.0)
        };
        temp_c.push(t);
        ghi.push(g);
    }
    if temp_c.len() < 24 {
        return Err(err(
            text.lines().count(),
            format!("{} data rows, at least 24 (one day) needed", temp_c.len()),
        ));
    }
    Ok(EpwData {
        location,
        first_hour_of_year: first_hour_of_year.unwrap_or(0),
        temp_c,
        ghi_w_per_m2: ghi,
    })
}

#[derive(Debug, Clone)]
enum Source {
    Constant(Sample),
    Synthetic {
        mean_c: f64,
        seasonal_c: f64,
        diurnal_c: f64,
        latitude_rad: f64,
        clearness: f64,
        /// Hourly noise from the start, K.
        noise_c: Vec<f64>,
    },
    Epw(EpwData),
}

/// The weather of a run.
#[derive(Debug, Clone)]
pub struct Weather {
    source: Source,
    /// Day of year (0-based, fractional) at the start.
    start_doy: f64,
    /// Hour of day at the start.
    start_hour: f64,
}

impl Weather {
    /// Build the weather for a run starting at `start` and lasting `span_s`
    /// seconds (synthetic noise is drawn for that span).
    pub fn new(
        w: &WeatherSection,
        epw_path: Option<&Path>,
        start: DateTime<Utc>,
        span_s: f64,
        seed: u64,
    ) -> Result<Self, ScenarioError> {
        let start_hour = f64::from(start.hour())
            + f64::from(start.minute()) / 60.0
            + f64::from(start.second()) / 3600.0;
        let start_doy = f64::from(start.ordinal0().min(364)) + start_hour / 24.0;
        let source = match w.kind {
            WeatherKind::Constant => Source::Constant(Sample {
                outdoor_c: w.outdoor_c,
                ghi_w_per_m2: w.ghi_w_per_m2,
            }),
            WeatherKind::Synthetic => {
                let hours = (span_s / 3600.0).ceil() as usize + 2;
                let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0057_4541_5448_4552);
                let phi: f64 = 0.95;
                let scale = w.noise_c * (1.0 - phi * phi).sqrt();
                let mut e = w.noise_c * normal(&mut rng);
                let mut noise_c = Vec::with_capacity(hours);
                for _ in 0..hours {
                    noise_c.push(e);
                    e = phi * e + scale * normal(&mut rng);
                }
                Source::Synthetic {
                    mean_c: w.mean_c,
                    seasonal_c: w.seasonal_amplitude_c,
                    diurnal_c: w.diurnal_amplitude_c,
                    latitude_rad: w.latitude_deg.to_radians(),
                    clearness: w.clearness,
                    noise_c,
                }
            }
            WeatherKind::Epw => {
                let path = epw_path.ok_or_else(|| {
                    ScenarioError::invalid("weather.path", "missing: kind = \"epw\" needs a file")
                })?;
                let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                Source::Epw(parse_epw(&text, path)?)
            }
        };
        Ok(Self {
            source,
            start_doy,
            start_hour,
        })
    }

    /// A constant climate (tests).
    pub fn constant(outdoor_c: f64, ghi_w_per_m2: f64) -> Self {
        Self {
            source: Source::Constant(Sample {
                outdoor_c,
                ghi_w_per_m2,
            }),
            start_doy: 0.0,
            start_hour: 0.0,
        }
    }

    /// Where the data comes from, for the report.
    pub fn describe(&self) -> String {
        match &self.source {
            Source::Constant(s) => format!("constant {} °C, {} W/m² sun", s.outdoor_c, s.ghi_w_per_m2),
            Source::Synthetic { mean_c, seasonal_c, diurnal_c, .. } => format!(
                "synthetic: mean {mean_c} °C, seasonal ±{seasonal_c} K, diurnal ±{diurnal_c} K, seeded noise"
            ),
            Source::Epw(d) => format!("EPW file: {} ({} hours)", d.location, d.temp_c.len()),
        }
    }

    /// Conditions `t_s` seconds after the start.
    pub fn at(&self, t_s: f64) -> Sample {
        match &self.source {
            Source::Constant(s) => *s,
            Source::Synthetic {
                mean_c,
                seasonal_c,
                diurnal_c,
                latitude_rad,
                clearness,
                noise_c,
            } => {
                let doy = (self.start_doy + t_s / 86_400.0).rem_euclid(365.0);
                let hour = (self.start_hour + t_s / 3600.0).rem_euclid(24.0);
                let k = t_s / 3600.0;
                let i = (k.floor().max(0.0) as usize).min(noise_c.len().saturating_sub(2));
                let frac = (k - i as f64).clamp(0.0, 1.0);
                let noise = noise_c[i] + frac * (noise_c[i + 1] - noise_c[i]);
                let tau = std::f64::consts::TAU;
                let outdoor_c = mean_c - seasonal_c * (tau * (doy - 15.0) / 365.0).cos()
                    + diurnal_c * (tau * (hour - 15.0) / 24.0).cos()
                    + noise;
                Sample {
                    outdoor_c,
                    ghi_w_per_m2: clearness * clear_sky_ghi(*latitude_rad, doy, hour),
                }
            }
            Source::Epw(d) => {
                let n = d.temp_c.len();
                let hoy = (self.start_doy * 24.0 + t_s / 3600.0).rem_euclid(8760.0);
                // Row i sits at the middle of its hour.
                let x = (hoy - d.first_hour_of_year as f64 - 0.5).rem_euclid(n as f64);
                let i = (x.floor() as usize) % n;
                let j = (i + 1) % n;
                let frac = x - x.floor();
                Sample {
                    outdoor_c: d.temp_c[i] + frac * (d.temp_c[j] - d.temp_c[i]),
                    ghi_w_per_m2: d.ghi_w_per_m2[i]
                        + frac * (d.ghi_w_per_m2[j] - d.ghi_w_per_m2[i]),
                }
            }
        }
    }
}

/// Clear-sky global horizontal irradiance (Haurwitz), W/m², at a latitude
/// (radians), day of year and UTC solar hour.
pub fn clear_sky_ghi(latitude_rad: f64, doy: f64, hour: f64) -> f64 {
    let tau = std::f64::consts::TAU;
    let decl = 23.44_f64.to_radians() * (tau * (284.0 + doy) / 365.0).sin();
    let omega = (15.0 * (hour - 12.0)).to_radians();
    let cos_z = latitude_rad.sin() * decl.sin() + latitude_rad.cos() * decl.cos() * omega.cos();
    if cos_z <= 0.0 {
        0.0
    } else {
        1098.0 * cos_z * (-0.057 / cos_z).exp()
    }
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_sky_sun_is_zero_at_night_and_strongest_at_noon() {
        let lat = 52.0_f64.to_radians();
        assert_eq!(clear_sky_ghi(lat, 172.0, 0.0), 0.0);
        let noon = clear_sky_ghi(lat, 172.0, 12.0);
        // Solar elevation at 52° N on 21 June is ~61.4°: Haurwitz gives ~900 W/m².
        assert!((850.0..950.0).contains(&noon), "{noon}");
        assert!(clear_sky_ghi(lat, 355.0, 12.0) < 0.4 * noon);
    }

    #[test]
    fn synthetic_weather_is_seeded() {
        let w = WeatherSection {
            kind: WeatherKind::Synthetic,
            ..WeatherSection::default()
        };
        let start = "2026-01-01T00:00:00Z".parse().unwrap();
        let a = Weather::new(&w, None, start, 86_400.0, 1).unwrap();
        let b = Weather::new(&w, None, start, 86_400.0, 1).unwrap();
        let c = Weather::new(&w, None, start, 86_400.0, 2).unwrap();
        assert_eq!(a.at(5000.0), b.at(5000.0));
        assert_ne!(a.at(5000.0), c.at(5000.0));
        // January: around mean − seasonal amplitude.
        let t = a.at(3.0 * 3600.0).outdoor_c;
        assert!((-8.0..10.0).contains(&t), "{t}");
    }
}
