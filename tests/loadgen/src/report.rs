//! What a run measured ([`Report`], also the `--json` output), its human table, and the
//! side-by-side comparison of runs that `compare` prints (emulator-direct vs through-gateway).

use crate::procstat::ProcessReport;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Highest value a latency histogram tracks, µs (longer values are clamped to it).
pub const MAX_LATENCY_US: u64 = 600_000_000;

/// A histogram of microseconds with 3 significant digits.
#[allow(clippy::expect_used)] // constant bounds, valid for hdrhistogram; covered by a test
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Percentiles {
    /// From a histogram of microseconds; `None` when it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        })
    }
}

/// How often one kind of error happened, with one example message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCount {
    pub count: u64,
    pub example: String,
}

/// The load a run put on the target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// Concurrent sessions (`setup`: concurrent connection loops).
    pub sessions: u64,
    pub turns: u64,
    pub turn_interval_ms: u64,
    pub audio_seconds: f64,
    pub speed: f64,
    pub hold_ms: u64,
    pub duration_ms: u64,
    pub count: Option<u64>,
    pub connect_rate: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `--label` (bench.sh uses `direct` and `gateway`).
    pub label: String,
    /// `text`, `audio`, `idle` or `setup`.
    pub mode: String,
    pub url: String,
    pub params: Params,
    /// Seconds from start to the last session closed.
    pub wall_s: f64,
    /// Seconds of the measured phase: turns (first send to last turnComplete), the hold, or
    /// the setup loop.
    pub phase_s: f64,
    /// Sessions that reached `setupComplete` (`setup`: completed cycles).
    pub sessions_ok: u64,
    /// Sessions that failed before `setupComplete` (`setup`: failed cycles).
    pub sessions_failed: u64,
    /// Sessions still open at the end of the hold (`idle`).
    pub sessions_held: u64,
    pub turns_ok: u64,
    /// Send (text) or `audioStreamEnd` (audio) to `turnComplete`.
    pub turn_latency: Option<Percentiles>,
    /// TCP connect to `setupComplete`.
    pub setup_latency: Option<Percentiles>,
    /// Data frames during the phase, both ways.
    pub frames_sent: u64,
    pub frames_received: u64,
    pub frames_per_s: f64,
    /// Sessions set up per second: the whole `setup` loop, or the ramp of the other modes.
    pub setups_per_s: f64,
    pub go_aways: u64,
    /// Error kind → count and an example.
    pub errors: BTreeMap<String, ErrorCount>,
    /// The total timeout cut the run short.
    pub timed_out: bool,
    pub processes: Vec<ProcessReport>,
}

impl Report {
    /// Total errors of all kinds.
    pub fn error_total(&self) -> u64 {
        self.errors.values().map(|e| e.count).sum()
    }

    /// The report of the watched process labelled `label`.
    pub fn process(&self, label: &str) -> Option<&ProcessReport> {
        self.processes.iter().find(|p| p.label == label)
    }

    /// One line describing the load.
    pub fn load_line(&self) -> String {
        let p = &self.params;
        match self.mode.as_str() {
            "text" => format!(
                "{} sessions × {} text turns, {} ms apart",
                p.sessions, p.turns, p.turn_interval_ms
            ),
            "audio" => format!(
                "{} sessions × {} turns of {} s audio at {}× real time",
                p.sessions, p.turns, p.audio_seconds, p.speed
            ),
            "idle" => format!("{} sessions held for {} ms", p.sessions, p.hold_ms),
            "setup" => match p.count {
                Some(c) => format!("{} setups, concurrency {}", c, p.sessions),
                None => format!(
                    "setups for {} ms, concurrency {}",
                    p.duration_ms, p.sessions
                ),
            },
            other => other.to_string(),
        }
    }
}

fn kib_as_mib(k: u64) -> String {
    format!("{:.1}", k as f64 / 1024.0)
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "-".to_string(), f)
}

