//! SVG charts of a run (plotters, SVG backend): heat demand vs delivered,
//! power, temperatures, cost; and a bar chart for sweeps.

use std::path::Path;

use plotters::prelude::*;

use crate::error::SimError;
use crate::series::Series;

/// Most points drawn per line (longer series are averaged down).
pub const MAX_POINTS: usize = 1500;

fn chart_err(path: &Path, e: impl std::fmt::Display) -> SimError {
    SimError::Chart {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

const COLORS: [RGBColor; 6] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(90, 90, 90),
];

/// A named line: points (x, y).
pub type Line = (String, Vec<(f64, f64)>);

/// Average consecutive points so that at most [`MAX_POINTS`] remain.
pub fn downsample(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let k = points.len().div_ceil(MAX_POINTS).max(1);
    points
        .chunks(k)
        .map(|c| {
            let n = c.len() as f64;
            (
                c.iter().map(|p| p.0).sum::<f64>() / n,
                c.iter().map(|p| p.1).sum::<f64>() / n,
            )
        })
        .collect()
}

/// Draw lines against a shared x axis into an SVG file.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: &[Line],
) -> Result<(), SimError> {
    let lines: Vec<Line> = lines
        .iter()
        .map(|(n, p)| {
            (
                n.clone(),
                downsample(
                    &p.iter()
                        .copied()
                        .filter(|q| q.1.is_finite())
                        .collect::<Vec<_>>(),
                ),
            )
        })
        .collect();
    let xs = lines.iter().flat_map(|l| l.1.iter().map(|p| p.0));
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let ys = lines.iter().flat_map(|l| l.1.iter().map(|p| p.1));
    let (y0, y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
        (a.min(y), b.max(y))
    });
    let (x0, x1) = if x0.is_finite() && x1 > x0 {
        (x0, x1)
    } else {
        (0.0, 1.0)
    };
    let (y0, y1) = if y0.is_finite() {
        (y0.min(0.0), y1.max(y0 + 1e-9))
    } else {
        (0.0, 1.0)
    };
    let pad = (y1 - y0) * 0.05;
    let root = SVGBackend::new(path, (960, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| chart_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..(y1 + pad))
        .map_err(|e| chart_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| chart_err(path, e))?;
    for (i, (name, pts)) in lines.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(|e| chart_err(path, e))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| chart_err(path, e))?;
    root.present().map_err(|e| chart_err(path, e))?;
    Ok(())
}

/// A bar chart of one value per labelled variant.
pub fn bar_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    bars: &[(String, f64)],
) -> Result<(), SimError> {
    let lo = bars.iter().map(|b| b.1).fold(0.0, f64::min);
    let hi = bars.iter().map(|b| b.1).fold(0.0, f64::max);
    let pad = ((hi - lo) * 0.1).max(1e-9);
    let n = bars.len().max(1);
    let root = SVGBackend::new(path, (960, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| chart_err(path, e))?;
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(72)
        .build_cartesian_2d(0.0..n as f64, (lo - pad)..(hi + pad))
        .map_err(|e| chart_err(path, e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.26 {
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(y_label)
        .draw()
        .map_err(|e| chart_err(path, e))?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            let c = COLORS[i % COLORS.len()];
            Rectangle::new([(i as f64 + 0.15, 0.0), (i as f64 + 0.85, *v)], c.filled())
        }))
        .map_err(|e| chart_err(path, e))?;
    root.present().map_err(|e| chart_err(path, e))?;
    Ok(())
}

/// The four charts of a run, into `dir`: `heat.svg`, `power.svg`,
/// `temperatures.svg`, `cost.svg`. Returns their file names.
pub fn run_charts(
    dir: &Path,
    series: &Series,
    consumer_ids: &[String],
) -> Result<Vec<&'static str>, SimError> {
    let days = |t: f64| t / 86_400.0;
    let rows = &series.rows;
    let pts = |f: &dyn Fn(&crate::series::Row) -> f64| -> Vec<(f64, f64)> {
        rows.iter().map(|r| (days(r.t_s), f(r))).collect()
    };
    line_chart(
        &dir.join("heat.svg"),
        "Heat: demand, recovered, delivered",
        "days",
        "kW",
        &[
            (
                "demand".into(),
                pts(&|r| r.consumers.iter().map(|c| c.demand_kw).sum()),
            ),
            (
                "recovered".into(),
                pts(&|r| r.loops.iter().map(|l| l.recovered_kw).sum()),
            ),
            (
                "delivered".into(),
                pts(&|r| r.consumers.iter().map(|c| c.delivered_kw).sum()),
            ),
            (
                "backup boiler".into(),
                pts(&|r| r.consumers.iter().map(|c| c.backup_kw).sum()),
            ),
        ],
    )?;
    line_chart(
        &dir.join("power.svg"),
        "Electrical power",
        "days",
        "kW",
        &[
            ("IT".into(), pts(&|r| r.it_kw)),
            ("cooling".into(), pts(&|r| r.cooling_kw)),
            ("heat pumps".into(), pts(&|r| r.heat_pump_kw)),
            ("facility".into(), pts(&|r| r.facility_kw())),
        ],
    )?;
    let mut temps: Vec<Line> = vec![
        ("outdoor".into(), pts(&|r| r.outdoor_c)),
        ("hottest component".into(), pts(&|r| r.max_temp_c)),
    ];
    for (i, id) in consumer_ids.iter().enumerate() {
        if rows
            .first()
            .is_some_and(|r| r.consumers.get(i).is_some_and(|c| c.indoor_c.is_finite()))
        {
            temps.push((format!("{id} indoor"), pts(&|r| r.consumers[i].indoor_c)));
        }
    }
    line_chart(
        &dir.join("temperatures.svg"),
        "Temperatures",
        "days",
        "°C",
        &temps,
    )?;
    let mut cum = (0.0, 0.0);
    let mut elec = Vec::with_capacity(rows.len());
    let mut heat = Vec::with_capacity(rows.len());
    let mut net = Vec::with_capacity(rows.len());
    for r in rows {
        cum.0 += r.electricity_cost;
        cum.1 += r.heat_value;
        let x = days(r.t_s + series.step_s);
        elec.push((x, cum.0));
        heat.push((x, cum.1));
        net.push((x, cum.0 - cum.1));
    }
    line_chart(
        &dir.join("cost.svg"),
        "Cumulative cost",
        "days",
        "currency",
        &[
            ("electricity".into(), elec),
            ("heat value".into(), heat),
            ("net cost".into(), net),
        ],
    )?;
    Ok(vec![
        "heat.svg",
        "power.svg",
        "temperatures.svg",
        "cost.svg",
    ])
}
