//! Printing results as text for people or as one JSON object per result for scripts.
//! Everything goes through `emit`, so stdout is written in one place; errors go to stderr
//! (and, with `--output json`, also as one JSON object to stdout).

use std::io::Write;

use std::time::Duration;

use coord_client::recipes::{ElectionInfo, LockInfo, LockKind, Participant};
use coord_client::{
    AuthStatusResponse, Child, ClusterStatusResponse, Created, DeleteReason, Error, EventKind,
    LeaderInfo, LostReason, Member, NodeData, NodeKind, OpResult, SessionInfo, Stat, TxnResult,
    WatchEvent,
};
use serde_json::{json, Value};

pub struct Printer {
    pub json: bool,
}

pub(crate) fn emit(text: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (e.g. `| head`) is not an error worth reporting.
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

fn kind_name(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Persistent => "persistent",
        NodeKind::Ephemeral => "ephemeral",
        NodeKind::Container => "container",
    }
}

fn stat_json(stat: &Stat) -> Value {
    json!({
        "create_revision": stat.create_revision,
        "mod_revision": stat.mod_revision,
        "version": stat.version,
        "cversion": stat.cversion,
        "num_children": stat.num_children,
        "ephemeral_owner": stat.ephemeral_owner,
        "data_length": stat.data_length,
        "kind": kind_name(stat.kind),
        "children_revision": stat.children_revision,
    })
}

fn data_json(data: &[u8]) -> Value {
    match std::str::from_utf8(data) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => Value::Array(data.iter().map(|byte| json!(byte)).collect()),
    }
}

/// A node name as text output shows it: characters that could make it look like another name
/// or break the line (bidirectional controls, line and paragraph separators, zero-width and
/// other invisible format characters, C0 and C1 controls) as `\u{XXXX}` escapes, and a
/// backslash doubled. JSON output carries names unchanged (JSON escapes what it must).
pub fn shown(name: &str) -> String {
    let mut text = String::with_capacity(name.len());
    for character in name.chars() {
        let code = u32::from(character);
        let invisible = character.is_control()
            || matches!(code, 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x2069 | 0xFEFF)
            || matches!(code, 0x061C | 0x180E);
        if character == '\\' {
            text.push_str("\\\\");
        } else if invisible {
            text.push_str(&format!("\\u{{{code:04X}}}"));
        } else {
            text.push(character);
        }
    }
    text
}

fn stat_text(stat: &Stat) -> String {
    format!(
        "create_revision: {}\nmod_revision: {}\nversion: {}\ncversion: {}\nnum_children: {}\n\
         ephemeral_owner: {}\ndata_length: {}\nkind: {}\nchildren_revision: {}\n",
        stat.create_revision,
        stat.mod_revision,
        stat.version,
        stat.cversion,
        stat.num_children,
        stat.ephemeral_owner,
        stat.data_length,
        kind_name(stat.kind),
        stat.children_revision,
    )
}

/// One node of a subtree, as `coordctl tree` prints it.
pub struct TreeEntry {
    pub path: String,
    pub depth: usize,
    pub stat: Stat,
}

impl Printer {
    pub fn node(&self, path: &str, node: &NodeData) {
        if self.json {
            let value = json!({
                "path": path,
                "data": data_json(&node.data),
                "stat": stat_json(&node.stat),
                "revision": node.header.revision,
            });
            emit(&format!("{value}\n"));
        } else {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(&node.data);
            let _ = stdout.write_all(b"\n");
        }
    }

    pub fn stat_line(&self, path: &str, stat: &Stat) {
        if self.json {
            emit(&format!(
                "{}\n",
                json!({"path": path, "stat": stat_json(stat)})
            ));
        } else {
            emit(&format!(
                "{path} version={} mod_revision={}\n",
                stat.version, stat.mod_revision
            ));
        }
    }

    pub fn created(&self, created: &Created) {
        if self.json {
            emit(&format!(
                "{}\n",
                json!({"path": created.path, "stat": stat_json(&created.stat)})
            ));
        } else {
            emit(&format!("{}\n", created.path));
        }
    }

    pub fn deleted(&self, path: &str, count: u64) {
        if self.json {
            emit(&format!("{}\n", json!({"path": path, "deleted": count})));
        } else {
            emit(&format!(
                "deleted {count} node{}\n",
                if count == 1 { "" } else { "s" }
            ));
        }
    }

