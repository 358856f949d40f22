//! The relay driven through channels (no sockets), with tokio's paused clock for timers.

use super::*;
use futures_util::stream::BoxStream;
use livegate_proto::usage::TokenUsage;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::task::Poll;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::PollSender;

type Rx = BoxStream<'static, Result<Message, WsError>>;

fn closed(_: tokio_util::sync::PollSendError<Message>) -> WsError {
    WsError::ConnectionClosed
}

/// The relay's sink, behaving like a socket with a write buffer: fed frames are held until a
/// flush, which delivers them to the test (through a bounded channel: back-pressure) and
/// counts as one write.
struct Tx {
    out: PollSender<Message>,
    held: std::collections::VecDeque<Message>,
    writes: Arc<AtomicUsize>,
}

impl Sink<Message> for Tx {
    type Error = WsError;

    fn poll_ready(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
        self.get_mut().held.push_back(item);
        Ok(())
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<(), WsError>> {
        let this = self.get_mut();
        if this.held.is_empty() {
            return Poll::Ready(Ok(()));
        }
        while let Some(m) = this.held.pop_front() {
            match this.out.poll_reserve(cx) {
                Poll::Ready(Ok(())) => this.out.send_item(m).map_err(closed)?,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(closed(e))),
                Poll::Pending => {
                    this.held.push_front(m);
                    return Poll::Pending;
                }
            }
        }
        this.writes.fetch_add(1, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }

    fn poll_close(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<(), WsError>> {
        self.poll_flush(cx)
    }
}

/// One end of a fake socket: the relay's sink/stream, and the test's handles.
struct Pipe {
    relay_tx: Tx,
    relay_rx: Rx,
    test_tx: mpsc::Sender<Result<Message, WsError>>,
    test_rx: mpsc::Receiver<Message>,
    /// Flushes of the relay's sink that delivered frames.
    writes: Arc<AtomicUsize>,
}

fn pipe() -> Pipe {
    let (to_relay, relay_in) = mpsc::channel(16);
    let (relay_out, from_relay) = mpsc::channel(16);
    let writes = Arc::new(AtomicUsize::new(0));
    Pipe {
        relay_tx: Tx {
            out: PollSender::new(relay_out),
            held: std::collections::VecDeque::new(),
            writes: writes.clone(),
        },
        relay_rx: Box::pin(ReceiverStream::new(relay_in)),
        test_tx: to_relay,
        test_rx: from_relay,
        writes,
    }
}

#[derive(Default)]
struct Recorder {
    reports: Mutex<Vec<(TokenUsage, Media)>>,
    spent: AtomicBool,
}

impl UsageSink for Recorder {
    fn report(&self, usage: TokenUsage, media: Media) {
        self.reports.lock().unwrap().push((usage, media));
    }
    fn budget_spent(&self) -> bool {
        self.spent.load(Ordering::Relaxed)
    }
}

struct Harness {
    recorder: Recorder,
    metrics: Metrics,
    counters: Counters,
    client_media: Mutex<Media>,
    output_media: Mutex<Media>,
    drain_tx: watch::Sender<bool>,
    activity: Activity,
}

impl Harness {
    fn new() -> Self {
        Self {
            recorder: Recorder::default(),
            metrics: Metrics::new(),
            counters: Counters::default(),
            client_media: Mutex::default(),
            output_media: Mutex::default(),
            drain_tx: watch::channel(false).0,
            activity: Activity::default(),
        }
    }

    fn relay(&self) -> Relay<'_, Recorder> {
        Relay {
            max_frame_bytes: 1024,
            idle_timeout: Duration::from_secs(60),
            deadline: Instant::now() + Duration::from_secs(3600),
            drain: self.drain_tx.subscribe(),
            drain_grace: Duration::from_secs(5),
            usage: &self.recorder,
            metrics: &self.metrics,
            counters: &self.counters,
            client_media: &self.client_media,
            output_media: &self.output_media,
            activity: &self.activity,
            resume: None,
            keepalive: Keepalive::default(),
        }
    }
}

async fn run(mut relay: Relay<'_, Recorder>, c: &mut Pipe, u: &mut Pipe) -> End {
    relay
        .run(
            &mut c.relay_tx,
            &mut c.relay_rx,
            &mut u.relay_tx,
            &mut u.relay_rx,
        )
        .await
}

#[tokio::test]
async fn frames_flow_in_order_and_usage_is_reported_with_media() {
    let h = Harness::new();
    let (mut c, mut u) = (pipe(), pipe());
    let mut relay = h.relay();
    let client_text =
        r#"{"clientContent":{"turns":[{"parts":[{"text":"hello"}]}],"turnComplete":true}}"#;
    let chunk = br#"{"serverContent":{"modelTurn":{"parts":[{"text":"hi there"}]}}}"#.to_vec();
    let done = br#"{"serverContent":{"turnComplete":true},"usageMetadata":{"promptTokenCount":2,"candidatesTokenCount":3,"totalTokenCount":5}}"#.to_vec();
    let (c_in, c_out, u_in, u_out) = (&c.test_tx, &mut c.test_rx, &u.test_tx, &mut u.test_rx);
    let driver = async {
        c_in.send(Ok(Message::text(client_text))).await.unwrap();
        c_in.send(Ok(Message::binary(vec![1u8, 2, 3])))
            .await
            .unwrap();
        // Upstream receives the client's frames unchanged and in order.
        assert_eq!(u_out.recv().await.unwrap(), Message::text(client_text));
        assert_eq!(
            u_out.recv().await.unwrap(),
            Message::binary(vec![1u8, 2, 3])
        );
        u_in.send(Ok(Message::binary(chunk.clone()))).await.unwrap();
        u_in.send(Ok(Message::binary(done.clone()))).await.unwrap();
        // The client receives upstream's frames byte for byte.
        assert_eq!(c_out.recv().await.unwrap(), Message::binary(chunk.clone()));
        assert_eq!(c_out.recv().await.unwrap(), Message::binary(done.clone()));
        u_in.send(Ok(Message::Close(None))).await.unwrap();
    };
    let (end, ()) = tokio::join!(
        relay.run(
            &mut c.relay_tx,
            &mut c.relay_rx,
            &mut u.relay_tx,
            &mut u.relay_rx
        ),
        driver
    );
    assert!(matches!(end, End::UpstreamClosed(None)), "{end:?}");
    let reports = h.recorder.reports.lock().unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].0.response_tokens, 3);
    assert_eq!(reports[0].1.input_characters, 5);
    assert_eq!(reports[0].1.output_characters, 8);
    assert_eq!(h.counters.frames_in.load(Ordering::Relaxed), 2);
    assert_eq!(h.counters.frames_out.load(Ordering::Relaxed), 2);
}

