//! `Cluster`: several `coord-server` processes forming one cluster on loopback.

use std::time::Duration;

use coord_client::{Client, ClientOptions, MemberRole};

use crate::proxy::FaultyNetwork;
use crate::server::ServerProcess;
use crate::{eventually, tree_digest};

pub struct Cluster {
    pub members: Vec<ServerProcess>,
    /// The proxies every link crosses, for clusters started with `start_behind_proxies`.
    /// Declared after `members`, so members die before their links do.
    pub network: Option<FaultyNetwork>,
    /// Keeps every member's directory alive for the cluster's lifetime. Declared last, so it
    /// is removed only once every member is dead: a member still running while it was removed
    /// could create files in it meanwhile, and leave a `member-N` directory behind in /tmp.
    pub dir: tempfile::TempDir,
}

/// Timeouts for the harness's own status calls, which must not hang on a paused member.
fn probe_options(tls: Option<coord_client::TlsOptions>) -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(1),
        // The harness's clients never discover members: they stay on the proxies or the one
        // member they were given.
        discover_members: false,
        tls,
        token: None,
    }
}

impl Cluster {
    /// Starts `size` members with one `--initial-cluster`, all at once.
    pub fn start(size: u64, extra_args: &[&str]) -> Cluster {
        Cluster::start_with(size, |_| extra_args.to_vec(), None)
    }

    /// Like `start`, with each member's extra arguments from `args_of(id)` (a metrics port of
    /// its own, say).
    pub fn start_each(size: u64, args_of: impl Fn(u64) -> Vec<String>) -> Cluster {
        Cluster::start_with(size, args_of, None)
    }

    /// Like `start`, each member also serving metrics (`--listen-metrics`) on a loopback port
    /// of its own; returns the cluster and those ports, member 1's first.
    pub fn start_with_metrics(size: u64) -> (Cluster, Vec<u16>) {
        let ports: Vec<u16> = (0..size).map(|_| crate::free_port()).collect();
        let cluster = Cluster::start_each(size, |id| {
            let port = ports[usize::try_from(id - 1).expect("member ids fit in usize")];
            vec!["--listen-metrics".to_owned(), format!("127.0.0.1:{port}")]
        });
        (cluster, ports)
    }

    /// Starts `size` members whose every peer and client link crosses a fault-injecting proxy
    /// (`Cluster::network`); `seed` fixes the proxies' loss and jitter.
    pub fn start_behind_proxies(size: u64, extra_args: &[&str], seed: u64) -> Cluster {
        Cluster::start_with(
            size,
            |_| extra_args.to_vec(),
            Some(FaultyNetwork::new(seed)),
        )
    }

    fn start_with<A: AsRef<str>>(
        size: u64,
        args_of: impl Fn(u64) -> Vec<A>,
        network: Option<FaultyNetwork>,
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut members: Vec<ServerProcess> = (1..=size)
            .map(|id| {
                let args = args_of(id);
                let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
                ServerProcess::prepare(id, dir.path(), &args)
            })
            .collect();
        if let Some(network) = &network {
            for member in &mut members {
                member.put_behind(network);
            }
        }
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
        Cluster {
            dir,
            members,
            network,
        }
    }

    /// The TLS options of the harness's clients (every member's are the same).
    pub fn client_tls(&self) -> Option<coord_client::TlsOptions> {
        self.members
            .first()
            .and_then(|member| member.client_tls.clone())
    }

    /// Makes every client the harness opens to this cluster use `tls`.
    pub fn set_client_tls(&mut self, tls: Option<coord_client::TlsOptions>) {
        for member in &mut self.members {
            member.client_tls = tls.clone();
        }
    }

    /// The proxies of a cluster started with `start_behind_proxies`.
    pub fn network(&self) -> &FaultyNetwork {
        self.network
            .as_ref()
            .expect("the cluster was started behind proxies")
    }

    /// Replaces member `id`'s disk: removes it from the membership, kills it and deletes its
    /// data, starts it empty with `--join`, adds it back as a learner and promotes it once it
    /// has caught up. This is the safe way back for a member whose disk was lost; restarting it
    /// empty without the removal would let it vote again in a term it already voted in.
    pub async fn wipe_and_rejoin(&mut self, id: u64, timeout: Duration) {
        let other = self
            .ids()
            .into_iter()
            .find(|other| *other != id)
            .expect("a cluster of two or more");
        let admin = self.direct_client_of(other).await;
        let cluster_id = eventually("the cluster id", timeout, || async {
            admin
                .cluster_status()
                .await
                .ok()
                .map(|status| status.cluster_id)
        })
        .await;
        eventually(&format!("removing member {id}"), timeout, || async {
            admin.member_remove(id).await.ok()
        })
        .await;
        let member = self.member(id);
        member.wipe();
        member.set_join(Some(cluster_id));
        member.start();
        let peer_address = member.peer_address();
        eventually(&format!("adding member {id} back"), timeout, || async {
            admin.member_add(id, &peer_address).await.ok()
        })
        .await;
        eventually(&format!("promoting member {id}"), timeout, || async {
            admin.member_promote(id).await.ok()
        })
        .await;
    }

