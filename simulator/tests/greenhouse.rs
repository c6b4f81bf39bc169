//! The greenhouse's energy screen in the closed loop.

use std::path::{Path, PathBuf};

use phoenix_simulator::Scenario;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The small scenario (a January day at 10 °C ± 5) under greedy, with the
/// TOML `extra` appended (after its only `[[consumers]]`).
fn small(extra: &str) -> Scenario {
    let text = std::fs::read_to_string(root().join("scenarios/small.toml")).unwrap();
    let i = text.find("[workload]").unwrap();
    let text = format!("{}{extra}\n{}", &text[..i], &text[i..]);
    let o = [
        ("sim.scheduler".to_string(), "greedy".to_string()),
        ("sim.days".to_string(), "0.5".to_string()),
        ("sim.compare_baseline".to_string(), "false".to_string()),
    ];
    Scenario::from_toml(&text, &root().join("scenarios"), &o).unwrap()
}

#[test]
fn a_closed_energy_screen_lowers_the_heat_demand_and_an_open_one_changes_nothing() {
    let bare = phoenix_simulator::run(&small(""), None).unwrap().summary;
    let screened = phoenix_simulator::run(&small("[consumers.screen]\n"), None)
        .unwrap()
        .summary;
    // Nights below 10 °C close it: less demand, less backup.
    assert!(
        screened.heat_demand_kwh < 0.95 * bare.heat_demand_kwh,
        "{} vs {}",
        screened.heat_demand_kwh,
        bare.heat_demand_kwh
    );
    assert!(screened.backup_heat_kwh <= bare.backup_heat_kwh);
    // Thresholds no night reaches: the screen never closes.
    let never = "[consumers.screen]\nclose_below_night_c = -40\nclose_below_day_c = -40\n";
    let open = phoenix_simulator::run(&small(never), None).unwrap().summary;
    assert_eq!(open.heat_demand_kwh, bare.heat_demand_kwh);
}

#[test]
fn a_screen_u_factor_outside_zero_to_one_is_refused_naming_the_key() {
    let text = std::fs::read_to_string(root().join("scenarios/small.toml")).unwrap();
    let i = text.find("[workload]").unwrap();
    let text = format!(
        "{}[consumers.screen]\nu_factor = 1.5\n\n{}",
        &text[..i],
        &text[i..]
    );
    let e = Scenario::from_toml(&text, &root().join("scenarios"), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("screen.u_factor"), "{e}");
}
