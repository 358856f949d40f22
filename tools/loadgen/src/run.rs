//! The four modes.
//!
//! `text`, `audio` and `idle` share one shape: a coordinator opens N sessions at most
//! `connect_rate` per second, each session task reports when its setup completed or failed,
//! and once all have settled the coordinator starts the measured phase (every session starts
//! together, so the phase really runs at N concurrent sessions). Turns run on a per-session
//! schedule; `idle` holds until the coordinator says stop. `setup` is C loops of
//! connect/setup/close. Everything is bounded by the run's total timeout.

use crate::cli::{Command, Common, SessionArgs, TurnArgs};
use crate::client::{self, Failure, Target, Ws};
use crate::frames::{CHUNK_MS, Frames};
use crate::procstat::{Watch, Watched};
use crate::report::{ErrorCount, Params, Percentiles, Report, latency_histogram};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

/// How often progress is logged while ramping up.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// Pause after a failed attempt in `setup` mode, so a refusing target is not spun on.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Text,
    Audio,
    Idle,
    Setup,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Audio => "audio",
            Self::Idle => "idle",
            Self::Setup => "setup",
        }
    }
}

/// Everything a run needs, shared read-only by the session tasks.
struct Plan {
    mode: Mode,
    target: Target,
    frames: Frames,
    label: String,
    sessions: u64,
    connect_rate: f64,
    turns: u64,
    turn_interval: Duration,
    turn_timeout: Duration,
    audio_chunks: u64,
    /// Time between audio chunks (`None`: as fast as possible).
    chunk_gap: Option<Duration>,
    hold: Duration,
    duration: Duration,
    count: Option<u64>,
    timeout: Duration,
    params: Params,
}

/// Counters and histograms the sessions fill in.
struct Stats {
    start: Instant,
    turn: Mutex<Histogram<u64>>,
    setup: Mutex<Histogram<u64>>,
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
    turns_ok: AtomicU64,
    go_aways: AtomicU64,
    /// Sessions that set up but failed afterwards.
    lost: AtomicU64,
    /// `setup` mode: completed and failed cycles.
    cycles_ok: AtomicU64,
    cycles_failed: AtomicU64,
    /// When the last turn completed, µs since `start`.
    last_turn_us: AtomicU64,
    errors: Mutex<BTreeMap<String, ErrorCount>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

impl Stats {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            turn: Mutex::new(latency_histogram()),
            setup: Mutex::new(latency_histogram()),
            frames_sent: AtomicU64::new(0),
            frames_received: AtomicU64::new(0),
            turns_ok: AtomicU64::new(0),
            go_aways: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            cycles_ok: AtomicU64::new(0),
            cycles_failed: AtomicU64::new(0),
            last_turn_us: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
        }
    }

    fn error(&self, f: &Failure) {
        self.errors_n(f, 1);
    }

    fn errors_n(&self, f: &Failure, n: u64) {
        let mut errors = locked(&self.errors);
        let e = errors.entry(f.kind()).or_default();
        e.count += n;
        if e.example.is_empty() {
            e.example = f.detail();
        }
    }

    fn setup_done(&self, took: Duration) {
        locked(&self.setup).saturating_record(micros(took));
    }

    fn turn_done(&self, took: Duration) {
        locked(&self.turn).saturating_record(micros(took));
        self.turns_ok.fetch_add(1, Ordering::Relaxed);
        self.last_turn_us
            .fetch_max(micros(self.start.elapsed()), Ordering::Relaxed);
    }
}

/// Where the run is, as the sessions see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ramp,
    Go(Instant),
    Stop,
}

/// What a session tells the coordinator.
#[derive(Debug)]
enum Event {
    /// Setup completed (true) or failed (false).
    Ready(bool),
    /// A session that set up has finished its phase work (or failed).
    Done,
}