    pub fn children(&self, path: &str, children: &[Child], long: bool) {
        if self.json {
            let items: Vec<Value> = children
                .iter()
                .map(|child| match &child.stat {
                    Some(stat) if long => json!({"name": child.name, "stat": stat_json(stat)}),
                    _ => json!({"name": child.name}),
                })
                .collect();
            emit(&format!("{}\n", json!({"path": path, "children": items})));
            return;
        }
        let mut text = String::new();
        for child in children {
            match &child.stat {
                Some(stat) if long => text.push_str(&format!(
                    "{:<10} v{:<4} {:>8}B {:>4} children  rev {:<8} {}\n",
                    kind_name(stat.kind),
                    stat.version,
                    stat.data_length,
                    stat.num_children,
                    stat.mod_revision,
                    shown(&child.name)
                )),
                _ => text.push_str(&format!("{}\n", shown(&child.name))),
            }
        }
        emit(&text);
    }

    pub fn stat(&self, path: &str, stat: &Stat) {
        if self.json {
            emit(&format!(
                "{}\n",
                json!({"path": path, "stat": stat_json(stat)})
            ));
        } else {
            emit(&stat_text(stat));
        }
    }

    pub fn tree(&self, entries: &[TreeEntry]) {
        if self.json {
            let items: Vec<Value> = entries
                .iter()
                .map(|entry| json!({"path": entry.path, "stat": stat_json(&entry.stat)}))
                .collect();
            emit(&format!("{}\n", json!({"nodes": items})));
            return;
        }
        let mut text = String::new();
        for entry in entries {
            let name = if entry.depth == 0 {
                entry.path.as_str()
            } else {
                entry.path.rsplit('/').next().unwrap_or("")
            };
            text.push_str(&format!("{}{}\n", "  ".repeat(entry.depth), shown(name)));
        }
        emit(&text);
    }

    pub fn txn(&self, result: &TxnResult) {
        let results: Vec<Value> = result
            .results
            .iter()
            .map(|op| match op {
                OpResult::Created { path, stat } => {
                    json!({"created": path, "stat": stat_json(stat)})
                }
                OpResult::Set { stat } => json!({"set": stat_json(stat)}),
                OpResult::Deleted { count } => json!({"deleted": count}),
                OpResult::Got { data, stat } => {
                    json!({"data": data_json(data), "stat": stat_json(stat)})
                }
            })
            .collect();
        if self.json {
            let value = json!({"succeeded": result.succeeded, "revision": result.header.revision, "results": results});
            emit(&format!("{value}\n"));
            return;
        }
        let mut text = format!(
            "{}\n",
            if result.succeeded {
                "SUCCEEDED"
            } else {
                "FAILED"
            }
        );
        for op in &result.results {
            match op {
                OpResult::Created { path, .. } => text.push_str(&format!("created {path}\n")),
                OpResult::Set { stat } => text.push_str(&format!("set version={}\n", stat.version)),
                OpResult::Deleted { count } => text.push_str(&format!("deleted {count}\n")),
                OpResult::Got { data, .. } => {
                    text.push_str(&format!("{}\n", String::from_utf8_lossy(data)))
                }
            }
        }
        emit(&text);
    }

    pub fn cluster_status(&self, status: &ClusterStatusResponse) {
        if self.json {
            let members: Vec<Value> = status
                .members
                .iter()
                .map(|member| {
                    let identity = member.member.clone().unwrap_or_default();
                    json!({
                        "id": identity.id,
                        "peer_address": identity.peer_address,
                        "client_address": identity.client_address,
                        "voter": identity.voter,
                        "role": role_name(member.role),
                        "matched_index": (!member.progress_unknown).then_some(member.matched_index),
                        "lag": (!member.progress_unknown).then_some(member.lag),
                        "reachable": member.reachable,
                    })
                })
                .collect();
            let value = json!({
                "cluster_id": status.cluster_id,
                "leader_id": status.leader_id,
                "term": status.term,
                "committed_index": status.committed_index,
                "applied_index": status.applied_index,
                "last_log_index": status.last_log_index,
                "snapshot_index": status.snapshot_index,
                "data_bytes": status.data_bytes,
                "quota_bytes": status.quota_bytes,
                "leader_has_quorum": status.leader_has_quorum,
                "alarms": status.alarms,
                "members": members,
                "security": security_json(status.security.as_ref()),
            });
            emit(&format!("{value}\n"));
            return;
        }
        let mut text = format!(
            "cluster {}  leader {}  term {}  applied {}  last log {}  snapshot {}\n",
            status.cluster_id,
            status.leader_id,
            status.term,
            status.applied_index,
            status.last_log_index,
            status.snapshot_index
        );
        if !status.alarms.is_empty() {
            text.push_str(&format!(
                "ALARM {}: data {} bytes, quota {} bytes (writes that grow the data are refused)\n",
                status.alarms.join(", "),
                status.data_bytes,
                status.quota_bytes
            ));
        }
        if let Some(security) = &status.security {
            text.push_str(&security_line(security));
        }
        text.push_str(&member_table(&status.members));
        emit(&text);
    }

