//! One report standing for several rounds of a mode and label: the median of every figure,
//! errors summed (what `compare` shows when a label ran more than once).

use super::model::{ErrorCount, Percentiles, Report};
use crate::procstat::ProcessReport;
use std::collections::BTreeMap;

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
pub(super) fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(f64::total_cmp);
    middle(&v).map(|(lo, hi)| (lo + hi) / 2.0)
}

/// The median of whole numbers, an even number of them giving the middle two's mean rounded
/// half up; `None` when there are none.
pub(super) fn median_u64(values: impl IntoIterator<Item = u64>) -> Option<u64> {
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
pub(super) fn median_report(runs: &[&Report]) -> Option<Report> {
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
