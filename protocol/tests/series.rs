//! Price and carbon series: the CSV format, ENTSO-E documents and the
//! `tariff` payload (DESIGN.md §4.9).

use chrono::{DateTime, Utc};
use phoenix_protocol::series::{self, PriceSeries, SeriesError, TariffPayload};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn price(s: &PriceSeries, at: &str) -> Option<f64> {
    s.at(t(at)).map(|p| p.price_per_kwh)
}

#[test]
fn a_quarter_hour_csv_holds_each_value_until_the_next_row() {
    let s = series::parse_csv(
        "time,price_per_kwh,carbon_g_per_kwh\n\
         2026-03-01T00:00:00Z,0.10,300\n\
         2026-03-01T00:15:00Z,0.12,310\n\
         2026-03-01T00:30:00Z,-0.02,120\n",
    )
    .unwrap();
    assert_eq!(price(&s, "2026-03-01T00:14:59Z"), Some(0.10));
    assert_eq!(price(&s, "2026-03-01T00:15:00Z"), Some(0.12));
    assert_eq!(price(&s, "2026-03-01T00:40:00Z"), Some(-0.02));
    assert_eq!(s.end(), t("2026-03-01T00:45:00Z"));
    let p = s.at(t("2026-03-01T00:20:00Z")).unwrap();
    assert_eq!(p.carbon_g_per_kwh, Some(310.0));
    assert!(s.has_carbon());
}

#[test]
fn an_hourly_csv_without_carbon_has_prices_and_no_carbon() {
    let s = series::parse_csv(
        "# day-ahead\ntime,price_per_kwh\n2026-03-01T00:00:00+01:00,0.2\n2026-03-01T01:00:00+01:00,0.3\n",
    )
    .unwrap();
    assert_eq!(price(&s, "2026-02-28T23:30:00Z"), Some(0.2));
    assert_eq!(price(&s, "2026-03-01T00:59:00Z"), Some(0.3));
    assert_eq!(
        s.at(t("2026-02-28T23:30:00Z")).unwrap().carbon_g_per_kwh,
        None
    );
    assert!(!s.has_carbon());
}

#[test]
fn past_the_end_the_same_time_of_day_of_the_last_day_is_used() {
    let mut csv = String::from("time,price_per_kwh\n");
    for h in 0..48 {
        csv.push_str(&format!(
            "2026-03-{:02}T{:02}:00:00Z,{}\n",
            1 + h / 24,
            h % 24,
            h as f64
        ));
    }
    let s = series::parse_csv(&csv).unwrap();
    // Day 2 (values 24–47) repeats: 05:30 three days later is hour 29.
    assert_eq!(price(&s, "2026-03-05T05:30:00Z"), Some(29.0));
    assert_eq!(s.known_at(t("2026-03-05T05:30:00Z")), None);
    assert_eq!(price(&s, "2026-02-28T23:00:00Z"), None, "before the start");
}

#[test]
fn a_series_shorter_than_a_day_has_no_fallback_past_its_end() {
    let s = series::parse_csv("time,price_per_kwh\n2026-03-01T10:00:00Z,0.1\n").unwrap();
    assert_eq!(price(&s, "2026-03-01T10:30:00Z"), Some(0.1));
    assert_eq!(price(&s, "2026-03-02T12:00:00Z"), None);
}

fn csv_error(text: &str) -> (usize, String) {
    match series::parse_csv(text) {
        Err(SeriesError::Csv { line, problem }) => (line, problem),
        other => panic!("expected a CSV error, got {other:?}"),
    }
}

