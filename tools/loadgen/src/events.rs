//! The `events` mode: a metering throughput benchmark. Publishes N `UsageReport`s to
//! JetStream as the gateway does (subject `livegate.usage.v1.report`, `Nats-Msg-Id` = event
//! id, acks pipelined), records when each one was acked, and polls ClickHouse's
//! `usage_events` row count until all N rows are there.
//!
//! Publish-to-row lag is estimated from the count timeline: event *i* (0-based, in publish
//! order) is taken to be visible at the first poll whose count (minus the count before the
//! run) exceeds *i*. That is exact when rows appear in publish order, which holds closely here:
//! one publisher on one connection fixes the stream order, and metering fetches and inserts
//! in stream order (batches may interleave a little when several are in flight). The lag's
//! resolution is the poll interval plus one query round trip (the poll's time is taken when
//! its answer arrives, so the estimate errs on the long side).

use crate::cli::EventsArgs;
use crate::procstat::{ProcessReport, Watch, Watched};
use crate::report::{Percentiles, latency_histogram};
use anyhow::Context as _;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use livegate_common::subjects;
use livegate_proto::prost::Message as _;
use livegate_proto::prost_types::Timestamp;
use livegate_proto::usage::{
    MediaMeasurements, Modality, ModalityTokens, SessionContext, TokenUsage, UsageReport,
};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What an `events` run measured (the `--json` form).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventsReport {
    pub label: String,
    pub nats: String,
    pub clickhouse: String,
    pub database: String,
    /// Events asked for.
    pub count: u64,
    /// Sessions the events are spread over.
    pub sessions: u64,
    /// Target publish rate (0 = as fast as possible).
    pub rate: f64,
    /// Most publish acks outstanding.
    pub window: usize,
    pub poll_interval_ms: u64,
    /// Bytes of one encoded report (average).
    pub payload_bytes: f64,
    /// Events JetStream acked.
    pub published: u64,
    /// Publishes that failed (error or no ack).
    pub publish_errors: u64,
    pub publish_error_example: Option<String>,
    /// Start to the last ack, seconds.
    pub publish_s: f64,
    /// `published / publish_s`.
    pub publish_per_s: f64,
    /// Rows counted in `usage_events` at the end (minus those there before).
    pub rows: u64,
    /// Rows in the table before the run.
    pub rows_before: u64,
    /// Start to the first poll that saw all N rows (None: timed out).
    pub end_to_end_s: Option<f64>,
    /// Rows per second between the polls that first saw 10 % and 90 % of N.
    pub insert_per_s_10_90: Option<f64>,
    /// Start to the first row seen, seconds.
    pub first_row_s: Option<f64>,
    /// Publish-ack to row-visible lag (see the module docs for the estimate).
    pub lag: Option<Percentiles>,
    /// Events whose row was never seen.
    pub lag_missing: u64,
    pub polls: u64,
    pub poll_errors: u64,
    pub poll_error_example: Option<String>,
    pub timed_out: bool,
    pub processes: Vec<ProcessReport>,
}

/// One ClickHouse poll: when its answer arrived (ms since the start) and the new rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Poll {
    pub at_ms: f64,
    pub rows: u64,
}

/// The session, sequence number and event id of event `i`: events go round-robin over the
/// sessions, so each session's reports are numbered 1, 2, … in publish order.
pub fn event_ids(run: &str, i: u64, sessions: u64) -> (String, u64, String) {
    let sessions = sessions.max(1);
    let session_id = format!("{run}-s{:06}", i % sessions);
    let seq = i / sessions + 1;
    let event_id = format!("{session_id}:{seq}");
    (session_id, seq, event_id)
}

