//! The `resume` mode: what a transparent resumption costs the client and the gateway.
//!
//! Each session asks for `sessionResumption` and runs text turns back to back (the next sent
//! as soon as the previous `turnComplete` arrives), so the only silence a client sees is a
//! resumption's. The emulator names a handle's connection (`<session>.c<N>.h<M>`) and sends
//! one right after each `setupComplete`; the gateway forwards updates to a client that asked
//! for them. So when a handle names a new connection, the gap is the time since the frame
//! before it (the old connection's last). CPU per resumption is the watched gateway's CPU
//! during the run minus what its turns cost at `--baseline-cpu-per-turn-ms`, per resumption.

use crate::cli::Common;
use crate::client::{self, Target};
use crate::procstat::Watch;
use futures_util::{SinkExt, StreamExt};
use memchr::memmem;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// What a `resume` run reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResumeReport {
    pub label: String,
    pub sessions: u64,
    pub sessions_failed: u64,
    pub turns: u64,
    /// Upstream connection changes seen by the clients.
    pub resumptions: u64,
    /// Gap at a resumption, milliseconds: p50, p99, max.
    pub gap_ms: [f64; 3],
    /// Send to `turnComplete`, milliseconds: p50, p99.
    pub turn_ms: [f64; 2],
    /// The `gateway` process's CPU seconds during the turns.
    pub cpu_s: f64,
    pub cpu_per_turn_ms: f64,
    pub cpu_per_resumption_ms: Option<f64>,
    /// Sessions that saw a close or error, by kind.
    pub errors: Vec<String>,
}

#[derive(Debug, Default)]
struct SessionResult {
    turns: u64,
    gaps: Vec<Duration>,
    turn_times: Vec<Duration>,
    error: Option<String>,
}

/// `c<N>` of a handle `<session>.c<N>.h<M>` in an update frame.
fn handle_connection(payload: &[u8]) -> Option<u64> {
    memmem::find(payload, b"sessionResumptionUpdate")?;
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let handle = v.pointer("/sessionResumptionUpdate/newHandle")?.as_str()?;
    handle
        .rsplit('.')
        .find_map(|p| p.strip_prefix('c'))?
        .parse()
        .ok()
}

async fn session(target: Target, n: u64, model: String, until: Instant) -> SessionResult {
    let mut r = SessionResult::default();
    let setup = Message::text(
        serde_json::json!({"setup": {"model": model, "generationConfig": {"responseModalities": ["TEXT"]},
            "sessionResumption": {}}})
        .to_string(),
    );
    let turn = Message::text(
        r#"{"clientContent":{"turns":[{"role":"user","parts":[{"text":"How are you?"}]}],"turnComplete":true}}"#,
    );
    let mut ws = match target.open(n, &setup).await {
        Ok(ws) => ws,
        Err(e) => {
            r.error = Some(e.kind());
            return r;
        }
    };
    let mut connection = 0;
    let mut last_frame = Instant::now();
    'turns: while Instant::now() < until {
        let sent = Instant::now();
        if let Err(e) = ws.send(turn.clone()).await {
            r.error = Some(format!("send: {e}"));
            break;
        }
        loop {
            let msg = match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
                Err(_) => {
                    r.error = Some("timeout: turn".into());
                    break 'turns;
                }
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => {
                    r.error = Some(format!("lost: {e}"));
                    break 'turns;
                }
                Ok(None) => {
                    r.error = Some("lost: ended".into());
                    break 'turns;
                }
            };
            let payload = match &msg {
                Message::Text(t) => t.as_bytes(),
                Message::Binary(b) => b,
                Message::Close(f) => {
                    r.error = Some(format!(
                        "close {}",
                        f.as_ref().map_or(1005, |f| u16::from(f.code))
                    ));
                    break 'turns;
                }
                _ => continue,
            };
            let now = Instant::now();
            if let Some(c) = handle_connection(payload) {
                if connection != 0 && c != connection {
                    r.gaps.push(now - last_frame);
                }
                connection = c;
            }
            last_frame = now;
            if crate::frames::classify(payload).turn_complete {
                r.turns += 1;
                r.turn_times.push(now - sent);
                break;
            }
        }
    }
    let _ = client::close(ws).await;
    r
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

