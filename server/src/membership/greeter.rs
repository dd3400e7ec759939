//! `Greeter`: once a second, exchanges `Hello` with every other member over the peer port, to
//! learn their client addresses (`--initial-cluster` names only peer addresses) and whether they
//! answer, and asks which log commands they apply. What it learns goes into the
//! `MemberDirectory`, and the commands to consensus (`FeatureBook`).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::directory::MemberDirectory;
use crate::consensus::{Consensus, MemberId, MessageKind, PeerCallError, PeerFeatures, PeerMethod};

/// How often members exchange identities (client addresses) and liveness.
pub const HELLO_INTERVAL: Duration = Duration::from_secs(1);

/// Identities exchanged by `Peer.Hello`, in both directions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub cluster_id: String,
    pub member_id: MemberId,
    pub client_address: String,
}

pub struct Greeter {
    consensus: Arc<Consensus>,
    directory: Arc<MemberDirectory>,
    /// This member's client address, as other members and clients should use it.
    client_address: String,
}

impl Greeter {
    pub fn new(
        consensus: Arc<Consensus>,
        directory: Arc<MemberDirectory>,
        client_address: String,
    ) -> Greeter {
        Greeter {
            consensus,
            directory,
            client_address,
        }
    }

    /// This member's identity, as sent in `Peer.Hello`.
    pub fn hello(&self) -> Hello {
        Hello {
            cluster_id: self.consensus.cluster_id().to_owned(),
            member_id: self.consensus.member_id(),
            client_address: self.client_address.clone(),
        }
    }

    /// Greets every other member, once a second, until the member stops.
    pub async fn run(self: Arc<Greeter>) {
        loop {
            self.greet_peers().await;
            tokio::time::sleep(HELLO_INTERVAL).await;
        }
    }

    /// Exchanges identities with every other member once; records who answered.
    async fn greet_peers(&self) {
        let hello = self.hello();
        let timeout = Duration::from_secs(1);
        let greetings = self
            .consensus
            .other_members()
            .into_iter()
            .map(|(id, address)| {
                let hello = &hello;
                async move {
                    let reply: Result<Hello, PeerCallError> = self
                        .consensus
                        .peers()
                        .call(
                            &address,
                            PeerMethod::Hello,
                            MessageKind::Hello,
                            hello,
                            timeout,
                        )
                        .await;
                    match reply {
                        Ok(reply) if reply.cluster_id != hello.cluster_id => {
                            tracing::error!(member = %id, %address, theirs = %reply.cluster_id,
                                ours = %hello.cluster_id, "peer belongs to another cluster");
                        }
                        Ok(reply) if reply.member_id != id => {
                            tracing::error!(expected = %id, found = %reply.member_id, %address,
                                "peer address answers as another member");
                        }
                        Ok(reply) => {
                            self.directory.heard_from(id, reply.client_address);
                            self.ask_features(id, &address, timeout).await;
                        }
                        Err(error) => {
                            tracing::debug!(member = %id, %error, "peer did not answer hello")
                        }
                    }
                }
            });
        futures::future::join_all(greetings).await;
    }

    /// Asks member `id` which log commands it applies, for the leader's choice of entries.
    async fn ask_features(&self, id: MemberId, address: &str, timeout: Duration) {
        let features: Result<PeerFeatures, PeerCallError> = self
            .consensus
            .peers()
            .call(
                address,
                PeerMethod::Features,
                MessageKind::Features,
                &(),
                timeout,
            )
            .await;
        self.consensus.heard_features(id, features);
    }
}
