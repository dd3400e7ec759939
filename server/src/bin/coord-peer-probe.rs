//! `coord-peer-probe`: sends one forged message to a member's peer port and prints the status
//! it got (and, for a forged forwarded write, the answer decoded), for the hostile-input tests
//! (`tests/tests/hostile.rs`). Not for production use.
//!
//! `coord-peer-probe PEER_ADDRESS CLUSTER_ID TERM PROBE` (PROBE: see `consensus::Probe`; an
//! AppendEntries probe named `stream-PROBE` goes as the only request of a `Peer.AppendStream`;
//! `forward-stream-PROBE` sends a forwarded write's or batch's probe, or `garbage`, as the only
//! batch of a `Peer.ForwardStream`).

#![allow(
    clippy::print_stdout,
    reason = "a command-line tool whose output is its result"
)]

use std::process::ExitCode;
use std::time::Duration;

use coord_proto::v1::peer::peer_client::PeerClient;
use coord_proto::v1::peer::PeerMessage;
use coord_server::consensus::{
    decode_peer, encode_peer, forge, peer_request, with_cluster_id, ConsensusError, MessageKind,
    Probe, ProbeMethod, StreamedBatch, StreamedReply, WriteBatchCall, WriteCall, Written,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let [address, cluster_id, term, probe] = arguments.as_slice() else {
        eprintln!("usage: coord-peer-probe PEER_ADDRESS CLUSTER_ID TERM PROBE");
        return ExitCode::from(2);
    };
    let (streamed, forward_streamed, probe) = match (
        probe.strip_prefix("stream-"),
        probe.strip_prefix("forward-stream-"),
    ) {
        (Some(probe), _) => (true, false, probe),
        (_, Some(probe)) => (false, true, probe),
        _ => (false, false, probe.as_str()),
    };
    let (Ok(term), Some(probe)) = (term.parse::<u64>(), Probe::from_name(probe)) else {
        eprintln!("coord-peer-probe: bad TERM or unknown PROBE");
        return ExitCode::from(2);
    };
    let (method, message) = forge(probe, term);
    let mut client = match PeerClient::connect(format!("http://{address}")).await {
        Ok(client) => client
            .max_encoding_message_size(usize::MAX)
            .max_decoding_message_size(usize::MAX),
        Err(error) => {
            eprintln!("coord-peer-probe: cannot connect to {address}: {error}");
            return ExitCode::from(3);
        }
    };
    if streamed {
        if method != ProbeMethod::AppendEntries {
            eprintln!("coord-peer-probe: only AppendEntries probes go in a stream");
            return ExitCode::from(2);
        }
        println!(
            "{}",
            streamed_answer(&mut client, cluster_id, message).await
        );
        return ExitCode::SUCCESS;
    }
    if forward_streamed {
        println!(
            "{}",
            forward_streamed_answer(&mut client, cluster_id, message).await
        );
        return ExitCode::SUCCESS;
    }
    let request = peer_request(cluster_id, message, Duration::from_secs(10));
    let reply = match method {
        ProbeMethod::AppendEntries => client.append_entries(request).await,
        ProbeMethod::Vote => client.vote(request).await,
        ProbeMethod::InstallSnapshot => client.install_snapshot(request).await,
        ProbeMethod::Forward => client.forward(request).await,
    };
    match reply {
        // A forwarded write is answered with its outcome: show it.
        Ok(reply) if probe == Probe::ForwardOversize => {
            let answer: Result<Result<Written, ConsensusError>, _> =
                decode_peer(reply.get_ref(), MessageKind::Write);
            println!("accepted {answer:?}");
        }
        Ok(_) => println!("accepted"),
        Err(status) => println!("refused {:?}: {}", status.code(), status.message()),
    }
    ExitCode::SUCCESS
}

/// Sends `message` as the one request of an `AppendStream` and says what came back first.
async fn streamed_answer(
    client: &mut PeerClient<tonic::transport::Channel>,
    cluster_id: &str,
    mut message: PeerMessage,
) -> String {
    message.kind = MessageKind::AppendStream.code();
    let mut request = tonic::Request::new(tokio_stream::iter(vec![message]));
    request.set_timeout(Duration::from_secs(10));
    let answers = match client
        .append_stream(with_cluster_id(request, cluster_id))
        .await
    {
        Ok(answers) => answers,
        Err(status) => return format!("refused {:?}: {}", status.code(), status.message()),
    };
    match answers.into_inner().message().await {
        Ok(Some(_)) => "accepted".to_owned(),
        Ok(None) => "accepted, no answer".to_owned(),
        Err(status) => format!("refused {:?}: {}", status.code(), status.message()),
    }
}

/// Sends a forged forward as the one batch of a `ForwardStream` (a single write as a batch of
/// one, anything else with its payload as it is) and says what came back first.
async fn forward_streamed_answer(
    client: &mut PeerClient<tonic::transport::Channel>,
    cluster_id: &str,
    message: PeerMessage,
) -> String {
    let kind = MessageKind::ForwardStream;
    let batch = match MessageKind::from_code(message.kind) {
        Some(MessageKind::Write) => decode_peer::<WriteCall>(&message, MessageKind::Write)
            .ok()
            .map(|write| WriteBatchCall {
                writes: vec![write],
            }),
        Some(MessageKind::WriteBatch) => decode_peer(&message, MessageKind::WriteBatch).ok(),
        _ => None,
    };
    let message = match batch {
        Some(batch) => encode_peer(kind, &StreamedBatch { tag: 1, batch }),
        None => PeerMessage {
            kind: kind.code(),
            ..message
        },
    };
    let mut request = tonic::Request::new(tokio_stream::iter(vec![message]));
    request.set_timeout(Duration::from_secs(10));
    let answers = match client
        .forward_stream(with_cluster_id(request, cluster_id))
        .await
    {
        Ok(answers) => answers,
        Err(status) => return format!("refused {:?}: {}", status.code(), status.message()),
    };
    match answers.into_inner().message().await {
        Ok(Some(reply)) => {
            let reply: Result<StreamedReply, _> = decode_peer(&reply, kind);
            format!("accepted {reply:?}")
        }
        Ok(None) => "accepted, no answer".to_owned(),
        Err(status) => format!("refused {:?}: {}", status.code(), status.message()),
    }
}
