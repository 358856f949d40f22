//! What a run measured: [`Report`] (also the `--json` output and what `compare` reads back),
//! its parts (latency [`Percentiles`], [`ErrorCount`]s, the load's [`Params`]) and the latency
//! histogram the runs record into.

use crate::procstat::ProcessReport;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Highest value a latency histogram tracks, µs (longer values are clamped to it).
pub const MAX_LATENCY_US: u64 = 600_000_000;

/// A histogram of microseconds with 3 significant digits.
#[expect(
    clippy::expect_used,
    reason = "constant bounds, valid for hdrhistogram; covered by a test"
)]
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