fn plan_from(
    mode: Mode,
    common: &Common,
    target: Target,
    sessions: Option<&SessionArgs>,
    turns: Option<&TurnArgs>,
) -> Plan {
    let (n, rate) = sessions.map_or((0, 0.0), |s| (s.sessions, s.connect_rate.max(0.0)));
    let (t, interval, turn_timeout) = turns
        .map_or((0, Duration::ZERO, Duration::from_secs(30)), |t| {
            (t.turns, t.turn_interval, t.turn_timeout)
        });
    Plan {
        mode,
        target,
        frames: Frames::new(&common.model, "TEXT", ""),
        label: common.label.clone(),
        sessions: n,
        connect_rate: rate,
        turns: t,
        turn_interval: interval,
        turn_timeout,
        audio_chunks: 0,
        chunk_gap: None,
        hold: Duration::ZERO,
        duration: Duration::ZERO,
        count: None,
        timeout: common.timeout,
        params: Params {
            sessions: n,
            turns: t,
            turn_interval_ms: interval.as_millis() as u64,
            connect_rate: rate,
            ..Params::default()
        },
    }
}

/// Runs a load command and returns its report (`compare` is handled by the caller).
///
/// # Errors
/// A bad URL or a `compare` command.
pub async fn run(command: Command) -> anyhow::Result<Report> {
    let (plan, pids) = match command {
        Command::Text {
            common,
            sessions,
            turns,
            text,
        } => {
            let target = target_of(&common).await?;
            let mut plan = plan_from(Mode::Text, &common, target, Some(&sessions), Some(&turns));
            plan.frames = Frames::new(&common.model, "TEXT", &text);
            (plan, common.pids)
        }
        Command::Audio {
            common,
            sessions,
            turns,
            audio_seconds,
            speed,
            response,
        } => {
            anyhow::ensure!(
                audio_seconds > 0.0 && audio_seconds.is_finite(),
                "--audio-seconds must be positive"
            );
            anyhow::ensure!(
                speed >= 0.0 && speed.is_finite(),
                "--speed must be 0 or positive"
            );
            let target = target_of(&common).await?;
            let mut plan = plan_from(Mode::Audio, &common, target, Some(&sessions), Some(&turns));
            plan.frames = Frames::new(&common.model, response.as_str(), "");
            plan.audio_chunks = (audio_seconds * 1000.0 / CHUNK_MS as f64).ceil() as u64;
            plan.chunk_gap = (speed > 0.0).then(|| Duration::from_millis(CHUNK_MS).div_f64(speed));
            plan.params.audio_seconds = audio_seconds;
            plan.params.speed = speed;
            (plan, common.pids)
        }
        Command::Idle {
            common,
            sessions,
            hold,
        } => {
            let target = target_of(&common).await?;
            let mut plan = plan_from(Mode::Idle, &common, target, Some(&sessions), None);
            plan.hold = hold;
            plan.params.hold_ms = hold.as_millis() as u64;
            (plan, common.pids)
        }
        Command::Setup {
            common,
            concurrency,
            duration,
            count,
        } => {
            let target = target_of(&common).await?;
            let mut plan = plan_from(Mode::Setup, &common, target, None, None);
            plan.sessions = concurrency.max(1);
            plan.duration = duration;
            plan.count = count;
            plan.params.sessions = plan.sessions;
            plan.params.duration_ms = duration.as_millis() as u64;
            plan.params.count = count;
            (plan, common.pids)
        }
        Command::Compare { .. } => anyhow::bail!("compare is not a load run"),
        Command::Relay { .. } => anyhow::bail!("relay is not a load run"),
        Command::Resume { .. } => anyhow::bail!("resume runs through resume::run"),
        Command::Events { .. } => anyhow::bail!("events runs through events::run"),
    };
    let plan = Arc::new(plan);
    // The generator's own footprint, to tell when it, not the target, is the bottleneck.
    let mut pids = pids;
    pids.push(Watched {
        label: "loadgen".into(),
        pid: std::process::id(),
    });
    let watch = Watch::start(pids);
    Ok(match plan.mode {
        Mode::Setup => run_setup(plan, watch).await,
        _ => run_sessions(plan, watch).await,
    })
}

async fn target_of(common: &Common) -> anyhow::Result<Target> {
    Target::new(
        &common.url,
        common.key.clone(),
        common.bind_ips.clone(),
        common.connect_timeout,
    )
    .await
}

