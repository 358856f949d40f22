//! The human table of one run ([`render`]), and the cell formats the comparison shares.

use super::model::Report;
use std::fmt::Write as _;

pub(super) fn kib_as_mib(k: u64) -> String {
    format!("{:.1}", k as f64 / 1024.0)
}

pub(super) fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
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

pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

pub(super) fn f3(v: f64) -> String {
    format!("{v:.3}")
}

pub(super) fn signed3(v: f64) -> String {
    format!("{v:+.3}")
}
