//! Behaviour knobs that tests and the demo turn at run time (go-away, forced close, reply delay,
//! usage field names, frame type).

use std::str::FromStr;
use std::time::Duration;

/// Which output-usage field names the emulator writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UsageNames {
    /// Vertex AI: `candidatesTokenCount` / `candidatesTokensDetails` (the default).
    #[default]
    Vertex,
    /// Gemini Developer API: `responseTokenCount` / `responseTokensDetails`.
    Developer,
}

impl UsageNames {
    /// `(count field, details field)` for output tokens.
    pub(crate) fn output_fields(self) -> (&'static str, &'static str) {
        match self {
            Self::Vertex => ("candidatesTokenCount", "candidatesTokensDetails"),
            Self::Developer => ("responseTokenCount", "responseTokensDetails"),
        }
    }
}

impl FromStr for UsageNames {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "vertex" => Ok(Self::Vertex),
            "developer" | "dev" | "gemini" => Ok(Self::Developer),
            other => Err(format!(
                "unknown usage names {other:?} (expected vertex or developer)"
            )),
        }
    }
}

/// Per-session behaviour. Changeable at run time with [`crate::Emulator::set_behaviour`].
///
/// `response_delay`, `frame_interval`, `usage_names` and `text_frames` are read at every reply, so a change
/// applies to open sessions at once; `go_away_after` and `close_after` are read when a session
/// completes its setup (the timers start then).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Behaviour {
    /// Send `{"goAway":{"timeLeft":..}}` this long after `setupComplete`.
    pub go_away_after: Option<Duration>,
    /// Close the session this long after `setupComplete`, with this close code and reason.
    pub close_after: Option<(Duration, u16, String)>,
    /// Wait this long before sending each reply to a client turn (client frames keep being
    /// read meanwhile; replies keep their order).
    pub response_delay: Duration,
    /// The generation pace: this long between the frames of a reply (zero: a reply goes out
    /// at once). While a paced reply still has model content to send, a new user turn
    /// (`clientContent` with `turnComplete`, `realtimeInput` `text`, `activityStart`, or the
    /// first audio of a spoken turn under automatic activity detection) interrupts it:
    /// `serverContent.interrupted: true`, then `turnComplete` with the usage of what was
    /// generated, unless the setup's `activityHandling` is `NO_INTERRUPTION`.
    pub frame_interval: Duration,
    /// Output-usage field names.
    pub usage_names: UsageNames,
    /// Send server frames as text frames (default: binary frames of UTF-8 JSON, as Google does).
    pub text_frames: bool,
    /// Google's connection lifetime: `goAway` some time before the limit, then a close.
    /// Overrides `go_away_after` and `close_after` when set.
    pub connection_age: Option<ConnectionAge>,
    /// How long a resumption handle stays valid after its session's last connection ended
    /// (`None`: [`crate::DEFAULT_HANDLE_TTL`], about 2 h as Google).
    pub handle_ttl: Option<Duration>,
    /// Record the client messages each session consumes ([`crate::Emulator::consumed`]).
    pub record_consumed: bool,
    /// Answer pings this late (Google's pongs take 8–30 s); zero: at once. Read when a
    /// connection is accepted.
    pub pong_delay: Duration,
    /// Wait this long before answering a setup with `setupComplete` (other client frames
    /// wait unread meanwhile); the connection's timers start after it. Zero: at once.
    pub setup_delay: Duration,
}

/// A connection-age limit: `goAway{timeLeft: go_away_lead}` at `limit - go_away_lead` after
/// `setupComplete`, then a close with `code` and `reason` at `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionAge {
    /// Age at which the connection is closed.
    pub limit: Duration,
    /// How long before the close the `goAway` comes (its `timeLeft`).
    pub go_away_lead: Duration,
    /// Close code.
    pub code: u16,
    /// Close reason.
    pub reason: String,
}

impl ConnectionAge {
    /// Google's observed shape: goAway, then 1011 `Deadline expired.`.
    pub fn new(limit: Duration, go_away_lead: Duration) -> Self {
        Self {
            limit,
            go_away_lead: go_away_lead.min(limit),
            code: 1011,
            reason: "Deadline expired.".into(),
        }
    }
}

impl Behaviour {
    /// The `timeLeft` announced in `goAway`: the time until the configured close when one is
    /// configured after the go-away, otherwise the go-away delay itself.
    pub(crate) fn go_away_time_left(&self) -> Duration {
        let go = self.go_away_after.unwrap_or_default();
        match &self.close_after {
            Some((close, _, _)) if *close > go => *close - go,
            _ => go,
        }
    }
}

/// Formats a duration the way proto-JSON does (`"10s"`, `"1.5s"`).
pub(crate) fn proto_duration(d: Duration) -> String {
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        format!("{}s", d.as_secs())
    } else {
        let frac = format!("{nanos:09}");
        format!("{}.{}s", d.as_secs(), frac.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_like_proto_json() {
        assert_eq!(proto_duration(Duration::from_secs(10)), "10s");
        assert_eq!(proto_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(proto_duration(Duration::from_nanos(1)), "0.000000001s");
    }

    #[test]
    fn time_left_is_time_until_close() {
        let mut b = Behaviour {
            go_away_after: Some(Duration::from_secs(2)),
            ..Behaviour::default()
        };
        assert_eq!(b.go_away_time_left(), Duration::from_secs(2));
        b.close_after = Some((Duration::from_secs(7), 1000, String::new()));
        assert_eq!(b.go_away_time_left(), Duration::from_secs(5));
    }

    #[test]
    fn usage_names_parse() {
        assert_eq!("Vertex".parse::<UsageNames>(), Ok(UsageNames::Vertex));
        assert_eq!("developer".parse::<UsageNames>(), Ok(UsageNames::Developer));
        assert!("x".parse::<UsageNames>().is_err());
    }
}
