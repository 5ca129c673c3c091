//! The `bare-server`: a Socket.IO server that accepts connections on the
//! default namespace and does nothing else, with the gateway's engine settings.
//! The idle memory of its connections is the library's own cost; what the
//! gateway holds above it is ours.

use std::net::SocketAddr;

use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;

#[derive(Debug, Clone, clap::Args)]
pub struct BareArgs {
    #[arg(long, default_value = "127.0.0.1:9300")]
    pub listen: SocketAddr,
    /// The websocket read buffer (socketioxide's default is 4096; the gateway's 512).
    #[arg(long, default_value_t = 4096)]
    pub ws_read_buffer: usize,
    /// Serve with hyper's HTTP/1 connection directly (as the gateway does)
    /// instead of `axum::serve` (HTTP/1 and HTTP/2, found by reading ahead).
    #[arg(long)]
    pub http1_only: bool,
}

/// Serves until Ctrl-C or SIGTERM.
pub async fn serve(args: &BareArgs) -> anyhow::Result<()> {
    let (layer, io) = SocketIo::builder()
        .ws_read_buffer_size(args.ws_read_buffer)
        .build_layer();
    io.ns("/", async |_: SocketRef| {});
    let app = axum::Router::new().layer(layer);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("bare socket.io server on {}", listener.local_addr()?);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    if args.http1_only {
        loop {
            let (tcp, _) = tokio::select! {
                accepted = listener.accept() => accepted?,
                _ = term.recv() => return Ok(()),
            };
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .with_upgrades()
                    .await;
            });
        }
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await?;
    Ok(())
}