    /// The leader after `member move-leader`, and its term.
    pub fn leader_moved(&self, leader: u64, term: u64) {
        if self.json {
            emit(&format!("{}\n", json!({"leader_id": leader, "term": term})));
        } else {
            emit(&format!("leader {leader} term {term}\n"));
        }
    }

    pub fn members(&self, members: &[Member]) {
        if self.json {
            let items: Vec<Value> = members
                .iter()
                .map(|member| {
                    json!({
                        "id": member.id,
                        "peer_address": member.peer_address,
                        "client_address": member.client_address,
                        "voter": member.voter,
                    })
                })
                .collect();
            emit(&format!("{}\n", json!({"members": items})));
            return;
        }
        let mut text = String::from("ID  VOTER  PEER                   CLIENT\n");
        for member in members {
            text.push_str(&format!(
                "{:<3} {:<6} {:<22} {}\n",
                member.id,
                if member.voter { "yes" } else { "no" },
                member.peer_address,
                member.client_address
            ));
        }
        emit(&text);
    }

    pub fn sessions(&self, sessions: &[SessionInfo]) {
        if self.json {
            let items: Vec<Value> = sessions
                .iter()
                .map(|session| {
                    json!({
                        "id": session.id,
                        "ttl_ms": millis(session.ttl),
                        "remaining_ms": millis(session.remaining),
                        "last_keepalive_age_ms": session.last_keepalive_age.map(millis),
                        "ephemeral_nodes": session.ephemeral_nodes,
                    })
                })
                .collect();
            emit(&format!("{}\n", json!({"sessions": items})));
            return;
        }
        let mut text = String::from("ID        TTL       LEFT      KEEPALIVE  NODES\n");
        for session in sessions {
            let age = session
                .last_keepalive_age
                .map_or_else(|| "-".to_owned(), |age| format!("{}ms ago", millis(age)));
            text.push_str(&format!(
                "{:<9} {:<9} {:<9} {:<10} {}\n",
                session.id,
                format!("{}ms", millis(session.ttl)),
                format!("{}ms", millis(session.remaining)),
                age,
                session.ephemeral_nodes.join(" ")
            ));
        }
        emit(&text);
    }

    /// A lock was acquired: the token alone on a line (easy to capture in a script).
    pub fn lock_acquired(&self, name: &str, path: &str, token: u64) {
        if self.json {
            emit(&format!(
                "{}\n",
                json!({"lock": name, "path": path, "token": token})
            ));
        } else {
            emit(&format!("{token}\n"));
        }
    }

    /// This process won an election.
    pub fn elected(&self, name: &str, value: &str, path: &str, token: u64) {
        if self.json {
            emit(&format!(
                "{}\n",
                json!({"election": name, "leader": value, "path": path, "token": token})
            ));
        } else {
            emit(&format!("{token}\n"));
        }
    }

    /// What was held is no longer safe to rely on (printed to stderr in text mode).
    pub fn lost(&self, name: &str, reason: LostReason) {
        let reason = match reason {
            LostReason::SessionExpired => "session_expired",
            LostReason::SessionUnsafe => "session_unsafe",
            LostReason::NodeDeleted => "node_deleted",
        };
        if self.json {
            emit(&format!("{}\n", json!({"lost": name, "reason": reason})));
        } else {
            eprintln!("coordctl: {name} lost ({reason}); the command was stopped");
        }
    }

