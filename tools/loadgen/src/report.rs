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

fn f3(v: f64) -> String {
    format!("{v:.3}")
}

fn signed3(v: f64) -> String {
    format!("{v:+.3}")
}

/// Why `compare` cannot combine the reports it was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompareError {
    /// Round i pairs the i-th `direct` report of a mode with its i-th `gateway` report, so
    /// when both labels are there each needs as many reports.
    #[error(
        "{mode}: {direct} `direct` and {gateway} `{side}` reports; rounds pair the i-th \
         of each (in the order given), so give as many of each"
    )]
    UnpairedRounds {
        mode: String,
        side: String,
        direct: usize,
        gateway: usize,
    },
}

/// The middle of `sorted` as a pair: the middle value twice when there is an odd number of
/// values, the middle two when it is even; `None` when empty.
fn middle<T: Copy>(sorted: &[T]) -> Option<(T, T)> {
    let upper = *sorted.get(sorted.len() / 2)?;
    // Not empty here, so `len - 1` does not wrap.
    let lower = *sorted.get((sorted.len() - 1) / 2)?;
    Some((lower, upper))
}

/// The median of `values` (the mean of the middle two when their number is even); `None`
/// when there are none.
fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(f64::total_cmp);
    middle(&v).map(|(lo, hi)| (lo + hi) / 2.0)
}

/// The median of whole numbers, an even number of them giving the middle two's mean rounded
/// half up; `None` when there are none.
fn median_u64(values: impl IntoIterator<Item = u64>) -> Option<u64> {
    let mut v: Vec<u64> = values.into_iter().collect();
    v.sort_unstable();
    middle(&v).map(|(lo, hi)| lo + (hi - lo).div_ceil(2))
}

/// The median of one figure of `items`; 0 when there are none.
fn median_by<'a, T: 'a>(items: impl IntoIterator<Item = &'a T>, pick: fn(&T) -> f64) -> f64 {
    median(items.into_iter().map(pick)).unwrap_or_default()
}

/// The median of one count of `items`; 0 when there are none.
fn median_count_by<'a, T: 'a>(items: impl IntoIterator<Item = &'a T>, pick: fn(&T) -> u64) -> u64 {
    median_u64(items.into_iter().map(pick)).unwrap_or_default()
}

/// Each percentile's median over `runs`; `None` when there are none.
fn median_percentiles(runs: &[Percentiles]) -> Option<Percentiles> {
    if runs.is_empty() {
        return None;
    }
    Some(Percentiles {
        count: median_count_by(runs, |p| p.count),
        p50_ms: median_by(runs, |p| p.p50_ms),
        p90_ms: median_by(runs, |p| p.p90_ms),
        p99_ms: median_by(runs, |p| p.p99_ms),
        max_ms: median_by(runs, |p| p.max_ms),
        mean_ms: median_by(runs, |p| p.mean_ms),
    })
}

/// Per watched process (in first-seen order), the median of its readings over the runs that
/// watched it; the first error any run had with it.
fn median_processes(runs: &[&Report]) -> Vec<ProcessReport> {
    let mut labels: Vec<&str> = Vec::new();
    for p in runs.iter().flat_map(|r| &r.processes) {
        if !labels.contains(&p.label.as_str()) {
            labels.push(&p.label);
        }
    }
    labels
        .into_iter()
        .filter_map(|label| {
            let seen: Vec<&ProcessReport> = runs.iter().filter_map(|r| r.process(label)).collect();
            let first = seen.first()?;
            Some(ProcessReport {
                label: label.to_string(),
                pid: first.pid,
                rss_before_kib: median_count_by(seen.iter().copied(), |p| p.rss_before_kib),
                rss_held_kib: median_count_by(seen.iter().copied(), |p| p.rss_held_kib),
                rss_peak_kib: median_count_by(seen.iter().copied(), |p| p.rss_peak_kib),
                rss_after_kib: median_count_by(seen.iter().copied(), |p| p.rss_after_kib),
                rss_per_session_kib: median(seen.iter().filter_map(|p| p.rss_per_session_kib)),
                cpu_total_s: median_by(seen.iter().copied(), |p| p.cpu_total_s),
                cpu_phase_s: median_by(seen.iter().copied(), |p| p.cpu_phase_s),
                error: seen.iter().find_map(|p| p.error.clone()),
            })
        })
        .collect()
}

/// Errors of all runs, counts summed by kind, each with the first example any run gave.
fn summed_errors(runs: &[&Report]) -> BTreeMap<String, ErrorCount> {
    let mut sum: BTreeMap<String, ErrorCount> = BTreeMap::new();
    for (kind, e) in runs.iter().flat_map(|r| &r.errors) {
        let total = sum.entry(kind.clone()).or_default();
        total.count += e.count;
        if total.example.is_empty() {
            total.example.clone_from(&e.example);
        }
    }
    sum
}