#[test]
fn bad_csv_lines_are_refused_naming_the_line() {
    let (line, p) =
        csv_error("time,price_per_kwh\n2026-03-01T00:00:00Z,0.1\n2026-03-01T01:00:00Z,abc\n");
    assert_eq!(line, 3);
    assert!(p.contains("price_per_kwh") && p.contains("abc"), "{p}");
    let (line, p) = csv_error("time,price_per_kwh\n\n2026-03-01 00:00,0.1\n");
    assert_eq!(line, 3);
    assert!(p.contains("RFC 3339"), "{p}");
    let (line, _) =
        csv_error("time,price_per_kwh\n2026-03-01T01:00:00Z,0.1\n2026-03-01T00:00:00Z,0.1\n");
    assert_eq!(line, 3);
    let (line, p) = csv_error("time,price\n");
    assert_eq!(line, 1);
    assert!(p.contains("unknown column `price`"), "{p}");
    let (line, p) = csv_error("time,price_per_kwh,carbon_g_per_kwh\n2026-03-01T00:00:00Z,0.1,-4\n");
    assert_eq!(line, 2);
    assert!(p.contains("negative"), "{p}");
    let (line, _) = csv_error("time,price_per_kwh\n2026-03-01T00:00:00Z,0.1,7\n");
    assert_eq!(line, 2);
}

#[test]
fn a_file_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prices.csv");
    std::fs::write(&path, "time,price_per_kwh\n2026-03-01T00:00:00Z,x\n").unwrap();
    let e = series::load(&path).unwrap_err().to_string();
    assert!(e.contains("prices.csv") && e.contains("line 2"), "{e}");
    let e = series::load(&dir.path().join("none.csv"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("none.csv"), "{e}");
}

fn entsoe(curve: &str, resolution: &str, end: &str, points: &[(u32, f64)]) -> String {
    let pts: String = points
        .iter()
        .map(|(p, v)| {
            format!("<Point><position>{p}</position><price.amount>{v}</price.amount></Point>")
        })
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Publication_MarketDocument xmlns="urn:iec62325.351:tc57wg16:451-3:publicationdocument:7:3">
  <mRID>abc</mRID>
  <revisionNumber>1</revisionNumber>
  <type>A44</type>
  <period.timeInterval><start>2026-03-01T23:00Z</start><end>{end}</end></period.timeInterval>
  <TimeSeries>
    <mRID>1</mRID>
    <businessType>A62</businessType>
    <in_Domain.mRID codingScheme="A01">10YNL----------L</in_Domain.mRID>
    <currency_Unit.name>EUR</currency_Unit.name>
    <price_Measure_Unit.name>MWH</price_Measure_Unit.name>
    <curveType>{curve}</curveType>
    <Period>
      <timeInterval><start>2026-03-01T23:00Z</start><end>{end}</end></timeInterval>
      <resolution>{resolution}</resolution>
      {pts}
    </Period>
  </TimeSeries>
</Publication_MarketDocument>"#
    )
}

#[test]
fn an_entsoe_a01_hourly_document_gives_prices_per_kwh() {
    let xml = entsoe(
        "A01",
        "PT60M",
        "2026-03-02T02:00Z",
        &[(1, 85.5), (2, -12.0), (3, 100.0)],
    );
    let s = series::parse_text(&xml).unwrap();
    assert_eq!(s.points().len(), 3);
    assert_eq!(price(&s, "2026-03-01T23:30:00Z"), Some(0.0855));
    assert_eq!(price(&s, "2026-03-02T00:10:00Z"), Some(-0.012));
    assert_eq!(s.end(), t("2026-03-02T02:00:00Z"));
}

#[test]
fn an_entsoe_a03_quarter_hour_document_repeats_an_omitted_position() {
    // Eight quarter hours; positions 2, 3 and 6–8 omitted.
    let xml = entsoe(
        "A03",
        "PT15M",
        "2026-03-02T01:00Z",
        &[(1, 50.0), (4, 60.0), (5, 70.0)],
    );
    let s = series::parse_entsoe(&xml).unwrap();
    let prices: Vec<f64> = s.points().iter().map(|p| p.price_per_kwh).collect();
    assert_eq!(prices, vec![0.05, 0.05, 0.05, 0.06, 0.07, 0.07, 0.07, 0.07]);
    assert_eq!(s.points()[7].start, t("2026-03-02T00:45:00Z"));
}