    /// The current leader of an election, or that there is none.
    pub fn leader(&self, name: &str, leader: Option<&LeaderInfo>) {
        if self.json {
            let value = leader.map_or(Value::Null, |leader| {
                json!({
                    "value": data_json(&leader.value),
                    "path": leader.path,
                    "token": leader.token,
                    "session": leader.session,
                })
            });
            emit(&format!("{}\n", json!({"election": name, "leader": value})));
            return;
        }
        match leader {
            Some(leader) => emit(&format!(
                "{} token={} session={}\n",
                String::from_utf8_lossy(&leader.value),
                leader.token,
                leader.session
            )),
            None => emit("(no leader)\n"),
        }
    }

    pub fn locks(&self, locks: &[LockInfo]) {
        if self.json {
            let items: Vec<Value> = locks
                .iter()
                .map(|lock| {
                    json!({
                        "name": lock.name,
                        "kind": lock_kind_name(lock.kind),
                        "holders": lock.holders.iter().map(participant_json).collect::<Vec<_>>(),
                        "waiters": lock.waiters.iter().map(participant_json).collect::<Vec<_>>(),
                    })
                })
                .collect();
            emit(&format!("{}\n", json!({"locks": items})));
            return;
        }
        let mut text =
            String::from("NAME                 KIND       TOKEN     AGE       WAITERS  HOLDER\n");
        for lock in locks {
            let holder = lock.holder();
            text.push_str(&format!(
                "{:<20} {:<10} {:<9} {:<9} {:<8} {}\n",
                lock.name,
                lock_kind_name(lock.kind),
                holder.map_or_else(|| "-".to_owned(), |holder| holder.token.to_string()),
                holder.map_or_else(|| "-".to_owned(), |holder| age_text(holder.age())),
                lock.waiters.len(),
                holder.map_or("-", |holder| holder.holder.as_str()),
            ));
        }
        emit(&text);
    }

    pub fn elections(&self, elections: &[ElectionInfo]) {
        if self.json {
            let items: Vec<Value> = elections
                .iter()
                .map(|election| {
                    json!({
                        "name": election.name,
                        "leader": election.leader.as_ref().map(participant_json),
                        "followers": election.followers.iter().map(participant_json).collect::<Vec<_>>(),
                    })
                })
                .collect();
            emit(&format!("{}\n", json!({"elections": items})));
            return;
        }
        let mut text =
            String::from("NAME                 TOKEN     AGE       CANDIDATES  LEADER\n");
        for election in elections {
            let leader = election.leader.as_ref();
            text.push_str(&format!(
                "{:<20} {:<9} {:<9} {:<11} {}\n",
                election.name,
                leader.map_or_else(|| "-".to_owned(), |leader| leader.token.to_string()),
                leader.map_or_else(|| "-".to_owned(), |leader| age_text(leader.age())),
                election.followers.len() + usize::from(leader.is_some()),
                leader.map_or("-", |leader| leader.holder.as_str()),
            ));
        }
        emit(&text);
    }

    pub fn barrier(&self, name: &str, state: &str) {
        if self.json {
            emit(&format!("{}\n", json!({"barrier": name, "state": state})));
        } else {
            emit(&format!("{name} {state}\n"));
        }
    }

    pub fn event(&self, event: &WatchEvent) {
        let (kind, reason) = match event.kind {
            EventKind::Created => ("created", None),
            EventKind::DataChanged => ("data_changed", None),
            EventKind::ChildrenChanged => ("children_changed", None),
            EventKind::Deleted(reason) => (
                "deleted",
                Some(match reason {
                    DeleteReason::Deleted => "deleted",
                    DeleteReason::SessionClosed => "session_closed",
                    DeleteReason::SessionExpired => "session_expired",
                    DeleteReason::ContainerEmpty => "container_empty",
                }),
            ),
        };
        if self.json {
            let mut object = json!({
                "revision": event.revision,
                "kind": kind,
                "path": event.path,
                "version": event.stat.version,
            });
            if let Some(reason) = reason {
                object["reason"] = json!(reason);
            }
            if !event.data.is_empty() {
                object["data"] = json!(String::from_utf8_lossy(&event.data));
            }
            emit(&format!("{object}\n"));
            return;
        }
        let mut line = format!("{} {kind} {}", event.revision, event.path);
        if let Some(reason) = reason {
            line.push_str(&format!(" ({reason})"));
        }
        if !event.data.is_empty() {
            line.push_str(&format!(" {}", String::from_utf8_lossy(&event.data)));
        }
        line.push('\n');
        emit(&line);
    }

