//! A lumped greenhouse (reference/physics.md, "Greenhouse").
//!
//! Heat balance of the indoor air and everything that stores heat with it
//! (thermal mass `C`, J/K):
//!
//! `C·dT/dt = Q_heat + S − K·(T − T_out)`, with `K = U·A + infiltration`
//! (W/K) and the solar gain `S = solar_gain_factor·GHI·A` (W).
//!
//! For a heat input constant over a step the exact solution is
//! `T' = T_ss + (T − T_ss)·e^(−dt·K/C)`, `T_ss = T_out + (Q_heat + S)/K`.
//! The heat **demand** of a step is the `Q_heat ≥ 0` that brings the air to
//! the setpoint at the end of the step (holding it there once reached:
//! `U·A·ΔT + infiltration − solar`, plus the heat to warm the mass after a
//! night setback). The backup boiler gives whatever the datacenter does not,
//! so the setpoint is always held; when the sun alone overheats the house,
//! vents open at `setpoint + vent_margin_k`.
//!
//! An optional **energy screen** closes when the outdoor air is below its
//! threshold (one for the day setpoint's hours, one for the night's) and
//! multiplies the cover's U by `u_factor` while closed. The solar gain is
//! left unchanged (screens close mostly at night and on cold dull days).

/// The greenhouse's parameters and state.
#[derive(Debug, Clone, PartialEq)]
pub struct Greenhouse {
    /// Cover area, m².
    pub area_m2: f64,
    /// Cover heat transfer coefficient, W/(m²·K).
    pub u_w_per_m2k: f64,
    /// Infiltration and ventilation loss, W/K.
    pub infiltration_w_per_k: f64,
    /// Thermal mass, J/K.
    pub thermal_mass_j_per_k: f64,
    /// Share of GHI that heats the house.
    pub solar_gain_factor: f64,
    /// Day setpoint, °C.
    pub setpoint_day_c: f64,
    /// Night setpoint, °C.
    pub setpoint_night_c: f64,
    /// First hour of the day setpoint.
    pub day_start_h: u32,
    /// First hour of the night setpoint.
    pub day_end_h: u32,
    /// Vents open this far above the setpoint, K.
    pub vent_margin_k: f64,
    /// Indoor temperature, °C (the state).
    pub indoor_c: f64,
    /// Energy screen, if any.
    pub screen: Option<Screen>,
    /// Whether the screen is closed now (the state).
    pub screen_closed: bool,
}

/// An energy (thermal) screen under the cover.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Screen {
    /// Closes when the outdoor air is below this during the night setpoint's hours, °C.
    pub close_below_night_c: f64,
    /// Closes when the outdoor air is below this during the day setpoint's hours, °C.
    pub close_below_day_c: f64,
    /// Share of the cover's U left while closed (0–1).
    pub u_factor: f64,
}

impl Greenhouse {
    /// Loss coefficient `K = U·A + infiltration`, W/K.
    pub fn k_w_per_k(&self) -> f64 {
        let u = match self.screen {
            Some(s) if self.screen_closed => self.u_w_per_m2k * s.u_factor,
            _ => self.u_w_per_m2k,
        };
        u * self.area_m2 + self.infiltration_w_per_k
    }

    /// Whether the day setpoint holds at `hour`.
    fn is_day(&self, hour: f64) -> bool {
        let h = hour.rem_euclid(24.0);
        h >= f64::from(self.day_start_h) && h < f64::from(self.day_end_h)
    }

    /// Open or close the screen for the outdoor air at `hour`.
    pub fn update_screen(&mut self, hour: f64, outdoor_c: f64) {
        self.screen_closed = self.screen.is_some_and(|s| {
            let below = if self.is_day(hour) {
                s.close_below_day_c
            } else {
                s.close_below_night_c
            };
            outdoor_c < below
        });
    }

    /// Heat lost through the cover and by infiltration at `indoor_c`, W.
    pub fn loss_w(&self, indoor_c: f64, outdoor_c: f64) -> f64 {
        self.k_w_per_k() * (indoor_c - outdoor_c)
    }

    /// Solar gain, W.
    pub fn solar_w(&self, ghi_w_per_m2: f64) -> f64 {
        self.solar_gain_factor * ghi_w_per_m2 * self.area_m2
    }

    /// Setpoint at an hour of day, °C.
    pub fn setpoint_c(&self, hour: f64) -> f64 {
        if self.is_day(hour) {
            self.setpoint_day_c
        } else {
            self.setpoint_night_c
        }
    }

    /// Heat to hold a setpoint in steady state, W (forecasts for the planner).
    pub fn steady_demand_w(&self, setpoint_c: f64, outdoor_c: f64, ghi_w_per_m2: f64) -> f64 {
        (self.loss_w(setpoint_c, outdoor_c) - self.solar_w(ghi_w_per_m2)).max(0.0)
    }

    fn decay(&self, dt_s: f64) -> f64 {
        (-dt_s * self.k_w_per_k() / self.thermal_mass_j_per_k).exp()
    }

    /// Heat needed over the next `dt_s` to reach `setpoint_c` at its end, W.
    pub fn demand_w(&self, dt_s: f64, setpoint_c: f64, outdoor_c: f64, ghi_w_per_m2: f64) -> f64 {
        let e = self.decay(dt_s);
        let t_ss = (setpoint_c - self.indoor_c * e) / (1.0 - e);
        (self.k_w_per_k() * (t_ss - outdoor_c) - self.solar_w(ghi_w_per_m2)).max(0.0)
    }

