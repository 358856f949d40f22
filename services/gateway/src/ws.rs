//! A client WebSocket session and the pieces it is made of:
//! - `session`: its life, from the upgraded socket to `SessionEnded`.
//! - `request`: what the upgrade request carries (credential, query parameters).
//! - `policy`: the checks before the relay (credential, budget, session limit, project and model).
//! - `setup`: the client's first frame, validated and rewritten for Vertex AI.
//! - `upstream`: the Live API URL and the connection to it.
//! - `relay`: the loop that moves frames both ways, generic over `Sink + Stream`.
//! - `resume`: transparent upstream resumption (handles, replay, the switch to a new upstream).
//! - `inspect`: reading frames just enough to measure media and extract usage.
//! - `meter`: what the session publishes for metering (started, usage reports, ended).
//! - `turns`: per-turn predictive budgets (a turn that cannot be afforded is refused).
//! - `observe`: session telemetry (Prometheus series, OpenTelemetry spans).
//! - `close`: the close codes and reasons.
//!
//! This file: tungstenite's socket settings, shared by both sockets of a session.

pub mod close;
pub mod inspect;
pub mod meter;
pub mod observe;
pub mod policy;
pub mod relay;
pub mod request;
pub mod resume;
pub mod session;
pub mod setup;
pub mod turns;
pub mod upstream;

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// tungstenite's read buffer per socket. Its 128 KiB default is zero-filled before every read,
/// so all of it stays resident: 256 KiB per idle session over two sockets. 4 KiB holds a
/// typical Live API frame; bigger ones are read in several calls.
pub const READ_BUFFER_BYTES: usize = 4 * 1024;

/// Fed frames wait in tungstenite's write buffer until it holds this much or the relay
/// flushes (when the side it reads from has nothing ready). Small frames arriving together
/// (a text turn's chunks and `turnComplete`) still leave in one write, but a big one (an
/// audio reply chunk is about 16 KiB) goes out at once, so the peer is reading it while we
/// read the next: with tungstenite's 128 KiB default a whole audio reply was read in before
/// its first byte was sent on.
pub const WRITE_BUFFER_BYTES: usize = 8 * 1024;

/// tungstenite settings for both sockets of a session. Its frame and message limits are
/// `max_frame_bytes` itself: a frame announcing more is refused from its header, before its
/// payload is buffered, and a fragmented message as soon as its fragments add up to more, so
/// one message never holds more than `max_frame_bytes` (README, "Memory bounds"). tungstenite
/// reports either as a capacity error, which the session answers with close 1009.
pub fn socket_config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}
