//! Writing a run's results into a directory:
//! `summary.json`, `timing.json`, `timeseries.csv`, `timeseries.lp`
//! (InfluxDB line protocol with the live controller's measurement names,
//! `protocol::measurements`), the SVG charts and `report.md`.

use std::fmt::Write as _;
use std::path::Path;

use protocol::measurements::{self as m, fields as f, Point};

use crate::engine::Outcome;
use crate::error::SimError;
use crate::scenario::Scenario;

fn write(path: &Path, text: &str) -> Result<(), SimError> {
    std::fs::write(path, text).map_err(|source| SimError::Output {
        path: path.to_path_buf(),
        source,
    })
}

/// Write every output of `o` into `dir` (created if needed).
pub fn write_all(dir: &Path, sc: &Scenario, o: &Outcome) -> Result<(), SimError> {
    std::fs::create_dir_all(dir).map_err(|source| SimError::Output {
        path: dir.to_path_buf(),
        source,
    })?;
    write(&dir.join("summary.json"), &pretty(&o.summary))?;
    write(&dir.join("timing.json"), &pretty(&o.timing))?;
    write(&dir.join("timeseries.csv"), &csv(sc, o))?;
    write(&dir.join("timeseries.lp"), &line_protocol(sc, o))?;
    let charts = crate::charts::run_charts(dir, &o.series, &o.consumer_ids)?;
    write(
        &dir.join("report.md"),
        &crate::report::report(sc, o, &charts),
    )?;
    Ok(())
}

/// Pretty JSON with a trailing newline.
pub fn pretty<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

fn num(out: &mut String, v: f64) {
    if v.is_finite() {
        let _ = write!(out, ",{v}");
    } else {
        out.push(',');
    }
}

/// The site, loop and consumer series as CSV, one row per output step.
pub fn csv(sc: &Scenario, o: &Outcome) -> String {
    let mut out = String::from(
        "time,t_s,outdoor_c,ghi_w_per_m2,electricity_price_per_kwh,carbon_g_per_kwh,it_power_kw,cooling_power_kw,\
heat_pump_power_kw,facility_power_kw,servers_on,vms,max_temp_c,mean_cpu_util,electricity_cost,heat_value,cum_net_cost",
    );
    for id in &o.loop_ids {
        for k in [
            "heat_recovered_kw",
            "heat_used_kw",
            "heat_delivered_kw",
            "heat_demand_kw",
            "heat_pump_kw",
        ] {
            let _ = write!(out, ",loop.{id}.{k}");
        }
    }
    for id in &o.consumer_ids {
        for k in [
            "demand_kw",
            "delivered_kw",
            "backup_kw",
            "indoor_c",
            "setpoint_c",
        ] {
            let _ = write!(out, ",consumer.{id}.{k}");
        }
    }
    out.push('\n');
    for r in &o.series.rows {
        let t = sc.sim.start + chrono::Duration::milliseconds((r.t_s * 1000.0).round() as i64);
        let _ = write!(
            out,
            "{},{}",
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            r.t_s
        );
        for v in [
            r.outdoor_c,
            r.ghi_w_per_m2,
            r.price_per_kwh,
            r.carbon_g_per_kwh,
            r.it_kw,
            r.cooling_kw,
            r.heat_pump_kw,
            r.facility_kw(),
            r.servers_on as f64,
            r.vms as f64,
            r.max_temp_c,
            r.mean_util,
            r.electricity_cost,
            r.heat_value,
            r.cum_net_cost,
        ] {
            num(&mut out, v);
        }
        for l in &r.loops {
            for v in [
                l.recovered_kw,
                l.used_kw,
                l.delivered_kw,
                l.demand_kw,
                l.heat_pump_kw,
            ] {
                num(&mut out, v);
            }
        }
        for c in &r.consumers {
            for v in [
                c.demand_kw,
                c.delivered_kw,
                c.backup_kw,
                c.indoor_c,
                c.setpoint_c,
            ] {
                num(&mut out, v);
            }
        }
        out.push('\n');
    }
    out
}

