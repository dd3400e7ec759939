//! Durable storage: the only module that knows RocksDB, the log's files and the data
//! directory's layout.
//!
//! It stores opaque, checksummed records and knows nothing of Raft or of the namespace.
//! Invariant: every record is checksummed before it is written and verified when it is read
//! back; a mismatch is a `StorageFault`, which stops the member rather than serve bad state.
//!
//! Data directory layout:
//! ```text
//! <data-dir>/identity      member id and cluster id, written once
//! <data-dir>/log/          RocksDB: column family `meta` (vote, committed and purged log ids,
//!                          the log's first index); `log` held the entries before format 3
//! <data-dir>/log-segments/ the Raft entries, in preallocated segment files (`segment_log.rs`)
//! <data-dir>/snapshot      the latest state machine snapshot (atomically replaced)
//! ```

mod checksum;
mod fault;
mod identity;
mod log_db;
mod segment_log;
mod snapshot_file;

pub use fault::StorageFault;
pub use identity::{DataDirIdentity, IdentityError};
pub use log_db::LogDb;
pub use snapshot_file::SnapshotFile;
