//! `relay`: a bare TCP relay. It accepts a connection, connects to the target and copies
//! bytes both ways until either side closes, with no WebSocket parsing, no key check and no
//! usage capture: the least any user-space proxy costs a turn on this machine (two more
//! loopback hops and two more process wake-ups). bench.sh runs the text scenario through it
//! next to the gateway, so what the gateway adds can be read against that floor.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Relays every connection accepted on `listener` to `to` until `stop` completes.
///
/// # Errors
/// The listener's address cannot be read.
pub async fn run(
    listener: TcpListener,
    to: SocketAddr,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!("listening on {addr}, relaying to {to}");
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    #[expect(
                        clippy::disallowed_methods,
                        reason = "a relayed connection ends when either side closes"
                    )]
                    tokio::spawn(relay_one(client, to));
                }
                Err(e) => {
                    // Out of file descriptors, typically: back off instead of spinning.
                    tracing::warn!(error.message = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

async fn relay_one(mut client: TcpStream, to: SocketAddr) {
    let mut upstream = match TcpStream::connect(to).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error.message = %e, %to, "cannot connect; dropping the client");
            return;
        }
    };
    // Like the gateway: small frames leave at once.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error.message = %e, "relayed connection ended with an error");
    }
}

#[cfg(test)]
#[expect(clippy::disallowed_methods, reason = "tests own their tasks")]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_go_both_ways_unchanged_and_stop_ends_it() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 64];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                let reply: Vec<u8> = buf[..n].iter().rev().copied().collect();
                s.write_all(&reply).await.unwrap();
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay_addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let relay = tokio::spawn(run(listener, echo_addr, async {
            let _ = stop_rx.await;
        }));
        let mut c = TcpStream::connect(relay_addr).await.unwrap();
        c.write_all(b"\x00\xffabc").await.unwrap();
        let mut got = [0u8; 5];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"cba\xff\x00");
        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), relay)
            .await
            .expect("relay stops")
            .unwrap()
            .unwrap();
    }
}
