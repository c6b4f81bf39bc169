//! Write the generated day-ahead price year (`phoenix_simulator::price_year`)
//! as CSV: `cargo run -p phoenix-simulator --example price_year -- [FILE]`
//! (default `scenarios/prices-2026.csv`), and print its figures.

use phoenix_simulator::price_year;

fn main() -> std::io::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "scenarios/prices-2026.csv".to_string());
    let year = price_year::generate(2026, price_year::SEED);
    std::fs::write(&path, price_year::csv(&year))?;
    let prices: Vec<f64> = year.iter().map(|q| q.eur_per_mwh).collect();
    let mean = prices.iter().sum::<f64>() / prices.len() as f64;
    let negative = prices.iter().filter(|p| **p < 0.0).count();
    let min = prices.iter().copied().fold(f64::INFINITY, f64::min);
    let max = prices.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    println!(
        "{path}: {} quarter hours, mean {mean:.1} EUR/MWh, min {min:.1}, max {max:.1}, {negative} negative",
        year.len()
    );
    Ok(())
}
