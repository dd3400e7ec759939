//! The HTTP/1.1 listener of `--listen-metrics`: `/livez`, `/readyz` and `/metrics`.
//!
//! - `/livez`: 200 `ok` whenever the process answers at all (its runtime schedules tasks).
//! - `/readyz`: 200 `ok` when [`readiness`](super::readiness) holds, else 503 with the reason.
//! - `/metrics`: Prometheus text format.
//!
//! Each connection is served in a task of its own and ends after `REQUEST_TIMEOUT`, so a client
//! that never sends its request holds nothing for long.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;

use super::metrics::MemberMetrics;

/// Longest life of one connection to this listener.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<String> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

fn answer(request: &Request<Incoming>, metrics: &MemberMetrics) -> Response<String> {
    const TEXT: &str = "text/plain; charset=utf-8";
    match request.uri().path() {
        "/livez" => respond(StatusCode::OK, TEXT, "ok\n".to_owned()),
        "/readyz" => match metrics.readiness() {
            Ok(()) => respond(StatusCode::OK, TEXT, "ok\n".to_owned()),
            Err(reason) => respond(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{reason}\n")),
        },
        "/metrics" => match metrics.render() {
            Ok(text) => respond(StatusCode::OK, prometheus::TEXT_FORMAT, text),
            Err(error) => respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                format!("metrics could not be encoded: {error}\n"),
            ),
        },
        other => respond(
            StatusCode::NOT_FOUND,
            TEXT,
            format!("{other}: not here; try /livez, /readyz or /metrics\n"),
        ),
    }
}

/// Serves `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<MemberMetrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = answer(&request, &metrics);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, connection).await;
        });
    }
}
