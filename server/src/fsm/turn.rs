//! Queue turns in a directory of sequential nodes, as `AwaitTurn` checks them: a pure read of
//! the tree, like a listing, that answers on the member what a recipe would otherwise decide
//! from a listing it fetched.
//!
//! A queued child is named by a prefix and the sequence suffix its parent assigned
//! (`lock-0000000007`); sequences order the queue (the name breaks ties). The turn of a child
//! comes when fewer than `permits` of the children before it are *blockers*: named by one of
//! the rule's prefixes followed by digits only. Any other child never blocks.
//!
//! Invariant: `Granted` is only ever the answer for a tree in which the waiting child exists
//! with the token asked for; a missing child (or one created at another revision) is
//! `NoNode`, never a turn.

use super::error::FsmError;
use super::ids::Revision;
use super::namespace::Namespace;
use super::path::NodePath;

/// Most prefixes one rule may name.
pub const TURN_PREFIXES_MAX: usize = 8;
/// Longest prefix, in bytes.
pub const TURN_PREFIX_BYTES_MAX: usize = 64;

/// Which children block a waiting child's turn, and how many may precede it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnRule {
    blocking_prefixes: Vec<String>,
    permits: u64,
}

impl TurnRule {
    /// A rule of 1 to `TURN_PREFIXES_MAX` non-empty prefixes of at most
    /// `TURN_PREFIX_BYTES_MAX` bytes; `permits` 0 means 1.
    pub fn new(blocking_prefixes: Vec<String>, permits: u64) -> Result<TurnRule, FsmError> {
        let invalid = |reason: String| FsmError::InvalidArgument { reason };
        if blocking_prefixes.is_empty() || blocking_prefixes.len() > TURN_PREFIXES_MAX {
            return Err(invalid(format!(
                "blocking_prefixes: give 1 to {TURN_PREFIXES_MAX} prefixes, not {}",
                blocking_prefixes.len()
            )));
        }
        if let Some(bad) = blocking_prefixes
            .iter()
            .find(|prefix| prefix.is_empty() || prefix.len() > TURN_PREFIX_BYTES_MAX)
        {
            return Err(invalid(format!(
                "blocking_prefixes: {bad:?} is not 1 to {TURN_PREFIX_BYTES_MAX} bytes"
            )));
        }
        Ok(TurnRule {
            blocking_prefixes,
            permits: permits.max(1),
        })
    }

    /// The sequence of `name` if it is a blocker's name.
    fn blocker_sequence(&self, name: &str) -> Option<u64> {
        self.blocking_prefixes
            .iter()
            .find_map(|prefix| digits(name.strip_prefix(prefix.as_str())?))
    }
}

/// The number `text` spells if it is digits only.
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The sequence suffix of a queued child's name: its trailing digits.
fn sequence_of(name: &str) -> Option<u64> {
    let start = name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    digits(&name[start..])
}

/// Where a waiting child stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// Fewer than `permits` blockers precede it.
    Granted,
    /// `blockers` precede it (at least `permits`). `watch` holds the paths whose change can
    /// grant the turn or end the wait: the nearest blocker and the child itself when one
    /// permit is asked for (only that blocker's going can let it through), else the directory
    /// (whose children change) and the child.
    Waiting { blockers: u64, watch: Vec<NodePath> },
}

