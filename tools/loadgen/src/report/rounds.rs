//! Which runs one comparison table pairs: the [`Rounds`] of a mode (the i-th `direct` run with
//! the i-th run of the compared side), [`CompareError`] when they do not pair, and the
//! [`Sides`] (each label's median report) a table is built from.

use super::median::{median, median_report};
use super::model::{Percentiles, Report};
use super::table::signed3;
use std::fmt::Write as _;

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

/// Which latency of a report a row reads (turns or setups).
pub(super) type Source = fn(&Report) -> Option<Percentiles>;

/// One figure of a set of percentiles, ms.
pub(super) type Pick = fn(&Percentiles) -> f64;

/// The latency a mode is judged by: turns for `text` and `audio`, setups for `setup`.
pub(super) fn latency_source(mode: &str) -> Option<Source> {
    match mode {
        "text" | "audio" => Some(|r| r.turn_latency),
        "setup" => Some(|r| r.setup_latency),
        _ => None,
    }
}

/// The runs of one mode that one table compares, in the order they were given: round i is
/// the i-th `direct` run and the i-th run of the compared side (`gateway`, unless `compare
/// --side` names another label; bench.sh alternates them). Either label may be missing.
pub(super) struct Rounds<'a> {
    /// The compared side's label.
    pub(super) side: &'a str,
    pub(super) direct: Vec<&'a Report>,
    pub(super) gateway: Vec<&'a Report>,
}

impl<'a> Rounds<'a> {
    /// The `direct` and `side` runs of `mode` among `reports`.
    ///
    /// # Errors
    /// Both labels are there, but not as many times each.
    pub(super) fn of_mode(
        reports: &'a [Report],
        mode: &str,
        side: &'a str,
    ) -> Result<Self, CompareError> {
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
    pub(super) fn count(&self) -> usize {
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
    pub(super) fn line(&self, source: Option<Source>) -> String {
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
pub(super) struct Sides<'a> {
    pub(super) rounds: Rounds<'a>,
    pub(super) direct: Option<Report>,
    pub(super) gateway: Option<Report>,
}

impl<'a> Sides<'a> {
    pub(super) fn new(rounds: Rounds<'a>) -> Self {
        Self {
            direct: median_report(&rounds.direct),
            gateway: median_report(&rounds.gateway),
            rounds,
        }
    }

    /// The gateway side, or else the direct one: for what both share (mode, load).
    pub(super) fn any(&self) -> Option<&Report> {
        self.gateway.as_ref().or(self.direct.as_ref())
    }

    /// `f` of each side, `-` for a missing one.
    pub(super) fn both(&self, f: impl Fn(&Report) -> String) -> (String, String) {
        let side = |r: Option<&Report>| r.map_or_else(|| "-".to_string(), &f);
        (side(self.direct.as_ref()), side(self.gateway.as_ref()))
    }

    /// One latency figure of each side (the median over its runs), and what the gateway adds:
    /// the median of the rounds' gateway − direct.
    pub(super) fn latency(
        &self,
        source: Source,
        pick: Pick,
    ) -> (Option<f64>, Option<f64>, Option<f64>) {
        let figure = |r: &Report| source(r).map(|p| pick(&p));
        (
            self.direct.as_ref().and_then(figure),
            self.gateway.as_ref().and_then(figure),
            median(self.rounds.paired_deltas(figure)),
        )
    }
}
