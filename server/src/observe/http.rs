//! The HTTP/1.1 listener of `--listen-metrics`: `/livez`, `/readyz` and `/metrics`.
//!
//! - `/livez`: 200 `ok` whenever the process answers at all (its runtime schedules tasks),
//!   from the moment the port is bound, data still loading included.
//! - `/readyz`: 200 `ok` when [`readiness`](super::readiness) holds, else 503 with the reason
//!   ("starting" while the member loads its data).
//! - `/metrics`: Prometheus text format (503 while the member loads its data).
//!
//! Each connection is served in a task of its own and ends after `REQUEST_TIMEOUT`, so a client
//! that never sends its request holds nothing for long.

use std::sync::{Arc, OnceLock};
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

/// Where the member's metrics appear once it has loaded its data; the listener answers before.
pub type MetricsSlot = Arc<OnceLock<MemberMetrics>>;

fn answer(request: &Request<Incoming>, slot: &MetricsSlot) -> Response<String> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let path = request.uri().path();
    if path == "/livez" {
        return respond(StatusCode::OK, TEXT, "ok\n".to_owned());
    }
    let Some(metrics) = slot.get() else {
        let starting = "starting: loading the data directory\n".to_owned();
        return match path {
            "/readyz" | "/metrics" => respond(StatusCode::SERVICE_UNAVAILABLE, TEXT, starting),
            other => not_found(other),
        };
    };
    match path {
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
        other => not_found(other),
    }
}

fn not_found(path: &str) -> Response<String> {
    respond(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        format!("{path}: not here; try /livez, /readyz or /metrics\n"),
    )
}

/// Serves `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: MetricsSlot) {
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
