//! `Cluster`: several `coord-server` processes forming one cluster on loopback.

use std::time::Duration;

use coord_client::{Client, ClientOptions, MemberRole};

use crate::server::ServerProcess;

pub struct Cluster {
    /// Keeps every member's directory alive for the cluster's lifetime.
    pub dir: tempfile::TempDir,
    pub members: Vec<ServerProcess>,
}

impl Cluster {
    /// Starts `size` members with one `--initial-cluster`, all at once.
    pub fn start(size: u64, extra_args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut members: Vec<ServerProcess> = (1..=size)
            .map(|id| ServerProcess::prepare(id, dir.path(), extra_args))
            .collect();
        let initial_cluster = members
            .iter()
            .map(|member| format!("{}={}", member.id, member.peer_address()))
            .collect::<Vec<_>>()
            .join(",");
        // Start in reverse order: the founder comes up last, which must not matter.
        for member in members.iter_mut().rev() {
            member.set_initial_cluster(&initial_cluster);
            member.start();
        }
        Cluster { dir, members }
    }

    /// The member with id `id`.
    pub fn member(&mut self, id: u64) -> &mut ServerProcess {
        self.members
            .iter_mut()
            .find(|member| member.id == id)
            .unwrap_or_else(|| panic!("no member {id}"))
    }

    /// Every member's client address.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(ServerProcess::client_address)
            .collect()
    }

    /// A client over every member's endpoint.
    pub async fn client(&self) -> Client {
        let options = ClientOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(20),
        };
        Client::connect_with(self.endpoints(), options)
            .await
            .expect("some member answers")
    }

    /// Waits (bounded) until the members with the given ids agree on one leader among them,
    /// and returns its id.
    pub async fn wait_for_leader(&self, among: &[u64], timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut leaders = Vec::new();
            for member in self
                .members
                .iter()
                .filter(|member| among.contains(&member.id))
            {
                let options = ClientOptions {
                    connect_timeout: Duration::from_millis(500),
                    request_timeout: Duration::from_secs(1),
                };
                let status = match Client::connect_with([member.client_address()], options).await {
                    Ok(client) => client.cluster_status().await.ok(),
                    Err(_) => None,
                };
                leaders.push(status.map(|status| {
                    let leader_is_voter = status.members.iter().any(|state| {
                        state
                            .member
                            .as_ref()
                            .is_some_and(|m| m.id == status.leader_id)
                            && state.role == MemberRole::Leader as i32
                    });
                    (status.leader_id, leader_is_voter)
                }));
            }
            if let Some(Some((leader, true))) = leaders.first().cloned() {
                if leader != 0
                    && among.contains(&leader)
                    && leaders.iter().all(|seen| *seen == Some((leader, true)))
                {
                    return leader;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no agreed leader among {among:?} within {timeout:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A client connected to one member only.
    pub async fn client_of(&self, id: u64) -> Client {
        let member = self
            .members
            .iter()
            .find(|member| member.id == id)
            .expect("member exists");
        let options = ClientOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(20),
        };
        // A member that was just (re)started may not listen yet: retry, bounded.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match Client::connect_with([member.client_address()], options.clone()).await {
                Ok(client) => return client,
                Err(error) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "member {id} did not answer within 30s: {error}\n{}",
                    member.log()
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