fn chunk(i: usize) -> Message {
    Message::binary(format!(
        r#"{{"serverContent":{{"modelTurn":{{"parts":[{{"text":"{i}"}}]}}}}}}"#
    ))
}

#[tokio::test]
async fn frames_that_arrive_together_leave_in_one_write_and_none_is_held_back() {
    let h = Harness::new();
    let (mut c, mut u) = (pipe(), pipe());
    let mut relay = h.relay();
    // Five frames ready before the relay reads (one socket read, in real life), both ways.
    for i in 0..5 {
        u.test_tx.send(Ok(chunk(i))).await.unwrap();
        c.test_tx.send(Ok(chunk(i))).await.unwrap();
    }
    let (c_in, c_out, u_in, u_out) = (&c.test_tx, &mut c.test_rx, &u.test_tx, &mut u.test_rx);
    let (c_writes, u_writes) = (c.writes.clone(), u.writes.clone());
    let driver = async {
        for i in 0..5 {
            assert_eq!(c_out.recv().await.unwrap(), chunk(i));
            assert_eq!(u_out.recv().await.unwrap(), chunk(i));
        }
        assert_eq!(c_writes.load(Ordering::Relaxed), 1, "to the client");
        assert_eq!(u_writes.load(Ordering::Relaxed), 1, "upstream");
        // A frame arriving alone is written as soon as nothing else is ready.
        u_in.send(Ok(chunk(5))).await.unwrap();
        assert_eq!(c_out.recv().await.unwrap(), chunk(5));
        c_in.send(Ok(chunk(6))).await.unwrap();
        assert_eq!(u_out.recv().await.unwrap(), chunk(6));
        assert_eq!(c_writes.load(Ordering::Relaxed), 2);
        assert_eq!(u_writes.load(Ordering::Relaxed), 2);
        u_in.send(Ok(Message::Close(None))).await.unwrap();
    };
    let relay = relay.run(
        &mut c.relay_tx,
        &mut c.relay_rx,
        &mut u.relay_tx,
        &mut u.relay_rx,
    );
    let (end, ()) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(relay, driver)
    })
    .await
    .expect("frames were held back");
    assert!(matches!(end, End::UpstreamClosed(None)), "{end:?}");
}

