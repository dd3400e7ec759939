//! `MemberMetrics`: the Prometheus registry of a member, refreshed from the member's own state
//! at each scrape, and the readiness rule `/readyz` applies.
//!
//! Gauges are read at scrape time rather than updated on every event, so the hot paths pay
//! nothing for them; counters kept elsewhere as atomics are copied in the same way.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::consensus::{Consensus, ConsensusStatus};
use crate::grpc::{Access, WatchCounters};
use crate::sessions::SessionKeeper;
use crate::tls_port::PortsTls;

/// How far the applied index may trail this member's log for it to count as ready.
pub const READY_APPLY_LAG_MAX: u64 = 1_000;

/// Where the values come from.
pub struct Sources {
    pub consensus: Arc<Consensus>,
    pub access: Arc<Access>,
    pub tls: PortsTls,
    /// The watch service's counters.
    pub watches: Arc<WatchCounters>,
    pub quota_bytes: u64,
    /// The client port's request counters (`requests.rs`).
    pub requests: super::requests::RequestMetrics,
    pub keeper: Arc<SessionKeeper>,
    /// The data directory, whose size on disk `coord_db_total_size_bytes` reports.
    pub data_dir: PathBuf,
}

/// The index a quorum of voters holds, as the leader knows it; elsewhere the applied index
/// (a follower learns the commit index with the entries it applies).
pub fn committed_index(status: &ConsensusStatus) -> u64 {
    if status.leader != Some(status.member_id) {
        return status.applied_index;
    }
    let mut matched: Vec<u64> = status
        .members
        .iter()
        .filter(|member| member.voter)
        .map(|member| {
            if member.id == status.member_id {
                status.last_log_index
            } else {
                member.matched_index.unwrap_or(0)
            }
        })
        .collect();
    if matched.is_empty() {
        return status.applied_index;
    }
    matched.sort_unstable_by(|a, b| b.cmp(a));
    matched[matched.len() / 2].max(status.applied_index)
}

