//! The consumer (greenhouse) side: reported demand, the demand estimator for
//! consumers that report only their climate, and the stale-demand fallback.
//!
//! # Demand estimator
//!
//! A greenhouse that publishes only `consumer/<id>/climate` (indoor
//! temperature, setpoint, maybe outdoor temperature) gets a demand estimated
//! by [`DemandEstimator`]:
//!
//! ```text
//! e   = T_set − T_in                          (K)
//! ff  = max(0, U·A · (T_set − T_out))         (kW, the steady heat loss)
//! I  += Kp · e · dt / Ti                      (kW, only while not saturated)
//! Q   = clamp(ff + Kp·e + I, 0, max_kw)
//! ```
//!
//! The feed-forward alone holds the setpoint when the heat loss is known; the
//! PI term corrects a misjudged U·A, solar gain and infiltration. Anti-windup
//! by conditional integration: the integral does not grow while the output
//! is clamped in the direction the error pushes, and stays within
//! ±`max_kw`. Without an outdoor temperature (none in the message, none
//! configured, none seen before) the feed-forward is 0 and the PI does the
//! work alone.
//!
//! # Stale fallback
//!
//! A consumer's demand is fresh for `stale_after_s` after its last demand or
//! climate message. Once stale — or before any message arrives — the demand
//! is `fallback_kw` (default 0: no heat is promised to a consumer that has
//! gone silent), its forecast is dropped, the source reads
//! [`DemandSource::Fallback`], the transition is logged and counted once,
//! and the estimator's integral is reset so it does not resume with an old
//! correction. The next valid message restores the demand at once.
//!
//! # Supply temperature
//!
//! A consumer's `supply_temp_c` steers the heat pump's setpoint, so it is
//! taken only from a consumer listed in `[[consumers]]` whose demand is
//! fresh: [`CurrentDemand::supply_temp_c`] is `None` for any other (the
//! bridge counts what it ignores, `supply_temps_ignored`).

use std::time::{Duration, Instant};

use protocol::payloads::{Climate, HeatDemand, HeatOffer};
use serde::Serialize;

use crate::config::{ConsumerConfig, EstimatorConfig};

/// PI demand estimator with heat-loss feed-forward (see the module docs).
#[derive(Debug, Clone)]
pub struct DemandEstimator {
    cfg: EstimatorConfig,
    integral_kw: f64,
    last_outdoor_c: Option<f64>,
}

impl DemandEstimator {
    /// An estimator with a zero integral.
    pub fn new(cfg: EstimatorConfig) -> Self {
        let last_outdoor_c = cfg.outdoor_c;
        Self {
            cfg,
            integral_kw: 0.0,
            last_outdoor_c,
        }
    }

    /// Proportional gain in use, kW/K (configured, or 2·U·A).
    pub fn kp_kw_per_k(&self) -> f64 {
        self.cfg.kp_kw_per_k.unwrap_or(2.0 * self.cfg.ua_kw_per_k)
    }

    /// The feed-forward term U·A·(T_set − T_out), ≥ 0, kW.
    pub fn feed_forward_kw(&self, setpoint_c: f64, outdoor_c: Option<f64>) -> f64 {
        outdoor_c.or(self.last_outdoor_c).map_or(0.0, |out| {
            (self.cfg.ua_kw_per_k * (setpoint_c - out)).max(0.0)
        })
    }

    /// The integral term, kW.
    pub fn integral_kw(&self) -> f64 {
        self.integral_kw
    }

    /// Forget the integral (after a stale period).
    pub fn reset(&mut self) {
        self.integral_kw = 0.0;
    }

    /// One update with a climate reading taken `dt_s` after the previous
    /// one; returns the estimated demand, kW.
    pub fn update(
        &mut self,
        indoor_c: f64,
        setpoint_c: f64,
        outdoor_c: Option<f64>,
        dt_s: f64,
    ) -> f64 {
        if outdoor_c.is_some() {
            self.last_outdoor_c = outdoor_c;
        }
        let e = setpoint_c - indoor_c;
        let kp = self.kp_kw_per_k();
        let ff = self.feed_forward_kw(setpoint_c, outdoor_c);
        let candidate = self.integral_kw + kp * e * dt_s.max(0.0) / self.cfg.ti_s;
        let unclamped = ff + kp * e + candidate;
        let saturated_high = unclamped > self.cfg.max_kw && e > 0.0;
        let saturated_low = unclamped < 0.0 && e < 0.0;
        if !(saturated_high || saturated_low) {
            self.integral_kw = candidate.clamp(-self.cfg.max_kw, self.cfg.max_kw);
        }
        (ff + kp * e + self.integral_kw).clamp(0.0, self.cfg.max_kw)
    }
}

