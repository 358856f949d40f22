//! Resident memory and CPU time of other processes (the gateway, the emulator), read from
//! `/proc/PID/status` (`VmRSS`) and `/proc/PID/stat` (`utime` + `stime`).

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A process to watch, as given by `--pid LABEL=PID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub label: String,
    pub pid: u32,
}

impl Watched {
    /// Parses `LABEL=PID` or a bare `PID` (labelled `pid<PID>`).
    ///
    /// # Errors
    /// A message for clap when the PID is not a positive number or the label is empty.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (label, pid) = match s.split_once('=') {
            Some((l, p)) => (l.trim().to_string(), p.trim()),
            None => (String::new(), s.trim()),
        };
        let pid: u32 = pid
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{s:?}: expected LABEL=PID with a numeric PID"))?;
        if s.contains('=') && label.is_empty() {
            return Err(format!("{s:?}: empty label"));
        }
        let label = if label.is_empty() {
            format!("pid{pid}")
        } else {
            label
        };
        Ok(Self { label, pid })
    }
}

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    /// `VmRSS`, KiB.
    pub rss_kib: u64,
    /// `utime + stime`, clock ticks.
    pub cpu_ticks: u64,
}

/// The `VmRSS` line of `/proc/PID/status`, in KiB (the kernel writes `kB` meaning KiB).
pub fn parse_vmrss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `utime + stime` (fields 14 and 15) of `/proc/PID/stat`. The command name (field 2) is in
/// parentheses and may itself contain spaces and parentheses, so fields are counted from the
/// last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // After ')' the first field is field 3 (state); utime is field 14, i.e. the 12th here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`), 100 when it cannot be asked.
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// Reads a process now.
///
/// # Errors
/// The process is gone or `/proc` is unreadable.
pub fn sample(pid: u32) -> std::io::Result<Sample> {
    let bad = |what| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    Ok(Sample {
        rss_kib: parse_vmrss_kib(&status).ok_or_else(|| bad("no VmRSS in /proc/PID/status"))?,
        cpu_ticks: parse_cpu_ticks(&stat).ok_or_else(|| bad("unparsable /proc/PID/stat"))?,
    })
}

/// What a run reports about one watched process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessReport {
    pub label: String,
    pub pid: u32,
    /// RSS when the run started, KiB.
    pub rss_before_kib: u64,
    /// RSS with every session open: when the measured phase starts, or for `idle` at the end
    /// of the hold.
    pub rss_held_kib: u64,
    /// Largest RSS seen (sampled every 200 ms).
    pub rss_peak_kib: u64,
    /// RSS after the sessions were closed.
    pub rss_after_kib: u64,
    /// `(held − before) / sessions held`, KiB (modes that hold sessions).
    pub rss_per_session_kib: Option<f64>,
    /// CPU seconds over the whole run (ramp-up, phase, close).
    pub cpu_total_s: f64,
    /// CPU seconds during the measured phase.
    pub cpu_phase_s: f64,
    /// Set when the process could not be read at some point (e.g. it exited).
    pub error: Option<String>,
}

/// Readings of the watched processes over a run: before, at the phase boundaries, after,
/// plus a background sampler for the peak RSS.
pub struct Watch {
    procs: Vec<Watched>,
    tck: u64,
    before: Vec<Option<Sample>>,
    phase_start: Vec<Option<Sample>>,
    phase_end: Vec<Option<Sample>>,
    held: Vec<Option<Sample>>,
    peaks: Arc<Vec<AtomicU64>>,
    errors: Vec<Option<String>>,
    sampler: Option<tokio::task::JoinHandle<()>>,
}

/// How often the peak sampler reads `/proc`.
const PEAK_INTERVAL: Duration = Duration::from_millis(200);

