//! Google's slow pongs (8–30 s) for the emulator: a byte-stream wrapper under tungstenite that
//! holds each client ping frame back for a while before tungstenite reads it, so its pong
//! (which tungstenite sends as soon as it reads a ping) leaves that much later, while data
//! frames pass at once. tungstenite answers every ping itself and has no setting to delay
//! that, hence the wrapper.
//!
//! Client frames are masked; the wrapper reads just their headers (RFC 6455 §5.2) to find
//! frame boundaries. A held ping goes back into the stream at the next frame boundary once
//! its delay is over. With a zero delay every call goes straight to the inner stream.

use bytes::{Buf as _, BytesMut};
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Opcode of a ping frame.
const PING: u8 = 0x9;
/// Bytes read from the inner stream at a time.
const READ_CHUNK: usize = 4096;

/// A stream whose client pings reach the reader `delay` late.
pub(crate) struct SlowPong<S> {
    inner: S,
    delay: Duration,
    /// Read from `inner`, not yet classified.
    raw: BytesMut,
    /// Classified bytes for the reader.
    ready: BytesMut,
    /// Bytes of the current (non-ping) frame still to pass through.
    left: u64,
    /// Held pings: when each may go, and its bytes.
    held: VecDeque<(Instant, Vec<u8>)>,
    timer: Option<Pin<Box<Sleep>>>,
    eof: bool,
}

impl<S> SlowPong<S> {
    pub(crate) fn new(inner: S, delay: Duration) -> Self {
        Self {
            inner,
            delay,
            raw: BytesMut::new(),
            ready: BytesMut::new(),
            left: 0,
            held: VecDeque::new(),
            timer: None,
            eof: false,
        }
    }
}

/// `(opcode, header length, payload length)` of the frame at the start of `b`, once its whole
/// header is there.
fn header(b: &[u8]) -> Option<(u8, usize, u64)> {
    let (&b0, &b1) = (b.first()?, b.get(1)?);
    let masked = b1 & 0x80 != 0;
    let (ext, len) = match b1 & 0x7f {
        126 => (2, u64::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?]))),
        127 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(b.get(2..10)?);
            (8, u64::from_be_bytes(n))
        }
        n => (0, u64::from(n)),
    };
    let head = 2 + ext + if masked { 4 } else { 0 };
    (b.len() >= head).then_some((b0 & 0x0f, head, len))
}

impl<S: AsyncRead + Unpin> SlowPong<S> {
    /// Moves what can be classified from `raw` to `ready` or `held`; false when more bytes
    /// are needed.
    fn classify(&mut self) -> bool {
        let mut progressed = false;
        loop {
            if self.left > 0 {
                if self.raw.is_empty() {
                    return progressed;
                }
                let n = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(self.raw.len());
                self.ready.extend_from_slice(&self.raw.split_to(n));
                self.left -= n as u64;
                progressed = true;
                continue;
            }
            let Some((opcode, head, len)) = header(&self.raw) else {
                return progressed;
            };
            let total = head as u64 + len;
            if opcode == PING {
                // Control frames carry at most 125 bytes: the whole frame fits.
                let Ok(total) = usize::try_from(total) else {
                    return progressed;
                };
                if self.raw.len() < total {
                    return progressed;
                }
                let frame = self.raw.split_to(total).to_vec();
                self.held.push_back((Instant::now() + self.delay, frame));
                progressed = true;
            } else {
                self.left = total;
            }
        }
    }

    /// Puts pings whose delay is over back into the stream (at a frame boundary only).
    fn release(&mut self, cx: &mut Context<'_>) {
        while self.left == 0 {
            let Some((due, _)) = self.held.front() else {
                self.timer = None;
                return;
            };
            let due = *due;
            if due <= Instant::now() {
                if let Some((_, frame)) = self.held.pop_front() {
                    self.ready.extend_from_slice(&frame);
                }
                continue;
            }
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            if timer.deadline() != due {
                timer.as_mut().reset(due);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return;
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SlowPong<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.delay.is_zero() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        loop {
            this.release(cx);
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.classify() {
                continue;
            }
            if this.eof {
                // Whatever is left (a cut frame) goes to the reader, which reports it.
                if !this.raw.is_empty() {
                    let rest = this.raw.split();
                    this.ready.extend_from_slice(&rest);
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    if rb.filled().is_empty() {
                        this.eof = true;
                    } else {
                        this.raw.extend_from_slice(rb.filled());
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                // The timer (if any) was polled in `release`, so a held ping wakes us too.
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SlowPong<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A masked client frame (mask key zero, so the payload reads as is).
    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n @ 0..=125 => f.push(0x80 | n as u8),
            n => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[tokio::test(start_paused = true)]
    async fn pings_arrive_late_and_data_at_once() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut slow = SlowPong::new(server, Duration::from_secs(20));
        let ping = frame(PING, b"p");
        let text = frame(0x1, &[b'x'; 300]);
        let mut sent = ping.clone();
        sent.extend_from_slice(&text);
        // Cut mid-header, to check the boundaries hold across reads.
        client.write_all(&sent[..3]).await.unwrap();
        client.write_all(&sent[3..]).await.unwrap();
        let mut got = vec![0u8; text.len()];
        slow.read_exact(&mut got).await.unwrap();
        assert_eq!(got, text, "the data frame passed the held ping");
        let started = Instant::now();
        let mut got = vec![0u8; ping.len()];
        slow.read_exact(&mut got).await.unwrap();
        assert_eq!(got, ping);
        assert!(started.elapsed() >= Duration::from_secs(19));
    }
}