    pub fn session_closed(&self, id: u64, deleted: u64) {
        if self.json {
            emit(&format!("{}\n", json!({"session": id, "deleted": deleted})));
        } else {
            emit(&format!(
                "closed session {id}, deleted {deleted} ephemeral node(s)\n"
            ));
        }
    }

    /// `auth status`: whether auth is on and who the caller is; for an admin, the policy.
    pub fn auth_status(&self, status: &AuthStatusResponse) {
        if self.json {
            emit(&format!("{}\n", auth_status_json(status)));
        } else {
            emit(&auth_status_text(status));
        }
    }

    /// An auth change was made: `confirmation` in text, the policy after it in JSON.
    pub fn auth_changed(&self, confirmation: &str, status: &AuthStatusResponse) {
        if self.json {
            emit(&format!("{}\n", auth_status_json(status)));
        } else {
            emit(&format!("{}\n", shown(confirmation)));
        }
    }

    /// A token was issued: in text the token alone on stdout (for `$(...)`) and a note on
    /// stderr; in JSON the policy after the change, with `issued_token`.
    pub fn token_issued(&self, status: &AuthStatusResponse) {
        if self.json {
            emit(&format!("{}\n", auth_status_json(status)));
        } else {
            emit(&format!("{}\n", status.issued_token));
            eprintln!("coordctl: this token is shown only once; keep it secret");
        }
    }

    pub fn error(&self, error: &Error) {
        let (kind, message) = match not_client_api(error) {
            Some(message) => ("not_client_api", message),
            None => (error_kind(error), error.to_string()),
        };
        eprintln!("coordctl: {message}");
        if self.json {
            emit(&format!(
                "{}\n",
                json!({"error": {"kind": kind, "message": message}})
            ));
        }
    }
}

fn auth_status_json(status: &AuthStatusResponse) -> Value {
    let users: Vec<Value> = status
        .users
        .iter()
        .map(|user| {
            let tokens: Vec<Value> = user
                .tokens
                .iter()
                .map(|token| {
                    json!({
                        "id": token.id,
                        "description": token.description,
                        "created_unix_ms": token.created_unix_ms,
                    })
                })
                .collect();
            json!({"name": user.name, "roles": user.roles, "tokens": tokens})
        })
        .collect();
    let roles: Vec<Value> = status
        .roles
        .iter()
        .map(|role| {
            let grants: Vec<Value> = role
                .grants
                .iter()
                .map(|grant| json!({"prefix": grant.prefix, "permissions": grant.permissions}))
                .collect();
            json!({"name": role.name, "grants": grants})
        })
        .collect();
    let mut value = json!({
        "enabled": status.enabled,
        "caller": status.caller,
        "admin": status.admin,
        "users": users,
        "roles": roles,
    });
    if !status.issued_token.is_empty() {
        value["issued_token"] = json!(status.issued_token);
    }
    value
}

/// `auth status` for people; the users and roles only when the member sent them (to an admin).
fn auth_status_text(status: &AuthStatusResponse) -> String {
    let caller = if status.caller.is_empty() {
        "(no user)".to_owned()
    } else {
        shown(&status.caller)
    };
    let mut text = format!(
        "auth: {}\ncaller: {caller}{}\n",
        if status.enabled {
            "enabled"
        } else {
            "disabled"
        },
        if status.admin { " (admin)" } else { "" },
    );
    if !status.admin {
        return text;
    }
    text.push_str("users:\n");
    for user in &status.users {
        let roles: Vec<String> = user.roles.iter().map(|role| shown(role)).collect();
        text.push_str(&format!(
            "  {}  roles: {}\n",
            shown(&user.name),
            if roles.is_empty() {
                "-".to_owned()
            } else {
                roles.join(", ")
            }
        ));
        for token in &user.tokens {
            text.push_str(&format!(
                "    token {}  created {} ago  {}\n",
                shown(&token.id),
                age_text(since_unix_ms(token.created_unix_ms)),
                shown(&token.description)
            ));
        }
    }
    text.push_str("roles:\n");
    for role in &status.roles {
        text.push_str(&format!("  {}\n", shown(&role.name)));
        for grant in &role.grants {
            text.push_str(&format!(
                "    {}: {}\n",
                shown(&grant.prefix),
                grant.permissions.join(", ")
            ));
        }
    }
    text
}

