//! The replies waiting to go out on one connection, and interruptions.
//!
//! Each reply starts [`crate::Behaviour::response_delay`] after the turn it answers and goes
//! out at the generation pace, [`crate::Behaviour::frame_interval`] between frames (all at
//! once when that is zero); replies keep their order. A reply that has started and still has
//! model content to send is *being generated*: a new user turn then interrupts it, as Google
//! does: the rest of it is dropped and the client gets `serverContent.interrupted: true`,
//! then `turnComplete` with the usage of what was generated (the prompt, and the output that
//! went out). A reply still waiting for its delay is not interrupted (it answers a turn the
//! model has not started on; the delay stands for latency, and queued turns keep their order).

use crate::behaviour::UsageNames;
use crate::usage::{self, TokenCounts, UsageShape};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// How to report a reply that is cut short: its prompt and the usage names and shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cut {
    pub prompt: TokenCounts,
    pub names: UsageNames,
    pub shape: UsageShape,
}

impl Cut {
    /// The frames that end a reply interrupted after `sent` went out: `interrupted`, then
    /// `turnComplete` with the usage of what was generated. (live-api.md does not say where
    /// the usage of an interrupted turn goes; clients see `interrupted` then `turnComplete`.)
    pub(crate) fn frames(&self, sent: &[Value]) -> Vec<Value> {
        let response = usage::response_tokens_of(sent);
        vec![
            json!({"serverContent": {"interrupted": true}}),
            json!({
                "serverContent": {"turnComplete": true},
                "usageMetadata": usage::usage_metadata(self.prompt, response, self.names, self.shape),
            }),
        ]
    }
}

#[derive(Debug)]
struct Queued {
    at: Instant,
    interval: Duration,
    frames: VecDeque<Value>,
    /// Model-turn frames sent so far (what an interruption bills as output).
    sent: Vec<Value>,
    started: bool,
    cut: Option<Cut>,
}

impl Queued {
    /// Started, with model content still to send.
    fn generating(&self) -> bool {
        self.started && self.frames.iter().any(is_model_turn)
    }
}

fn is_model_turn(f: &Value) -> bool {
    f.pointer("/serverContent/modelTurn").is_some()
}

/// Replies queued on one connection.
#[derive(Debug, Default)]
pub(crate) struct Replies {
    queue: VecDeque<Queued>,
}

impl Replies {
    /// Nothing queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// When the next frame is due.
    pub(crate) fn next_at(&self) -> Option<Instant> {
        self.queue.front().map(|q| q.at)
    }

    /// Queues a reply: its first frame `delay` from now, then one frame every `interval`.
    pub(crate) fn push(
        &mut self,
        frames: Vec<Value>,
        cut: Option<Cut>,
        delay: Duration,
        interval: Duration,
    ) {
        if frames.is_empty() {
            return;
        }
        self.queue.push_back(Queued {
            at: Instant::now() + delay,
            interval,
            frames: frames.into(),
            sent: Vec::new(),
            started: false,
            cut,
        });
    }

    /// The frames due now (call when [`Self::next_at`] has passed): the front reply's next
    /// frame, or all of it when it is not paced.
    pub(crate) fn pop_due(&mut self) -> Vec<Value> {
        let Some(q) = self.queue.front_mut() else {
            return Vec::new();
        };
        let out: Vec<Value> = if q.interval.is_zero() {
            q.frames.drain(..).collect()
        } else {
            q.frames.pop_front().into_iter().collect()
        };
        q.started = true;
        if q.cut.is_some() {
            q.sent
                .extend(out.iter().filter(|f| is_model_turn(f)).cloned());
        }
        q.at = Instant::now() + q.interval;
        if q.frames.is_empty() {
            self.queue.pop_front();
        }
        out
    }

    /// A new user turn began: cuts the reply being generated, if any, and returns the frames
    /// that tell the client (empty when nothing was being generated).
    pub(crate) fn interrupt(&mut self) -> Vec<Value> {
        let Some(q) = self.queue.front().filter(|q| q.generating()) else {
            return Vec::new();
        };
        let Some(cut) = q.cut else {
            return Vec::new();
        };
        let frames = cut.frames(&q.sent);
        self.queue.pop_front();
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(text: &str) -> Value {
        json!({"serverContent": {"modelTurn": {"parts": [{"text": text}]}}})
    }

    fn reply() -> Vec<Value> {
        vec![
            model("abcd"),
            model("efgh"),
            json!({"serverContent": {"generationComplete": true}}),
            json!({"serverContent": {"turnComplete": true}, "usageMetadata": {}}),
        ]
    }

    const CUT: Cut = Cut {
        prompt: TokenCounts {
            text: 3,
            image: 0,
            video: 0,
            audio: 0,
        },
        names: UsageNames::Vertex,
        shape: UsageShape::Classic,
    };

    #[test]
    fn paced_replies_go_frame_by_frame_and_an_interruption_bills_what_went_out() {
        let mut r = Replies::default();
        r.push(
            reply(),
            Some(CUT),
            Duration::ZERO,
            Duration::from_millis(100),
        );
        // Not started: nothing to interrupt.
        assert!(r.interrupt().is_empty());
        assert_eq!(r.pop_due(), vec![model("abcd")]);
        let cut = r.interrupt();
        assert_eq!(cut[0], json!({"serverContent": {"interrupted": true}}));
        assert_eq!(
            cut[1],
            json!({"serverContent": {"turnComplete": true}, "usageMetadata": {
                "promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 3}],
                "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 1}]}})
        );
        assert!(r.is_empty());
    }

    #[test]
    fn unpaced_replies_go_at_once_and_finished_generations_are_not_cut() {
        let mut r = Replies::default();
        r.push(reply(), Some(CUT), Duration::from_millis(5), Duration::ZERO);
        assert_eq!(r.pop_due().len(), 4);
        assert!(r.is_empty());
        r.push(reply(), Some(CUT), Duration::ZERO, Duration::from_millis(1));
        r.pop_due();
        r.pop_due();
        // Only generationComplete and turnComplete are left: the model has finished.
        assert!(r.interrupt().is_empty());
        assert_eq!(r.pop_due().len(), 1);
        assert_eq!(r.pop_due().len(), 1);
        assert!(r.is_empty() && r.next_at().is_none());
    }
}