fn base_report(plan: &Plan, stats: &Stats) -> Report {
    Report {
        label: plan.label.clone(),
        mode: plan.mode.as_str().to_string(),
        url: plan.target.url.clone(),
        params: plan.params.clone(),
        turn_latency: Percentiles::of(&locked(&stats.turn)),
        setup_latency: Percentiles::of(&locked(&stats.setup)),
        frames_sent: stats.frames_sent.load(Ordering::Relaxed),
        frames_received: stats.frames_received.load(Ordering::Relaxed),
        turns_ok: stats.turns_ok.load(Ordering::Relaxed),
        go_aways: stats.go_aways.load(Ordering::Relaxed),
        errors: locked(&stats.errors).clone(),
        ..Report::default()
    }
}

/// `text`, `audio`, `idle`.
async fn run_sessions(plan: Arc<Plan>, mut procs: Watch) -> Report {
    let stats = Arc::new(Stats::new());
    let start = stats.start;
    let deadline = start + plan.timeout;
    let n = plan.sessions;
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let (phase_tx, phase_rx) = watch::channel(Phase::Ramp);
    let mut set = JoinSet::new();
    let (mut spawned, mut settled, mut ok, mut done) = (0u64, 0u64, 0u64, 0u64);
    let mut timed_out = false;
    let mut next_progress = start + PROGRESS_EVERY;

    // Ramp-up: open sessions at most connect_rate per second until every one has settled.
    while settled < n {
        let next_spawn = (spawned < n).then(|| {
            if plan.connect_rate > 0.0 {
                start + Duration::from_secs_f64(spawned as f64 / plan.connect_rate)
            } else {
                Instant::now()
            }
        });
        tokio::select! {
            biased;
            ev = ev_rx.recv() => match ev {
                Some(Event::Ready(true)) => { ok += 1; settled += 1; }
                Some(Event::Ready(false)) => settled += 1,
                Some(Event::Done) => done += 1,
                None => break,
            },
            () = sleep_until(next_spawn.unwrap_or(deadline)), if next_spawn.is_some() => {
                set.spawn(session(spawned, plan.clone(), stats.clone(), ev_tx.clone(), phase_rx.clone()));
                spawned += 1;
            }
            () = sleep_until(deadline) => { timed_out = true; break; }
        }
        if Instant::now() >= next_progress {
            next_progress += PROGRESS_EVERY;
            tracing::info!(
                opened = spawned,
                set_up = ok,
                failed = settled - ok,
                of = n,
                "ramping up"
            );
        }
    }
    let ramp = start.elapsed();
    tracing::info!(
        set_up = ok,
        failed = settled - ok,
        ramp_s = ramp.as_secs_f64(),
        "ramp-up done"
    );

    // The measured phase.
    let go = Instant::now();
    let mut held = None;
    let mut phase_end = go;
    if !timed_out {
        procs.phase_started();
        let _ = phase_tx.send(Phase::Go(go));
        match plan.mode {
            Mode::Idle => {
                let until = (go + plan.hold).min(deadline);
                // Sessions that end early are counted in `stats.lost`; just drain events.
                loop {
                    tokio::select! {
                        _ = ev_rx.recv() => {}
                        () = sleep_until(until) => break,
                    }
                }
                timed_out = until == deadline && go + plan.hold > deadline;
                held = Some(ok.saturating_sub(stats.lost.load(Ordering::Relaxed)));
                procs.sessions_held();
                procs.phase_ended();
                phase_end = Instant::now();
                let _ = phase_tx.send(Phase::Stop);
            }
            _ => {
                while done < ok {
                    tokio::select! {
                        ev = ev_rx.recv() => match ev {
                            Some(Event::Done) => done += 1,
                            Some(Event::Ready(_)) => {}
                            None => break,
                        },
                        () = sleep_until(deadline) => { timed_out = true; break; }
                    }
                }
                procs.phase_ended();
                let last = stats.last_turn_us.load(Ordering::Relaxed);
                phase_end = if last > 0 {
                    start + Duration::from_micros(last)
                } else {
                    Instant::now()
                };
            }
        }
    }
    drop(phase_tx);

    // Closing: every task ends by itself (close handshakes are bounded) unless time is up.
    join_bounded(&mut set, deadline, &stats, &mut timed_out).await;
    let procs = procs.finish(held).await;
    let wall = start.elapsed();
    let phase_s = phase_end.saturating_duration_since(go).as_secs_f64();
    let mut report = base_report(&plan, &stats);
    report.wall_s = wall.as_secs_f64();
    report.phase_s = phase_s;
    report.sessions_ok = ok;
    report.sessions_failed = n - ok;
    report.sessions_held = held.unwrap_or(0);
    report.setups_per_s = if ramp.as_secs_f64() > 0.0 {
        ok as f64 / ramp.as_secs_f64()
    } else {
        0.0
    };
    report.frames_per_s = if phase_s > 0.0 {
        (report.frames_sent + report.frames_received) as f64 / phase_s
    } else {
        0.0
    };
    report.timed_out = timed_out;
    report.processes = procs;
    report
}