impl Namespace {
    /// The turn of the child `name` of `directory`, created at revision `token`, under `rule`.
    /// `NoNode` if the directory or that child is missing (or the child was created at another
    /// revision); `InvalidArgument` if `name` is not a single segment ending in digits.
    pub fn turn(
        &self,
        directory: &NodePath,
        name: &str,
        token: Revision,
        rule: &TurnRule,
    ) -> Result<Turn, FsmError> {
        let own = directory
            .child(name)
            .map_err(|rule| FsmError::invalid_path(name, rule))?;
        let own_sequence = sequence_of(name).ok_or_else(|| FsmError::InvalidArgument {
            reason: format!("name {name:?} does not end in a sequence number"),
        })?;
        let parent = self.get(directory).ok_or_else(|| FsmError::NoNode {
            path: directory.clone(),
        })?;
        match self.get(&own) {
            Some(node) if node.stat.create_revision == token => {}
            _ => return Err(FsmError::NoNode { path: own }),
        }
        let mut blockers = 0u64;
        let mut nearest: Option<(u64, &str)> = None;
        for child in &parent.children {
            let Some(sequence) = rule.blocker_sequence(child) else {
                continue;
            };
            if (sequence, child.as_str()) >= (own_sequence, name) {
                continue;
            }
            blockers += 1;
            if nearest.is_none_or(|closest| (sequence, child.as_str()) > closest) {
                nearest = Some((sequence, child.as_str()));
            }
        }
        if blockers < rule.permits {
            return Ok(Turn::Granted);
        }
        let watch = match nearest {
            Some((_, blocker)) if rule.permits == 1 => vec![
                directory
                    .child(blocker)
                    .expect("stored child names are valid segments"),
                own,
            ],
            _ => vec![directory.clone(), own],
        };
        Ok(Turn::Waiting { blockers, watch })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::command::{Command, CreateCommand, DeleteCommand, OpenSessionCommand};
    use crate::fsm::ids::SessionId;
    use crate::fsm::node::NodeKind;

    /// A tree with `/q` and, in order, a child per name (ephemeral, owned by session 1), each
    /// created at its own revision; returns it and each child's create revision.
    fn queue(names: &[&str]) -> (Namespace, Vec<Revision>) {
        let mut namespace = Namespace::new();
        let mut revision = 1;
        let mut apply = |namespace: &mut Namespace, command: Command| {
            let applied = namespace.apply(Revision(revision), &command);
            assert!(applied.outcome.is_ok(), "{:?}", applied.outcome);
            revision += 1;
            Revision(revision - 1)
        };
        apply(
            &mut namespace,
            Command::OpenSession(OpenSessionCommand {
                ttl_ms: 60_000,
                owner: "test".into(),
            }),
        );
        apply(&mut namespace, create("/q", NodeKind::Persistent));
        let tokens = names
            .iter()
            .map(|name| {
                apply(
                    &mut namespace,
                    create(&format!("/q/{name}"), NodeKind::Ephemeral),
                )
            })
            .collect();
        (namespace, tokens)
    }

    fn create(path: &str, kind: NodeKind) -> Command {
        Command::Create(CreateCommand {
            path: path.to_owned(),
            data: Vec::new(),
            kind,
            sequential: false,
            make_parents: false,
            // The session opened at revision 1 has id 1.
            session: SessionId(u64::from(kind == NodeKind::Ephemeral)),
        })
    }

    fn delete(namespace: &mut Namespace, path: &str) {
        let revision = Revision(namespace.revision().0 + 1);
        let command = Command::Delete(DeleteCommand {
            path: path.to_owned(),
            expected_version: None,
            recursive: false,
        });
        assert!(namespace.apply(revision, &command).outcome.is_ok());
    }

    fn rule(prefixes: &[&str], permits: u64) -> TurnRule {
        let prefixes = prefixes.iter().map(|prefix| (*prefix).to_owned()).collect();
        TurnRule::new(prefixes, permits).expect("a valid rule")
    }

    fn path(text: &str) -> NodePath {
        NodePath::parse(text).expect("a valid path")
    }

    #[test]
    fn the_lowest_holds_and_each_waiter_watches_its_nearest_blocker() {
        let names = [
            "lock-0000000003",
            "lock-0000000001",
            "other",
            "lock-0000000002",
        ];
        let (namespace, tokens) = queue(&names);
        let lock = rule(&["lock-"], 1);
        let turn = |index: usize| namespace.turn(&path("/q"), names[index], tokens[index], &lock);
        assert_eq!(turn(1), Ok(Turn::Granted));
        assert_eq!(
            turn(3),
            Ok(Turn::Waiting {
                blockers: 1,
                watch: vec![path("/q/lock-0000000001"), path("/q/lock-0000000002")],
            })
        );
        assert_eq!(
            turn(0),
            Ok(Turn::Waiting {
                blockers: 2,
                watch: vec![path("/q/lock-0000000002"), path("/q/lock-0000000003")],
            })
        );
    }

    #[test]
    fn a_reader_is_blocked_only_by_writers_before_it() {
        let names = ["read-0000000001", "write-0000000002", "read-0000000003"];
        let (mut namespace, tokens) = queue(&names);
        let writers = rule(&["lock-", "write-"], 1);
        let reader =
            |namespace: &Namespace| namespace.turn(&path("/q"), names[2], tokens[2], &writers);
        assert_eq!(
            reader(&namespace),
            Ok(Turn::Waiting {
                blockers: 1,
                watch: vec![path("/q/write-0000000002"), path("/q/read-0000000003")],
            })
        );
        delete(&mut namespace, "/q/write-0000000002");
        // The first reader still holds; readers do not block readers.
        assert_eq!(reader(&namespace), Ok(Turn::Granted));
    }

    #[test]
    fn permits_let_that_many_through_and_the_rest_watch_the_directory() {
        let names = [
            "permit-0000000001",
            "permit-0000000002",
            "permit-0000000003",
        ];
        let (mut namespace, tokens) = queue(&names);
        let two = rule(&["permit-"], 2);
        let turn = |namespace: &Namespace, index: usize| {
            namespace.turn(&path("/q"), names[index], tokens[index], &two)
        };
        assert_eq!(turn(&namespace, 1), Ok(Turn::Granted));
        assert_eq!(
            turn(&namespace, 2),
            Ok(Turn::Waiting {
                blockers: 2,
                watch: vec![path("/q"), path("/q/permit-0000000003")],
            })
        );
        delete(&mut namespace, "/q/permit-0000000001");
        assert_eq!(turn(&namespace, 2), Ok(Turn::Granted));
    }

    #[test]
    fn a_missing_or_recreated_node_or_directory_is_no_node_never_a_turn() {
        let names = ["lock-0000000001", "lock-0000000002"];
        let (mut namespace, tokens) = queue(&names);
        let lock = rule(&["lock-"], 1);
        let stale = Revision(tokens[0].0 + 100);
        assert_eq!(
            namespace.turn(&path("/q"), names[0], stale, &lock),
            Err(FsmError::NoNode {
                path: path("/q/lock-0000000001")
            })
        );
        assert_eq!(
            namespace.turn(&path("/nowhere"), names[0], tokens[0], &lock),
            Err(FsmError::NoNode {
                path: path("/nowhere")
            })
        );
        delete(&mut namespace, "/q/lock-0000000001");
        assert_eq!(
            namespace.turn(&path("/q"), names[0], tokens[0], &lock),
            Err(FsmError::NoNode {
                path: path("/q/lock-0000000001")
            })
        );
        assert_eq!(
            namespace.turn(&path("/q"), names[1], tokens[1], &lock),
            Ok(Turn::Granted)
        );
    }

    #[test]
    fn bad_rules_and_names_are_invalid_arguments() {
        let many = vec!["p-".to_owned(); TURN_PREFIXES_MAX + 1];
        for prefixes in [Vec::new(), vec![String::new()], vec!["x".repeat(65)], many] {
            assert!(matches!(
                TurnRule::new(prefixes, 1),
                Err(FsmError::InvalidArgument { .. })
            ));
        }
        assert_eq!(rule(&["lock-"], 0).permits, 1);
        let (namespace, tokens) = queue(&["lock-0000000001"]);
        let lock = rule(&["lock-"], 1);
        for name in ["lock-", "a/b", ".."] {
            assert!(
                matches!(
                    namespace.turn(&path("/q"), name, tokens[0], &lock),
                    Err(FsmError::InvalidArgument { .. } | FsmError::InvalidPath { .. })
                ),
                "{name}"
            );
        }
        assert_eq!(sequence_of("lock-0000000042"), Some(42));
        assert_eq!(sequence_of("ready"), None);
        // Digits after the prefix only: `lock-1a` is no blocker.
        assert_eq!(lock.blocker_sequence("lock-1a"), None);
        assert_eq!(lock.blocker_sequence("lock-7"), Some(7));
    }
}
