//! Close codes sent to clients (DESIGN.md, "Close codes"). Every way a session ends maps to one
//! of these with a reason; reasons never carry secrets.

/// Normal end, or upstream's own close relayed.
pub const NORMAL: u16 = 1000;
/// A frame that must be JSON (setup) is not valid JSON / not a setup.
pub const INVALID_PAYLOAD: u16 = 1007;
/// First frame is not `setup`, or setup not received in time.
pub const POLICY: u16 = 1008;
/// Message (or a frame of one) larger than the configured maximum.
pub const TOO_BIG: u16 = 1009;
/// Internal error.
pub const INTERNAL: u16 = 1011;
/// Gateway draining for restart.
pub const RESTARTING: u16 = 1012;
/// Upstream unreachable or refused the handshake.
pub const TRY_AGAIN_LATER: u16 = 1013;
/// Vertex AI credentials not configured.
pub const NO_CREDENTIALS: u16 = 4001;
/// No project id could be resolved.
pub const NO_PROJECT: u16 = 4002;
/// Missing, unknown, expired or revoked API key; also a live session whose key is revoked,
/// deleted or expires while it runs (`crate::records`).
pub const UNAUTHORIZED: u16 = 4401;
/// The key's budget is spent.
pub const BUDGET_SPENT: u16 = 4402;
/// Model or project not allowed for this key.
pub const FORBIDDEN: u16 = 4403;
/// Over the key's concurrent-session or rate limit.
pub const TOO_MANY: u16 = 4429;

/// A close code with its reason, the way every session-ending error is expressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: String,
    /// A text frame the client gets just before the close frame (a JSON message with more
    /// than a close reason's 123 bytes can say), if any.
    pub notice: Option<String>,
}

impl Close {
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        let mut reason: String = reason.into();
        // A close frame's reason must fit in 123 bytes; cut on a char boundary.
        if reason.len() > 123 {
            let mut end = 123;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Self {
            code,
            reason,
            notice: None,
        }
    }

    /// The same close, preceded by `notice` (a JSON text frame).
    pub fn with_notice(self, notice: String) -> Self {
        Self {
            notice: Some(notice),
            ..self
        }
    }
}

impl Close {
    /// 1009 for a message over `limit` bytes (`GATEWAY_MAX_FRAME_BYTES`), whole or in fragments.
    pub fn too_big(limit: usize) -> Self {
        Self::new(
            TOO_BIG,
            format!("message larger than {limit} bytes (the gateway's maximum message size)"),
        )
    }
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reasons_are_cut_to_fit_a_close_frame() {
        let c = Close::new(INTERNAL, "é".repeat(100));
        assert!(c.reason.len() <= 123);
        assert!(c.reason.chars().all(|ch| ch == 'é'));
    }
}