/// Waits for the tasks until `deadline`; the rest are aborted and counted as run timeouts.
async fn join_bounded(
    set: &mut JoinSet<()>,
    deadline: Instant,
    stats: &Stats,
    timed_out: &mut bool,
) {
    loop {
        tokio::select! {
            r = set.join_next() => if r.is_none() { break },
            () = sleep_until(deadline) => {
                *timed_out = true;
                stats.errors_n(&Failure::Timeout("run"), set.len() as u64);
                set.abort_all();
                while set.join_next().await.is_some() {}
                break;
            }
        }
    }
}

/// One session of `text`, `audio` or `idle`.
async fn session(
    n: u64,
    plan: Arc<Plan>,
    stats: Arc<Stats>,
    events: mpsc::UnboundedSender<Event>,
    mut phase: watch::Receiver<Phase>,
) {
    let t0 = Instant::now();
    let mut ws = match plan.target.open(n, &plan.frames.setup).await {
        Ok(ws) => ws,
        Err(f) => {
            stats.error(&f);
            let _ = events.send(Event::Ready(false));
            return;
        }
    };
    stats.setup_done(t0.elapsed());
    let _ = events.send(Event::Ready(true));

    let result = async {
        let go = match wait_while(&mut ws, &mut phase, &stats, |p| p == Phase::Ramp).await? {
            Phase::Go(at) => at,
            _ => return Ok(()),
        };
        match plan.mode {
            Mode::Text | Mode::Audio => turns(&mut ws, &plan, &stats, n, go).await,
            Mode::Idle => wait_while(&mut ws, &mut phase, &stats, |p| matches!(p, Phase::Go(_)))
                .await
                .map(|_| ()),
            Mode::Setup => Ok(()),
        }
    }
    .await;
    let _ = events.send(Event::Done);
    match result {
        Ok(()) => {
            if let Err(f) = client::close(ws).await {
                stats.error(&f);
            }
        }
        Err(f) => {
            stats.lost.fetch_add(1, Ordering::Relaxed);
            stats.error(&f);
        }
    }
}

