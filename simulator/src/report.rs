//! `report.md`: a report a site planner can read — the site, the results
//! with the metrics' definitions, a day-by-day (or month-by-month) table and
//! the charts.

use std::fmt::Write as _;

use chrono::Datelike;

use crate::engine::Outcome;
use crate::scenario::Scenario;
use crate::series::Row;

fn kwh(v: f64) -> String {
    if v.abs() >= 10_000.0 {
        format!("{:.1} MWh", v / 1000.0)
    } else {
        format!("{v:.1} kWh")
    }
}

/// The report as Markdown; `charts` are file names in the same directory.
pub fn report(sc: &Scenario, o: &Outcome, charts: &[&str]) -> String {
    let s = &o.summary;
    let mut r = String::new();
    let _ = writeln!(r, "# {} — simulation report\n", sc.name);
    if !sc.description.is_empty() {
        let _ = writeln!(r, "{}\n", sc.description);
    }
    let _ = writeln!(
        r,
        "{} days from {} · physics step {} s · control period {} s, horizon {} periods · scheduler `{}` · seed {}\n",
        sc.sim.days,
        sc.sim.start.to_rfc3339(),
        sc.sim.physics_step_s,
        sc.sim.control_period_s,
        sc.sim.horizon_steps,
        s.scheduler,
        s.seed
    );

    let _ = writeln!(r, "## Site\n");
    let _ = writeln!(
        r,
        "| servers | count | power model | cores | memory | cooling | recovered |"
    );
    let _ = writeln!(r, "|---|---|---|---|---|---|---|");
    for (i, g) in sc.servers.iter().enumerate() {
        let res = g.resolve(i).ok();
        let model = g.model.clone().unwrap_or_else(|| "custom curve".into());
        let curve = res.as_ref().map_or(String::new(), |x| {
            format!(" ({:.0}–{:.0} W)", x.curve_w[0], x.curve_w[10])
        });
        let _ = writeln!(
            r,
            "| {} | {} | {model}{curve} | {} | {} GiB | {} | {:.0} % |",
            g.name,
            g.count,
            res.as_ref().map_or(0, |x| x.cores),
            res.as_ref().map_or(0.0, |x| x.mem_gib),
            g.heat_loop
                .as_deref()
                .map_or("air (cooled)".to_string(), |l| format!("loop `{l}`")),
            g.recovery.unwrap_or(0.0) * 100.0
        );
    }
    for l in &sc.loops {
        let hp = match &l.heat_pump {
            Some(hp) => format!(
                ", heat pump {} → {} °C (η {}, COP {:.2})",
                l.supply_c,
                hp.supply_c,
                hp.eta,
                crate::physics::heat::heat_pump_cop(hp.eta, hp.supply_c, l.supply_c)
            ),
            None => format!(", supply {} °C", l.supply_c),
        };
        let _ = writeln!(
            r,
            "\nLoop `{}`: up to {} kW into consumer `{}`{hp}.",
            l.id, l.max_kw, l.consumer
        );
    }
    for c in &sc.consumers {
        match (c.area_m2, c.u_w_per_m2k) {
            (Some(a), Some(u)) => {
                let _ = writeln!(
                    r,
                    "\nConsumer `{}`: greenhouse of {a} m², U = {u} W/(m²·K), setpoints {} °C day / {} °C night.",
                    c.id,
                    c.setpoint_day_c.unwrap_or(f64::NAN),
                    c.setpoint_night_c.unwrap_or(f64::NAN)
                );
            }
            _ => {
                let _ = writeln!(r, "\nConsumer `{}`: demand profile.", c.id);
            }
        }
    }
    let _ = writeln!(r, "\nWeather: {}.\n", o.weather);

    let _ = writeln!(r, "## Results\n");
    let _ = writeln!(
        r,
        "The datacenter covered **{:.1} %** of the heat demand ({} of {}); backup boilers supplied {}. \
         Net cost (electricity − heat value): **{:.2}** = {:.2} − {:.2}.\n",
        s.heat_coverage * 100.0,
        kwh(s.heat_delivered_kwh),
        kwh(s.heat_demand_kwh),
        kwh(s.backup_heat_kwh),
        s.net_cost,
        s.electricity_cost,
        s.heat_value
    );
    let per_server_year = if s.servers > 0 && s.simulated_s > 0.0 {
        s.heat_value / s.servers as f64 * (365.0 * 86_400.0 / s.simulated_s)
    } else {
        0.0
    };
    let _ = writeln!(r, "| quantity | value |\n|---|---|");
    let rows: Vec<(&str, String)> = vec![
        ("IT energy", kwh(s.it_energy_kwh)),
        ("cooling energy", kwh(s.cooling_energy_kwh)),
        ("heat pump energy", kwh(s.heat_pump_energy_kwh)),
        ("facility energy", kwh(s.facility_energy_kwh)),
        ("heat recovered", kwh(s.heat_recovered_kwh)),
        ("heat delivered", kwh(s.heat_delivered_kwh)),
        ("heat demand", kwh(s.heat_demand_kwh)),
        ("heat coverage", format!("{:.1} %", s.heat_coverage * 100.0)),
        ("backup heat", kwh(s.backup_heat_kwh)),
        ("electricity cost", format!("{:.2}", s.electricity_cost)),
        ("heat value", format!("{:.2}", s.heat_value)),
        ("net cost", format!("{:.2}", s.net_cost)),
        (
            "grid CO2 (facility energy)",
            format!("{:.1} kg", s.grid_co2_kg),
        ),
        (
            "CO2 avoided (boiler fuel displaced)",
            format!("{:.1} kg", s.avoided_co2_kg),
        ),
        ("net CO2", format!("{:.1} kg", s.net_co2_kg)),
        (
            "heat value per server and year",
            format!("{per_server_year:.2}"),
        ),
        ("PUE (ISO/IEC 30134-2)", format!("{:.3}", s.pue)),
        ("ERF (ISO/IEC 30134-6)", format!("{:.3}", s.erf)),
        ("ERE (The Green Grid)", format!("{:.3}", s.ere)),
        (
            "hottest component",
            format!("{:.1} °C", s.max_component_temp_c),
        ),
        (
            "time above temperature limits",
            format!("{:.0} server-s", s.thermal_violation_s),
        ),
        (
            "unmet interactive demand",
            format!("{:.0} s", s.sla_violation_s),
        ),
        (
            "migrations / server switches",
            format!("{} / {}", s.migrations, s.switches),
        ),
        (
            "batch jobs: arrived / completed / deadline misses",
            format!(
                "{} / {} / {}",
                s.batch_jobs, s.batch_jobs_completed, s.batch_deadline_misses
            ),
        ),
        (
            "plans / failed / previous plan kept",
            format!("{} / {} / {}", s.plans, s.plan_failures, s.plans_kept),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(r, "| {k} | {v} |");
    }

    let _ = writeln!(r, "\n## Over time\n");
    period_table(&mut r, sc, o);

    let _ = writeln!(r, "\n## Charts\n");
    for c in charts {
        let _ = writeln!(r, "![{c}]({c})\n");
    }

    let _ = writeln!(
        r,
        "## Definitions\n\n\
- **PUE** = facility energy / IT energy (ISO/IEC 30134-2); facility energy = IT + cooling + heat pumps.\n\
- **ERF** = reused energy / facility energy (ISO/IEC 30134-6); reused energy = heat delivered to consumers.\n\
- **ERE** = (facility energy − reused energy) / IT energy (The Green Grid).\n\
- **Heat coverage** = heat delivered / heat demand; the backup boiler gives the rest.\n\
- Cooling energy = heat not taken by a consumer / cooling COP (chiller model or fixed COP).\n\
- Time series: `timeseries.csv`, `timeseries.lp` (InfluxDB line protocol, the live controller's measurement names).\n"
    );
    let _ = writeln!(
        r,
        "Run time: {:.2} s ({:.2} s physics, {:.2} s planning, {} plans).",
        o.timing.wall_s, o.timing.physics_s, o.timing.planning_s, o.timing.plans
    );
    r
}

fn period_table(r: &mut String, sc: &Scenario, o: &Outcome) {
    let monthly = sc.sim.days > 31.0;
    let h = o.series.step_s / 3600.0;
    let mut groups: Vec<(String, Vec<&Row>)> = Vec::new();
    for row in &o.series.rows {
        let t = sc.sim.start + chrono::Duration::milliseconds((row.t_s * 1000.0) as i64);
        let key = if monthly {
            format!("{}-{:02}", t.year(), t.month())
        } else {
            t.format("%Y-%m-%d").to_string()
        };
        match groups.last_mut() {
            Some((k, v)) if *k == key => v.push(row),
            _ => groups.push((key, vec![row])),
        }
    }
    let _ = writeln!(
        r,
        "| {} | outdoor °C | IT kWh | heat demand kWh | delivered kWh | coverage | backup kWh | net cost |",
        if monthly { "month" } else { "day" }
    );
    let _ = writeln!(r, "|---|---|---|---|---|---|---|---|");
    for (k, rows) in groups {
        let n = rows.len() as f64;
        let outdoor = rows.iter().map(|x| x.outdoor_c).sum::<f64>() / n;
        let it: f64 = rows.iter().map(|x| x.it_kw * h).sum();
        let dem: f64 = rows
            .iter()
            .map(|x| x.consumers.iter().map(|c| c.demand_kw).sum::<f64>() * h)
            .sum();
        let del: f64 = rows
            .iter()
            .map(|x| x.consumers.iter().map(|c| c.delivered_kw).sum::<f64>() * h)
            .sum();
        let back: f64 = rows
            .iter()
            .map(|x| x.consumers.iter().map(|c| c.backup_kw).sum::<f64>() * h)
            .sum();
        let net: f64 = rows.iter().map(|x| x.electricity_cost - x.heat_value).sum();
        let cov = if dem > 0.0 { del / dem * 100.0 } else { 0.0 };
        let _ = writeln!(r, "| {k} | {outdoor:.1} | {it:.0} | {dem:.0} | {del:.0} | {cov:.1} % | {back:.0} | {net:.2} |");
    }
}