/// Runs the sessions and reports.
///
/// # Errors
/// A bad URL.
pub async fn run(
    common: &Common,
    sessions: u64,
    duration: Duration,
    baseline_cpu_per_turn_ms: Option<f64>,
) -> anyhow::Result<ResumeReport> {
    let target = Target::new(
        &common.url,
        common.key.clone(),
        common.bind_ips.clone(),
        common.connect_timeout,
    )
    .await?;
    let mut watch = Watch::start(common.pids.clone());
    watch.phase_started();
    let until = Instant::now() + duration;
    let mut set = JoinSet::new();
    for n in 0..sessions {
        set.spawn(session(target.clone(), n, common.model.clone(), until));
    }
    let mut report = ResumeReport {
        label: common.label.clone(),
        sessions,
        ..ResumeReport::default()
    };
    let (mut gaps, mut turns) = (Vec::new(), Vec::new());
    let all = async {
        while let Some(r) = set.join_next().await {
            let Ok(r) = r else { continue };
            report.turns += r.turns;
            gaps.extend(r.gaps);
            turns.extend(r.turn_times);
            if let Some(e) = r.error {
                report.sessions_failed += 1;
                report.errors.push(e);
            }
        }
    };
    if tokio::time::timeout(common.timeout, all).await.is_err() {
        report.errors.push("timeout: run".into());
    }
    watch.phase_ended();
    let procs = watch.finish(None).await;
    gaps.sort();
    turns.sort();
    report.resumptions = gaps.len() as u64;
    report.gap_ms = [
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.99),
        percentile(&gaps, 1.0),
    ];
    report.turn_ms = [percentile(&turns, 0.5), percentile(&turns, 0.99)];
    report.cpu_s = procs
        .iter()
        .find(|p| p.label == "gateway")
        .map_or(0.0, |p| p.cpu_phase_s);
    if report.turns > 0 {
        report.cpu_per_turn_ms = report.cpu_s * 1e3 / report.turns as f64;
    }
    if let Some(base) = baseline_cpu_per_turn_ms
        && report.resumptions > 0
    {
        let extra = report.cpu_s * 1e3 - base * report.turns as f64;
        report.cpu_per_resumption_ms = Some(extra / report.resumptions as f64);
    }
    Ok(report)
}

/// The report as a few lines of text.
pub fn render(r: &ResumeReport) -> String {
    let mut s = format!(
        "resume ({}): {} sessions ({} failed), {} turns, {} resumptions\n",
        r.label, r.sessions, r.sessions_failed, r.turns, r.resumptions
    );
    s += &format!(
        "  gap at a resumption: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n",
        r.gap_ms[0], r.gap_ms[1], r.gap_ms[2]
    );
    s += &format!(
        "  turn latency: p50 {:.2} ms, p99 {:.2} ms\n",
        r.turn_ms[0], r.turn_ms[1]
    );
    s += &format!(
        "  gateway CPU: {:.2} s, {:.3} ms per turn",
        r.cpu_s, r.cpu_per_turn_ms
    );
    match r.cpu_per_resumption_ms {
        Some(c) => s += &format!(", {c:.2} ms per resumption\n"),
        None => s += "\n",
    }
    if !r.errors.is_empty() {
        s += &format!("  errors: {:?}\n", r.errors);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_name_their_connection() {
        let f = br#"{"sessionResumptionUpdate":{"newHandle":"emu-1a-3.c2.h7","resumable":true}}"#;
        assert_eq!(handle_connection(f), Some(2));
        assert_eq!(handle_connection(br#"{"serverContent":{}}"#), None);
    }
}