/// The human table of one run.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "livegate-loadgen {} [{}] {}", r.mode, r.label, r.url);
    let _ = writeln!(s, "load: {}", r.load_line());
    let _ = writeln!(
        s,
        "sessions: {} ok, {} failed{}   turns: {}   wall {:.2} s, phase {:.2} s{}",
        r.sessions_ok,
        r.sessions_failed,
        if r.mode == "idle" {
            format!(", {} held", r.sessions_held)
        } else {
            String::new()
        },
        r.turns_ok,
        r.wall_s,
        r.phase_s,
        if r.timed_out { "   TIMED OUT" } else { "" }
    );
    let _ = writeln!(
        s,
        "{:<18} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "latency (ms)", "p50", "p90", "p99", "max", "mean", "count"
    );
    for (name, p) in [("turn", r.turn_latency), ("setup", r.setup_latency)] {
        if let Some(p) = p {
            let _ = writeln!(
                s,
                "{:<18} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>8}",
                name, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms, p.mean_ms, p.count
            );
        }
    }
    let _ = writeln!(
        s,
        "frames/s: {:.0} (sent {}, received {})   setups/s: {:.0}   goAway: {}",
        r.frames_per_s, r.frames_sent, r.frames_received, r.setups_per_s, r.go_aways
    );
    if r.errors.is_empty() {
        let _ = writeln!(s, "errors: none");
    } else {
        let _ = writeln!(s, "errors: {}", r.error_total());
        for (kind, e) in &r.errors {
            let ex = if e.example.is_empty() {
                String::new()
            } else {
                format!("  (e.g. {})", truncate(&e.example, 80))
            };
            let _ = writeln!(s, "  {:>8} × {kind}{ex}", e.count);
        }
    }
    if !r.processes.is_empty() {
        let _ = writeln!(
            s,
            "{:<10} {:>8} {:>8} {:>8} {:>8} {:>12} {:>9} {:>9} {:>7}",
            "process",
            "RSS MiB",
            "held",
            "peak",
            "after",
            "KiB/session",
            "CPU s",
            "phase s",
            "cores"
        );
        for p in &r.processes {
            let cores = if r.phase_s > 0.0 {
                p.cpu_phase_s / r.phase_s
            } else {
                0.0
            };
            let _ = writeln!(
                s,
                "{:<10} {:>8} {:>8} {:>8} {:>8} {:>12} {:>9.2} {:>9.2} {:>7.2}{}",
                p.label,
                kib_as_mib(p.rss_before_kib),
                kib_as_mib(p.rss_held_kib),
                kib_as_mib(p.rss_peak_kib),
                kib_as_mib(p.rss_after_kib),
                opt(p.rss_per_session_kib, |v| format!("{v:.1}")),
                p.cpu_total_s,
                p.cpu_phase_s,
                cores,
                p.error
                    .as_ref()
                    .map_or_else(String::new, |e| format!("  ({e})")),
            );
        }
    }
    s
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

/// Issue 4's targets for this machine.
pub mod targets {
    /// Added p50 latency per turn, ms.
    pub const ADDED_P50_MS: f64 = 0.05;
    /// Added p99 latency per turn, ms.
    pub const ADDED_P99_MS: f64 = 0.2;
    /// Session setups per second per core (per gateway CPU-second).
    pub const SETUPS_PER_CORE: f64 = 1000.0;
    /// RSS per idle session, KiB.
    pub const IDLE_KIB: f64 = 32.0;
    /// Idle sessions held.
    pub const IDLE_SESSIONS: u64 = 20_000;
}

struct Table {
    rows: Vec<[String; 5]>,
}

impl Table {
    fn row(&mut self, name: &str, direct: String, gateway: String, delta: String, target: String) {
        self.rows
            .push([name.to_string(), direct, gateway, delta, target]);
    }

