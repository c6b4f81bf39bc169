//! Price and carbon-intensity series (DESIGN.md §4.9), shared by the
//! simulator and the controller.
//!
//! Three sources give one [`PriceSeries`]:
//! - the CSV format ([`parse_csv`]): a header `time,price_per_kwh` with an
//!   optional `carbon_g_per_kwh` column, RFC 3339 times, any step, each value
//!   holding until the next row (the last one for the step before it);
//! - ENTSO-E day-ahead documents ([`parse_entsoe`]): a
//!   `Publication_MarketDocument` of type A44, resolutions `PT15M` and
//!   `PT60M`, curve types A01 (every position present) and A03 (an omitted
//!   position repeats the previous price); EUR/MWh become per kWh. An
//!   `Acknowledgement_MarketDocument` (no data) is an error carrying its
//!   reason;
//! - the retained `tariff` topic payload ([`TariffPayload`]): `start`,
//!   `step_s`, `prices_per_kwh` and optionally `carbon_g_per_kwh`.
//!
//! [`load`] reads a file of either format (an XML document starts with `<`).
//! Every error names the file, the line or the position that is wrong.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Most values one series may hold (ten years at 15 minutes).
pub const MAX_POINTS: usize = 400_000;

/// Why a series was refused.
#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A problem inside a file.
    #[error("{path}: {source}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// The problem.
        source: Box<SeriesError>,
    },
    /// A bad CSV line (1-based).
    #[error("line {line}: {problem}")]
    Csv {
        /// Line number, from 1.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// A bad ENTSO-E document.
    #[error("ENTSO-E document: {0}")]
    Entsoe(String),
    /// ENTSO-E answered with an acknowledgement: no data.
    #[error("ENTSO-E returned no data (Acknowledgement_MarketDocument): {reason}")]
    NoData {
        /// The acknowledgement's reason text (and code).
        reason: String,
    },
    /// A bad `tariff` payload.
    #[error("tariff payload: {0}")]
    Tariff(String),
    /// Values that do not make a series (empty, unordered, too many).
    #[error("{0}")]
    Invalid(String),
}

/// One value of a series: it holds from `start` until the next one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PricePoint {
    /// When the value starts to hold.
    pub start: DateTime<Utc>,
    /// Electricity price, per kWh (may be negative).
    pub price_per_kwh: f64,
    /// Grid carbon intensity, g CO2 per kWh, when known.
    pub carbon_g_per_kwh: Option<f64>,
}

/// A price (and carbon) series: values in time order, each holding until the
/// next, the last one until [`PriceSeries::end`].
///
/// Past the end, [`PriceSeries::at`] falls back to the same time of day on
/// the last day the series covers (the time shifted back by whole days until
/// it falls inside); before the first value it answers `None`, and the
/// caller uses its configured flat tariff.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceSeries {
    points: Vec<PricePoint>,
    end: DateTime<Utc>,
}

impl PriceSeries {
    /// A series from points in strictly increasing time order; the last one
    /// holds until `end` (after its start).
    pub fn new(points: Vec<PricePoint>, end: DateTime<Utc>) -> Result<Self, SeriesError> {
        let Some(last) = points.last() else {
            return Err(SeriesError::Invalid("the series has no values".into()));
        };
        if points.len() > MAX_POINTS {
            return Err(SeriesError::Invalid(format!(
                "{} values (at most {MAX_POINTS})",
                points.len()
            )));
        }
        if end <= last.start {
            return Err(SeriesError::Invalid(format!(
                "the series ends at {end}, not after its last value at {}",
                last.start
            )));
        }
        if let Some(w) = points.windows(2).find(|w| w[1].start <= w[0].start) {
            return Err(SeriesError::Invalid(format!(
                "{} does not follow {} (times must increase)",
                w[1].start, w[0].start
            )));
        }
        Ok(Self { points, end })
    }

    /// The values, in time order.
    pub fn points(&self) -> &[PricePoint] {
        &self.points
    }