/// Keeps reading (so pings are answered and a server close is noticed) while `waiting`
/// holds for the phase; returns the phase that ended the wait.
async fn wait_while(
    ws: &mut Ws,
    phase: &mut watch::Receiver<Phase>,
    stats: &Stats,
    waiting: impl Fn(Phase) -> bool,
) -> Result<Phase, Failure> {
    loop {
        let now = *phase.borrow_and_update();
        if !waiting(now) {
            return Ok(now);
        }
        tokio::select! {
            changed = phase.changed() => if changed.is_err() {
                // The coordinator is gone (run timeout): stop quietly.
                return Ok(Phase::Stop);
            },
            frame = client::next_frame(ws) => {
                if frame?.go_away {
                    stats.go_aways.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Reads frames until `turnComplete`.
async fn read_turn(ws: &mut Ws, stats: &Stats) -> Result<(), Failure> {
    loop {
        let f = client::next_frame(ws).await?;
        stats.frames_received.fetch_add(1, Ordering::Relaxed);
        if f.go_away {
            stats.go_aways.fetch_add(1, Ordering::Relaxed);
        }
        if f.turn_complete {
            return Ok(());
        }
    }
}

async fn send(
    ws: &mut Ws,
    stats: &Stats,
    msg: &tokio_tungstenite::tungstenite::Message,
) -> Result<(), Failure> {
    client::send(ws, msg.clone()).await?;
    stats.frames_sent.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// The turns of one `text` or `audio` session. Session `n` starts `n/N` of an interval after
/// `go` (or of a chunk period, for audio), so the load is spread evenly rather than in bursts.
async fn turns(
    ws: &mut Ws,
    plan: &Plan,
    stats: &Stats,
    n: u64,
    go: Instant,
) -> Result<(), Failure> {
    let share = n as f64 / plan.sessions.max(1) as f64;
    let spread = match (plan.mode, plan.chunk_gap) {
        (Mode::Audio, Some(gap)) if plan.turn_interval.is_zero() => gap,
        _ => plan.turn_interval,
    };
    let mut next = go + spread.mul_f64(share);
    for _ in 0..plan.turns {
        sleep_until(next).await;
        let turn_start = Instant::now();
        let measured_from = match plan.mode {
            Mode::Audio => {
                for k in 0..plan.audio_chunks {
                    if let Some(gap) = plan.chunk_gap {
                        sleep_until(turn_start + gap * k as u32).await;
                    }
                    send(ws, stats, &plan.frames.audio_chunk).await?;
                }
                let at = Instant::now();
                send(ws, stats, &plan.frames.audio_end).await?;
                at
            }
            _ => {
                let at = Instant::now();
                send(ws, stats, &plan.frames.text_turn).await?;
                at
            }
        };
        tokio::time::timeout(plan.turn_timeout, read_turn(ws, stats))
            .await
            .map_err(|_| Failure::Timeout("turn"))??;
        stats.turn_done(measured_from.elapsed());
        next = (turn_start + plan.turn_interval).max(Instant::now());
    }
    Ok(())
}

/// `setup`: C loops of connect, setup, `setupComplete`, close, for a duration or a count.
async fn run_setup(plan: Arc<Plan>, mut procs: Watch) -> Report {
    let stats = Arc::new(Stats::new());
    let start = stats.start;
    let deadline = start + plan.timeout;
    let end = (start + plan.duration).min(deadline);
    let claimed = Arc::new(AtomicU64::new(0));
    procs.phase_started();
    let mut set = JoinSet::new();
    for _ in 0..plan.sessions {
        let (plan, stats, claimed) = (plan.clone(), stats.clone(), claimed.clone());
        set.spawn(async move {
            while Instant::now() < end {
                let n = claimed.fetch_add(1, Ordering::Relaxed);
                if plan.count.is_some_and(|c| n >= c) {
                    break;
                }
                let t0 = Instant::now();
                let result = match plan.target.open(n, &plan.frames.setup).await {
                    Ok(ws) => {
                        stats.setup_done(t0.elapsed());
                        client::close(ws).await
                    }
                    Err(f) => Err(f),
                };
                match result {
                    Ok(()) => {
                        stats.cycles_ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(f) => {
                        stats.cycles_failed.fetch_add(1, Ordering::Relaxed);
                        stats.error(&f);
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
            }
        });
    }
    let mut timed_out = false;
    let progress = async {
        loop {
            tokio::time::sleep(PROGRESS_EVERY).await;
            tracing::info!(
                setups = stats.cycles_ok.load(Ordering::Relaxed),
                failed = stats.cycles_failed.load(Ordering::Relaxed),
                "setting up"
            );
        }
    };
    tokio::select! {
        () = join_bounded(&mut set, deadline, &stats, &mut timed_out) => {}
        () = progress => {}
    }
    let phase = start.elapsed();
    procs.phase_ended();
    let procs = procs.finish(None).await;
    let mut report = base_report(&plan, &stats);
    let ok = stats.cycles_ok.load(Ordering::Relaxed);
    report.wall_s = phase.as_secs_f64();
    report.phase_s = phase.as_secs_f64();
    report.sessions_ok = ok;
    report.sessions_failed = stats.cycles_failed.load(Ordering::Relaxed);
    report.setups_per_s = ok as f64 / phase.as_secs_f64().max(1e-9);
    report.timed_out = timed_out;
    report.processes = procs;
    report
}