/// A realistic report for event `i`: a text turn most of the time, an audio turn (AUDIO in
/// and out, with the gateway's audio-seconds measurements) every third, cached tokens every
/// fifth.
pub fn usage_report(run: &str, i: u64, sessions: u64, model: &str, now: SystemTime) -> UsageReport {
    let (session_id, seq, event_id) = event_ids(run, i, sessions);
    let s = i % sessions.max(1);
    let mt = |m: Modality, n: u64| ModalityTokens {
        modality: m as i32,
        token_count: n,
    };
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let audio = seq % 3 == 0;
    let cached = if seq % 5 == 0 { 64 } else { 0 };
    let (tokens, media) = if audio {
        let prompt_audio = 800 + i % 400;
        let response_audio = 600 + i % 300;
        (
            TokenUsage {
                prompt_tokens: prompt_audio + 40,
                response_tokens: response_audio + 25,
                cached_tokens: cached,
                total_tokens: prompt_audio + 40 + response_audio + 25,
                prompt_details: vec![mt(Modality::Text, 40), mt(Modality::Audio, prompt_audio)],
                response_details: vec![mt(Modality::Text, 25), mt(Modality::Audio, response_audio)],
                cache_details: if cached > 0 {
                    vec![mt(Modality::Text, cached)]
                } else {
                    vec![]
                },
                ..TokenUsage::default()
            },
            MediaMeasurements {
                input_audio_seconds: prompt_audio as f64 / 25.0,
                output_audio_seconds: response_audio as f64 / 25.0,
                output_characters: 100 + i % 50,
                ..MediaMeasurements::default()
            },
        )
    } else {
        let prompt = 120 + i % 50;
        let response = 60 + i % 80;
        (
            TokenUsage {
                prompt_tokens: prompt,
                response_tokens: response,
                cached_tokens: cached,
                total_tokens: prompt + response,
                prompt_details: vec![mt(Modality::Text, prompt)],
                response_details: vec![mt(Modality::Text, response)],
                cache_details: if cached > 0 {
                    vec![mt(Modality::Text, cached)]
                } else {
                    vec![]
                },
                ..TokenUsage::default()
            },
            MediaMeasurements {
                input_characters: prompt * 4,
                output_characters: response * 4,
                ..MediaMeasurements::default()
            },
        )
    };
    UsageReport {
        event_id,
        context: Some(SessionContext {
            session_id,
            key_id: format!("bench-key-{}", s % 16),
            team_id: format!("bench-team-{}", s % 4),
            user_id: format!("user-{}", s % 64),
            project: "livegate-bench".into(),
            location: "us-central1".into(),
            model: model.to_string(),
            gateway_id: "bench-gw".into(),
        }),
        seq,
        occurred_at: Some(Timestamp {
            seconds: since.as_secs() as i64,
            nanos: since.subsec_nanos() as i32,
        }),
        tokens: Some(tokens),
        media: Some(media),
    }
}

/// Lag of each acked event: the first poll whose row count exceeds the event's index, minus
/// its ack time. `acks_ms[i]` is `None` for an event that was not acked (skipped). Returns the
/// lags in ms and how many acked events were never seen.
pub fn lags_ms(acks_ms: &[Option<f64>], polls: &[Poll]) -> (Vec<f64>, u64) {
    // Counts only grow; guard against a poll that raced a merge.
    let mut seen = Vec::with_capacity(polls.len());
    let mut max = 0;
    for p in polls {
        max = max.max(p.rows);
        seen.push((p.at_ms, max));
    }
    let mut lags = Vec::with_capacity(acks_ms.len());
    let mut missing = 0;
    for (i, ack) in acks_ms.iter().enumerate() {
        let Some(ack) = ack else { continue };
        let k = seen.partition_point(|(_, rows)| *rows <= i as u64);
        match seen.get(k) {
            Some((at, _)) => lags.push((at - ack).max(0.0)),
            None => missing += 1,
        }
    }
    (lags, missing)
}

/// Time of the first poll with at least `rows` rows.
pub fn first_at(polls: &[Poll], rows: u64) -> Option<f64> {
    polls.iter().find(|p| p.rows >= rows).map(|p| p.at_ms)
}

/// Rows per second between the first polls that saw 10 % and 90 % of `n` rows.
pub fn insert_rate_10_90(polls: &[Poll], n: u64) -> Option<f64> {
    let lo = n / 10;
    let hi = n * 9 / 10;
    let a = polls.iter().find(|p| p.rows >= lo.max(1))?;
    let b = polls.iter().find(|p| p.rows >= hi)?;
    let dt = (b.at_ms - a.at_ms) / 1000.0;
    (dt > 0.0).then(|| (b.rows - a.rows) as f64 / dt)
}

fn clickhouse_client(a: &EventsArgs) -> clickhouse::Client {
    // No validation: it needs RowBinaryWithNamesAndTypes, which ClickHouse 18.16 lacks.
    clickhouse::Client::default()
        .with_url(&a.clickhouse_url)
        .with_user(&a.clickhouse_user)
        .with_password(&a.clickhouse_password)
        .with_validation(false)
}

