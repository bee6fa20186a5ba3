//! `pushlab-floor`: the floor for pushlab's fan-out benchmarks, over
//! WebSocket and HTTP/1.1 long-polling.
//!
//! The least a WebSocket broadcast server can do: every text frame from any
//! client goes to every client, through one tokio broadcast channel. No
//! JSON parsing per delivery, no sessions, no history. Whatever pushlab
//! costs above this is the price of its features; the benchmarks report the
//! ratio.
//!
//! The least a long-poll server can do, on the same port: each text that is
//! a JSON value also goes into a bounded log with a seq (`log`), and
//! `GET /longpoll?since=N&timeout=S` on a keep-alive connection is answered
//! with what came after `N`, or held until something does, in pushlab's
//! shape: `{"events":[...],"cursor":N,"epoch":"floor","gap":false}` (`http`).
//! Without `since` it waits for the next event.
//!
//! ```text
//! pushlab-floor [--addr 127.0.0.1:0] [--threads 1]
//! ```
//!
//! Prints `pushlab-floor listening on ws://ADDR` once it is ready.

use std::net::SocketAddr;
use std::sync::Arc;

mod http;
mod log;

use anyhow::Context as _;
use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use log::EventLog;

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
    let log = Arc::new(EventLog::new(log::MAX_EVENTS, log::MAX_BYTES));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                tokio::spawn(connection(stream, frames.clone(), log.clone()));
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// One connection: long-polls until it asks for a WebSocket, then relays.
async fn connection(
    mut stream: TcpStream,
    frames: broadcast::Sender<Arc<str>>,
    log: Arc<EventLog>,
) {
    let _ = stream.set_nodelay(true);
    let http::Outcome::Upgrade { key, rest } = http::serve(&mut stream, &log).await else {
        return;
    };
    let accept = http::switching_protocols(&key);
    if stream.write_all(accept.as_bytes()).await.is_err() {
        return;
    }
    // A client may send its first frames before it reads the handshake's
    // answer; they were read with the head and go first.
    let socket = WebSocketStream::from_partially_read(stream, rest, Role::Server, None).await;
    relay(socket, frames, &log).await;
}

/// One WebSocket: its text frames go to the channel (and, when they are
/// JSON, to the long-poll log), the channel goes to it.
async fn relay(
    socket: WebSocketStream<TcpStream>,
    frames: broadcast::Sender<Arc<str>>,
    log: &EventLog,
) {
    let (mut out, mut incoming) = socket.split();
    let mut everyone = frames.subscribe();
    loop {
        tokio::select! {
            frame = incoming.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let text: Arc<str> = text.into();
                    // Checked once per publish, not per delivery, so that
                    // every long-poll answer is JSON.
                    if serde_json::from_str::<&serde_json::value::RawValue>(&text).is_ok() {
                        log.append(text.clone());
                    }
                    let _ = frames.send(text);
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
