//! A recipe directory: the node under which a recipe queues its nodes, its paths, and
//! `Listing`, the directory's children read with linearizable reads and put in queue order.
//! The bottom of the recipes: every recipe reads its directory through this module, and this
//! module uses no other recipe module but `role`.
//!
//! Invariant: a listing's entries are in queue order (by sequence suffix, which the parent
//! assigns in commit order), and an entry is recognised as a recipe node only by its name
//! (`Role::parse`); every other child is kept apart in `others`.

use super::role::Role;
use crate::client::Client;
use crate::error::Error;
use crate::types::{Consistency, Stat};

/// The path of `child` under `directory`.
pub(crate) fn child_path(directory: &str, child: &str) -> String {
    if directory == "/" {
        format!("/{child}")
    } else {
        format!("{directory}/{child}")
    }
}

/// The last segment of a path.
pub(crate) fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Refuses the root as a recipe directory: every recipe deletes and recreates its directory,
/// and the root's children belong to everyone. Other path rules are checked by the server.
pub(crate) fn check_name(name: &str) -> Result<(), Error> {
    if name == "/" {
        return Err(Error::InvalidArgument {
            message: "a recipe name must be a directory below the root, such as /locks/db".into(),
        });
    }
    Ok(())
}

/// One recipe node in a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) role: Role,
    pub(crate) sequence: u64,
    pub(crate) stat: Stat,
}

/// A directory's children, read page by page with linearizable reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Listing {
    /// The revision of the first page: every node seen existed at or after it, so a watch
    /// from the next revision sees any of them go.
    pub(crate) revision: u64,
    /// The revision of the last page: the listing reflects every change up to it.
    pub(crate) last_revision: u64,
    /// Recipe nodes, in queue order.
    pub(crate) entries: Vec<Entry>,
    /// Every other child, with its stat.
    pub(crate) others: Vec<(String, Stat)>,
}

impl Listing {
    /// Sorts recipe nodes into queue order.
    pub(crate) fn from_children(
        directory: &str,
        (revision, last_revision): (u64, u64),
        children: impl IntoIterator<Item = (String, Stat)>,
    ) -> Listing {
        let mut listing = Listing {
            revision,
            last_revision,
            ..Listing::default()
        };
        for (name, stat) in children {
            match Role::parse(&name) {
                Some((role, sequence)) => listing.entries.push(Entry {
                    path: child_path(directory, &name),
                    name,
                    role,
                    sequence,
                    stat,
                }),
                None => listing.others.push((name, stat)),
            }
        }
        listing
            .entries
            .sort_by(|left, right| (left.sequence, &left.name).cmp(&(right.sequence, &right.name)));
        listing
    }

    /// The index of the entry named `name` if it is still the node created at `token`.
    pub(crate) fn position(&self, name: &str, token: u64) -> Option<usize> {
        self.entries
            .iter()
            .position(|entry| entry.name == name && entry.stat.create_revision == token)
    }

    pub(crate) fn has_other(&self, name: &str) -> bool {
        self.others.iter().any(|(other, _)| other == name)
    }
}

/// Lists `directory` (`NoNode` if it does not exist).
///
/// Pages are read at successive revisions, which is enough for queue decisions: a node that
/// precedes ours existed before ours, so each page shows it unless it was already deleted, and
/// nodes created during the listing come after ours.
pub(crate) async fn list_directory(client: &Client, directory: &str) -> Result<Listing, Error> {
    list_directory_at(client, directory, Consistency::Linearizable).await
}

/// Lists `directory` as `list_directory` does, with pages read at `consistency`. A page after
/// the first is read at the first page's revision or later, never earlier (another member may
/// answer it): a node that precedes ours, deleted by then, must not show on a later page, as a
/// watch from after the first page's revision would never see it go.
pub(crate) async fn list_directory_at(
    client: &Client,
    directory: &str,
    consistency: Consistency,
) -> Result<Listing, Error> {
    let mut children = Vec::new();
    let mut revision = None;
    let mut page_token: Option<String> = None;
    let last_revision = loop {
        let consistency = page_consistency(consistency, revision);
        let page = client
            .children_page(directory, 0, page_token.as_deref(), true, consistency)
            .await?;
        revision.get_or_insert(page.header.revision);
        children.extend(
            page.children
                .into_iter()
                .map(|child| (child.name, child.stat.unwrap_or_default())),
        );
        match page.next_page_token {
            Some(next) => page_token = Some(next),
            None => break page.header.revision,
        }
    };
    Ok(Listing::from_children(
        directory,
        (revision.unwrap_or_default(), last_revision),
        children,
    ))
}

/// How to read a page of a listing asked for at `consistency` whose first page (if read yet)
/// reflects revision `first`: never before it.
fn page_consistency(consistency: Consistency, first: Option<u64>) -> Consistency {
    match (consistency, first) {
        (Consistency::Linearizable, _) | (_, None) => consistency,
        (Consistency::MinRevision(at), Some(first)) => Consistency::MinRevision(at.max(first)),
        (Consistency::Serializable, Some(first)) => Consistency::MinRevision(first),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_page_is_never_read_before_the_first_pages_revision() {
        let at = |revision| Consistency::MinRevision(revision);
        assert_eq!(page_consistency(at(5), None), at(5));
        assert_eq!(page_consistency(at(5), Some(9)), at(9));
        assert_eq!(page_consistency(at(12), Some(9)), at(12));
        assert_eq!(page_consistency(Consistency::Serializable, Some(9)), at(9));
        assert_eq!(
            page_consistency(Consistency::Linearizable, Some(9)),
            Consistency::Linearizable
        );
    }

    fn listing(names: &[&str]) -> Listing {
        let children = names.iter().enumerate().map(|(index, name)| {
            let stat = Stat {
                create_revision: 100 + index as u64,
                ..Stat::default()
            };
            ((*name).to_owned(), stat)
        });
        Listing::from_children("/locks/db", (5, 5), children)
    }

    #[test]
    fn child_paths_join_without_doubled_slashes() {
        assert_eq!(child_path("/locks/db", "lock-"), "/locks/db/lock-");
        assert_eq!(child_path("/", "x"), "/x");
        assert_eq!(base_name("/locks/db/lock-0000000001"), "lock-0000000001");
        assert!(check_name("/").is_err());
        assert!(check_name("/locks").is_ok());
    }

    #[test]
    fn entries_queue_by_sequence_across_prefixes() {
        let listing = listing(&[
            "write-0000000004",
            "read-0000000010",
            "read-0000000002",
            "ready",
        ]);
        let order: Vec<&str> = listing
            .entries
            .iter()
            .map(|entry| entry.name.as_str())
            .collect();
        assert_eq!(
            order,
            ["read-0000000002", "write-0000000004", "read-0000000010"]
        );
        assert_eq!(listing.others.len(), 1);
        assert!(listing.has_other("ready"));
        assert_eq!(listing.entries[0].path, "/locks/db/read-0000000002");
    }

    #[test]
    fn a_node_is_found_only_with_its_own_token() {
        let listing = listing(&["lock-0000000001", "lock-0000000002"]);
        assert_eq!(listing.position("lock-0000000002", 101), Some(1));
        // The same name with another create revision is somebody else's node.
        assert_eq!(listing.position("lock-0000000002", 7), None);
        assert_eq!(listing.position("lock-0000000009", 101), None);
    }
}