#[tokio::test]
async fn client_close_ends_the_relay_with_its_frame() {
    let h = Harness::new();
    let (mut c, mut u) = (pipe(), pipe());
    let frame = CloseFrame {
        code: 1000.into(),
        reason: "bye".into(),
    };
    c.test_tx
        .send(Ok(Message::Close(Some(frame.clone()))))
        .await
        .unwrap();
    match run(h.relay(), &mut c, &mut u).await {
        End::ClientClosed(Some(f)) => assert_eq!(f, frame),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn oversized_frames_end_with_1009() {
    let h = Harness::new();
    let (mut c, mut u) = (pipe(), pipe());
    c.test_tx
        .send(Ok(Message::binary(vec![0u8; 1025])))
        .await
        .unwrap();
    match run(h.relay(), &mut c, &mut u).await {
        End::Gateway(close) => assert_eq!(close.code, close::TOO_BIG),
        other => panic!("{other:?}"),
    }
    assert!(
        u.test_rx.try_recv().is_err(),
        "the oversized frame was not relayed"
    );
}

#[tokio::test(start_paused = true)]
async fn drain_sends_go_away_then_1012_after_the_grace_period() {
    let h = Harness::new();
    let (mut c, mut u) = (pipe(), pipe());
    h.drain_tx.send_replace(true);
    let started = Instant::now();
    match run(h.relay(), &mut c, &mut u).await {
        End::Gateway(close) => assert_eq!(close.code, close::RESTARTING),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_secs(5));
    let go_away = c.test_rx.recv().await.unwrap();
    assert_eq!(
        go_away,
        Message::binary(br#"{"goAway":{"timeLeft":"5s"}}"#.to_vec())
    );
}

#[tokio::test]
async fn spent_budget_ends_the_session_after_the_turn() {
    let h = Harness::new();
    h.recorder.spent.store(true, Ordering::Relaxed);
    let (mut c, mut u) = (pipe(), pipe());
    let chunk = br#"{"serverContent":{"modelTurn":{"parts":[{"text":"x"}]}}}"#.to_vec();
    let done = br#"{"serverContent":{"turnComplete":true}}"#.to_vec();
    u.test_tx.send(Ok(Message::binary(chunk))).await.unwrap();
    u.test_tx
        .send(Ok(Message::binary(done.clone())))
        .await
        .unwrap();
    match run(h.relay(), &mut c, &mut u).await {
        End::Gateway(close) => assert_eq!(close.code, close::BUDGET_SPENT),
        other => panic!("{other:?}"),
    }
    c.test_rx.recv().await.unwrap();
    assert_eq!(
        c.test_rx.recv().await.unwrap(),
        Message::binary(done),
        "the turn was delivered first"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_sessions_are_closed() {
    let h = Harness::new();
    let (mut c, mut u) = (pipe(), pipe());
    let mut relay = h.relay();
    relay.idle_timeout = Duration::from_secs(30);
    match run(relay, &mut c, &mut u).await {
        End::Gateway(close) => assert_eq!(
            (close.code, close.reason.as_str()),
            (close::NORMAL, "idle timeout")
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn pings_alone_do_not_keep_a_session_open() {
    let h = Harness::new();
    let (mut c, mut u) = (pipe(), pipe());
    let mut relay = h.relay();
    relay.idle_timeout = Duration::from_secs(30);
    let client = c.test_tx.clone();
    let upstream = u.test_tx.clone();
    // Both sides ping every 10 s (virtual time), far longer than the idle timeout.
    let pinging = async move {
        for _ in 0..100 {
            let _ = client.send(Ok(Message::Ping(Vec::new().into()))).await;
            let _ = upstream.send(Ok(Message::Ping(Vec::new().into()))).await;
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    };
    tokio::select! {
        end = run(relay, &mut c, &mut u) => match end {
            End::Gateway(close) => assert_eq!(
                (close.code, close.reason.as_str()),
                (close::NORMAL, "idle timeout")
            ),
            other => panic!("{other:?}"),
        },
        () = pinging => panic!("pings kept an idle session open for 1,000 s"),
    }
}

#[tokio::test(start_paused = true)]
async fn an_upstream_that_never_answers_pings_is_lost() {
    let h = Harness::new();
    let (mut c, mut u) = (pipe(), pipe());
    let mut relay = h.relay();
    relay.idle_timeout = Duration::from_secs(3600);
    relay.keepalive = Keepalive {
        interval: Duration::from_secs(20),
        pong_timeout: Duration::from_secs(60),
    };
    match run(relay, &mut c, &mut u).await {
        End::UpstreamGone(why) => assert!(why.contains("ping"), "{why}"),
        other => panic!("{other:?}"),
    }
    let mut pings = 0;
    while let Ok(m) = u.test_rx.try_recv() {
        assert!(matches!(m, Message::Ping(_)), "{m:?}");
        pings += 1;
    }
    assert!(pings >= 3, "{pings} pings");
}

#[tokio::test(start_paused = true)]
async fn slow_pongs_within_the_timeout_keep_the_upstream() {
    let h = Harness::new();
    let (c, mut u) = (pipe(), pipe());
    let mut relay = h.relay();
    relay.idle_timeout = Duration::from_secs(3600);
    relay.keepalive = Keepalive {
        interval: Duration::from_secs(20),
        pong_timeout: Duration::from_secs(60),
    };
    let upstream = u.test_tx.clone();
    let mut from_relay = u.test_rx;
    // Google-like: every ping answered, 30 s late.
    let ponging = async move {
        for _ in 0..40 {
            let Some(Message::Ping(p)) = from_relay.recv().await else {
                continue;
            };
            tokio::time::sleep(Duration::from_secs(30)).await;
            let _ = upstream.send(Ok(Message::Pong(p))).await;
        }
    };
    let mut client = c;
    let relay_run = async {
        relay
            .run(
                &mut client.relay_tx,
                &mut client.relay_rx,
                &mut u.relay_tx,
                &mut u.relay_rx,
            )
            .await
    };
    tokio::select! {
        end = relay_run => panic!("ended with slow but answered pongs: {end:?}"),
        () = ponging => {}
    }
}

#[tokio::test]
async fn after_go_away_the_relay_switches_at_the_next_turn_boundary() {
    use crate::ws::resume::{Resume, ResumeConfig};
    let h = Harness::new();
    let (mut c, mut u) = (pipe(), pipe());
    let setup = br#"{"setup":{"model":"m","sessionResumption":{}}}"#;
    let (state, _) = Resume::new(&ResumeConfig::default(), setup).unwrap();
    let state = Mutex::new(state);
    let mut relay = h.relay();
    relay.resume = Some(&state);
    let upstream = u.test_tx.clone();
    let frames = [
        r#"{"sessionResumptionUpdate":{"newHandle":"h1","resumable":true,"lastConsumedClientMessageIndex":"0"}}"#,
        r#"{"goAway":{"timeLeft":"600s"}}"#,
        r#"{"serverContent":{"modelTurn":{"parts":[{"text":"hi"}]}}}"#,
        r#"{"serverContent":{"turnComplete":true}}"#,
        r#"{"sessionResumptionUpdate":{"newHandle":"h2","resumable":true,"lastConsumedClientMessageIndex":"0"}}"#,
    ];
    for f in frames {
        upstream.send(Ok(Message::binary(f))).await.unwrap();
    }
    assert!(matches!(run(relay, &mut c, &mut u).await, End::Switch));
    let mut seen = Vec::new();
    while let Ok(m) = c.test_rx.try_recv() {
        seen.push(String::from_utf8(m.into_data().to_vec()).unwrap());
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen.iter().all(|f| !f.contains("goAway")), "{seen:?}");
}

/// Gemini 3.8 Live: every new client and server message passes byte for byte, in order, in
/// the frame type it came in, and only the real usage report is metered, with the media of
/// the multi-part events (thoughts are not output text; the interruption is no turn end).
#[tokio::test]
async fn gemini_38_live_frames_are_relayed_untouched_and_read_right() {
    let h = Harness::new();
    let (mut c, mut u) = (pipe(), pipe());
    let mut relay = h.relay();
    relay.max_frame_bytes = 64 * 1024;
    let client: Vec<Message> = vec![
        Message::text(
            r#"{"contextUpdate":{"systemInstruction":{"parts":[{"text":"Be brief."}]},"tools":[{"functionDeclarations":[{"name":"f"}]}]}}"#,
        ),
        // 0.25 s of 16 kHz audio and a video frame.
        Message::text(format!(
            r#"{{"realtimeInput":{{"audio":{{"mimeType":"audio/pcm;rate=16000","data":"{}="}}}}}}"#,
            "A".repeat(10_667)
        )),
        Message::binary(
            br#"{"realtimeInput":{"video":{"mimeType":"image/jpeg","data":"AAAA"}}}"#.to_vec(),
        ),
        Message::text(r#"{"realtimeInput":{"audioStreamEnd":true}}"#),
    ];
    let event = format!(
        r#"{{"serverContent":{{"modelTurn":{{"parts":[{{"text":"weighing it","thought":true}},{{"text":"Hi!"}},{{"inlineData":{{"mimeType":"audio/pcm;rate=24000","data":"{}"}}}},{{"inlineData":{{"mimeType":"video/mp4","data":"AAAA"}}}}]}},"outputTranscription":{{"text":"Hi!"}},"interactionStatus":"IN_PROGRESS"}}}}"#,
        "A".repeat(320)
    );
    let server: Vec<Message> = vec![
        Message::binary(br#"{"voiceActivity":{"voiceActivityType":"ACTIVITY_START"}}"#.to_vec()),
        Message::binary(
            br#"{"voiceActivityDetectionSignal":{"vadSignalType":"VAD_SIGNAL_TYPE_SOS"}}"#.to_vec(),
        ),
        Message::binary(
            br#"{"serverContent":{"interimInputTranscription":{"text":"turnComplete"}}}"#.to_vec(),
        ),
        Message::binary(br#"{"voiceActivity":{"voiceActivityType":"ACTIVITY_END"}}"#.to_vec()),
        Message::binary(
            br#"{"serverContent":{"inputTranscription":{"text":"usageMetadata"}}}"#.to_vec(),
        ),
        Message::binary(event.into_bytes()),
        Message::text(r#"{"serverContent":{"interrupted":true}}"#),
        Message::binary(
            br#"{"serverContent":{"turnComplete":true,"turnCompleteReason":"INTERRUPTED"},"usageMetadata":{"promptTokenCount":35,"candidatesTokenCount":264,"thoughtsTokenCount":66,"totalTokenCount":299,"promptTokensDetails":[{"modality":"AUDIO","tokenCount":8}],"candidatesTokensDetails":[{"modality":"AUDIO","tokenCount":6},{"modality":"VIDEO","tokenCount":258}],"trafficType":"ON_DEMAND"}}"#.to_vec(),
        ),
    ];
    let (c_in, c_out, u_in, u_out) = (&c.test_tx, &mut c.test_rx, &u.test_tx, &mut u.test_rx);
    let driver = async {
        for m in &client {
            c_in.send(Ok(m.clone())).await.unwrap();
            assert_eq!(&u_out.recv().await.unwrap(), m);
        }
        for m in &server {
            u_in.send(Ok(m.clone())).await.unwrap();
            assert_eq!(&c_out.recv().await.unwrap(), m);
        }
        u_in.send(Ok(Message::Close(None))).await.unwrap();
    };
    let (end, ()) = tokio::join!(
        relay.run(
            &mut c.relay_tx,
            &mut c.relay_rx,
            &mut u.relay_tx,
            &mut u.relay_rx
        ),
        driver
    );
    assert!(matches!(end, End::UpstreamClosed(None)), "{end:?}");
    let reports = h.recorder.reports.lock().unwrap();
    assert_eq!(reports.len(), 1, "only the real usageMetadata is a report");
    let (usage, media) = &reports[0];
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.response_tokens,
            usage.thoughts_tokens
        ),
        (35, 264, 66)
    );
    assert_eq!(usage.traffic_type, "ON_DEMAND");
    assert!((media.input_audio_seconds - 0.25).abs() < 1e-9);
    assert_eq!(media.input_video_frames, 1);
    assert_eq!(
        media.input_characters, 0,
        "a contextUpdate is not input text"
    );
    assert_eq!(media.output_characters, 3, "thoughts are not output text");
    assert!((media.output_audio_seconds - 0.005).abs() < 1e-9);
    assert_eq!(h.counters.frames_in.load(Ordering::Relaxed), 4);
    assert_eq!(h.counters.frames_out.load(Ordering::Relaxed), 8);
}
