//! `CountRequests`: a tower layer on the client port that counts every gRPC request by method
//! and status code (`coord_grpc_requests_total`) and the requests in flight
//! (`coord_grpc_requests_in_flight`).
//!
//! The status is the `grpc-status` of the response headers: a handler's error comes back as a
//! trailers-only response, so it is there; a response without it counts as `Ok` (a successful
//! unary call, or a stream that started; an error later in a stream is not seen). A request is
//! in flight until its response headers are sent, so a stream counts only while it starts.
//!
//! Invariant: label values come from fixed lists (the API's methods, gRPC's codes), never from
//! the request as sent, so a client cannot grow the metrics without bound.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tonic::codegen::http;
use tower::{Layer, Service};

/// Every method the client port serves; anything else is counted as `other`.
const METHODS: [&str; 23] = [
    "/coord.v1.Namespace/Create",
    "/coord.v1.Namespace/Get",
    "/coord.v1.Namespace/Set",
    "/coord.v1.Namespace/Delete",
    "/coord.v1.Namespace/Children",
    "/coord.v1.Namespace/Exists",
    "/coord.v1.Namespace/Txn",
    "/coord.v1.Namespace/CheckFence",
    "/coord.v1.Sessions/Open",
    "/coord.v1.Sessions/KeepAlive",
    "/coord.v1.Sessions/Close",
    "/coord.v1.Sessions/List",
    "/coord.v1.Watch/Watch",
    "/coord.v1.Watch/AwaitTurn",
    "/coord.v1.Cluster/Status",
    "/coord.v1.Cluster/MemberList",
    "/coord.v1.Cluster/MemberAdd",
    "/coord.v1.Cluster/MemberPromote",
    "/coord.v1.Cluster/MemberRemove",
    "/coord.v1.Cluster/MemberMoveLeader",
    "/coord.v1.Auth/Status",
    "/coord.v1.Auth/Change",
    "/grpc.health.v1.Health/Check",
];

/// The label of a request's path.
fn method_label(path: &str) -> &'static str {
    METHODS
        .iter()
        .find(|method| **method == path)
        .map_or("other", |method| &method[1..])
}

/// The label of a `grpc-status` value (`Ok` when absent).
fn code_label(status: Option<&http::HeaderValue>) -> &'static str {
    const CODES: [&str; 17] = [
        "Ok",
        "Cancelled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    let Some(status) = status else { return "Ok" };
    status
        .to_str()
        .ok()
        .and_then(|text| text.parse::<usize>().ok())
        .and_then(|code| CODES.get(code).copied())
        .unwrap_or("Unknown")
}

/// The request counters, shared by the layer and the metrics registry.
#[derive(Clone)]
pub struct RequestMetrics {
    requests: IntCounterVec,
    in_flight: IntGauge,
}

impl RequestMetrics {
    pub fn new() -> Result<RequestMetrics, prometheus::Error> {
        Ok(RequestMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "coord_grpc_requests_total",
                    "gRPC requests on the client port, by method and status code",
                ),
                &["method", "code"],
            )?,
            in_flight: IntGauge::new(
                "coord_grpc_requests_in_flight",
                "gRPC requests on the client port not answered yet",
            )?,
        })
    }

    /// Adds the counters to `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.requests.clone()))?;
        registry.register(Box::new(self.in_flight.clone()))
    }
}

/// The layer that counts requests into a [`RequestMetrics`].
#[derive(Clone)]
pub struct CountRequests {
    metrics: RequestMetrics,
}

impl CountRequests {
    pub fn new(metrics: RequestMetrics) -> CountRequests {
        CountRequests { metrics }
    }
}

impl<S> Layer<S> for CountRequests {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// A service whose requests are counted.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    metrics: RequestMetrics,
}

type Counting<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, B, R> Service<http::Request<B>> for Counted<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Counting<http::Response<R>, S::Error>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_label(request.uri().path());
        let metrics = self.metrics.clone();
        metrics.in_flight.inc();
        let answering = self.inner.call(request);
        Box::pin(async move {
            let answered = answering.await;
            metrics.in_flight.dec();
            let code = match &answered {
                Ok(response) => code_label(response.headers().get("grpc-status")),
                Err(_) => "Unavailable",
            };
            metrics.requests.with_label_values(&[method, code]).inc();
            answered
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_fixed_lists() {
        assert_eq!(
            method_label("/coord.v1.Namespace/Get"),
            "coord.v1.Namespace/Get"
        );
        assert_eq!(method_label("/coord.v1.Namespace/Made-Up-1"), "other");
        assert_eq!(method_label("/x"), "other");
        assert_eq!(code_label(None), "Ok");
        let denied = http::HeaderValue::from_static("7");
        assert_eq!(code_label(Some(&denied)), "PermissionDenied");
        let garbage = http::HeaderValue::from_static("999");
        assert_eq!(code_label(Some(&garbage)), "Unknown");
    }
}
