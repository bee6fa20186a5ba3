//! `pushlab-floor`: the floor for pushlab's WebSocket fan-out benchmarks.
//!
//! The least a WebSocket broadcast server can do: every text frame from any
//! client goes to every client, through one tokio broadcast channel. No log,
//! no JSON, no sessions, no history. Whatever pushlab costs above this is the
//! price of its features; the benchmarks report the ratio.
//!
//! ```text
//! pushlab-floor [--addr 127.0.0.1:0] [--threads 1]
//! ```
//!
//! Prints `pushlab-floor listening on ws://ADDR` once it is ready.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

/// How many frames a slow client may fall behind before it misses some.
/// A client that lags further loses frames, and the load generator reports
/// them as missing: the floor is allowed to be lossy, never to be slow.
const BACKLOG_FRAMES: usize = 8192;

/// The floor server's flags.
#[derive(Debug, Parser)]
#[command(name = "pushlab-floor", about = "A bare WebSocket broadcast server")]
struct Args {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Runtime worker threads; 1 runs everything on one thread.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(serve(args.addr))
}

async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("could not listen on {addr}"))?;
    println!("pushlab-floor listening on ws://{}", listener.local_addr()?);
    let (frames, _) = broadcast::channel::<Arc<str>>(BACKLOG_FRAMES);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                tokio::spawn(relay(stream, frames.clone()));
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// One client: its text frames go to the channel, the channel goes to it.
async fn relay(stream: TcpStream, frames: broadcast::Sender<Arc<str>>) {
    let _ = stream.set_nodelay(true);
    let Ok(socket) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut out, mut incoming) = socket.split();
    let mut everyone = frames.subscribe();
    loop {
        tokio::select! {
            frame = incoming.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let _ = frames.send(text.into());
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                // tungstenite answers pings itself on the next write or flush.
                Some(Ok(_)) => {}
            },
            next = everyone.recv() => {
                let text = match next {
                    Ok(text) => text,
                    // Frames this client was too slow for are gone; go on.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                // Queue everything already waiting, then write it in one go.
                if out.feed(Message::Text(text.to_string())).await.is_err() {
                    return;
                }
                while let Ok(text) = everyone.try_recv() {
                    if out.feed(Message::Text(text.to_string())).await.is_err() {
                        return;
                    }
                }
                if out.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}