/// How long ago `unix_ms` was by this machine's clock; zero if it is in the future.
fn since_unix_ms(unix_ms: u64) -> Duration {
    let then = std::time::UNIX_EPOCH + Duration::from_millis(unix_ms);
    std::time::SystemTime::now()
        .duration_since(then)
        .unwrap_or_default()
}

fn lock_kind_name(kind: LockKind) -> String {
    match kind {
        LockKind::Mutex => "mutex".to_owned(),
        LockKind::RwLock => "rwlock".to_owned(),
        LockKind::Semaphore {
            permits: Some(permits),
        } => format!("sem/{permits}"),
        LockKind::Semaphore { permits: None } => "sem/?".to_owned(),
    }
}

fn participant_json(participant: &Participant) -> Value {
    json!({
        "path": participant.path,
        "holder": participant.holder,
        "token": participant.token,
        "session": participant.session,
        "since_unix_ms": participant.since_unix_ms,
        "age_ms": millis(participant.age()),
    })
}

/// Whole milliseconds, saturating: the one conversion of a duration for printing.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn age_text(age: Duration) -> String {
    let seconds = age.as_secs();
    if seconds < 60 {
        format!("{seconds}s")
    } else if seconds < 3600 {
        format!("{}m{}s", seconds / 60, seconds % 60)
    } else {
        format!("{}h{}m", seconds / 3600, seconds % 3600 / 60)
    }
}

/// What to say instead of `error` when the endpoint answered gRPC without serving Coord's
/// client API: a member's peer port answers every client call with UNIMPLEMENTED (no such
/// service), and so does a member older than this coordctl for a newer call.
///
/// The client keeps no status code in these errors, so this reads their messages: its probe
/// on connecting reports "ENDPOINT: MESSAGE", and UNIMPLEMENTED comes with an empty message
/// (a refused or dropped connection always has one); a failed call reports an unknown status
/// as `Internal` with the message "Unimplemented: ...".
fn not_client_api(error: &Error) -> Option<String> {
    const HINT: &str = "is it a member's peer port? use the address the member serves \
                        clients on, its --listen-client";
    match error {
        Error::Unreachable { endpoints, message } => {
            let endpoint = message.strip_suffix(": ")?;
            endpoints
                .iter()
                .any(|known| known == endpoint)
                .then(|| format!("{endpoint} does not serve Coord's client API ({HINT})"))
        }
        Error::Internal { message } if message.starts_with("Unimplemented") => Some(format!(
            "the member does not implement this request: the endpoint does not serve Coord's \
             client API ({HINT}), or the member is older than this coordctl"
        )),
        _ => None,
    }
}

/// The answering member's TLS and auth, and what it refused, as one line.
fn security_line(security: &coord_client::SecurityStatus) -> String {
    let client = match (security.client_tls, security.client_certificates_required) {
        (false, _) => "client port plaintext",
        (true, false) => "client port TLS",
        (true, true) => "client port TLS with client certificates",
    };
    let peer = if security.peer_tls {
        "peer port mutual TLS"
    } else {
        "peer port plaintext"
    };
    let auth = if security.auth_enabled {
        "auth enabled"
    } else {
        "auth disabled"
    };
    format!(
        "security: {client}, {peer}, {auth}; refused: {} client and {} peer handshakes, {} \
         plaintext, {} peer names, {} unauthenticated, {} denied\n",
        security.client_handshakes_refused,
        security.peer_handshakes_refused,
        security.plaintext_refused,
        security.peer_names_refused,
        security.unauthenticated,
        security.denied
    )
}