impl Watch {
    /// Takes the "before" readings and starts the peak sampler (inside a tokio runtime).
    pub fn start(procs: Vec<Watched>) -> Self {
        let n = procs.len();
        let mut w = Self {
            tck: if procs.is_empty() {
                100
            } else {
                clock_ticks_per_second()
            },
            before: vec![None; n],
            phase_start: vec![None; n],
            phase_end: vec![None; n],
            held: vec![None; n],
            peaks: Arc::new((0..n).map(|_| AtomicU64::new(0)).collect()),
            errors: vec![None; n],
            sampler: None,
            procs,
        };
        w.before = w.read_all();
        if !w.procs.is_empty() {
            let pids: Vec<u32> = w.procs.iter().map(|p| p.pid).collect();
            let peaks = w.peaks.clone();
            #[expect(
                clippy::disallowed_methods,
                reason = "detached on purpose: it only reads /proc and is aborted in `finish`"
            )]
            let sampler = tokio::spawn(async move {
                let mut tick = tokio::time::interval(PEAK_INTERVAL);
                loop {
                    tick.tick().await;
                    for (i, pid) in pids.iter().enumerate() {
                        if let Ok(s) = sample(*pid) {
                            peaks[i].fetch_max(s.rss_kib, Ordering::Relaxed);
                        }
                    }
                }
            });
            w.sampler = Some(sampler);
        }
        w
    }

    fn read_all(&mut self) -> Vec<Option<Sample>> {
        let mut out = Vec::with_capacity(self.procs.len());
        for (i, p) in self.procs.iter().enumerate() {
            match sample(p.pid) {
                Ok(s) => {
                    self.peaks[i].fetch_max(s.rss_kib, Ordering::Relaxed);
                    out.push(Some(s));
                }
                Err(e) => {
                    self.errors[i].get_or_insert_with(|| format!("pid {}: {e}", p.pid));
                    out.push(None);
                }
            }
        }
        out
    }

    /// The measured phase starts now.
    pub fn phase_started(&mut self) {
        self.phase_start = self.read_all();
        self.held.clone_from(&self.phase_start);
    }

    /// Every session is open now (for `idle`, the end of the hold).
    pub fn sessions_held(&mut self) {
        self.held = self.read_all();
    }

    /// The measured phase ended now.
    pub fn phase_ended(&mut self) {
        self.phase_end = self.read_all();
    }

    /// Takes the "after" readings and builds the reports; `held_sessions` divides the RSS growth.
    pub async fn finish(mut self, held_sessions: Option<u64>) -> Vec<ProcessReport> {
        if let Some(s) = self.sampler.take() {
            s.abort();
            let _ = s.await;
        }
        let after = self.read_all();
        let tck = self.tck as f64;
        let cpu = |a: Option<Sample>, b: Option<Sample>| match (a, b) {
            (Some(a), Some(b)) => b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / tck,
            _ => 0.0,
        };
        let rss = |s: Option<Sample>| s.map_or(0, |s| s.rss_kib);
        self.procs
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let before = self.before[i];
                let held = self.held[i];
                ProcessReport {
                    label: p.label.clone(),
                    pid: p.pid,
                    rss_before_kib: rss(before),
                    rss_held_kib: rss(held),
                    rss_peak_kib: self.peaks[i].load(Ordering::Relaxed),
                    rss_after_kib: rss(after[i]),
                    rss_per_session_kib: match (held_sessions, before, held) {
                        (Some(n), Some(b), Some(h)) if n > 0 => {
                            Some((h.rss_kib as f64 - b.rss_kib as f64) / n as f64)
                        }
                        _ => None,
                    },
                    cpu_total_s: cpu(before, after[i]),
                    cpu_phase_s: cpu(self.phase_start[i], self.phase_end[i]),
                    error: self.errors[i].clone(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmrss_is_read_from_status() {
        let status = "Name:\tlivegate-gatewa\nVmPeak:\t  900000 kB\nVmRSS:\t   12345 kB\nRssAnon:\t 100 kB\n";
        assert_eq!(parse_vmrss_kib(status), Some(12345));
        assert_eq!(parse_vmrss_kib("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn cpu_ticks_skip_a_command_name_with_spaces_and_parens() {
        // Fields: pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
        // cmajflt utime stime cutime ...
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 5000 0 0 0 731 269 7 3 20 0 4 0";
        assert_eq!(parse_cpu_ticks(stat), Some(1000));
        assert_eq!(parse_cpu_ticks("4242 (short) S 1 2"), None);
        assert_eq!(parse_cpu_ticks("no parens"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0);
        assert!(clock_ticks_per_second() > 0);
    }

    #[test]
    fn pid_arguments() {
        assert_eq!(
            Watched::parse("gateway=1234").unwrap(),
            Watched {
                label: "gateway".into(),
                pid: 1234
            }
        );
        assert_eq!(Watched::parse("77").unwrap().label, "pid77");
        assert!(Watched::parse("gateway=").is_err());
        assert!(Watched::parse("=12").is_err());
        assert!(Watched::parse("gateway=0").is_err());
    }
}