    /// When the first value starts.
    pub fn start(&self) -> DateTime<Utc> {
        self.points[0].start
    }

    /// When the last value stops holding.
    pub fn end(&self) -> DateTime<Utc> {
        self.end
    }

    /// Whether every value has a carbon intensity.
    pub fn has_carbon(&self) -> bool {
        self.points.iter().all(|p| p.carbon_g_per_kwh.is_some())
    }

    /// The value known at `t` (no fallback): `None` before the start or from
    /// the end on.
    pub fn known_at(&self, t: DateTime<Utc>) -> Option<&PricePoint> {
        if t < self.start() || t >= self.end {
            return None;
        }
        let i = self.points.partition_point(|p| p.start <= t);
        self.points.get(i.checked_sub(1)?)
    }

    /// The value at `t`: the known one, else (past the end) the same time of
    /// day on the last covered day; `None` before the start, or past the end
    /// of a series too short to cover that time of day.
    pub fn at(&self, t: DateTime<Utc>) -> Option<&PricePoint> {
        if t < self.end {
            return self.known_at(t);
        }
        let days = (t - self.end).num_seconds().div_euclid(86_400) + 1;
        self.known_at(t - Duration::days(days))
    }
}

/// Read a series file: an ENTSO-E document when it starts with `<`, else
/// the CSV format. Errors name the file.
pub fn load(path: &Path) -> Result<PriceSeries, SeriesError> {
    let text = std::fs::read_to_string(path).map_err(|source| SeriesError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_text(&text).map_err(|e| SeriesError::InFile {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}

/// Parse series text of either format (an XML document starts with `<`).
pub fn parse_text(text: &str) -> Result<PriceSeries, SeriesError> {
    let body = text.trim_start_matches('\u{feff}').trim_start();
    if body.starts_with('<') {
        parse_entsoe(body)
    } else {
        parse_csv(body)
    }
}

/// The CSV columns.
#[derive(Debug, Clone, Copy)]
struct Columns {
    time: usize,
    price: usize,
    carbon: Option<usize>,
    count: usize,
}

fn csv_header(line: usize, text: &str) -> Result<Columns, SeriesError> {
    let bad = |problem: String| SeriesError::Csv { line, problem };
    let names: Vec<&str> = text.split(',').map(str::trim).collect();
    let find = |n: &str| names.iter().position(|c| *c == n);
    if let Some(u) = names
        .iter()
        .find(|c| !["time", "price_per_kwh", "carbon_g_per_kwh"].contains(c))
    {
        return Err(bad(format!(
            "unknown column `{u}` (expected time, price_per_kwh and optionally carbon_g_per_kwh)"
        )));
    }
    Ok(Columns {
        time: find("time").ok_or_else(|| bad("the header has no `time` column".into()))?,
        price: find("price_per_kwh")
            .ok_or_else(|| bad("the header has no `price_per_kwh` column".into()))?,
        carbon: find("carbon_g_per_kwh"),
        count: names.len(),
    })
}

fn csv_number(line: usize, column: &str, raw: &str) -> Result<f64, SeriesError> {
    match raw.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(SeriesError::Csv {
            line,
            problem: format!("`{column}` is `{raw}`, not a finite number"),
        }),
    }
}

fn csv_row(line: usize, text: &str, cols: Columns) -> Result<PricePoint, SeriesError> {
    let bad = |problem: String| SeriesError::Csv { line, problem };
    let cells: Vec<&str> = text.split(',').map(str::trim).collect();
    if cells.len() != cols.count {
        return Err(bad(format!(
            "{} fields, the header has {}",
            cells.len(),
            cols.count
        )));
    }
    let start = DateTime::parse_from_rfc3339(cells[cols.time])
        .map_err(|e| bad(format!("time `{}` is not RFC 3339: {e}", cells[cols.time])))?
        .with_timezone(&Utc);
    let carbon = match cols.carbon {
        Some(c) if !cells[c].is_empty() => {
            let v = csv_number(line, "carbon_g_per_kwh", cells[c])?;
            if v < 0.0 {
                return Err(bad(format!("carbon_g_per_kwh {v} is negative")));
            }
            Some(v)
        }
        _ => None,
    };
    Ok(PricePoint {
        start,
        price_per_kwh: csv_number(line, "price_per_kwh", cells[cols.price])?,
        carbon_g_per_kwh: carbon,
    })
}

/// Parse the CSV format. Blank lines and lines starting with `#` are
/// skipped; the last value holds for the step before it (one hour for a
/// single row).
pub fn parse_csv(text: &str) -> Result<PriceSeries, SeriesError> {
    let mut cols = None;
    let mut points: Vec<PricePoint> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let Some(c) = cols else {
            cols = Some(csv_header(line, t)?);
            continue;
        };
        let p = csv_row(line, t, c)?;
        if let Some(prev) = points.last() {
            if p.start <= prev.start {
                return Err(SeriesError::Csv {
                    line,
                    problem: format!("time {} does not follow {}", p.start, prev.start),
                });
            }
        }
        if points.len() == MAX_POINTS {
            return Err(SeriesError::Csv {
                line,
                problem: format!("more than {MAX_POINTS} rows"),
            });
        }
        points.push(p);
    }
    if cols.is_none() {
        return Err(SeriesError::Csv {
            line: 1,
            problem: "no header `time,price_per_kwh[,carbon_g_per_kwh]`".into(),
        });
    }
    let end = match points.as_slice() {
        [.., a, b] => b.start + (b.start - a.start),
        [a] => a.start + Duration::hours(1),
        [] => {
            return Err(SeriesError::Invalid(
                "the CSV has a header and no rows".into(),
            ))
        }
    };
    PriceSeries::new(points, end)
}

// --- ENTSO-E --------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct EntsoeDoc {
    #[serde(rename = "type")]
    doc_type: Option<String>,
    #[serde(rename = "TimeSeries", default)]
    time_series: Vec<EntsoeTs>,
}