/// One report standing for `runs` (the rounds of one mode and label): label, mode, URL and
/// load of the first run; every figure (percentiles, rates, times, counts, process
/// readings) the median over the runs; errors summed and `timed_out` set when any run timed
/// out, so a failure in any round shows. What the table derives from these (cores, setups
/// per CPU-second) is derived from the medians. One run gives that run back unchanged;
/// `None` when there are no runs.
fn median_report(runs: &[&Report]) -> Option<Report> {
    let first = runs.first()?;
    let each = || runs.iter().copied();
    let latencies = |pick: fn(&Report) -> Option<Percentiles>| {
        median_percentiles(&each().filter_map(pick).collect::<Vec<_>>())
    };
    Some(Report {
        label: first.label.clone(),
        mode: first.mode.clone(),
        url: first.url.clone(),
        params: first.params.clone(),
        wall_s: median_by(each(), |r| r.wall_s),
        phase_s: median_by(each(), |r| r.phase_s),
        sessions_ok: median_count_by(each(), |r| r.sessions_ok),
        sessions_failed: median_count_by(each(), |r| r.sessions_failed),
        sessions_held: median_count_by(each(), |r| r.sessions_held),
        turns_ok: median_count_by(each(), |r| r.turns_ok),
        turn_latency: latencies(|r| r.turn_latency),
        setup_latency: latencies(|r| r.setup_latency),
        frames_sent: median_count_by(each(), |r| r.frames_sent),
        frames_received: median_count_by(each(), |r| r.frames_received),
        frames_per_s: median_by(each(), |r| r.frames_per_s),
        setups_per_s: median_by(each(), |r| r.setups_per_s),
        go_aways: median_count_by(each(), |r| r.go_aways),
        errors: summed_errors(runs),
        timed_out: runs.iter().any(|r| r.timed_out),
        processes: median_processes(runs),
    })
}

/// Which latency of a report a row reads (turns or setups).
type Source = fn(&Report) -> Option<Percentiles>;

/// One figure of a set of percentiles, ms.
type Pick = fn(&Percentiles) -> f64;

/// The latency a mode is judged by: turns for `text` and `audio`, setups for `setup`.
fn latency_source(mode: &str) -> Option<Source> {
    match mode {
        "text" | "audio" => Some(|r| r.turn_latency),
        "setup" => Some(|r| r.setup_latency),
        _ => None,
    }
}

/// The runs of one mode that one table compares, in the order they were given: round i is
/// the i-th `direct` run and the i-th run of the compared side (`gateway`, unless `compare
/// --side` names another label; bench.sh alternates them). Either label may be missing.
struct Rounds<'a> {
    /// The compared side's label.
    side: &'a str,
    direct: Vec<&'a Report>,
    gateway: Vec<&'a Report>,
}

impl<'a> Rounds<'a> {
    /// The `direct` and `side` runs of `mode` among `reports`.
    ///
    /// # Errors
    /// Both labels are there, but not as many times each.
    fn of_mode(reports: &'a [Report], mode: &str, side: &'a str) -> Result<Self, CompareError> {
        let runs = |label: &str| -> Vec<&'a Report> {
            reports
                .iter()
                .filter(|r| r.mode == mode && r.label == label)
                .collect()
        };
        let rounds = Self {
            side,
            direct: runs("direct"),
            gateway: runs(side),
        };
        let (direct, gateway) = (rounds.direct.len(), rounds.gateway.len());
        if direct > 0 && gateway > 0 && direct != gateway {
            return Err(CompareError::UnpairedRounds {
                mode: mode.to_string(),
                side: side.to_string(),
                direct,
                gateway,
            });
        }
        Ok(rounds)
    }

    /// How many rounds there are: the runs of each label (of the one there, when the other
    /// is missing).
    fn count(&self) -> usize {
        self.direct.len().max(self.gateway.len())
    }

    /// Gateway − direct of one figure in each round where both runs have it, in round order.
    fn paired_deltas(&self, figure: impl Fn(&Report) -> Option<f64>) -> Vec<f64> {
        self.direct
            .iter()
            .zip(&self.gateway)
            .filter_map(|(d, g)| Some(figure(g)? - figure(d)?))
            .collect()
    }

    /// Each round's added p50 and p99 of `source`, e.g. `rounds: 3; added p50 per round:
    /// +0.093 +0.121 +0.150 ms; added p99 per round: …`, so the spread behind the medians
    /// shows. Just the count when the mode has no latency.
    fn line(&self, source: Option<Source>) -> String {
        let mut line = format!("rounds: {}", self.count());
        if let Some(source) = source {
            for (name, pick) in [("p50", (|p| p.p50_ms) as Pick), ("p99", |p| p.p99_ms)] {
                let deltas = self.paired_deltas(|r| source(r).map(|p| pick(&p)));
                let shown: Vec<String> = deltas.into_iter().map(signed3).collect();
                let shown = if shown.is_empty() {
                    "-".to_string()
                } else {
                    format!("{} ms", shown.join(" "))
                };
                let _ = write!(line, "; added {name} per round: {shown}");
            }
        }
        line
    }
}

/// What one table is built from: the rounds, and per label the median of its runs.
struct Sides<'a> {
    rounds: Rounds<'a>,
    direct: Option<Report>,
    gateway: Option<Report>,
}

impl<'a> Sides<'a> {
    fn new(rounds: Rounds<'a>) -> Self {
        Self {
            direct: median_report(&rounds.direct),
            gateway: median_report(&rounds.gateway),
            rounds,
        }
    }

    /// The gateway side, or else the direct one: for what both share (mode, load).
    fn any(&self) -> Option<&Report> {
        self.gateway.as_ref().or(self.direct.as_ref())
    }

    /// `f` of each side, `-` for a missing one.
    fn both(&self, f: impl Fn(&Report) -> String) -> (String, String) {
        let side = |r: Option<&Report>| r.map_or_else(|| "-".to_string(), &f);
        (side(self.direct.as_ref()), side(self.gateway.as_ref()))
    }

    /// One latency figure of each side (the median over its runs), and what the gateway adds:
    /// the median of the rounds' gateway − direct.
    fn latency(&self, source: Source, pick: Pick) -> (Option<f64>, Option<f64>, Option<f64>) {
        let figure = |r: &Report| source(r).map(|p| pick(&p));
        (
            self.direct.as_ref().and_then(figure),
            self.gateway.as_ref().and_then(figure),
            median(self.rounds.paired_deltas(figure)),
        )
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
}