fn security_json(security: Option<&coord_client::SecurityStatus>) -> Value {
    let Some(security) = security else {
        return Value::Null;
    };
    json!({
        "client_tls": security.client_tls,
        "client_certificates_required": security.client_certificates_required,
        "peer_tls": security.peer_tls,
        "auth_enabled": security.auth_enabled,
        "client_handshakes_refused": security.client_handshakes_refused,
        "peer_handshakes_refused": security.peer_handshakes_refused,
        "plaintext_refused": security.plaintext_refused,
        "peer_names_refused": security.peer_names_refused,
        "unauthenticated": security.unauthenticated,
        "denied": security.denied,
    })
}

/// A stable, machine-readable name for an error.
fn error_kind(error: &Error) -> &'static str {
    match error {
        Error::InvalidPath { .. } => "invalid_path",
        Error::InvalidArgument { .. } => "invalid_argument",
        Error::NodeExists { .. } => "node_exists",
        Error::NoNode { .. } => "no_node",
        Error::BadVersion { .. } => "bad_version",
        Error::NotEmpty { .. } => "not_empty",
        Error::NoParent { .. } => "no_parent",
        Error::EphemeralParent { .. } => "ephemeral_parent",
        Error::SessionExpired { .. } => "session_expired",
        Error::FenceRejected { .. } => "fence_rejected",
        Error::TooLarge { .. } => "too_large",
        Error::LimitExceeded { .. } => "limit_exceeded",
        Error::RootReadOnly => "root_read_only",
        Error::Compacted { .. } => "compacted",
        Error::Membership { .. } => "membership",
        Error::TxnOpFailed { source, .. } => error_kind(source),
        Error::Unavailable { .. } => "unavailable",
        Error::NotAMember { .. } => "not_a_member",
        Error::Timeout { .. } => "timeout",
        Error::Interrupted { .. } => "interrupted",
        Error::ConnectionLost { .. } => "connection_lost",
        Error::Unreachable { .. } => "unreachable",
        Error::Tls { .. } => "tls",
        Error::PermissionDenied { .. } => "permission_denied",
        Error::Unauthenticated { .. } => "unauthenticated",
        Error::Internal { .. } => "internal",
        Error::ResultNotRetained { .. } => "result_not_retained",
        Error::NoSpace { .. } => "no_space",
        Error::SessionUnsafe { .. } => "session_unsafe",
        Error::LockLost { .. } => "lock_lost",
        Error::PermitsMismatch { .. } => "permits_mismatch",
        Error::BadRecipeData { .. } => "bad_recipe_data",
    }
}

/// A member role's name, as `cluster status` prints it.
fn role_name(role: i32) -> &'static str {
    match coord_client::MemberRole::try_from(role) {
        Ok(coord_client::MemberRole::Leader) => "leader",
        Ok(coord_client::MemberRole::Follower) => "follower",
        Ok(coord_client::MemberRole::Candidate) => "candidate",
        Ok(coord_client::MemberRole::Learner) => "learner",
        _ => "unknown",
    }
}

