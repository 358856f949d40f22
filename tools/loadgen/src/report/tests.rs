//! Unit tests of the report: percentiles, the JSON round trip, one run's table, medians over
//! rounds and the comparison tables.

use super::median::{median, median_report, median_u64};
use super::*;
use crate::procstat::ProcessReport;

#[test]
fn percentiles_from_a_histogram() {
    let mut h = latency_histogram();
    for us in 1..=1000u64 {
        h.record(us).unwrap();
    }
    let p = Percentiles::of(&h).unwrap();
    assert_eq!(p.count, 1000);
    assert!((p.p50_ms - 0.5).abs() < 0.001, "{p:?}");
    assert!((p.p90_ms - 0.9).abs() < 0.001, "{p:?}");
    assert!((p.p99_ms - 0.99).abs() < 0.001, "{p:?}");
    assert!((p.max_ms - 1.0).abs() < 0.001, "{p:?}");
    assert!(Percentiles::of(&latency_histogram()).is_none());
}

fn text_report(label: &str, p50: f64, p99: f64) -> Report {
    Report {
        label: label.into(),
        mode: "text".into(),
        params: Params {
            sessions: 1000,
            turns: 5,
            turn_interval_ms: 1000,
            ..Params::default()
        },
        sessions_ok: 1000,
        turns_ok: 5000,
        phase_s: 5.0,
        turn_latency: Some(Percentiles {
            count: 5000,
            p50_ms: p50,
            p90_ms: p50 * 2.0,
            p99_ms: p99,
            max_ms: p99 * 3.0,
            mean_ms: p50,
        }),
        processes: vec![ProcessReport {
            label: "emulator".into(),
            cpu_phase_s: 1.0,
            ..ProcessReport::default()
        }],
        ..Report::default()
    }
}

#[test]
fn comparison_shows_the_added_latency_and_judges_the_target() {
    let d = text_report("direct", 0.200, 0.900);
    let g = text_report("gateway", 0.230, 1.300);
    let out = render_comparison(Some(&d), Some(&g));
    assert!(out.starts_with("== text: 1000 sessions × 5 text turns, 1000 ms apart =="));
    let p50 = out
        .lines()
        .find(|l| l.starts_with("turn latency p50"))
        .unwrap();
    assert!(p50.contains("+0.030") && p50.contains("met"), "{p50}");
    let p99 = out
        .lines()
        .find(|l| l.starts_with("turn latency p99"))
        .unwrap();
    assert!(p99.contains("+0.400") && p99.contains("MISSED"), "{p99}");
    assert!(out.contains("CPU s emulator"));
    // Columns line up: every row has the same width up to the target column.
    let header = out.lines().nth(1).unwrap();
    assert!(header.starts_with("metric"));
}

#[test]
fn reports_round_trip_through_json_and_render() {
    let mut r = text_report("gateway", 0.3, 1.0);
    r.errors.insert(
        "close 4401".into(),
        ErrorCount {
            count: 3,
            example: "invalid API key".into(),
        },
    );
    let json = serde_json::to_string(&r).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    let table = render(&r);
    assert!(
        table.contains("3 × close 4401  (e.g. invalid API key)"),
        "{table}"
    );
    assert!(table.contains("turn"));
    let all = render_all(&[r.clone()], "gateway").unwrap();
    assert!(all.contains("gateway−direct"));
}

/// The cells of the row called `name`, split at whitespace.
fn cells<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    let line = out
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no row {name:?} in\n{out}"));
    line[name.len()..].split_whitespace().collect()
}

/// A text round with its own turn latency, frames/s and emulator CPU.
fn text_round(label: &str, p50: f64, p99: f64, frames_per_s: f64, cpu_s: f64) -> Report {
    let mut r = text_report(label, p50, p99);
    r.frames_per_s = frames_per_s;
    r.processes[0].cpu_phase_s = cpu_s;
    r
}

#[test]
fn medians_take_the_middle_or_the_mean_of_the_middle_two() {
    assert_eq!(median([]), None);
    assert_eq!(median([0.3]), Some(0.3));
    assert_eq!(median([0.3, 0.1, 0.2]), Some(0.2));
    assert!((median([0.4, 0.1, 0.3, 0.2]).unwrap() - 0.25).abs() < 1e-12);
    assert_eq!(median_u64([]), None);
    assert_eq!(median_u64([7]), Some(7));
    assert_eq!(median_u64([9, 1, 5]), Some(5));
    assert_eq!(median_u64([10, 41, 20, 30]), Some(25));
    // 1.5 rounds half up.
    assert_eq!(median_u64([2, 1]), Some(2));
}

