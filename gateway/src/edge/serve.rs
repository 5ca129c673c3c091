//! The HTTP server: hyper's HTTP/1.1 connection, one task per connection,
//! stopped gracefully. Socket.IO's transports are HTTP/1.1 (long-polling and
//! the websocket upgrade), so the server does not read ahead to tell HTTP/2
//! from HTTP/1 as `axum::serve` does (that costs every connection a buffer).
//!
//! Every connection is a long-lived socket here, so what a connection keeps
//! matters: the request head that socketioxide keeps for the socket's life is
//! copied out of hyper's 8 KiB read buffer (see [`detach_head`]).

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderValue, Uri};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

/// Serves `app` on `listener` until `stop` resolves, then waits for the
/// connections in progress (not the upgraded websockets: the drain has closed
/// them) to finish.
pub async fn serve(listener: TcpListener, app: Router, stop: impl Future<Output = ()>) {
    let mut http = hyper::server::conn::http1::Builder::new();
    // Slow clients get 30 s for a request head (hyper's default, which needs a timer).
    http.timer(TokioTimer::new());
    // Each connection task holds a clone of `alive`: all have ended when
    // `ended` reports every sender gone.
    let (alive, mut ended) = mpsc::channel::<()>(1);
    let (stopping, stopped) = watch::channel(false);
    let mut stop = std::pin::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it
                    // was accepted: wait a moment rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Signaling is small messages: none may wait on Nagle for a delayed ACK.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let service =
            app.clone()
                .map_request(move |mut request: Request<hyper::body::Incoming>| {
                    detach_head(&mut request);
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request
                });
        let connection = http
            .serve_connection(
                TokioIo::new(tcp),
                hyper_util::service::TowerToHyperService::new(service),
            )
            .with_upgrades();
        let (alive, mut stopped) = (alive.clone(), stopped.clone());
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = async { stopped.wait_for(|stop| *stop).await.map(|_| ()) } => {
                    // Finish the request in progress, then close.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            drop(alive);
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    drop(alive);
    let _ = ended.recv().await;
}

/// Puts the request's URI and headers in allocations of their own, before
/// the router sees them. hyper parses them as slices of the connection's read
/// buffer (8 KiB), and socketioxide keeps the request head (and axum its
/// `OriginalUri`) as long as the socket lives: without the copy, every socket
/// would keep that whole buffer.
fn detach_head<B>(request: &mut Request<B>) {
    if let Ok(uri) = request.uri().to_string().parse::<Uri>() {
        *request.uri_mut() = uri;
    }
    let headers = std::mem::take(request.headers_mut());
    let mut copied = HeaderMap::with_capacity(headers.len());
    let mut name = None;
    for (key, value) in headers {
        // `None` repeats the previous name (a header given several times).
        if key.is_some() {
            name = key;
        }
        if let (Some(name), Ok(value)) = (&name, HeaderValue::from_bytes(value.as_bytes())) {
            copied.append(name.clone(), value);
        }
    }
    *request.headers_mut() = copied;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_is_copied_whole_with_repeated_headers() {
        let mut request = Request::builder()
            .uri("/socket.io/?EIO=4&transport=websocket")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("sec-websocket-key", "k")
            .body(())
            .unwrap_or_else(|e| panic!("request: {e}"));
        detach_head(&mut request);
        assert_eq!(
            request.uri().to_string(),
            "/socket.io/?EIO=4&transport=websocket"
        );
        let cookies: Vec<&str> = request
            .headers()
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(request.headers()["sec-websocket-key"], "k");
        assert_eq!(request.headers().len(), 3);
    }
}