    fn render(&self, out: &mut String) {
        let header = [
            "metric".to_string(),
            "direct".to_string(),
            "gateway".to_string(),
            "gateway−direct".to_string(),
            "target".to_string(),
        ];
        let mut w = [0usize; 5];
        for r in std::iter::once(&header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let pad = |c: &str, n: usize, left: bool| {
            let fill = " ".repeat(n.saturating_sub(c.chars().count()));
            if left {
                format!("{c}{fill}")
            } else {
                format!("{fill}{c}")
            }
        };
        for r in std::iter::once(&header).chain(&self.rows) {
            let line = format!(
                "{}  {}  {}  {}  {}",
                pad(&r[0], w[0], true),
                pad(&r[1], w[1], false),
                pad(&r[2], w[2], false),
                pad(&r[3], w[3], false),
                pad(&r[4], w[4], true),
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn f3(v: f64) -> String {
    format!("{v:.3}")
}

fn signed3(v: f64) -> String {
    format!("{v:+.3}")
}

/// The side-by-side table of a direct and a gateway run of the same mode (either may be
/// missing). Targets are judged where the mode has one.
pub fn render_comparison(direct: Option<&Report>, gateway: Option<&Report>) -> String {
    let mut out = String::new();
    let Some(any) = gateway.or(direct) else {
        return out;
    };
    let _ = writeln!(out, "== {}: {} ==", any.mode, any.load_line());
    let mut t = Table { rows: Vec::new() };
    let both = |f: &dyn Fn(&Report) -> String| {
        (
            direct.map_or_else(|| "-".to_string(), f),
            gateway.map_or_else(|| "-".to_string(), f),
        )
    };
    let sessions = both(&|r: &Report| {
        if r.mode == "setup" {
            format!("{}/{}", r.sessions_ok, r.sessions_ok + r.sessions_failed)
        } else {
            format!(
                "{}/{}",
                if r.mode == "idle" {
                    r.sessions_held
                } else {
                    r.sessions_ok
                },
                r.params.sessions
            )
        }
    });
    let held_target = if any.mode == "idle" {
        let held = gateway.map_or(0, |g| g.sessions_held);
        if any.params.sessions < targets::IDLE_SESSIONS {
            format!(
                "{} (not tried: {} requested)",
                targets::IDLE_SESSIONS,
                any.params.sessions
            )
        } else {
            format!(
                "{} (gateway {})",
                targets::IDLE_SESSIONS,
                verdict(held >= targets::IDLE_SESSIONS)
            )
        }
    } else {
        String::new()
    };
    let label = match any.mode.as_str() {
        "setup" => "setups ok/attempted",
        "idle" => "sessions held",
        _ => "sessions ok",
    };
    t.row(label, sessions.0, sessions.1, String::new(), held_target);

    if matches!(any.mode.as_str(), "text" | "audio") {
        type Pick = fn(&Percentiles) -> f64;
        let rows: [(&str, Pick, Option<f64>); 4] = [
            (
                "turn latency p50 (ms)",
                |p| p.p50_ms,
                Some(targets::ADDED_P50_MS),
            ),
            ("turn latency p90 (ms)", |p| p.p90_ms, None),
            (
                "turn latency p99 (ms)",
                |p| p.p99_ms,
                Some(targets::ADDED_P99_MS),
            ),
            ("turn latency max (ms)", |p| p.max_ms, None),
        ];
        for (name, pick, target) in rows {
            let d = direct.and_then(|r| r.turn_latency).map(|p| pick(&p));
            let g = gateway.and_then(|r| r.turn_latency).map(|p| pick(&p));
            let delta = match (d, g) {
                (Some(d), Some(g)) => Some(g - d),
                _ => None,
            };
            // Only text turns carry issue 4's latency target.
            let target = match (target, any.mode.as_str()) {
                (Some(limit), "text") => match delta {
                    Some(x) => format!("≤ +{limit} {}", verdict(x <= limit)),
                    None => format!("≤ +{limit}"),
                },
                _ => String::new(),
            };
            t.row(name, opt(d, f3), opt(g, f3), opt(delta, signed3), target);
        }
        let (d, g) = both(&|r: &Report| format!("{:.0}", r.frames_per_s));
        t.row("frames/s (both ways)", d, g, String::new(), String::new());
    }

    if any.mode == "setup" {
        let (d, g) = both(&|r: &Report| format!("{:.0}", r.setups_per_s));
        t.row("setups/s", d, g, String::new(), String::new());
        for (name, pick) in [
            (
                "setup latency p50 (ms)",
                (|p: &Percentiles| p.p50_ms) as fn(&Percentiles) -> f64,
            ),
            ("setup latency p99 (ms)", |p: &Percentiles| p.p99_ms),
        ] {
            let d = direct.and_then(|r| r.setup_latency).map(|p| pick(&p));
            let g = gateway.and_then(|r| r.setup_latency).map(|p| pick(&p));
            let delta = match (d, g) {
                (Some(d), Some(g)) => Some(g - d),
                _ => None,
            };
            t.row(
                name,
                opt(d, f3),
                opt(g, f3),
                opt(delta, signed3),
                String::new(),
            );
        }
        // Per core: setups per CPU-second of the process that serves them.
        let per_cpu = |r: &Report, label: &str| {
            r.process(label)
                .filter(|p| p.cpu_phase_s > 0.0)
                .map(|p| r.sessions_ok as f64 / p.cpu_phase_s)
        };
        let d = direct.and_then(|r| per_cpu(r, "emulator"));
        let g = gateway.and_then(|r| per_cpu(r, "gateway"));
        let target = match g {
            Some(v) => format!(
                "≥ {} {}",
                targets::SETUPS_PER_CORE,
                verdict(v >= targets::SETUPS_PER_CORE)
            ),
            None => format!("≥ {}", targets::SETUPS_PER_CORE),
        };
        t.row(
            "setups per CPU-second (emulator | gateway)",
            opt(d, |v| format!("{v:.0}")),
            opt(g, |v| format!("{v:.0}")),
            String::new(),
            target,
        );
    }

    if any.mode == "idle" {
        let per = |r: &Report, label: &str| r.process(label).and_then(|p| p.rss_per_session_kib);
        let d = direct.and_then(|r| per(r, "emulator"));
        let g = gateway.and_then(|r| per(r, "gateway"));
        let target = match g {
            Some(v) => format!(
                "≤ {} {}",
                targets::IDLE_KIB,
                verdict(v <= targets::IDLE_KIB)
            ),
            None => format!("≤ {}", targets::IDLE_KIB),
        };
        t.row(
            "RSS per idle session KiB (emulator | gateway)",
            opt(d, |v| format!("{v:.1}")),
            opt(g, |v| format!("{v:.1}")),
            String::new(),
            target,
        );
        let (d, g) = both(&|r: &Report| {
            r.process(if r.label == "direct" {
                "emulator"
            } else {
                "gateway"
            })
            .map_or_else(|| "-".into(), |p| kib_as_mib(p.rss_held_kib))
        });
        t.row(
            "RSS held MiB (emulator | gateway)",
            d,
            g,
            String::new(),
            String::new(),
        );
    }

    // CPU of every watched process during the phase, and the errors.
    let mut labels: Vec<&str> = Vec::new();
    for r in [direct, gateway].into_iter().flatten() {
        for p in &r.processes {
            if !labels.contains(&p.label.as_str()) {
                labels.push(&p.label);
            }
        }
    }
    for label in labels {
        let (d, g) = both(&|r: &Report| {
            r.process(label).map_or_else(
                || "-".into(),
                |p| {
                    let cores = if r.phase_s > 0.0 {
                        p.cpu_phase_s / r.phase_s
                    } else {
                        0.0
                    };
                    format!("{:.2} ({cores:.2} cores)", p.cpu_phase_s)
                },
            )
        });
        t.row(
            &format!("CPU s {label}"),
            d,
            g,
            String::new(),
            String::new(),
        );
    }
    let (d, g) = both(&|r: &Report| {
        let mut e = r.error_total().to_string();
        if r.timed_out {
            e.push_str(" TIMED OUT");
        }
        e
    });
    t.row("errors", d, g, String::new(), String::new());
    t.render(&mut out);
    for r in [direct, gateway].into_iter().flatten() {
        for (kind, e) in &r.errors {
            let _ = writeln!(
                out,
                "  [{}] {} × {kind}{}",
                r.label,
                e.count,
                if e.example.is_empty() {
                    String::new()
                } else {
                    format!(" (e.g. {})", truncate(&e.example, 80))
                }
            );
        }
    }
    out
}

/// Groups reports by mode (in first-seen order) and renders one comparison per mode, pairing
/// the runs labelled `direct` and `gateway`.
pub fn render_all(reports: &[Report]) -> String {
    let mut modes: Vec<&str> = Vec::new();
    for r in reports {
        if !modes.contains(&r.mode.as_str()) {
            modes.push(&r.mode);
        }
    }
    let mut out = String::new();
    for m in modes {
        let find = |label: &str| reports.iter().find(|r| r.mode == m && r.label == label);
        let (d, g) = (find("direct"), find("gateway"));
        if d.is_none() && g.is_none() {
            for r in reports.iter().filter(|r| r.mode == m) {
                out.push_str(&render(r));
            }
        } else {
            out.push_str(&render_comparison(d, g));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let all = render_all(&[r.clone()]);
        assert!(all.contains("gateway−direct"));
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
}