async fn count_rows(ch: &clickhouse::Client, table: &str) -> anyhow::Result<u64> {
    Ok(ch
        .query(&format!("SELECT count() FROM {table}"))
        .fetch_one::<u64>()
        .await?)
}

/// Runs the benchmark.
///
/// # Errors
/// NATS or ClickHouse unreachable at the start, or `usage_events` missing.
pub async fn run(a: EventsArgs) -> anyhow::Result<EventsReport> {
    anyhow::ensure!(a.count > 0, "--count must be at least 1");
    anyhow::ensure!(
        a.rate >= 0.0 && a.rate.is_finite(),
        "--rate must be 0 (unlimited) or positive"
    );
    anyhow::ensure!(
        a.database
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "--database must be a plain identifier"
    );
    let table = format!("{}.usage_events", a.database);
    let ch = clickhouse_client(&a);
    let rows_before = count_rows(&ch, &table)
        .await
        .with_context(|| format!("counting {table} at {}", a.clickhouse_url))?;

    let client = async_nats::ConnectOptions::new()
        .name("livegate-loadgen events")
        .connect(a.nats.as_str())
        .await
        .with_context(|| format!("connecting to NATS at {}", a.nats))?;
    let mut js = async_nats::jetstream::new(client.clone());
    js.set_timeout(Duration::from_secs(30));
    // As the services would create it (LIVEGATE_STREAM_REPLICAS etc. from the environment).
    let layout =
        livegate_common::stream::StreamLayout::from_env(&livegate_common::env::ProcessEnv)?;
    livegate_common::stream::ensure_usage_stream(&js, subjects::STREAM, &layout).await?;

    let run_id = format!(
        "bench{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
    );
    let n = a.count;
    let mut procs = a.pids.clone();
    procs.push(Watched {
        label: "loadgen".into(),
        pid: std::process::id(),
    });
    let mut watch = Watch::start(procs);
    watch.phase_started();
    let t0 = Instant::now();
    let deadline = t0 + a.timeout;
    let ms = move |t: Instant| t.duration_since(t0).as_secs_f64() * 1000.0;

    // The poller runs from the start, alongside the publisher.
    let poller = {
        let ch = ch.clone();
        let table = table.clone();
        let interval = a.poll_interval;
        #[expect(
            clippy::disallowed_methods,
            reason = "awaited below: the run waits for the poller's result"
        )]
        tokio::spawn(async move {
            let mut polls = Vec::new();
            let mut errors = 0u64;
            let mut example = None;
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while Instant::now() < deadline {
                tick.tick().await;
                match tokio::time::timeout(Duration::from_secs(5), count_rows(&ch, &table)).await {
                    Ok(Ok(c)) => {
                        let rows = c.saturating_sub(rows_before);
                        polls.push(Poll {
                            at_ms: ms(Instant::now()),
                            rows,
                        });
                        if rows >= n {
                            break;
                        }
                    }
                    Ok(Err(e)) => {
                        errors += 1;
                        example.get_or_insert_with(|| format!("{e:#}"));
                    }
                    Err(_) => {
                        errors += 1;
                        example.get_or_insert_with(|| "count query: timeout (5 s)".to_string());
                    }
                }
            }
            (polls, errors, example)
        })
    };

    // The publisher: one connection, at most `window` acks outstanding.
    let mut acks: Vec<Option<f64>> = vec![None; n as usize];
    let mut pending = FuturesUnordered::new();
    let mut publish_errors = 0u64;
    let mut publish_error_example: Option<String> = None;
    let mut payload_bytes = 0u64;
    let window = a.window.max(1);
    let subject: Arc<str> = Arc::from(subjects::USAGE_REPORT);
    let mut note_error = |e: String, errs: &mut u64| {
        *errs += 1;
        publish_error_example.get_or_insert(e);
    };
    let mut timed_out = false;
    for i in 0..n {
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        if a.rate > 0.0 {
            let due = t0 + Duration::from_secs_f64(i as f64 / a.rate);
            if due > Instant::now() + Duration::from_millis(1) {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        while pending.len() >= window {
            if let Some((j, r)) = pending.next().await {
                match r {
                    Ok(()) => acks[j as usize] = Some(ms(Instant::now())),
                    Err(e) => note_error(e, &mut publish_errors),
                }
            }
        }
        let r = usage_report(&run_id, i, a.sessions, &a.model, SystemTime::now());
        let body = r.encode_to_vec();
        payload_bytes += body.len() as u64;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, r.event_id.as_str());
        match js
            .publish_with_headers(subject.to_string(), headers, body.into())
            .await
        {
            Ok(ack) => pending.push(async move {
                let r = match ack.await {
                    Ok(a) if a.duplicate => Err(format!("duplicate: {}", a.sequence)),
                    Ok(_) => Ok(()),
                    Err(e) => Err(format!("ack: {e}")),
                };
                (i, r)
            }),
            Err(e) => note_error(format!("publish: {e}"), &mut publish_errors),
        }
    }
    while let Some((j, r)) = pending.next().await {
        match r {
            Ok(()) => acks[j as usize] = Some(ms(Instant::now())),
            Err(e) => note_error(e, &mut publish_errors),
        }
    }
    let publish_ms = ms(Instant::now());
    let published = acks.iter().filter(|a| a.is_some()).count() as u64;
    let _ = client.flush().await;

    let (polls, poll_errors, poll_error_example) = poller.await.context("poller")?;
    watch.phase_ended();
    let processes = watch.finish(None).await;

    let rows = polls.last().map_or(0, |p| p.rows);
    let end = first_at(&polls, n);
    let (lags, lag_missing) = lags_ms(&acks, &polls);
    let mut h = latency_histogram();
    for l in &lags {
        let _ = h.record(((l * 1000.0) as u64).max(1));
    }
    let publish_s = publish_ms / 1000.0;
    Ok(EventsReport {
        label: a.label.clone(),
        nats: a.nats.clone(),
        clickhouse: a.clickhouse_url.clone(),
        database: a.database.clone(),
        count: n,
        sessions: a.sessions,
        rate: a.rate,
        window,
        poll_interval_ms: a.poll_interval.as_millis() as u64,
        payload_bytes: payload_bytes as f64 / n as f64,
        published,
        publish_errors,
        publish_error_example,
        publish_s,
        publish_per_s: if publish_s > 0.0 {
            published as f64 / publish_s
        } else {
            0.0
        },
        rows,
        rows_before,
        end_to_end_s: end.map(|t| t / 1000.0),
        insert_per_s_10_90: insert_rate_10_90(&polls, n),
        first_row_s: first_at(&polls, 1).map(|t| t / 1000.0),
        lag: Percentiles::of(&h),
        lag_missing,
        polls: polls.len() as u64,
        poll_errors,
        poll_error_example,
        timed_out: timed_out || end.is_none(),
        processes,
    })
}