#[derive(Debug, Deserialize)]
struct EntsoeTs {
    #[serde(rename = "curveType")]
    curve_type: Option<String>,
    #[serde(rename = "price_Measure_Unit.name")]
    unit: Option<String>,
    #[serde(rename = "Period", default)]
    periods: Vec<EntsoePeriod>,
}

#[derive(Debug, Deserialize)]
struct EntsoePeriod {
    #[serde(rename = "timeInterval")]
    interval: EntsoeInterval,
    resolution: String,
    #[serde(rename = "Point", default)]
    points: Vec<EntsoePoint>,
}

#[derive(Debug, Deserialize)]
struct EntsoeInterval {
    start: String,
    end: String,
}

#[derive(Debug, Deserialize)]
struct EntsoePoint {
    position: String,
    #[serde(rename = "price.amount")]
    price: String,
}

#[derive(Debug, Deserialize)]
struct Ack {
    #[serde(rename = "Reason", default)]
    reasons: Vec<AckReason>,
}

#[derive(Debug, Deserialize)]
struct AckReason {
    code: Option<String>,
    text: Option<String>,
}

/// The local name of the document's root element.
fn root_name(xml: &str) -> Result<String, SeriesError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(e)) => {
                return Ok(String::from_utf8_lossy(e.local_name().as_ref()).into_owned())
            }
            Ok(quick_xml::events::Event::Eof) => {
                return Err(SeriesError::Entsoe("no root element".into()))
            }
            Ok(_) => {}
            Err(e) => return Err(SeriesError::Entsoe(format!("not XML: {e}"))),
        }
    }
}

/// An ENTSO-E time, `2026-03-01T23:00Z` (no seconds) or full RFC 3339.
fn entsoe_time(raw: &str) -> Result<DateTime<Utc>, SeriesError> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    chrono::NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%MZ")
        .map(|n| n.and_utc())
        .map_err(|_| SeriesError::Entsoe(format!("time `{raw}` is not like 2026-03-01T23:00Z")))
}

