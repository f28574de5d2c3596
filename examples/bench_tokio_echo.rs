//! Peer for the end-to-end benchmark: an echo server on tokio's
//! current-thread runtime, one task per connection.
//!
//! The idiomatic tokio shape: `accept` in a loop, `spawn` a task that owns the
//! socket and a 16 KiB buffer (the largest message the benchmark sends), and
//! `read` then `write_all` until the peer closes.
//!
//! Usage: `cargo run --release --example bench_tokio_echo [ADDR]` (default 127.0.0.1:6000).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BUF_SIZE: usize = 16 * 1024;

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:6000".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await?;
        eprintln!("tokio echo listening on {}", listener.local_addr()?);
        loop {
            let (mut stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::task::yield_now().await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; BUF_SIZE];
                loop {
                    let n = match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    })
}
