//! The `pushlab` binary: parse flags, set up logging, bind, serve, and shut
//! down in order on SIGINT or SIGTERM.

use std::io::IsTerminal as _;
use std::net::TcpListener;

use anyhow::Context as _;
use clap::Parser as _;
use pushlab::log_throttle::{self, Throttle, Throttled};
use pushlab::Config;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// jemalloc keeps the memory per idle connection lower than the system
/// allocator does (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings: a background thread hands freed pages back to the
/// system within about a second, so after a crowd disconnects the server's
/// RSS falls back towards its baseline even while it sits idle.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000\0";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in log files.
        .with_ansi(std::io::stderr().is_terminal());
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,actix_server=warn".into()),
        )
        // A client that provokes accept or parse errors gets one line per
        // kind per 10 s into the log, not one per attempt.
        .with(Throttled::new(
            lines,
            Throttle::new(log_throttle::WINDOW, log_throttle::FRAMEWORK_TARGETS),
        ))
        .init();
    let config = Config::parse();
    let listener = TcpListener::bind(config.addr)
        .with_context(|| format!("could not listen on {}", config.addr))?;
    let mut server = pushlab::serve(listener, config)?;
    // One stable line on stdout, so scripts that start pushlab on port 0 can
    // read the address it got.
    let scheme = match server.certificate() {
        Some(_) => "https",
        None => "http",
    };
    println!("pushlab listening on {scheme}://{}", server.addr());
    if let Some(certificate) = server.certificate() {
        let whose = match certificate.self_signed {
            true => "self-signed, made for this run",
            false => "from --tls-cert",
        };
        println!(
            "certificate SHA-256 ({whose}): {}",
            certificate.fingerprint()
        );
    }
    if let Some(plain) = server.http1_addr() {
        println!("plain HTTP/1.1 also on http://{plain} (--http1-addr)");
    }
    if let Some(udp) = server.webtransport_addr() {
        // Pages get the hash from GET /config; people comparing it with
        // what their browser shows read it here.
        let hash = server
            .certificate_hash()
            .unwrap_or("(a certificate browsers trust)");
        println!("webtransport on https://{udp}/wt (HTTP/3 over UDP), certificate sha-256 {hash}");
    }
    // For a class: the URLs other machines can open (only read from this
    // machine's interfaces; nothing is sent).
    if !server.addr().ip().is_loopback() {
        let local = pushlab::local_addresses();
        for url in pushlab::join_urls(server.addr(), &local) {
            let url = match server.certificate() {
                Some(_) => url.replacen("http://", "https://", 1),
                None => url,
            };
            println!("students join at {url}");
        }
    }
    tokio::select! {
        result = server.stopped() => return result.context("the server stopped"),
        _ = shutdown_signal() => tracing::info!("shutting down"),
    }
    server.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler can be installed");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
