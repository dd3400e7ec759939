//! `DataDirIdentity`: which member of which cluster a data directory belongs to.
//!
//! Written once when the directory is first used; checked on every later start so that a
//! member never runs on another member's (or another cluster's) data.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

const IDENTITY_FILE: &str = "identity";
/// The data directory's format: 3 since the log's entries live in segment files
/// (`segment_log.rs`); 2 kept them in RocksDB, and log entries, the snapshot file and peer
/// messages carry format versions since 2. A directory of format 2 is upgraded in place: its
/// identity says 3 before its log is moved, so that a release which reads only format 2 refuses
/// it rather than find an empty log. A directory of format 1 (unversioned records) is refused by
/// name.
const IDENTITY_FORMAT: u32 = 3;
/// The older format this build upgrades.
const UPGRADABLE_FORMAT: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataDirIdentity {
    pub format: u32,
    pub cluster_id: String,
    pub member_id: u64,
}

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error(
        "data directory {dir} belongs to member {found}, not to member {expected}; \
         use that member's id or another --data-dir"
    )]
    OtherMember {
        dir: String,
        found: u64,
        expected: u64,
    },
    #[error(
        "data directory {dir} belongs to cluster {found}, not to cluster {expected}; \
         use another --data-dir or the original --cluster-name and --initial-cluster"
    )]
    OtherCluster {
        dir: String,
        found: String,
        expected: String,
    },
    #[error(
        "data directory {dir} has format {found}, but this build reads format {supported}; \
         start the Coord release that wrote it, or move the data to a new member"
    )]
    Format {
        dir: String,
        found: u32,
        supported: u32,
    },
    #[error("data directory {dir}: {reason}")]
    Unreadable { dir: String, reason: String },
}

impl DataDirIdentity {
    /// Checks the identity stored in `dir` against the expected one, writing it if the
    /// directory is new. Returns whether the directory was new.
    pub fn claim(dir: &Path, cluster_id: &str, member_id: u64) -> Result<bool, IdentityError> {
        let dir_text = dir.display().to_string();
        let unreadable = |reason: String| IdentityError::Unreadable {
            dir: dir_text.clone(),
            reason,
        };
        fs::create_dir_all(dir)
            .map_err(|error| unreadable(format!("cannot create it: {error}")))?;
        let path = dir.join(IDENTITY_FILE);
        match fs::read(&path) {
            Ok(bytes) => {
                let stored: DataDirIdentity = serde_json::from_slice(&bytes)
                    .map_err(|error| unreadable(format!("identity file is malformed: {error}")))?;
                if stored.format != IDENTITY_FORMAT && stored.format != UPGRADABLE_FORMAT {
                    return Err(IdentityError::Format {
                        dir: dir_text,
                        found: stored.format,
                        supported: IDENTITY_FORMAT,
                    });
                }
                if stored.member_id != member_id {
                    return Err(IdentityError::OtherMember {
                        dir: dir_text,
                        found: stored.member_id,
                        expected: member_id,
                    });
                }
                if stored.cluster_id != cluster_id {
                    return Err(IdentityError::OtherCluster {
                        dir: dir_text,
                        found: stored.cluster_id,
                        expected: cluster_id.to_owned(),
                    });
                }
                if stored.format == UPGRADABLE_FORMAT {
                    let upgraded = DataDirIdentity {
                        format: IDENTITY_FORMAT,
                        ..stored
                    };
                    write_identity(dir, &upgraded).map_err(unreadable)?;
                    tracing::info!(dir = %dir_text, "data directory upgraded to format 3");
                }
                Ok(false)
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                if fs::read_dir(dir)
                    .map(|mut entries| entries.next().is_some())
                    .unwrap_or(false)
                {
                    return Err(unreadable(
                        "it is not empty but has no identity file; refusing to use it".into(),
                    ));
                }
                let identity = DataDirIdentity {
                    format: IDENTITY_FORMAT,
                    cluster_id: cluster_id.to_owned(),
                    member_id,
                };
                write_identity(dir, &identity).map_err(unreadable)?;
                Ok(true)
            }
            Err(error) => Err(unreadable(format!("cannot read identity: {error}"))),
        }
    }
}

/// Replaces `dir`'s identity file atomically: a temporary file, synced, renamed over it.
fn write_identity(dir: &Path, identity: &DataDirIdentity) -> Result<(), String> {
    let bytes = serde_json::to_vec_pretty(identity).expect("identity serializes");
    let temporary = dir.join("identity.tmp");
    fs::write(&temporary, bytes)
        .and_then(|()| fs::File::open(&temporary)?.sync_all())
        .and_then(|()| fs::rename(&temporary, dir.join(IDENTITY_FILE)))
        .and_then(|()| fs::File::open(dir)?.sync_all())
        .map_err(|error| format!("cannot write identity: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_claimed_once_and_checked_after() {
        let directory = tempfile::tempdir().unwrap();
        let data_dir = directory.path().join("data");
        assert!(DataDirIdentity::claim(&data_dir, "c1", 1).unwrap());
        assert!(!DataDirIdentity::claim(&data_dir, "c1", 1).unwrap());
        assert!(matches!(
            DataDirIdentity::claim(&data_dir, "c1", 2),
            Err(IdentityError::OtherMember { found: 1, .. })
        ));
        assert!(matches!(
            DataDirIdentity::claim(&data_dir, "c2", 1),
            Err(IdentityError::OtherCluster { .. })
        ));
        let old = r#"{"format": 1, "cluster_id": "c1", "member_id": 1}"#;
        fs::write(data_dir.join(IDENTITY_FILE), old).unwrap();
        let refused = DataDirIdentity::claim(&data_dir, "c1", 1).unwrap_err();
        assert!(matches!(
            refused,
            IdentityError::Format {
                found: 1,
                supported: 3,
                ..
            }
        ));
        assert!(refused
            .to_string()
            .contains("has format 1, but this build reads format 3"));
        // Format 2 is upgraded in place, once its owner is checked.
        let two = r#"{"format": 2, "cluster_id": "c1", "member_id": 1}"#;
        fs::write(data_dir.join(IDENTITY_FILE), two).unwrap();
        assert!(matches!(
            DataDirIdentity::claim(&data_dir, "c1", 2),
            Err(IdentityError::OtherMember { found: 1, .. })
        ));
        assert!(fs::read_to_string(data_dir.join(IDENTITY_FILE))
            .unwrap()
            .contains("\"format\": 2"));
        assert!(!DataDirIdentity::claim(&data_dir, "c1", 1).unwrap());
        let stored: DataDirIdentity =
            serde_json::from_slice(&fs::read(data_dir.join(IDENTITY_FILE)).unwrap()).unwrap();
        assert_eq!(stored.format, 3);
    }
}