fn resolution(raw: &str) -> Result<Duration, SeriesError> {
    match raw.trim() {
        "PT15M" => Ok(Duration::minutes(15)),
        "PT30M" => Ok(Duration::minutes(30)),
        "PT60M" | "PT1H" => Ok(Duration::hours(1)),
        other => Err(SeriesError::Entsoe(format!(
            "resolution `{other}` (PT15M or PT60M expected)"
        ))),
    }
}

/// Parse an ENTSO-E day-ahead prices document (A44).
pub fn parse_entsoe(xml: &str) -> Result<PriceSeries, SeriesError> {
    let root = root_name(xml)?;
    if root == "Acknowledgement_MarketDocument" {
        let ack: Ack = quick_xml::de::from_str(xml)
            .map_err(|e| SeriesError::Entsoe(format!("acknowledgement: {e}")))?;
        let reason = ack
            .reasons
            .iter()
            .map(|r| {
                let code = r.code.as_deref().unwrap_or("?");
                format!("{} (code {code})", r.text.as_deref().unwrap_or("no text"))
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Err(SeriesError::NoData { reason });
    }
    if root != "Publication_MarketDocument" {
        return Err(SeriesError::Entsoe(format!(
            "root element `{root}` (Publication_MarketDocument expected)"
        )));
    }
    let doc: EntsoeDoc =
        quick_xml::de::from_str(xml).map_err(|e| SeriesError::Entsoe(e.to_string()))?;
    match doc.doc_type.as_deref().map(str::trim) {
        Some("A44") | None => {}
        Some(t) => {
            return Err(SeriesError::Entsoe(format!(
                "document type `{t}` (A44, day-ahead prices, expected)"
            )))
        }
    }
    let mut points = Vec::new();
    let mut end: Option<DateTime<Utc>> = None;
    for (ti, ts) in doc.time_series.iter().enumerate() {
        for (pi, period) in ts.periods.iter().enumerate() {
            let at = format!("TimeSeries {} Period {}", ti + 1, pi + 1);
            let e = entsoe_period(ts, period, &mut points).map_err(|e| match e {
                SeriesError::Entsoe(m) => SeriesError::Entsoe(format!("{at}: {m}")),
                other => other,
            })?;
            end = end.max(Some(e));
        }
    }
    let Some(end) = end else {
        return Err(SeriesError::Entsoe("no TimeSeries with a Period".into()));
    };
    points.sort_by_key(|p: &PricePoint| p.start);
    if let Some(w) = points.windows(2).find(|w| w[0].start == w[1].start) {
        return Err(SeriesError::Entsoe(format!(
            "two prices for {} (overlapping periods)",
            w[0].start
        )));
    }
    PriceSeries::new(points, end)
}

/// Append one Period's prices; return its end.
fn entsoe_period(
    ts: &EntsoeTs,
    period: &EntsoePeriod,
    out: &mut Vec<PricePoint>,
) -> Result<DateTime<Utc>, SeriesError> {
    let bad = |m: String| SeriesError::Entsoe(m);
    if let Some(u) = ts.unit.as_deref().map(str::trim) {
        if !u.eq_ignore_ascii_case("MWH") {
            return Err(bad(format!("price unit `{u}` (MWH expected)")));
        }
    }
    let filled = match ts.curve_type.as_deref().map(str::trim) {
        Some("A01") | None => false,
        Some("A03") => true,
        Some(c) => return Err(bad(format!("curve type `{c}` (A01 or A03 expected)"))),
    };
    let start = entsoe_time(&period.interval.start)?;
    let end = entsoe_time(&period.interval.end)?;
    let step = resolution(&period.resolution)?;
    let span = (end - start).num_seconds();
    if span <= 0 || span % step.num_seconds() != 0 {
        return Err(bad(format!(
            "interval {start} – {end} is not a whole number of {} steps",
            period.resolution.trim()
        )));
    }
    let n = (span / step.num_seconds()) as usize;
    let mut prices: Vec<Option<f64>> = vec![None; n];
    for p in &period.points {
        let pos: usize = p
            .position
            .trim()
            .parse()
            .map_err(|_| bad(format!("position `{}` is not a number", p.position)))?;
        if pos == 0 || pos > n {
            return Err(bad(format!("position {pos} outside 1–{n}")));
        }
        let v: f64 = p
            .price
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| {
                bad(format!(
                    "position {pos}: price.amount `{}` is not a number",
                    p.price
                ))
            })?;
        if prices[pos - 1].replace(v / 1000.0).is_some() {
            return Err(bad(format!("position {pos} appears twice")));
        }
    }
    let mut last = None;
    for (i, slot) in prices.iter_mut().enumerate() {
        match (*slot, last, filled) {
            (Some(v), _, _) => last = Some(v),
            (None, Some(v), true) => *slot = Some(v),
            (None, None, true) => {
                return Err(bad(
                    "position 1 is missing (A03 needs the first price)".into()
                ))
            }
            (None, _, false) => {
                return Err(bad(format!(
                    "position {} is missing in an A01 curve",
                    i + 1
                )))
            }
        }
    }
    out.extend(prices.iter().enumerate().map(|(i, v)| PricePoint {
        start: start + step * i as i32,
        price_per_kwh: v.unwrap_or_default(),
        carbon_g_per_kwh: None,
    }));
    Ok(end)
}

// --- tariff topic ----------------------------------------------------------

/// The retained `phoenix/v1/<site>/tariff` payload: a normalised series as
/// evcc and Home Assistant publish it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffPayload {
    /// When the first value starts.
    pub start: DateTime<Utc>,
    /// Step between values, s.
    pub step_s: f64,
    /// Prices per kWh, one per step.
    pub prices_per_kwh: Vec<f64>,
    /// Carbon intensities, g CO2/kWh, one per step (or empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub carbon_g_per_kwh: Vec<f64>,
}