/// Where the current demand figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DemandSource {
    /// The consumer's own `demand` message.
    Reported,
    /// The estimator, from `climate` messages.
    Estimated,
    /// No fresh message: the configured fallback.
    Fallback,
}

/// A consumer's demand as the controller should use it now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CurrentDemand {
    /// Heat wanted now, kW.
    pub demand_kw: f64,
    /// Forecast, kW per step (reported demand only).
    pub forecast_kw: Option<Vec<f64>>,
    /// Forecast step, s.
    pub step_s: Option<f64>,
    /// Value of delivered heat, per kWh, if the consumer said.
    pub heat_value_per_kwh: Option<f64>,
    /// Supply temperature the consumer needs, °C, if it said — only from a
    /// consumer listed in `[[consumers]]` whose demand is fresh.
    pub supply_temp_c: Option<f64>,
    /// Where the figure comes from.
    pub source: DemandSource,
    /// Age of the message behind it, s (none before the first message).
    pub age_s: Option<f64>,
}

/// The state kept for one consumer.
#[derive(Debug, Clone)]
pub struct ConsumerTracker {
    /// Listed in `[[consumers]]`.
    configured: bool,
    stale_after: Duration,
    fallback_kw: f64,
    estimator: Option<DemandEstimator>,
    demand: Option<HeatDemand>,
    estimate_kw: Option<f64>,
    last_message: Option<Instant>,
    last_climate: Option<Instant>,
    stale: bool,
    /// The last offer published or seen for this consumer.
    pub offer: Option<HeatOffer>,
}

impl ConsumerTracker {
    /// A tracker with `cfg`'s settings (or the defaults), created at `now`.
    pub fn new(cfg: Option<&ConsumerConfig>) -> Self {
        Self {
            configured: cfg.is_some(),
            stale_after: Duration::from_secs_f64(cfg.map_or(300.0, |c| c.stale_after_s)),
            fallback_kw: cfg.map_or(0.0, |c| c.fallback_kw),
            estimator: cfg
                .and_then(|c| c.estimator.clone())
                .map(DemandEstimator::new),
            demand: None,
            estimate_kw: None,
            last_message: None,
            last_climate: None,
            stale: true,
            offer: None,
        }
    }

    /// Whether this consumer has an estimator (accepts climate messages).
    pub fn estimates(&self) -> bool {
        self.estimator.is_some()
    }

    /// A reported demand arrived; returns true when it carries a
    /// `supply_temp_c` that is ignored (the consumer is not configured).
    pub fn on_demand(&mut self, demand: HeatDemand, now: Instant) -> bool {
        let ignored = !self.configured && demand.supply_temp_c.is_some();
        self.demand = Some(demand);
        self.estimate_kw = None;
        self.last_message = Some(now);
        self.stale = false;
        ignored
    }

    /// Whether this consumer is listed in `[[consumers]]`.
    pub fn is_configured(&self) -> bool {
        self.configured
    }

    /// The supply temperature of the last reported demand, whether or not
    /// it is used (see [`CurrentDemand::supply_temp_c`]).
    pub fn reported_supply_temp_c(&self) -> Option<f64> {
        self.demand.as_ref().and_then(|d| d.supply_temp_c)
    }

    /// A climate reading arrived; returns the new estimate (`None` when the
    /// consumer has no estimator).
    pub fn on_climate(&mut self, climate: &Climate, now: Instant) -> Option<f64> {
        let est = self.estimator.as_mut()?;
        // The first reading after silence integrates nothing.
        let dt_s = match self.last_climate {
            Some(prev) if !self.stale => now.saturating_duration_since(prev).as_secs_f64(),
            _ => 0.0,
        };
        let q = est.update(
            climate.indoor_c,
            climate.setpoint_c,
            climate.outdoor_c,
            dt_s,
        );
        self.estimate_kw = Some(q);
        self.demand = None;
        self.last_climate = Some(now);
        self.last_message = Some(now);
        self.stale = false;
        Some(q)
    }

    /// Mark the demand stale if it is; returns true on the transition
    /// fresh → stale (to be logged and counted once).
    pub fn check_stale(&mut self, now: Instant) -> bool {
        let expired = self
            .last_message
            .is_none_or(|t| now.saturating_duration_since(t) > self.stale_after);
        if expired && !self.stale {
            self.stale = true;
            if let Some(e) = self.estimator.as_mut() {
                e.reset();
            }
            return true;
        }
        false
    }

