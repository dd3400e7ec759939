//! `StorageFault`: a failure of the disk or of stored data, fatal for the member.

use thiserror::Error;

/// A failure of the disk or of stored data: fatal for the member.
#[derive(Debug, Error)]
pub enum StorageFault {
    #[error("rocksdb: {0}")]
    RocksDb(#[from] rocksdb::Error),
    #[error("i/o on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("corrupt record in {location}: {reason}")]
    Corrupt { location: String, reason: String },
}
