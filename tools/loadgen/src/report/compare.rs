//! The side-by-side comparison `compare` prints ([`render_all`], [`render_comparison`]): one
//! table per mode, direct against the gateway (or another side), its rows per mode, and the
//! targets judged.

use super::model::Report;
use super::rounds::{CompareError, Pick, Rounds, Sides, Source, latency_source};
use super::table::{f3, kib_as_mib, opt, render, signed3, truncate};
use super::targets;
use std::fmt::Write as _;

struct Table<'a> {
    /// The compared side's label (`gateway`, or e.g. `relay` for a bare TCP relay).
    side: &'a str,
    rows: Vec<[String; 5]>,
}

impl Table<'_> {
    fn row(&mut self, name: &str, direct: String, gateway: String, delta: String, target: String) {
        self.rows
            .push([name.to_string(), direct, gateway, delta, target]);
    }

    fn render(&self, out: &mut String) {
        let header = [
            "metric".to_string(),
            "direct".to_string(),
            self.side.to_string(),
            format!("{}−direct", self.side),
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

/// A target cell: the bound, followed by its verdict when there is a figure to judge.
fn judged(bound: String, met: Option<bool>) -> String {
    match met {
        Some(ok) => format!("{bound} {}", verdict(ok)),
        None => bound,
    }
}

/// The side-by-side table of a direct and a gateway run of the same mode (either may be
/// missing). Targets are judged where the mode has one.
pub fn render_comparison(direct: Option<&Report>, gateway: Option<&Report>) -> String {
    render_sides(&Sides::new(Rounds {
        side: "gateway",
        direct: direct.into_iter().collect(),
        gateway: gateway.into_iter().collect(),
    }))
}

/// The side-by-side table of one mode. With several rounds the columns are medians, the
/// added latency is the median of the rounds' own, and a line under the table lists each
/// round's.
fn render_sides(s: &Sides) -> String {
    let mut out = String::new();
    let Some(any) = s.any() else {
        return out;
    };
    let rounds = s.rounds.count();
    let of_rounds = if rounds > 1 {
        format!(" (median of {rounds} rounds)")
    } else {
        String::new()
    };
    let _ = writeln!(out, "== {}: {}{of_rounds} ==", any.mode, any.load_line());
    let mut t = Table {
        side: s.rounds.side,
        rows: Vec::new(),
    };
    sessions_row(&mut t, s, any);
    match any.mode.as_str() {
        "text" | "audio" => turn_rows(&mut t, s, any),
        "setup" => setup_rows(&mut t, s),
        "idle" => idle_rows(&mut t, s),
        _ => {}
    }
    cpu_rows(&mut t, s);
    let (d, g) = s.both(|r| {
        let mut e = r.error_total().to_string();
        if r.timed_out {
            e.push_str(" TIMED OUT");
        }
        e
    });
    t.row("errors", d, g, String::new(), String::new());
    t.render(&mut out);
    if rounds > 1 {
        let _ = writeln!(out, "{}", s.rounds.line(latency_source(&any.mode)));
    }
    error_lines(&mut out, s);
    out
}

/// Sessions that worked (held, for `idle`; setup cycles, for `setup`) and, for `idle`, the
/// held-sessions target.
fn sessions_row(t: &mut Table, s: &Sides, any: &Report) {
    let (d, g) = s.both(|r| match r.mode.as_str() {
        "setup" => format!("{}/{}", r.sessions_ok, r.sessions_ok + r.sessions_failed),
        "idle" => format!("{}/{}", r.sessions_held, r.params.sessions),
        _ => format!("{}/{}", r.sessions_ok, r.params.sessions),
    });
    let (name, target) = match any.mode.as_str() {
        "setup" => ("setups ok/attempted", String::new()),
        "idle" => ("sessions held", held_target(s, any)),
        _ => ("sessions ok", String::new()),
    };
    t.row(name, d, g, String::new(), target);
}

/// The idle-sessions target: judged on the gateway when the run asked for that many.
fn held_target(s: &Sides, any: &Report) -> String {
    if any.params.sessions < targets::IDLE_SESSIONS {
        return format!(
            "{} (not tried: {} requested)",
            targets::IDLE_SESSIONS,
            any.params.sessions
        );
    }
    let held = s.gateway.as_ref().map_or(0, |g| g.sessions_held);
    format!(
        "{} (gateway {})",
        targets::IDLE_SESSIONS,
        verdict(held >= targets::IDLE_SESSIONS)
    )
}

/// A latency row: each side's figure and what the gateway adds, judged against `limit` (the
/// most it may add, ms) when given.
fn latency_row(
    t: &mut Table,
    s: &Sides,
    name: &str,
    source: Source,
    pick: Pick,
    limit: Option<f64>,
) {
    let (d, g, delta) = s.latency(source, pick);
    let target = limit.map_or_else(String::new, |limit| {
        judged(format!("≤ +{limit}"), delta.map(|x| x <= limit))
    });
    t.row(name, opt(d, f3), opt(g, f3), opt(delta, signed3), target);
}

/// `text` and `audio`: turn latency and frames/s. Only text turns carry issue 4's latency
/// targets.
fn turn_rows(t: &mut Table, s: &Sides, any: &Report) {
    let text = any.mode == "text";
    let target = |limit: f64| text.then_some(limit);
    let rows: [(&str, Pick, Option<f64>); 4] = [
        (
            "turn latency p50 (ms)",
            |p| p.p50_ms,
            target(targets::ADDED_P50_MS),
        ),
        ("turn latency p90 (ms)", |p| p.p90_ms, None),
        (
            "turn latency p99 (ms)",
            |p| p.p99_ms,
            target(targets::ADDED_P99_MS),
        ),
        ("turn latency max (ms)", |p| p.max_ms, None),
    ];
    for (name, pick, limit) in rows {
        latency_row(t, s, name, |r| r.turn_latency, pick, limit);
    }
    let (d, g) = s.both(|r| format!("{:.0}", r.frames_per_s));
    t.row("frames/s (both ways)", d, g, String::new(), String::new());
}

/// `setup`: setups/s, setup latency, and setups per CPU-second of the serving process.
fn setup_rows(t: &mut Table, s: &Sides) {
    let (d, g) = s.both(|r| format!("{:.0}", r.setups_per_s));
    t.row("setups/s", d, g, String::new(), String::new());
    let rows: [(&str, Pick); 2] = [
        ("setup latency p50 (ms)", |p| p.p50_ms),
        ("setup latency p99 (ms)", |p| p.p99_ms),
    ];
    for (name, pick) in rows {
        latency_row(t, s, name, |r| r.setup_latency, pick, None);
    }
    // Per core: setups per CPU-second of the process that serves them.
    let per_cpu = |r: &Report, label: &str| {
        r.process(label)
            .filter(|p| p.cpu_phase_s > 0.0)
            .map(|p| r.sessions_ok as f64 / p.cpu_phase_s)
    };
    let d = s.direct.as_ref().and_then(|r| per_cpu(r, "emulator"));
    let g = s.gateway.as_ref().and_then(|r| per_cpu(r, "gateway"));
    let target = judged(
        format!("≥ {}", targets::SETUPS_PER_CORE),
        g.map(|v| v >= targets::SETUPS_PER_CORE),
    );
    t.row(
        "setups per CPU-second (emulator | gateway)",
        opt(d, |v| format!("{v:.0}")),
        opt(g, |v| format!("{v:.0}")),
        String::new(),
        target,
    );
}

/// `idle`: RSS per session (with its target) and held, of the process serving the sessions.
fn idle_rows(t: &mut Table, s: &Sides) {
    let per = |r: &Report, label: &str| r.process(label).and_then(|p| p.rss_per_session_kib);
    let d = s.direct.as_ref().and_then(|r| per(r, "emulator"));
    let g = s.gateway.as_ref().and_then(|r| per(r, "gateway"));
    let target = judged(
        format!("≤ {}", targets::IDLE_KIB),
        g.map(|v| v <= targets::IDLE_KIB),
    );
    t.row(
        "RSS per idle session KiB (emulator | gateway)",
        opt(d, |v| format!("{v:.1}")),
        opt(g, |v| format!("{v:.1}")),
        String::new(),
        target,
    );
    let (d, g) = s.both(|r| {
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

/// CPU of every watched process during the phase.
fn cpu_rows(t: &mut Table, s: &Sides) {
    let mut labels: Vec<&str> = Vec::new();
    for r in [&s.direct, &s.gateway].into_iter().flatten() {
        for p in &r.processes {
            if !labels.contains(&p.label.as_str()) {
                labels.push(&p.label);
            }
        }
    }
    for label in labels {
        let (d, g) = s.both(|r| {
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
}

/// Each side's errors by kind, under the table.
fn error_lines(out: &mut String, s: &Sides) {
    for r in [&s.direct, &s.gateway].into_iter().flatten() {
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
}

/// Groups reports by mode (in first-seen order) and renders one comparison per mode, pairing
/// the runs labelled `direct` with those labelled `side` (`gateway`, or e.g. `relay`); a mode
/// with neither shows each of its runs on its own. Several runs of a label are rounds, paired by the order
/// given (see [`render_sides`]).
///
/// # Errors
/// A mode has both labels, but not as many runs of each.
pub fn render_all(reports: &[Report], side: &str) -> Result<String, CompareError> {
    let mut modes: Vec<&str> = Vec::new();
    for r in reports {
        if !modes.contains(&r.mode.as_str()) {
            modes.push(&r.mode);
        }
    }
    let mut out = String::new();
    for m in modes {
        let rounds = Rounds::of_mode(reports, m, side)?;
        if rounds.count() == 0 {
            for r in reports.iter().filter(|r| r.mode == m) {
                out.push_str(&render(r));
            }
        } else {
            out.push_str(&render_sides(&Sides::new(rounds)));
        }
        out.push('\n');
    }
    Ok(out)
}