#[test]
fn an_entsoe_a01_curve_with_a_missing_position_is_refused_naming_it() {
    let xml = entsoe(
        "A01",
        "PT60M",
        "2026-03-02T02:00Z",
        &[(1, 85.5), (3, 100.0)],
    );
    let e = series::parse_entsoe(&xml).unwrap_err().to_string();
    assert!(
        e.contains("position 2") && e.contains("TimeSeries 1 Period 1"),
        "{e}"
    );
    let xml = entsoe("A01", "PT60M", "2026-03-02T00:00Z", &[(1, 85.5), (2, 1.0)]);
    let e = series::parse_entsoe(&xml).unwrap_err().to_string();
    assert!(e.contains("position 2 outside 1–1"), "{e}");
}

#[test]
fn an_entsoe_acknowledgement_is_a_clear_no_data_error() {
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<Acknowledgement_MarketDocument xmlns="urn:iec62325.351:tc57wg16:451-1:acknowledgementdocument:7:0">
  <mRID>x</mRID>
  <createdDateTime>2026-03-01T10:00:00Z</createdDateTime>
  <Reason><code>999</code><text>No matching data found for Data item Day-ahead Prices</text></Reason>
</Acknowledgement_MarketDocument>"#;
    match series::parse_text(xml) {
        Err(SeriesError::NoData { reason }) => {
            assert!(
                reason.contains("No matching data found") && reason.contains("999"),
                "{reason}"
            )
        }
        other => panic!("expected NoData, got {other:?}"),
    }
}

#[test]
fn an_entsoe_document_of_another_type_or_resolution_is_refused() {
    let xml = entsoe("A01", "PT60M", "2026-03-02T00:00Z", &[(1, 1.0)]).replace(">A44<", ">A65<");
    assert!(series::parse_entsoe(&xml)
        .unwrap_err()
        .to_string()
        .contains("A65"));
    let xml = entsoe("A01", "P1D", "2026-03-02T23:00Z", &[(1, 1.0)]);
    assert!(series::parse_entsoe(&xml)
        .unwrap_err()
        .to_string()
        .contains("P1D"));
    assert!(series::parse_entsoe("<html><body>oops</body></html>").is_err());
}

#[test]
fn a_tariff_payload_becomes_a_series_with_carbon() {
    let s = TariffPayload::decode(
        br#"{"start":"2026-03-01T00:00:00Z","step_s":900,"prices_per_kwh":[0.1,-0.05],"carbon_g_per_kwh":[200,150]}"#,
    )
    .unwrap();
    assert_eq!(price(&s, "2026-03-01T00:20:00Z"), Some(-0.05));
    assert_eq!(s.end(), t("2026-03-01T00:30:00Z"));
    assert_eq!(s.points()[0].carbon_g_per_kwh, Some(200.0));
}

#[test]
fn a_bad_tariff_payload_is_refused_naming_the_field() {
    let cases: [(&[u8], &str); 5] = [
        (br#"{"start":"2026-03-01T00:00:00Z","step_s":0,"prices_per_kwh":[0.1]}"#, "step_s"),
        (br#"{"start":"2026-03-01T00:00:00Z","step_s":900,"prices_per_kwh":[]}"#, "prices_per_kwh"),
        (
            br#"{"start":"2026-03-01T00:00:00Z","step_s":900,"prices_per_kwh":[0.1],"carbon_g_per_kwh":[1,2]}"#,
            "carbon_g_per_kwh",
        ),
        (
            br#"{"start":"2026-03-01T00:00:00Z","step_s":900,"prices_per_kwh":[0.1],"carbon_g_per_kwh":[-1]}"#,
            "carbon_g_per_kwh[0]",
        ),
        (br#"{"start":"yesterday","step_s":900,"prices_per_kwh":[0.1]}"#, "malformed"),
    ];
    for (bytes, needle) in cases {
        let e = TariffPayload::decode(bytes).unwrap_err().to_string();
        assert!(e.contains(needle), "{e} should name {needle}");
    }
}