/// Bytes the files under `dir` take (the RocksDB log and the snapshots); 0 if unreadable.
fn size_on_disk(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => size_on_disk(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |metadata| metadata.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Why a member is not ready, or `Ok` when it is: it knows a leader, that leader (if it is
/// this member) heard from a quorum within three election timeouts, and this member applied
/// its log to within [`READY_APPLY_LAG_MAX`] entries.
pub fn readiness(status: &ConsensusStatus, leader_has_quorum: bool) -> Result<(), String> {
    let Some(leader) = status.leader else {
        return Err("no leader known".to_owned());
    };
    if leader == status.member_id && !leader_has_quorum {
        return Err("this member leads but no quorum answered it recently".to_owned());
    }
    let behind = status.last_log_index.saturating_sub(status.applied_index);
    if behind > READY_APPLY_LAG_MAX {
        return Err(format!("{behind} log entries not applied yet"));
    }
    Ok(())
}

/// Every metric of a member.
pub struct MemberMetrics {
    sources: Sources,
    registry: Registry,
    has_leader: IntGauge,
    is_leader: IntGauge,
    leader_has_quorum: IntGauge,
    leader_changes: IntCounter,
    append_streams_given_up: IntCounter,
    peer_connections_opened: IntCounter,
    term: IntGauge,
    last_log_index: IntGauge,
    applied_index: IntGauge,
    snapshot_index: IntGauge,
    committed: IntCounter,
    applied: IntCounter,
    data_bytes: IntGauge,
    db_bytes: IntGauge,
    write_id_clients: IntGauge,
    sessions_expired: IntCounter,
    quota_bytes: IntGauge,
    sessions: IntGauge,
    watches: IntGauge,
    events_sent: IntCounter,
    too_slow: IntCounter,
    turn_wakeups: IntCounter,
    handshakes_refused: IntCounterVec,
    plaintext_refused: IntCounter,
    peer_names_refused: IntCounter,
    unauthenticated: IntCounter,
    denied: IntCounter,
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
    let gauge = IntGauge::new(name, help)?;
    registry.register(Box::new(gauge.clone()))?;
    Ok(gauge)
}

fn counter(registry: &Registry, name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
    let counter = IntCounter::new(name, help)?;
    registry.register(Box::new(counter.clone()))?;
    Ok(counter)
}

/// Moves `counter` up to `value` (counters kept as atomics elsewhere only grow).
fn catch_up(counter: &IntCounter, value: u64) {
    let current = counter.get();
    if value > current {
        counter.inc_by(value - current);
    }
}

impl MemberMetrics {
    // tidy: long function: one registration per metric, so the whole list reads in one place.
    pub fn new(sources: Sources) -> Result<MemberMetrics, prometheus::Error> {
        let registry = Registry::new();
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let handshakes_refused = IntCounterVec::new(
            Opts::new(
                "coord_tls_handshakes_refused_total",
                "TLS handshakes refused (no certificate, another CA, expired, not TLS), by port",
            ),
            &["port"],
        )?;
        registry.register(Box::new(handshakes_refused.clone()))?;
        sources.requests.register(&registry)?;
        sources.consensus.timings().register(&registry)?;
        let r = &registry;
        Ok(MemberMetrics {
            has_leader: gauge(
                r,
                "coord_server_has_leader",
                "1 if this member knows a leader",
            )?,
            is_leader: gauge(r, "coord_server_is_leader", "1 if this member leads")?,
            leader_has_quorum: gauge(
                r,
                "coord_server_leader_has_quorum",
                "1 if this member leads and a quorum answered it within three election timeouts",
            )?,
            leader_changes: counter(
                r,
                "coord_server_leader_changes_seen_total",
                "Times this member saw a new leader",
            )?,
            append_streams_given_up: counter(
                r,
                "coord_raft_append_streams_given_up_total",
                "AppendEntries streams to a follower this member, as leader, gave up on: nothing \
                 came back for five heartbeat intervals, so their entries are sent again",
            )?,
            peer_connections_opened: counter(
                r,
                "coord_peer_connections_opened_total",
                "Connections this member opened to other members' peer ports: some at every \
                 election and new leader; a steady rise means connections keep failing",
            )?,
            term: gauge(r, "coord_raft_term", "The current Raft term")?,
            last_log_index: gauge(
                r,
                "coord_raft_last_log_index",
                "Index of the last log entry",
            )?,
            applied_index: gauge(
                r,
                "coord_raft_applied_index",
                "Index of the last applied entry (the revision)",
            )?,
            snapshot_index: gauge(
                r,
                "coord_raft_snapshot_index",
                "Index the last snapshot covers",
            )?,
            committed: counter(
                r,
                "coord_server_proposals_committed_total",
                "Log entries committed (on the leader, held by a quorum; elsewhere applied)",
            )?,
            applied: counter(
                r,
                "coord_server_proposals_applied_total",
                "Log entries applied to this member's namespace",
            )?,
            data_bytes: gauge(
                r,
                "coord_db_data_bytes",
                "Size of the tree's data, as --quota-bytes counts it",
            )?,
            db_bytes: gauge(
                r,
                "coord_db_total_size_bytes",
                "Bytes the data directory takes on disk (log and snapshots)",
            )?,
            write_id_clients: gauge(
                r,
                "coord_write_ids_clients",
                "Clients whose write outcomes are remembered for exactly-once retries",
            )?,
            sessions_expired: counter(
                r,
                "coord_sessions_expired_total",
                "Sessions this member expired while it led (no keep-alive within the TTL)",
            )?,
            quota_bytes: gauge(r, "coord_db_quota_bytes", "--quota-bytes (0: none)")?,
            sessions: gauge(r, "coord_sessions_open", "Sessions open in the cluster")?,
            watches: gauge(r, "coord_watches_active", "Watches this member serves")?,
            events_sent: counter(
                r,
                "coord_watch_events_sent_total",
                "Events delivered to watchers",
            )?,
            too_slow: counter(
                r,
                "coord_watches_cancelled_too_slow_total",
                "Watches cancelled because their watcher fell too far behind",
            )?,
            turn_wakeups: counter(
                r,
                "coord_await_turn_wakeups_total",
                "Times a waiting AwaitTurn was woken to check its turn again",
            )?,
            handshakes_refused,
            plaintext_refused: counter(
                r,
                "coord_tls_plaintext_refused_total",
                "Plaintext HTTP/2 clients told that a port needs TLS",
            )?,
            peer_names_refused: counter(
                r,
                "coord_tls_peer_names_refused_total",
                "Peers refused for a certificate name not in --peer-cert-allowed-cn",
            )?,
            unauthenticated: counter(
                r,
                "coord_auth_unauthenticated_total",
                "Requests refused for want of an identity or with an unknown token",
            )?,
            denied: counter(
                r,
                "coord_auth_denied_total",
                "Requests refused for want of a permission",
            )?,
            registry,
            sources,
        })
    }

    /// Reads every value afresh.
    fn refresh(&self) {
        let consensus = &self.sources.consensus;
        let status = consensus.status();
        let leading = status.leader == Some(status.member_id);
        self.has_leader.set(i64::from(status.leader.is_some()));
        self.is_leader.set(i64::from(leading));
        self.leader_has_quorum
            .set(i64::from(consensus.leader_has_quorum()));
        catch_up(&self.leader_changes, consensus.leader_changes());
        catch_up(
            &self.append_streams_given_up,
            consensus.append_streams_given_up(),
        );
        catch_up(
            &self.peer_connections_opened,
            consensus.peer_connections_opened(),
        );
        let as_gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.term.set(as_gauge(status.term.0));
        self.last_log_index.set(as_gauge(status.last_log_index));
        self.applied_index.set(as_gauge(status.applied_index));
        self.snapshot_index.set(as_gauge(status.snapshot_index));
        catch_up(&self.committed, committed_index(&status));
        catch_up(&self.applied, status.applied_index);
        let (data_bytes, sessions, writers) = consensus.replica().read(|namespace| {
            (
                namespace.data_bytes(),
                namespace.sessions().len(),
                namespace.writers().len(),
            )
        });
        self.data_bytes.set(as_gauge(data_bytes));
        self.db_bytes
            .set(as_gauge(size_on_disk(&self.sources.data_dir)));
        self.write_id_clients.set(as_gauge(writers as u64));
        catch_up(
            &self.sessions_expired,
            self.sources.keeper.sessions_expired(),
        );
        self.quota_bytes.set(as_gauge(self.sources.quota_bytes));
        self.sessions.set(as_gauge(sessions as u64));
        let watches = &self.sources.watches;
        self.watches
            .set(as_gauge(watches.active.load(Ordering::Relaxed) as u64));
        catch_up(
            &self.events_sent,
            watches.events_sent.load(Ordering::Relaxed),
        );
        catch_up(
            &self.too_slow,
            watches.cancelled_too_slow.load(Ordering::Relaxed),
        );
        catch_up(
            &self.turn_wakeups,
            watches.turn_wakeups.load(Ordering::Relaxed),
        );
        self.refresh_security();
    }

    fn refresh_security(&self) {
        let ports = [
            ("client", self.sources.tls.client.as_deref()),
            ("peer", self.sources.tls.peer.as_deref()),
        ];
        let (mut plaintext, mut names) = (0, 0);
        for (port, tls) in ports {
            let Some(tls) = tls else { continue };
            let counters = &tls.counters;
            let refused = counters.handshakes_failed.load(Ordering::Relaxed);
            catch_up(&self.handshakes_refused.with_label_values(&[port]), refused);
            plaintext += counters.plaintext_refused.load(Ordering::Relaxed);
            names += counters.names_refused.load(Ordering::Relaxed);
        }
        catch_up(&self.plaintext_refused, plaintext);
        catch_up(&self.peer_names_refused, names);
        let access = &self.sources.access.counters;
        catch_up(
            &self.unauthenticated,
            access.unauthenticated.load(Ordering::Relaxed),
        );
        catch_up(&self.denied, access.denied.load(Ordering::Relaxed));
    }

    /// The Prometheus text exposition of every metric, read now.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        self.refresh();
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        Ok(String::from_utf8_lossy(&buffer).into_owned())
    }

    /// Why this member is not ready, or `Ok`.
    pub fn readiness(&self) -> Result<(), String> {
        let consensus = &self.sources.consensus;
        readiness(&consensus.status(), consensus.leader_has_quorum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::{MemberId, Role, Term};

    fn status(leader: Option<u64>, last_log_index: u64, applied_index: u64) -> ConsensusStatus {
        ConsensusStatus {
            member_id: MemberId(1),
            leader: leader.map(MemberId),
            term: Term(3),
            role: Role::Follower,
            last_log_index,
            applied_index,
            snapshot_index: 0,
            purged_index: 0,
            members: Vec::new(),
        }
    }

    #[test]
    fn committed_is_what_a_quorum_of_voters_holds_on_the_leader() {
        let member = |id: u64, voter: bool, matched: Option<u64>| crate::consensus::MemberState {
            id: MemberId(id),
            peer_address: String::new(),
            voter,
            matched_index: matched,
        };
        let mut leading = status(Some(1), 50, 30);
        leading.members = vec![
            member(1, true, None),
            member(2, true, Some(40)),
            member(3, true, Some(35)),
            member(4, false, Some(50)),
        ];
        assert_eq!(committed_index(&leading), 40);
        leading.members[1].matched_index = None;
        assert_eq!(committed_index(&leading), 35);
        assert_eq!(committed_index(&status(Some(2), 50, 30)), 30);
    }

    #[test]
    fn ready_needs_a_leader_a_quorum_when_leading_and_little_left_to_apply() {
        assert_eq!(readiness(&status(Some(2), 10, 10), false), Ok(()));
        assert!(readiness(&status(None, 10, 10), true)
            .unwrap_err()
            .contains("no leader"));
        assert!(readiness(&status(Some(1), 10, 10), false)
            .unwrap_err()
            .contains("no quorum"));
        assert_eq!(readiness(&status(Some(1), 10, 10), true), Ok(()));
        let lagging = status(Some(2), READY_APPLY_LAG_MAX + 11, 10);
        assert!(readiness(&lagging, true)
            .unwrap_err()
            .contains("not applied"));
        let close = status(Some(2), READY_APPLY_LAG_MAX + 10, 10);
        assert_eq!(readiness(&close, true), Ok(()));
    }
}