#[test]
fn another_side_is_compared_with_direct_and_the_rest_is_left_out() {
    let d = text_report("direct", 0.200, 0.900);
    let relay = text_report("relay", 0.240, 1.000);
    let g = text_report("gateway", 0.300, 1.500);
    let runs = [d, relay, g];
    let out = render_all(&runs, "relay").unwrap();
    let header = out.lines().nth(1).unwrap_or_default();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["metric", "direct", "relay", "relay−direct", "target"]
    );
    assert_eq!(
        cells(&out, "turn latency p50 (ms)"),
        ["0.200", "0.240", "+0.040", "≤", "+0.05", "met"]
    );
    // The same runs judged on the gateway ignore the relay's.
    let out = render_all(&runs, "gateway").unwrap();
    assert_eq!(
        cells(&out, "turn latency p50 (ms)"),
        ["0.200", "0.300", "+0.100", "≤", "+0.05", "MISSED"]
    );
}

#[test]
fn one_run_per_label_renders_as_before() {
    let d = text_report("direct", 0.200, 0.900);
    let g = text_report("gateway", 0.230, 1.300);
    assert_eq!(median_report(&[&d]).as_ref(), Some(&d));
    let all = render_all(&[d.clone(), g.clone()], "gateway").unwrap();
    assert_eq!(all, format!("{}\n", render_comparison(Some(&d), Some(&g))));
    // p90 = 2 × p50, max = 3 × p99; 1 CPU-second over a 5 s phase is 0.20 cores.
    let expected = "\
== text: 1000 sessions × 5 text turns, 1000 ms apart ==
metric                            direct            gateway  gateway−direct  target
sessions ok                    1000/1000          1000/1000
turn latency p50 (ms)              0.200              0.230          +0.030  ≤ +0.05 met
turn latency p90 (ms)              0.400              0.460          +0.060
turn latency p99 (ms)              0.900              1.300          +0.400  ≤ +0.2 MISSED
turn latency max (ms)              2.700              3.900          +1.200
frames/s (both ways)                   0                  0
CPU s emulator         1.00 (0.20 cores)  1.00 (0.20 cores)
errors                                 0                  0

";
    assert_eq!(all, expected);
}

#[test]
fn rounds_show_medians_and_judge_the_median_paired_delta() {
    // Given interleaved, as bench.sh runs them: direct r1, gateway r1, direct r2, …
    let reports = [
        text_round("direct", 0.200, 0.900, 100.0, 1.0),
        text_round("gateway", 0.290, 1.050, 110.0, 1.5),
        text_round("direct", 0.300, 1.000, 300.0, 3.0),
        text_round("gateway", 0.330, 1.300, 310.0, 3.5),
        text_round("direct", 0.250, 0.950, 200.0, 2.0),
        text_round("gateway", 0.400, 1.000, 210.0, 2.5),
    ];
    let out = render_all(&reports, "gateway").unwrap();
    assert!(
        out.starts_with(
            "== text: 1000 sessions × 5 text turns, 1000 ms apart (median of 3 rounds) =="
        ),
        "{out}"
    );
    // p50: medians 0.250 and 0.330; added per round +0.090 +0.030 +0.150, median +0.090
    // (not 0.330 − 0.250 = 0.080).
    assert_eq!(
        cells(&out, "turn latency p50 (ms)"),
        ["0.250", "0.330", "+0.090", "≤", "+0.05", "MISSED"]
    );
    // p90 = 2 × p50: medians 0.500 and 0.660; added +0.180 +0.060 +0.300.
    assert_eq!(
        cells(&out, "turn latency p90 (ms)"),
        ["0.500", "0.660", "+0.180"]
    );
    // p99: medians 0.950 and 1.050; added +0.150 +0.300 +0.050, median +0.150 (not 0.100).
    assert_eq!(
        cells(&out, "turn latency p99 (ms)"),
        ["0.950", "1.050", "+0.150", "≤", "+0.2", "met"]
    );
    // max = 3 × p99: medians 2.850 and 3.150; added +0.450 +0.900 +0.150.
    assert_eq!(
        cells(&out, "turn latency max (ms)"),
        ["2.850", "3.150", "+0.450"]
    );
    assert_eq!(cells(&out, "frames/s (both ways)"), ["200", "210"]);
    // CPU medians 2.0 and 2.5 s over the 5 s phase.
    assert_eq!(
        cells(&out, "CPU s emulator"),
        ["2.00", "(0.40", "cores)", "2.50", "(0.50", "cores)"]
    );
    assert!(
        out.contains(
            "\nrounds: 3; added p50 per round: +0.090 +0.030 +0.150 ms; \
             added p99 per round: +0.150 +0.300 +0.050 ms\n"
        ),
        "{out}"
    );
}

