//! `OlderMember`: a member as a release before `Watch.AwaitTurn` serves it, for tests of the
//! client's fallback: an HTTP/2 proxy on loopback in front of a real member's client port that
//! forwards every request and its answer as they are, except `AwaitTurn`, which it answers
//! `UNIMPLEMENTED` as an older member's generated router does. Plaintext only.
//!
//! Invariant: the proxy's tasks (its listener and every connection) end when it drops.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// The call an older member does not know.
const AWAIT_TURN: &str = "/coord.v1.Watch/AwaitTurn";

pub struct OlderMember {
    address: SocketAddr,
    refused: Arc<AtomicU64>,
    listener: JoinHandle<()>,
}

impl OlderMember {
    /// A proxy on a free loopback port in front of the client port at `member`.
    pub async fn start(member: &str) -> OlderMember {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let address = listener.local_addr().expect("a bound listener's address");
        let refused = Arc::new(AtomicU64::new(0));
        let listener = tokio::spawn(accept(listener, member.to_owned(), refused.clone()));
        OlderMember {
            address,
            refused,
            listener,
        }
    }

    /// The address clients use.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// How many `AwaitTurn` calls it answered `UNIMPLEMENTED`.
    pub fn turns_refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for OlderMember {
    fn drop(&mut self) {
        // The listener task owns the connections' `JoinSet`, which aborts them as it drops.
        self.listener.abort();
    }
}

async fn accept(listener: TcpListener, member: String, refused: Arc<AtomicU64>) {
    let mut connections = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                connections.spawn(serve(stream, member.clone(), refused.clone()));
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
        while connections.try_join_next().is_some() {}
    }
}

/// One client connection, over a connection of its own to the member.
async fn serve(stream: TcpStream, member: String, refused: Arc<AtomicU64>) {
    let Ok(upstream) = TcpStream::connect(&member).await else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    let _ = stream.set_nodelay(true);
    let handshake =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(upstream)).await;
    let Ok((sender, connection)) = handshake else {
        return;
    };
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        let _ = connection.await;
    });
    let service = service_fn(move |request: Request<Incoming>| {
        let mut sender = sender.clone();
        let refused = refused.clone();
        let member = member.clone();
        async move {
            if request.uri().path() == AWAIT_TURN {
                refused.fetch_add(1, Ordering::Relaxed);
                return Ok(unimplemented());
            }
            let (mut parts, body) = request.into_parts();
            let path = parts
                .uri
                .path_and_query()
                .map_or("/", |path| path.as_str())
                .to_owned();
            parts.uri = format!("http://{member}{path}")
                .parse()
                .expect("a member address and a request path make a URI");
            let response = sender.send_request(Request::from_parts(parts, body)).await;
            let response = response?;
            Ok::<_, hyper::Error>(response.map(tonic::body::Body::new))
        }
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// What a member's generated router answers for a method it does not know: a trailers-only
/// response with `grpc-status` 12.
fn unimplemented() -> Response<tonic::body::Body> {
    Response::builder()
        .header("content-type", "application/grpc")
        .header("grpc-status", "12")
        .header("grpc-message", "Method not found")
        .body(tonic::body::Body::empty())
        .expect("a valid response")
}
