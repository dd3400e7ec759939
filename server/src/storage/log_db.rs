//! `LogDb`: the Raft log and its metadata in RocksDB.
//!
//! Keys of the `log` column family are big-endian indexes, so RocksDB's byte order is log order.
//! Every write that must survive a crash is a single `WriteBatch` written with `sync`, so a batch
//! of appended entries costs one fsync, and is either wholly on disk or not at all.
//!
//! Invariant: the write-ahead log on disk stays within about `LogDbLimits::wal_bytes_max` plus
//! one memtable, however long the member runs. The `meta` family is written on every commit and
//! its memtable never fills, so without that bound every write-ahead log file would stay live
//! for its sake, up to RocksDB's default of four times all memtables (about 1 GiB here), all of
//! it read again at every start.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};

use super::checksum;
use super::fault::StorageFault;

const LOG_CF: &str = "log";
const META_CF: &str = "meta";

/// How much of the log RocksDB holds in memory and in its write-ahead log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogDbLimits {
    /// The `log` family's memtable: when it fills it is written out as a table file and a new
    /// write-ahead log file begins.
    pub memtable_bytes: usize,
    /// Past this many bytes of write-ahead log, RocksDB writes out the families that keep the
    /// oldest file live (in practice the small `meta` family), so that the file can go.
    pub wal_bytes_max: u64,
}

impl Default for LogDbLimits {
    fn default() -> LogDbLimits {
        LogDbLimits {
            memtable_bytes: 64 << 20,
            wal_bytes_max: 128 << 20,
        }
    }
}

/// A cheaply clonable handle; all clones share one RocksDB instance.
#[derive(Clone)]
pub struct LogDb {
    db: Arc<DB>,
}

impl LogDb {
    pub fn open(path: &Path) -> Result<LogDb, StorageFault> {
        LogDb::open_with(path, LogDbLimits::default())
    }

    /// `open` with other limits than the defaults (tests use small ones).
    pub fn open_with(path: &Path, limits: LogDbLimits) -> Result<LogDb, StorageFault> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        // The log is written and read sequentially; keep RocksDB's footprint small.
        options.set_max_background_jobs(2);
        options.set_keep_log_file_num(4);
        options.set_max_total_wal_size(limits.wal_bytes_max);
        let mut log_options = Options::default();
        log_options.set_write_buffer_size(limits.memtable_bytes);
        let families = [
            ColumnFamilyDescriptor::new(LOG_CF, log_options),
            ColumnFamilyDescriptor::new(META_CF, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&options, path, families)?;
        Ok(LogDb { db: Arc::new(db) })
    }

    fn family(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created at open")
    }

    fn sync_write(&self, batch: WriteBatch) -> Result<(), StorageFault> {
        let mut write_options = WriteOptions::default();
        write_options.set_sync(true);
        self.db.write_opt(batch, &write_options)?;
        Ok(())
    }

    /// Appends `(index, body)` records durably in one synced batch.
    pub fn append(&self, records: &[(u64, Vec<u8>)]) -> Result<(), StorageFault> {
        let mut batch = WriteBatch::default();
        let log = self.family(LOG_CF);
        for (index, body) in records {
            batch.put_cf(log, index.to_be_bytes(), checksum::seal(body));
        }
        self.sync_write(batch)
    }

    /// Records with `start <= index < end`, in order, checksums verified.
    pub fn read_range(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, StorageFault> {
        let mut records = Vec::new();
        let start_key = start.to_be_bytes();
        let mode = IteratorMode::From(&start_key, Direction::Forward);
        for item in self.db.iterator_cf(self.family(LOG_CF), mode) {
            let (key, value) = item?;
            let index = decode_index(&key)?;
            if index >= end {
                break;
            }
            let body = checksum::open(&value, &|| format!("log entry {index}"))?;
            records.push((index, body.to_vec()));
        }
        Ok(records)
    }

    /// Like `read_range`, but stops once the records read hold `bytes_max` bytes or more (the
    /// first record is always returned, however large).
    pub fn read_range_bytes(
        &self,
        start: u64,
        end: u64,
        bytes_max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StorageFault> {
        let mut records = Vec::new();
        let mut bytes = 0;
        let start_key = start.to_be_bytes();
        let mode = IteratorMode::From(&start_key, Direction::Forward);
        for item in self.db.iterator_cf(self.family(LOG_CF), mode) {
            let (key, value) = item?;
            let index = decode_index(&key)?;
            if index >= end || (!records.is_empty() && bytes >= bytes_max) {
                break;
            }
            let body = checksum::open(&value, &|| format!("log entry {index}"))?;
            bytes += body.len();
            records.push((index, body.to_vec()));
        }
        Ok(records)
    }

    /// The last record in the log, if any.
    pub fn last(&self) -> Result<Option<(u64, Vec<u8>)>, StorageFault> {
        let mut iterator = self.db.iterator_cf(self.family(LOG_CF), IteratorMode::End);
        match iterator.next() {
            None => Ok(None),
            Some(item) => {
                let (key, value) = item?;
                let index = decode_index(&key)?;
                let body = checksum::open(&value, &|| format!("log entry {index}"))?;
                Ok(Some((index, body.to_vec())))
            }
        }
    }

    /// Deletes every record with `index >= start` (a conflicting suffix), durably.
    pub fn truncate_from(&self, start: u64) -> Result<(), StorageFault> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.family(LOG_CF),
            start.to_be_bytes(),
            u64::MAX.to_be_bytes(),
        );
        // delete_range excludes its end key.
        batch.delete_cf(self.family(LOG_CF), u64::MAX.to_be_bytes());
        self.sync_write(batch)
    }

