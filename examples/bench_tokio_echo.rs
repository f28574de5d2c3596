//! Peer for the end-to-end benchmark: an echo server on tokio's
//! current-thread runtime, one task per connection.
//!
//! The idiomatic tokio shape: `accept` in a loop, `spawn` a task that owns the
//! socket and a 16 KiB buffer (the largest message the benchmark sends), and
//! `read` then `write_all` until the peer closes.
//!
//! With `--lines` it echoes lines the way a tokio user writes it, as
//! `echo_async` does on evloop: a `BufReader` over the read half,
//! `read_until(b'\n')` into a line, then `write_all` of the line. The
//! benchmark compares `echo_async` with it, doing the same work per message.
//!
//! Usage: `cargo run --release --example bench_tokio_echo [ADDR] [--lines]`
//! (default 127.0.0.1:6000).

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const BUF_SIZE: usize = 16 * 1024;

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:6000".into());
    let lines = std::env::args().skip(2).any(|a| a == "--lines");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await?;
        eprintln!("tokio echo listening on {}", listener.local_addr()?);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::task::yield_now().await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            if lines {
                tokio::spawn(echo_lines(stream));
            } else {
                tokio::spawn(echo_bytes(stream));
            }
        }
    })
}

async fn echo_bytes(mut stream: TcpStream) {
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
}

async fn echo_lines(mut stream: TcpStream) {
    let (read, mut write) = stream.split();
    let mut read = BufReader::with_capacity(BUF_SIZE, read);
    let mut line = Vec::new();
    loop {
        line.clear();
        match read.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if write.write_all(&line).await.is_err() {
            return;
        }
    }
}