    /// The last `lines` lines of every member's log, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut report = String::new();
        for member in &self.members {
            let log = member.log();
            let all: Vec<&str> = log.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            report.push_str(&format!(
                "--- member {} log (last {lines} lines) ---\n",
                member.id
            ));
            for line in tail {
                report.push_str(line);
                report.push('\n');
            }
        }
        report
    }

    /// Every member's id.
    pub fn ids(&self) -> Vec<u64> {
        self.members.iter().map(|member| member.id).collect()
    }

    /// A member other than `leader`: the lowest id of the others.
    pub fn a_follower(&self, leader: u64) -> u64 {
        self.ids()
            .into_iter()
            .find(|id| *id != leader)
            .expect("a cluster of more than one member")
    }

    /// The leader of the highest term any running member reports, asked directly (past any
    /// proxy), or `None` when no member names one.
    pub async fn current_leader(&self) -> Option<u64> {
        let mut best: Option<(u64, u64)> = None;
        for member in &self.members {
            let Ok(client) = Client::connect_with(
                [member.direct_client_address()],
                probe_options(member.client_tls.clone()),
            )
            .await
            else {
                continue;
            };
            let status =
                tokio::time::timeout(Duration::from_secs(1), client.cluster_status()).await;
            if let Ok(Ok(status)) = status {
                let term = status.term;
                if status.leader_id != 0 && best.is_none_or(|(best_term, _)| term > best_term) {
                    best = Some((term, status.leader_id));
                }
            }
        }
        best.map(|(_, leader)| leader)
    }

    /// Waits until every member in `ids` has applied the same revision, then compares the
    /// digests of their whole trees read locally until they agree; panics naming the member
    /// that still differs at `timeout`. Call with no client writes running. Returns the common
    /// digest.
    pub async fn converged_digest(&self, ids: &[u64], timeout: Duration) -> Vec<String> {
        let mut clients = Vec::new();
        for id in ids {
            clients.push(self.direct_client_of(*id).await);
        }
        // The highest revision any member has applied: every member must reach it (a restarted
        // member may still be catching up when this starts).
        let mut target = 0;
        for client in &clients {
            let header = eventually("a header from every member", timeout, || async {
                client.header().await.ok()
            })
            .await;
            target = target.max(header.revision);
        }
        for (client, id) in clients.iter().zip(ids) {
            eventually(
                &format!("member {id} to apply revision {target}"),
                timeout,
                || async move {
                    let revision = client.header().await.ok()?.revision;
                    (revision >= target).then_some(())
                },
            )
            .await;
        }
        // Read every member's tree after everyone passed `target`. The cluster may still change
        // it on its own (a session abandoned by a client expires and its ephemeral nodes go), so
        // the reads are repeated until they agree; a real divergence never does.
        let deadline = tokio::time::Instant::now() + timeout;
        let mut digests = Vec::new();
        loop {
            digests.clear();
            for client in &clients {
                let digest = tree_digest(client, "/", coord_client::Consistency::Serializable)
                    .await
                    .expect("a member that answered a header reads its own tree");
                digests.push(digest);
            }
            let agreed = digests.iter().all(|digest| digest == &digests[0]);
            if agreed || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for (digest, id) in digests.iter().zip(ids) {
            if digest != &digests[0] {
                let only_here: Vec<&String> = digest
                    .iter()
                    .filter(|line| !digests[0].contains(line))
                    .collect();
                let only_there: Vec<&String> = digests[0]
                    .iter()
                    .filter(|line| !digest.contains(line))
                    .collect();
                panic!(
                    "member {id}'s tree differs from member {}'s at revision {target}:\n\
                     only on {id}: {only_here:#?}\nonly on {}: {only_there:#?}",
                    ids[0], ids[0]
                );
            }
        }
        digests.swap_remove(0)
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
            discover_members: false,
            tls: self.client_tls(),
            token: None,
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
                    discover_members: false,
                    tls: self.client_tls(),
                    token: None,
                };
                let address = member.direct_client_address();
                let status = match Client::connect_with([address], options).await {
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
                "no agreed leader among {among:?} within {timeout:?}: {leaders:?}\n{}",
                self.log_tails(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A client connected to one member only (through its proxy, if it has one).
    pub async fn client_of(&self, id: u64) -> Client {
        self.connect_to(id, false).await
    }

    /// A client connected to one member only, past any proxy: the harness's own view.
    pub async fn direct_client_of(&self, id: u64) -> Client {
        self.connect_to(id, true).await
    }

    async fn connect_to(&self, id: u64, direct: bool) -> Client {
        let member = self
            .members
            .iter()
            .find(|member| member.id == id)
            .expect("member exists");
        let options = ClientOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(20),
            discover_members: false,
            tls: self.client_tls(),
            token: None,
        };
        // A member that was just (re)started may not listen yet: retry, bounded.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let address = if direct {
                member.direct_client_address()
            } else {
                member.client_address()
            };
            match Client::connect_with([address], options.clone()).await {
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