/// The report as a table.
pub fn render(r: &EventsReport) -> String {
    let mut s = String::new();
    let opt =
        |v: Option<f64>, unit: &str| v.map_or_else(|| "—".to_string(), |v| format!("{v:.2}{unit}"));
    let _ = writeln!(
        s,
        "livegate-loadgen events [{}] nats {} -> metering -> clickhouse {} ({}.usage_events)",
        r.label, r.nats, r.clickhouse, r.database
    );
    let _ = writeln!(
        s,
        "load: {} UsageReports over {} sessions, rate {}, ack window {}, {:.0} B/event, poll every {} ms",
        r.count,
        r.sessions,
        if r.rate > 0.0 {
            format!("{}/s", r.rate)
        } else {
            "unlimited".into()
        },
        r.window,
        r.payload_bytes,
        r.poll_interval_ms
    );
    let rows: Vec<(String, String)> = vec![
        (
            "published (acked)".into(),
            format!("{} ({} errors)", r.published, r.publish_errors),
        ),
        ("publish time".into(), format!("{:.2} s", r.publish_s)),
        (
            "publish rate".into(),
            format!("{:.0} events/s", r.publish_per_s),
        ),
        (
            "rows in usage_events".into(),
            format!("{} of {} (+{} before)", r.rows, r.count, r.rows_before),
        ),
        ("first row after".into(), opt(r.first_row_s, " s")),
        ("end to end (all rows)".into(), opt(r.end_to_end_s, " s")),
        (
            "insert rate 10%→90%".into(),
            r.insert_per_s_10_90
                .map_or_else(|| "—".into(), |v| format!("{v:.0} rows/s")),
        ),
        (
            "end-to-end rate".into(),
            r.end_to_end_s.filter(|t| *t > 0.0).map_or_else(
                || "—".into(),
                |t| format!("{:.0} rows/s", r.count as f64 / t),
            ),
        ),
        (
            "lag ack→row p50 / p90".into(),
            r.lag.as_ref().map_or_else(
                || "—".into(),
                |l| format!("{:.0} ms / {:.0} ms", l.p50_ms, l.p90_ms),
            ),
        ),
        (
            "lag ack→row p99 / max".into(),
            r.lag.as_ref().map_or_else(
                || "—".into(),
                |l| format!("{:.0} ms / {:.0} ms", l.p99_ms, l.max_ms),
            ),
        ),
        ("lag: rows never seen".into(), r.lag_missing.to_string()),
        (
            "polls (errors)".into(),
            format!("{} ({})", r.polls, r.poll_errors),
        ),
    ];
    let w = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    for (k, v) in &rows {
        let _ = writeln!(s, "  {k:<w$}  {v}");
    }
    for p in &r.processes {
        let cores = r
            .end_to_end_s
            .or(Some(r.publish_s))
            .filter(|t| *t > 0.0)
            .map_or_else(String::new, |t| {
                format!(" ({:.0}% of one core)", p.cpu_phase_s / t * 100.0)
            });
        let _ = writeln!(
            s,
            "  process {:<10} pid {:<7} cpu {:.2} s{cores}, rss before {:.1} MiB, peak {:.1} MiB, after {:.1} MiB{}",
            p.label,
            p.pid,
            p.cpu_phase_s,
            p.rss_before_kib as f64 / 1024.0,
            p.rss_peak_kib as f64 / 1024.0,
            p.rss_after_kib as f64 / 1024.0,
            p.error
                .as_deref()
                .map_or_else(String::new, |e| format!(" [{e}]"))
        );
    }
    if let Some(e) = &r.publish_error_example {
        let _ = writeln!(s, "  publish error example: {e}");
    }
    if let Some(e) = &r.poll_error_example {
        let _ = writeln!(s, "  poll error example: {e}");
    }
    if r.timed_out {
        let _ = writeln!(s, "  TIMED OUT before all rows arrived");
    }
    let _ = writeln!(
        s,
        "  (lag: event i counts as visible at the first poll whose row count exceeds i, i.e. rows \
         are assumed to arrive in publish order; resolution = poll interval + query time)"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_sequenced_per_session() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            let (_, _, id) = event_ids("r", i, 7);
            assert!(seen.insert(id));
        }
        assert_eq!(
            event_ids("r", 0, 7),
            ("r-s000000".into(), 1, "r-s000000:1".into())
        );
        assert_eq!(
            event_ids("r", 8, 7),
            ("r-s000001".into(), 2, "r-s000001:2".into())
        );
    }

    #[test]
    fn reports_are_realistic() {
        let r = usage_report("r", 5, 1, "gemini-live-2.5-flash", SystemTime::now());
        let t = r.tokens.unwrap();
        assert_eq!(r.seq, 6);
        assert_eq!(t.total_tokens, t.prompt_tokens + t.response_tokens);
        assert!(r.media.unwrap().input_audio_seconds > 0.0);
        assert_eq!(r.context.unwrap().model, "gemini-live-2.5-flash");
    }

    #[test]
    fn lag_is_read_off_the_count_timeline() {
        let acks = vec![Some(0.0), Some(10.0), Some(20.0), None, Some(40.0)];
        let polls = [
            Poll {
                at_ms: 50.0,
                rows: 0,
            },
            Poll {
                at_ms: 100.0,
                rows: 2,
            },
            Poll {
                at_ms: 150.0,
                rows: 4,
            },
        ];
        let (lags, missing) = lags_ms(&acks, &polls);
        assert_eq!(lags, vec![100.0, 90.0, 130.0]);
        assert_eq!(missing, 1);
        assert_eq!(first_at(&polls, 4), Some(150.0));
        assert_eq!(first_at(&polls, 5), None);
        let polls = [
            Poll {
                at_ms: 0.0,
                rows: 0,
            },
            Poll {
                at_ms: 1000.0,
                rows: 10,
            },
            Poll {
                at_ms: 2000.0,
                rows: 90,
            },
            Poll {
                at_ms: 3000.0,
                rows: 100,
            },
        ];
        assert_eq!(insert_rate_10_90(&polls, 100), Some(80.0));
    }
}