    /// Whether the demand is stale now.
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// The demand to use now (call [`Self::check_stale`] first).
    pub fn current(&self, now: Instant) -> CurrentDemand {
        let age_s = self
            .last_message
            .map(|t| now.saturating_duration_since(t).as_secs_f64());
        if self.stale {
            return CurrentDemand {
                demand_kw: self.fallback_kw,
                forecast_kw: None,
                step_s: None,
                heat_value_per_kwh: self.demand.as_ref().and_then(|d| d.heat_value_per_kwh),
                // A stale consumer does not steer the supply temperature.
                supply_temp_c: None,
                source: DemandSource::Fallback,
                age_s,
            };
        }
        match (&self.demand, self.estimate_kw) {
            (Some(d), _) => CurrentDemand {
                demand_kw: d.demand_kw,
                forecast_kw: d.forecast_kw.clone(),
                step_s: d.step_s,
                heat_value_per_kwh: d.heat_value_per_kwh,
                supply_temp_c: d.supply_temp_c.filter(|_| self.configured),
                source: DemandSource::Reported,
                age_s,
            },
            (None, Some(q)) => CurrentDemand {
                demand_kw: q,
                forecast_kw: None,
                step_s: None,
                heat_value_per_kwh: None,
                supply_temp_c: None,
                source: DemandSource::Estimated,
                age_s,
            },
            (None, None) => CurrentDemand {
                demand_kw: self.fallback_kw,
                forecast_kw: None,
                step_s: None,
                heat_value_per_kwh: None,
                supply_temp_c: None,
                source: DemandSource::Fallback,
                age_s,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est_cfg() -> EstimatorConfig {
        EstimatorConfig {
            ua_kw_per_k: 2.0,
            kp_kw_per_k: Some(4.0),
            ti_s: 600.0,
            max_kw: 200.0,
            outdoor_c: None,
        }
    }

    #[test]
    fn at_the_setpoint_the_estimate_is_the_heat_loss() {
        let mut e = DemandEstimator::new(est_cfg());
        for _ in 0..100 {
            let q = e.update(20.0, 20.0, Some(0.0), 60.0);
            assert!((q - 2.0 * 20.0).abs() < 1e-9, "{q}");
        }
        assert_eq!(e.feed_forward_kw(20.0, Some(0.0)), 40.0);
    }

    #[test]
    fn the_configured_outdoor_temperature_feeds_forward_until_a_reading_arrives() {
        let mut e = DemandEstimator::new(EstimatorConfig {
            outdoor_c: Some(10.0),
            ..est_cfg()
        });
        assert_eq!(e.update(20.0, 20.0, None, 60.0), 20.0);
        assert_eq!(e.update(20.0, 20.0, Some(0.0), 60.0), 40.0);
        // The last reading is kept when a later message has none.
        assert_eq!(e.update(20.0, 20.0, None, 60.0), 40.0);
        // Without any outdoor temperature the feed-forward is off.
        let mut bare = DemandEstimator::new(est_cfg());
        assert_eq!(bare.update(20.0, 20.0, None, 60.0), 0.0);
    }

    #[test]
    fn the_estimate_is_never_negative_and_never_above_max() {
        let mut e = DemandEstimator::new(est_cfg());
        assert_eq!(e.update(30.0, 18.0, Some(25.0), 60.0), 0.0);
        assert_eq!(e.update(-10.0, 20.0, Some(-30.0), 60.0), 200.0);
    }

    /// Closed loop on a first-order greenhouse C·dT/dt = Q − UA_true·(T − T_out)
    /// whose true heat loss is 30 % above the configured one: the step from
    /// 12 °C to a 20 °C setpoint settles on the setpoint, and the estimate
    /// settles on the true loss (the integral makes up the misjudged part).
    #[test]
    fn the_step_response_settles_on_the_setpoint_despite_a_misjudged_heat_loss() {
        let mut e = DemandEstimator::new(est_cfg());
        let (ua_true, c_kj_per_k, t_out) = (2.6, 20_000.0, 0.0);
        let (mut t, dt) = (12.0, 30.0);
        let mut peak_q: f64 = 0.0;
        for _ in 0..(12 * 3600 / 30) {
            let q = e.update(t, 20.0, Some(t_out), dt);
            peak_q = peak_q.max(q);
            t += dt * (q - ua_true * (t - t_out)) / c_kj_per_k;
        }
        let q = e.update(t, 20.0, Some(t_out), dt);
        assert!((t - 20.0).abs() < 0.05, "indoor {t}");
        assert!((q - ua_true * 20.0).abs() < 0.5, "demand {q}");
        assert!(
            peak_q > q,
            "the step asks for more than the steady loss at first"
        );
    }

    #[test]
    fn the_integral_does_not_wind_up_while_saturated() {
        let mut e = DemandEstimator::new(est_cfg());
        for _ in 0..1000 {
            e.update(-20.0, 20.0, Some(-20.0), 600.0);
        }
        // Saturated the whole time: the integral never grew.
        assert_eq!(e.integral_kw(), 0.0);
        // Back at the setpoint the estimate drops at once to the heat loss.
        let q = e.update(20.0, 20.0, Some(-20.0), 60.0);
        assert!((q - 80.0).abs() < 1e-9, "{q}");
    }

    fn demand(kw: f64) -> HeatDemand {
        HeatDemand {
            ts: chrono::Utc::now(),
            demand_kw: kw,
            forecast_kw: Some(vec![kw, kw]),
            step_s: Some(900.0),
            heat_value_per_kwh: Some(0.08),
            supply_temp_c: None,
        }
    }

    #[test]
    fn stale_demand_falls_back_once_and_recovers_on_the_next_message() {
        let cfg = ConsumerConfig {
            id: "gh1".into(),
            stale_after_s: 60.0,
            fallback_kw: 5.0,
            estimator: None,
        };
        let t0 = Instant::now();
        let mut c = ConsumerTracker::new(Some(&cfg));
        assert_eq!(c.current(t0).source, DemandSource::Fallback);
        c.on_demand(demand(120.0), t0);
        assert!(!c.check_stale(t0 + Duration::from_secs(59)));
        assert_eq!(c.current(t0).demand_kw, 120.0);
        assert!(c.check_stale(t0 + Duration::from_secs(61)));
        assert!(
            !c.check_stale(t0 + Duration::from_secs(120)),
            "counted once"
        );
        let now = t0 + Duration::from_secs(120);
        let cur = c.current(now);
        assert_eq!((cur.demand_kw, cur.source), (5.0, DemandSource::Fallback));
        assert_eq!(cur.forecast_kw, None);
        c.on_demand(demand(90.0), now);
        assert!(!c.check_stale(now));
        assert_eq!(c.current(now).demand_kw, 90.0);
        assert_eq!(c.current(now).source, DemandSource::Reported);
    }

    #[test]
    fn a_supply_temperature_is_taken_only_from_a_configured_fresh_consumer() {
        let cfg = ConsumerConfig {
            id: "gh1".into(),
            stale_after_s: 60.0,
            fallback_kw: 0.0,
            estimator: None,
        };
        let t0 = Instant::now();
        let wants_55 = HeatDemand {
            supply_temp_c: Some(55.0),
            ..demand(10.0)
        };
        let mut listed = ConsumerTracker::new(Some(&cfg));
        assert!(!listed.on_demand(wants_55.clone(), t0), "not ignored");
        assert_eq!(listed.current(t0).supply_temp_c, Some(55.0));
        assert!(listed.check_stale(t0 + Duration::from_secs(61)));
        let stale = listed.current(t0 + Duration::from_secs(61));
        assert_eq!(stale.supply_temp_c, None, "a stale consumer steers nothing");
        assert_eq!(listed.reported_supply_temp_c(), Some(55.0));

        let mut stranger = ConsumerTracker::new(None);
        assert!(stranger.on_demand(wants_55, t0), "ignored and reported so");
        let cur = stranger.current(t0);
        assert_eq!((cur.demand_kw, cur.supply_temp_c), (10.0, None));
        assert!(!stranger.on_demand(demand(10.0), t0), "nothing to ignore");
    }

    #[test]
    fn climate_only_consumers_get_an_estimate_and_reset_after_silence() {
        let cfg = ConsumerConfig {
            id: "gh2".into(),
            stale_after_s: 60.0,
            fallback_kw: 0.0,
            estimator: Some(est_cfg()),
        };
        let t0 = Instant::now();
        let mut c = ConsumerTracker::new(Some(&cfg));
        let climate = Climate {
            ts: chrono::Utc::now(),
            indoor_c: 18.0,
            setpoint_c: 20.0,
            outdoor_c: Some(5.0),
        };
        let q0 = c.on_climate(&climate, t0).unwrap();
        assert_eq!(q0, 2.0 * 15.0 + 4.0 * 2.0);
        let q1 = c
            .on_climate(&climate, t0 + Duration::from_secs(30))
            .unwrap();
        assert!(q1 > q0, "the integral grows with a lasting error");
        assert_eq!(c.current(t0).source, DemandSource::Estimated);
        assert!(c.check_stale(t0 + Duration::from_secs(200)));
        let q2 = c
            .on_climate(&climate, t0 + Duration::from_secs(400))
            .unwrap();
        assert_eq!(q2, q0, "the integral restarts from zero after silence");
    }
}