    /// Deletes every record with `index <= end` and stores `meta` in the same batch.
    pub fn purge_through(&self, end: u64, meta_key: &str, meta: &[u8]) -> Result<(), StorageFault> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.family(META_CF), meta_key, checksum::seal(meta));
        batch.delete_range_cf(
            self.family(LOG_CF),
            0u64.to_be_bytes(),
            (end + 1).to_be_bytes(),
        );
        self.sync_write(batch)
    }

    pub fn put_meta(&self, key: &str, body: &[u8]) -> Result<(), StorageFault> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.family(META_CF), key, checksum::seal(body));
        self.sync_write(batch)
    }

    /// Stores metadata without waiting for the disk: for values that may be lost in a crash.
    pub fn put_meta_relaxed(&self, key: &str, body: &[u8]) -> Result<(), StorageFault> {
        self.db
            .put_cf(self.family(META_CF), key, checksum::seal(body))?;
        Ok(())
    }

    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageFault> {
        match self.db.get_cf(self.family(META_CF), key)? {
            None => Ok(None),
            Some(value) => Ok(Some(
                checksum::open(&value, &|| format!("meta {key}"))?.to_vec(),
            )),
        }
    }
}

fn decode_index(key: &[u8]) -> Result<u64, StorageFault> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| StorageFault::Corrupt {
        location: "log key".into(),
        reason: format!("key has {} bytes, expected 8", key.len()),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_truncate_purge_and_reopen() {
        let directory = tempfile::tempdir().unwrap();
        {
            let log = LogDb::open(directory.path()).unwrap();
            let records: Vec<(u64, Vec<u8>)> =
                (1..=10).map(|index| (index, vec![index as u8])).collect();
            log.append(&records).unwrap();
            log.truncate_from(8).unwrap();
            log.purge_through(3, "purged", b"3").unwrap();
            log.put_meta("vote", b"v").unwrap();
        }
        let log = LogDb::open(directory.path()).unwrap();
        let indexes: Vec<u64> = log
            .read_range(0, u64::MAX)
            .unwrap()
            .into_iter()
            .map(|(index, _)| index)
            .collect();
        assert_eq!(indexes, [4, 5, 6, 7]);
        assert_eq!(log.last().unwrap(), Some((7, vec![7])));
        assert_eq!(log.read_range(5, 7).unwrap().len(), 2);
        // A byte budget stops after the record that reaches it, never before the first.
        assert_eq!(log.read_range_bytes(4, 100, 2).unwrap().len(), 2);
        assert_eq!(log.read_range_bytes(4, 100, 0).unwrap().len(), 1);
        assert_eq!(log.get_meta("vote").unwrap(), Some(b"v".to_vec()));
        assert_eq!(log.get_meta("purged").unwrap(), Some(b"3".to_vec()));
        assert_eq!(log.get_meta("absent").unwrap(), None);
    }

    /// Bytes of write-ahead log files in `directory`. RocksDB deletes obsolete files from a
    /// background thread, so a file listed may be gone when it is measured: it then holds
    /// nothing.
    fn wal_bytes(directory: &Path) -> u64 {
        std::fs::read_dir(directory)
            .unwrap()
            .map(|entry| entry.unwrap())
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".log"))
            .map(|entry| match entry.metadata() {
                Ok(metadata) => metadata.len(),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
                Err(error) => panic!("measuring {:?}: {error}", entry.path()),
            })
            .sum()
    }

    #[test]
    fn the_write_ahead_log_stays_bounded_while_meta_is_written_on_every_commit() {
        let directory = tempfile::tempdir().unwrap();
        let limits = LogDbLimits {
            memtable_bytes: 256 << 10,
            wal_bytes_max: 1 << 20,
        };
        let log = LogDb::open_with(directory.path(), limits).unwrap();
        // 16 MiB of log in 64 KiB batches, the committed index stored after each, as openraft
        // does; the oldest entries are purged now and then, as snapshots do.
        let body = vec![7u8; 1024];
        for batch in 0..256u64 {
            let records: Vec<(u64, Vec<u8>)> = (0..64)
                .map(|offset| (batch * 64 + offset + 1, body.clone()))
                .collect();
            log.append(&records).unwrap();
            log.put_meta_relaxed("committed", &batch.to_be_bytes())
                .unwrap();
            if batch % 64 == 63 {
                log.purge_through(batch * 64, "purged", b"p").unwrap();
            }
        }
        // RocksDB frees old files in the background: give it a bounded while.
        let bound = limits.wal_bytes_max + 2 * limits.memtable_bytes as u64 + (64 << 10);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while wal_bytes(directory.path()) > bound && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let held = wal_bytes(directory.path());
        assert!(
            held <= bound,
            "{held} bytes of write-ahead log after 16 MiB written, bound {bound}"
        );
        // Nothing was lost by writing the families out, and all of it is read back after a
        // restart.
        drop(log);
        let log = LogDb::open_with(directory.path(), limits).unwrap();
        let last = log.last().unwrap().map(|(index, _)| index);
        assert_eq!(last, Some(256 * 64));
        let tail = log.read_range(256 * 64 - 63, 256 * 64 + 1).unwrap();
        assert_eq!(tail.len(), 64);
        assert!(
            tail.iter().all(|(_, read)| *read == body),
            "an entry read back after the restart differs from the one appended"
        );
        assert_eq!(
            log.get_meta("committed").unwrap(),
            Some(255u64.to_be_bytes().to_vec())
        );
    }
}