impl TariffPayload {
    /// Decode and validate JSON bytes into a series.
    pub fn decode(bytes: &[u8]) -> Result<PriceSeries, SeriesError> {
        let p: TariffPayload = serde_json::from_slice(bytes)
            .map_err(|e| SeriesError::Tariff(format!("malformed: {e}")))?;
        p.into_series()
    }

    /// Validate and turn into a series.
    pub fn into_series(self) -> Result<PriceSeries, SeriesError> {
        let bad = |m: String| SeriesError::Tariff(m);
        if !(self.step_s.is_finite() && (60.0..=86_400.0).contains(&self.step_s)) {
            return Err(bad(format!("step_s {} is not in 60–86400 s", self.step_s)));
        }
        let n = self.prices_per_kwh.len();
        if n == 0 || n > MAX_POINTS {
            return Err(bad(format!(
                "prices_per_kwh has {n} values (1–{MAX_POINTS})"
            )));
        }
        if let Some(i) = self.prices_per_kwh.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!("prices_per_kwh[{i}] is not a finite number")));
        }
        let carbon = &self.carbon_g_per_kwh;
        if !carbon.is_empty() && carbon.len() != n {
            return Err(bad(format!(
                "carbon_g_per_kwh has {} values, prices_per_kwh {n}",
                carbon.len()
            )));
        }
        if let Some(i) = carbon.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
            return Err(bad(format!("carbon_g_per_kwh[{i}] is not a number ≥ 0")));
        }
        let step = Duration::milliseconds((self.step_s * 1000.0).round() as i64);
        let points = (0..n)
            .map(|i| PricePoint {
                start: self.start + step * i as i32,
                price_per_kwh: self.prices_per_kwh[i],
                carbon_g_per_kwh: carbon.get(i).copied(),
            })
            .collect();
        PriceSeries::new(points, self.start + step * n as i32)
    }
}