#[test]
fn two_rounds_take_the_mean_of_both_and_sum_errors() {
    let mut g1 = text_round("gateway", 0.260, 1.000, 0.0, 1.0);
    g1.sessions_ok = 998;
    g1.errors.insert(
        "close 1011".into(),
        ErrorCount {
            count: 2,
            example: String::new(),
        },
    );
    let mut g2 = text_round("gateway", 0.320, 1.200, 0.0, 1.0);
    g2.timed_out = true;
    g2.errors.insert(
        "close 1011".into(),
        ErrorCount {
            count: 3,
            example: "boom".into(),
        },
    );
    let d1 = text_round("direct", 0.200, 0.900, 0.0, 1.0);
    let d2 = text_round("direct", 0.300, 1.000, 0.0, 1.0);
    let out = render_all(&[d1, g1, d2, g2], "gateway").unwrap();
    // p50: medians 0.250 and 0.290; added +0.060 and +0.020, median +0.040.
    assert_eq!(
        cells(&out, "turn latency p50 (ms)"),
        ["0.250", "0.290", "+0.040", "≤", "+0.05", "met"]
    );
    // p99: medians 0.950 and 1.100; added +0.100 and +0.200, median +0.150.
    assert_eq!(
        cells(&out, "turn latency p99 (ms)"),
        ["0.950", "1.100", "+0.150", "≤", "+0.2", "met"]
    );
    // 998 and 1000 sessions ok: 999.
    assert_eq!(cells(&out, "sessions ok"), ["1000/1000", "999/1000"]);
    assert_eq!(cells(&out, "errors"), ["0", "5", "TIMED", "OUT"]);
    assert!(
        out.contains("  [gateway] 5 × close 1011 (e.g. boom)\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "\nrounds: 2; added p50 per round: +0.060 +0.020 ms; \
             added p99 per round: +0.100 +0.200 ms\n"
        ),
        "{out}"
    );
}

#[test]
fn unpaired_rounds_are_an_error() {
    let d = text_report("direct", 0.2, 0.9);
    let g = text_report("gateway", 0.3, 1.0);
    assert_eq!(
        render_all(&[d.clone(), g, d.clone()], "gateway"),
        Err(CompareError::UnpairedRounds {
            mode: "text".into(),
            side: "gateway".into(),
            direct: 2,
            gateway: 1,
        })
    );
    // One label alone has nothing to pair: its medians, no added latency.
    let out = render_all(&[d.clone(), d], "gateway").unwrap();
    assert_eq!(
        cells(&out, "turn latency p50 (ms)"),
        ["0.200", "-", "-", "≤", "+0.05"]
    );
    assert!(
        out.contains("\nrounds: 2; added p50 per round: -; added p99 per round: -\n"),
        "{out}"
    );
}

#[test]
fn idle_comparison_judges_memory_and_count() {
    let mk = |label: &str, proc_label: &str, per: f64| Report {
        label: label.into(),
        mode: "idle".into(),
        params: Params {
            sessions: 5000,
            hold_ms: 10_000,
            ..Params::default()
        },
        sessions_ok: 5000,
        sessions_held: 5000,
        processes: vec![ProcessReport {
            label: proc_label.into(),
            rss_per_session_kib: Some(per),
            ..ProcessReport::default()
        }],
        ..Report::default()
    };
    let out = render_comparison(
        Some(&mk("direct", "emulator", 7.5)),
        Some(&mk("gateway", "gateway", 40.0)),
    );
    let line = out.lines().find(|l| l.starts_with("RSS per idle")).unwrap();
    assert!(
        line.contains("7.5") && line.contains("40.0") && line.contains("MISSED"),
        "{line}"
    );
    let held = out
        .lines()
        .find(|l| l.starts_with("sessions held"))
        .unwrap();
    assert!(
        held.contains("5000/5000") && held.contains("20000 (not tried: 5000 requested)"),
        "{held}"
    );

    let mut direct = mk("direct", "emulator", 7.3);
    let mut gw = mk("gateway", "gateway", 280.0);
    for (r, n) in [(&mut direct, 19_988), (&mut gw, 9_993)] {
        r.params.sessions = 20_000;
        r.sessions_held = n;
    }
    let out = render_comparison(Some(&direct), Some(&gw));
    let held = out
        .lines()
        .find(|l| l.starts_with("sessions held"))
        .unwrap();
    assert!(
        held.contains("19988/20000")
            && held.contains("9993/20000")
            && held.contains("20000 (gateway MISSED)"),
        "{held}"
    );
}