    /// Advance the state by `dt_s` with `heat_w` supplied; vents cap the
    /// temperature at `setpoint_c + vent_margin_k`.
    pub fn step(
        &mut self,
        dt_s: f64,
        heat_w: f64,
        setpoint_c: f64,
        outdoor_c: f64,
        ghi_w_per_m2: f64,
    ) {
        let t_ss = outdoor_c + (heat_w + self.solar_w(ghi_w_per_m2)) / self.k_w_per_k();
        let e = self.decay(dt_s);
        let t = t_ss + (self.indoor_c - t_ss) * e;
        self.indoor_c = t.min(setpoint_c + self.vent_margin_k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screened() -> Greenhouse {
        Greenhouse {
            screen: Some(Screen {
                close_below_night_c: 10.0,
                close_below_day_c: 5.0,
                u_factor: 0.6,
            }),
            ..tomato_house()
        }
    }

    #[test]
    fn the_screen_closes_below_the_night_and_day_thresholds() {
        let mut g = screened();
        g.update_screen(2.0, 8.0);
        assert!(g.screen_closed, "night, 8 °C < 10 °C");
        g.update_screen(12.0, 8.0);
        assert!(!g.screen_closed, "day, 8 °C ≥ 5 °C");
        g.update_screen(12.0, 3.0);
        assert!(g.screen_closed, "day, 3 °C < 5 °C");
        let mut bare = tomato_house();
        bare.update_screen(2.0, -10.0);
        assert!(!bare.screen_closed, "no screen, nothing closes");
    }

    #[test]
    fn a_closed_screen_cuts_the_cover_loss_by_its_u_factor() {
        let mut g = screened();
        let open = g.steady_demand_w(17.0, 0.0, 0.0);
        g.update_screen(2.0, 0.0);
        let closed = g.steady_demand_w(17.0, 0.0, 0.0);
        let cover = g.u_w_per_m2k * g.area_m2 * 17.0;
        assert!(
            (open - closed - 0.4 * cover).abs() < 1e-6,
            "{open} {closed}"
        );
    }

    fn tomato_house() -> Greenhouse {
        Greenhouse {
            area_m2: 10_000.0,
            u_w_per_m2k: 6.8,
            infiltration_w_per_k: 2000.0,
            thermal_mass_j_per_k: 1e8,
            solar_gain_factor: 0.5,
            setpoint_day_c: 21.0,
            setpoint_night_c: 17.0,
            day_start_h: 6,
            day_end_h: 18,
            vent_margin_k: 5.0,
            indoor_c: 17.0,
            screen: None,
            screen_closed: false,
        }
    }

    #[test]
    fn loss_is_u_times_area_times_delta_t_plus_infiltration() {
        let g = tomato_house();
        // 1 ha single glass (U = 6.8, reference/physics.md) at 17 °C inside,
        // 0 °C outside: 6.8 × 10,000 × 17 = 1,156 kW, + 2 kW/K × 17 = 34 kW.
        assert!((g.loss_w(17.0, 0.0) - 1_190_000.0).abs() < 1e-6);
        // Night with no sun: steady demand is the loss.
        assert!((g.steady_demand_w(17.0, 0.0, 0.0) - 1_190_000.0).abs() < 1e-6);
        // 400 W/m² sun, half of it heating: 2 MW gain covers the loss.
        assert_eq!(g.steady_demand_w(17.0, 0.0, 400.0), 0.0);
    }

    #[test]
    fn demand_holds_the_setpoint_exactly() {
        let mut g = tomato_house();
        let q = g.demand_w(60.0, 17.0, 0.0, 0.0);
        assert!((q - g.loss_w(17.0, 0.0)).abs() < 1e-3, "{q}");
        g.step(60.0, q, 17.0, 0.0, 0.0);
        assert!((g.indoor_c - 17.0).abs() < 1e-9);
        // Morning: raising to 21 °C needs C·ΔT/dt on top of a loss between
        // the loss at 17 °C and at 21 °C.
        let q_up = g.demand_w(900.0, 21.0, 0.0, 0.0);
        let warm_w = 1e8 * 4.0 / 900.0;
        assert!(q_up > g.loss_w(17.0, 0.0) + warm_w, "{q_up}");
        assert!(q_up < g.loss_w(21.0, 0.0) + warm_w, "{q_up}");
        g.step(900.0, q_up, 21.0, 0.0, 0.0);
        assert!((g.indoor_c - 21.0).abs() < 1e-9);
    }

    #[test]
    fn unheated_house_cools_along_its_time_constant() {
        let mut g = tomato_house();
        let tau_s = g.thermal_mass_j_per_k / g.k_w_per_k();
        g.step(tau_s, 0.0, 17.0, 0.0, 0.0);
        assert!((g.indoor_c - 17.0 * (-1.0_f64).exp()).abs() < 1e-9);
    }

    #[test]
    fn setpoint_switches_between_day_and_night() {
        let g = tomato_house();
        assert_eq!(g.setpoint_c(5.99), 17.0);
        assert_eq!(g.setpoint_c(6.0), 21.0);
        assert_eq!(g.setpoint_c(17.99), 21.0);
        assert_eq!(g.setpoint_c(18.0), 17.0);
    }
}