/// The members' table of `cluster status`: "-" where the answering member does not know a
/// member's progress (only the leader tracks every member's), with a line that says so.
fn member_table(members: &[coord_client::MemberStatus]) -> String {
    let mut text =
        String::from("ID  ROLE       PEER                   MATCHED    LAG  REACHABLE\n");
    let mut progress_unknown = false;
    for member in members {
        let identity = member.member.clone().unwrap_or_default();
        let (matched, lag) = if member.progress_unknown {
            progress_unknown = true;
            ("-".to_owned(), "-".to_owned())
        } else {
            (member.matched_index.to_string(), member.lag.to_string())
        };
        text.push_str(&format!(
            "{:<3} {:<10} {:<22} {:<10} {:<4} {}\n",
            identity.id,
            role_name(member.role),
            identity.peer_address,
            matched,
            lag,
            if member.reachable { "yes" } else { "no" }
        ));
    }
    if progress_unknown {
        text.push_str(
            "(-: not known to the member asked; only the leader tracks every member's progress)\n",
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{auth_status_json, auth_status_text, member_table, not_client_api, shown, Error};
    use coord_client::{AuthGrant, AuthRole, AuthStatusResponse, AuthToken, AuthUser};

    #[test]
    fn member_progress_a_member_does_not_know_shows_as_a_dash_with_a_footnote() {
        let member = |id, matched_index, progress_unknown| coord_client::MemberStatus {
            member: Some(coord_client::Member {
                id,
                peer_address: format!("10.0.0.{id}:7401"),
                client_address: String::new(),
                voter: true,
            }),
            role: coord_client::MemberRole::Follower as i32,
            matched_index,
            lag: 0,
            reachable: true,
            progress_unknown,
        };
        let known = member_table(&[member(1, 40, false), member(2, 38, false)]);
        assert!(known.contains(" 40 ") && known.contains(" 38 "), "{known}");
        assert!(!known.contains("only the leader"), "{known}");
        let asked_a_follower = member_table(&[member(1, 0, true), member(2, 40, false)]);
        let first_row = asked_a_follower.lines().nth(1).unwrap();
        assert!(
            first_row.contains(" - ") && !first_row.contains(" 0 "),
            "{first_row}"
        );
        assert!(
            asked_a_follower.contains("only the leader"),
            "{asked_a_follower}"
        );
    }

    #[test]
    fn a_peer_port_is_named_as_one() {
        let probe = Error::Unreachable {
            endpoints: vec!["127.0.0.1:7401".into()],
            message: "127.0.0.1:7401: ".into(),
        };
        let message = not_client_api(&probe).expect("recognized");
        assert!(message.starts_with("127.0.0.1:7401 does not serve Coord's client API"));
        assert!(message.contains("peer port") && message.contains("--listen-client"));
        let call = Error::Internal {
            message: "Unimplemented: ".into(),
        };
        assert!(not_client_api(&call)
            .expect("recognized")
            .contains("peer port"));
    }

    #[test]
    fn other_failures_keep_their_own_message() {
        let refused = Error::Unreachable {
            endpoints: vec!["127.0.0.1:7400".into()],
            message: "127.0.0.1:7400: tcp connect error".into(),
        };
        assert_eq!(not_client_api(&refused), None);
        let crashed = Error::Internal {
            message: "Internal: boom".into(),
        };
        assert_eq!(not_client_api(&crashed), None);
        let no_leader = Error::Unavailable {
            message: String::new(),
            leader_hint: None,
        };
        assert_eq!(not_client_api(&no_leader), None);
    }

    #[test]
    fn names_that_could_pass_for_others_are_shown_escaped() {
        assert_eq!(shown("plain-name"), "plain-name");
        assert_eq!(shown("evil\u{202E}txt.exe"), "evil\\u{202E}txt.exe");
        assert_eq!(shown("two\u{2028}lines"), "two\\u{2028}lines");
        assert_eq!(shown("tab\there"), "tab\\u{0009}here");
        assert_eq!(shown("back\\slash"), "back\\\\slash");
        assert_eq!(shown("zero\u{200B}width"), "zero\\u{200B}width");
        assert_eq!(shown("naïve"), "naïve");
    }
    #[test]
    fn auth_status_shows_the_policy_only_to_an_admin() {
        let mut status = AuthStatusResponse {
            enabled: true,
            caller: "alice".into(),
            admin: false,
            users: vec![AuthUser {
                name: "root".into(),
                roles: vec!["root".into()],
                tokens: vec![AuthToken {
                    id: "3f9a".into(),
                    description: "ops laptop".into(),
                    created_unix_ms: 0,
                }],
            }],
            roles: vec![AuthRole {
                name: "app".into(),
                grants: vec![AuthGrant {
                    prefix: "/app".into(),
                    permissions: vec!["read".into(), "write".into()],
                }],
            }],
            ..AuthStatusResponse::default()
        };
        assert_eq!(auth_status_text(&status), "auth: enabled\ncaller: alice\n");
        status.admin = true;
        let text = auth_status_text(&status);
        assert!(text.starts_with("auth: enabled\ncaller: alice (admin)\nusers:\n"));
        assert!(text.contains("  root  roles: root\n    token 3f9a  created "));
        assert!(text.contains(" ops laptop\n"));
        assert!(text.ends_with("roles:\n  app\n    /app: read, write\n"));
        let value = auth_status_json(&status);
        assert_eq!(value["users"][0]["tokens"][0]["id"], "3f9a");
        assert_eq!(value["roles"][0]["grants"][0]["permissions"][1], "write");
        assert!(value.get("issued_token").is_none());
        status.issued_token = "coord_3f9a.secret".into();
        assert_eq!(
            auth_status_json(&status)["issued_token"],
            "coord_3f9a.secret"
        );
    }
}