/// The series as InfluxDB line protocol (docs/timeseries.md).
pub fn line_protocol(sc: &Scenario, o: &Outcome) -> String {
    let site = sc.name.as_str();
    let start_ns = sc.sim.start.timestamp_nanos_opt().unwrap_or(0);
    let ns = |t_s: f64| start_ns + (t_s * 1e9).round() as i64;
    let mut out = String::new();
    for r in &o.series.rows {
        let ts = ns(r.t_s);
        let facility = r.facility_kw();
        let delivered: f64 = r.consumers.iter().map(|c| c.delivered_kw).sum();
        Point::new(m::SITE, ts)
            .tag("site", site)
            .float(f::IT_POWER_KW, r.it_kw)
            .float(f::COOLING_POWER_KW, r.cooling_kw)
            .float(f::HEAT_PUMP_POWER_KW, r.heat_pump_kw)
            .float(f::FACILITY_POWER_KW, facility)
            .float(
                f::PUE,
                if r.it_kw > 0.0 {
                    facility / r.it_kw
                } else {
                    f64::NAN
                },
            )
            .float(
                f::ERF,
                if facility > 0.0 {
                    delivered / facility
                } else {
                    f64::NAN
                },
            )
            .float(f::ELECTRICITY_PRICE_PER_KWH, r.price_per_kwh)
            .float(f::CARBON_G_PER_KWH, r.carbon_g_per_kwh)
            .float(f::OUTDOOR_C, r.outdoor_c)
            .int(f::SERVERS_ON, r.servers_on as i64)
            .int(f::VMS, r.vms as i64)
            .write_line(&mut out);
        for (l, id) in r.loops.iter().zip(&o.loop_ids) {
            Point::new(m::LOOP, ts)
                .tag("site", site)
                .tag("loop", id.as_str())
                .float(f::HEAT_RECOVERED_KW, l.recovered_kw)
                .float(f::HEAT_DELIVERED_KW, l.delivered_kw)
                .float(f::HEAT_DEMAND_KW, l.demand_kw)
                .float(f::HEAT_OFFERED_KW, l.offered_kw)
                .float(f::SUPPLY_TEMP_C, l.supply_c)
                .write_line(&mut out);
        }
        for (c, id) in r.consumers.iter().zip(&o.consumer_ids) {
            Point::new(m::CONSUMER, ts)
                .tag("site", site)
                .tag("consumer", id.as_str())
                .float(f::DEMAND_KW, c.demand_kw)
                .float(f::DELIVERED_KW, c.delivered_kw)
                .float(f::BACKUP_KW, c.backup_kw)
                .float(f::INDOOR_C, c.indoor_c)
                .float(f::SETPOINT_C, c.setpoint_c)
                .float(f::OUTDOOR_C, r.outdoor_c)
                .write_line(&mut out);
        }
    }
    for p in &o.series.plans {
        let mut pt = Point::new(m::PLAN, ns(p.t_s))
            .tag("site", site)
            .tag("solver", p.solver.as_str())
            .float(f::COST, p.cost)
            .float(f::SOLVE_MS, p.solve_ms)
            .int(f::MIGRATIONS, p.migrations as i64)
            .int(f::SWITCHES, p.switches as i64)
            .int(f::SERVERS_ON, p.servers_on as i64)
            .float(f::ENERGY_KWH, p.energy_kwh)
            .float(f::HEAT_DELIVERED_KWH, p.heat_delivered_kwh);
        if let Some(b) = p.baseline_cost {
            pt = pt.float(f::BASELINE_COST, b).float(f::GAIN, b - p.cost);
        }
        if let Some(lb) = p.lower_bound {
            pt = pt.float(f::LOWER_BOUND, lb);
        }
        pt.write_line(&mut out);
    }
    let inlet_c = |group: &str| {
        sc.servers
            .iter()
            .find(|g| g.name == group)
            .map_or(f64::NAN, |g| g.inlet_c)
    };
    for s in &o.series.servers {
        let g = o
            .server_groups
            .get(s.server)
            .map(String::as_str)
            .unwrap_or("");
        let lp = o
            .server_loops
            .get(s.server)
            .and_then(|l| l.as_deref())
            .unwrap_or("");
        Point::new(m::SERVER, ns(s.t_s))
            .tag("site", site)
            .tag("node", o.server_ids[s.server].as_str())
            .tag("loop", lp)
            .tag("group", g)
            .float(f::POWER_W, s.power_w)
            .float(f::CPU_UTIL, s.cpu_util)
            .float(f::INLET_C, inlet_c(g))
            .float(f::TEMP_C, s.temp_c)
            .float(f::CAP_W, s.cap_w)
            .int(f::ON, i64::from(s.on))
            .int(f::VMS, i64::from(s.vms))
            .write_line(&mut out);
    }
    out
}
