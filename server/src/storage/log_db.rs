//! `LogDb`: the Raft log (in `SegmentLog`'s files) and its metadata (in RocksDB).
//!
//! The `meta` column family holds the vote, the committed and purged log ids and the log's
//! first index; every write of it that must survive a crash is a single `WriteBatch` written
//! with `sync`. The entries live in `segment_log.rs`'s preallocated files, one `fdatasync` per
//! batch of appended entries. Before format 3 of the data directory they lived in RocksDB's `log`
//! family (keys big-endian indexes, values checksummed records); `open` moves such a log into
//! segments once and empties the family, which is kept so that RocksDB opens old directories.
//!
//! Invariant: the write-ahead log on disk stays within about `LogDbLimits::wal_bytes_max` plus
//! one memtable, however long the member runs. The `meta` family is written on every commit and
//! its memtable never fills, so without that bound every write-ahead log file would stay live
//! for its sake, up to RocksDB's default of four times all memtables (about 1 GiB here), all of
//! it read again at every start.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, WriteOptions, DB};

use super::checksum;
use super::fault::StorageFault;
use super::segment_log::{io_fault, sync_dir, SegmentLog, SEGMENT_BYTES};

const LOG_CF: &str = "log";
const META_CF: &str = "meta";
/// The log's first index (everything below it purged), big endian, in `meta`.
const FIRST_KEY: &str = "log.first";
/// How many bytes of entries a migration from the `log` family moves per synced append.
const MIGRATION_BATCH_BYTES: usize = 4 << 20;

/// How much of the log RocksDB holds in memory and in its write-ahead log, and how long a
/// segment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogDbLimits {
    /// The `log` family's memtable (the family holds entries only while a format-2 log is
    /// moved): when it fills it is written out as a table file and a new write-ahead log file
    /// begins.
    pub memtable_bytes: usize,
    /// Past this many bytes of write-ahead log, RocksDB writes out the families that keep the
    /// oldest file live (in practice the small `meta` family), so that the file can go.
    pub wal_bytes_max: u64,
    /// The length each log segment file is allocated to.
    pub segment_bytes: u64,
}

impl Default for LogDbLimits {
    fn default() -> LogDbLimits {
        LogDbLimits {
            memtable_bytes: 64 << 20,
            wal_bytes_max: 128 << 20,
            segment_bytes: SEGMENT_BYTES,
        }
    }
}

/// A cheaply clonable handle; all clones share one RocksDB instance and one segment log.
#[derive(Clone)]
pub struct LogDb {
    db: Arc<DB>,
    log: Arc<SegmentLog>,
}

impl LogDb {
    /// Opens the metadata in RocksDB at `db_dir` and the entries in segments under
    /// `segments_dir`, creating both if missing and moving a log of format 2 into segments.
    pub fn open(db_dir: &Path, segments_dir: &Path) -> Result<LogDb, StorageFault> {
        LogDb::open_with(db_dir, segments_dir, LogDbLimits::default())
    }

    /// `open` with other limits than the defaults (tests use small ones).
    pub fn open_with(
        db_dir: &Path,
        segments_dir: &Path,
        limits: LogDbLimits,
    ) -> Result<LogDb, StorageFault> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        // Only metadata is written here now; keep RocksDB's footprint small.
        options.set_max_background_jobs(2);
        options.set_keep_log_file_num(4);
        options.set_max_total_wal_size(limits.wal_bytes_max);
        let mut log_options = Options::default();
        log_options.set_write_buffer_size(limits.memtable_bytes);
        let families = [
            ColumnFamilyDescriptor::new(LOG_CF, log_options),
            ColumnFamilyDescriptor::new(META_CF, Options::default()),
        ];
        let db = Arc::new(DB::open_cf_descriptors(&options, db_dir, families)?);
        migrate(&db, segments_dir, limits.segment_bytes)?;
        let first = match get_meta(&db, FIRST_KEY)? {
            Some(bytes) => decode_index(&bytes)?,
            None => 0,
        };
        let log = SegmentLog::open(segments_dir, limits.segment_bytes, first)?;
        Ok(LogDb {
            db,
            log: Arc::new(log),
        })
    }

    fn family(&self, name: &str) -> &rocksdb::ColumnFamily {
        family(&self.db, name)
    }

    fn sync_write(&self, batch: WriteBatch) -> Result<(), StorageFault> {
        let mut write_options = WriteOptions::default();
        write_options.set_sync(true);
        self.db.write_opt(batch, &write_options)?;
        Ok(())
    }

    /// Appends `(index, body)` records durably: one synced write (two when a segment fills).
    pub fn append(&self, records: &[(u64, Vec<u8>)]) -> Result<(), StorageFault> {
        self.log.append(records)
    }

    /// Records with `start <= index < end`, in order, checksums verified.
    pub fn read_range(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, StorageFault> {
        self.log.read_range(start, end)
    }

    /// Like `read_range`, but stops once the records read hold `bytes_max` bytes or more (the
    /// first record is always returned, however large).
    pub fn read_range_bytes(
        &self,
        start: u64,
        end: u64,
        bytes_max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StorageFault> {
        self.log.read_range_bytes(start, end, bytes_max)
    }

    /// The last record in the log, if any.
    pub fn last(&self) -> Result<Option<(u64, Vec<u8>)>, StorageFault> {
        self.log.last()
    }

    /// Deletes every record with `index >= start` (a conflicting suffix), durably.
    pub fn truncate_from(&self, start: u64) -> Result<(), StorageFault> {
        self.log.truncate_from(start)
    }

    /// Deletes every record with `index <= end`, storing `meta` and the log's new first index
    /// in one synced batch before any segment goes.
    pub fn purge_through(&self, end: u64, meta_key: &str, meta: &[u8]) -> Result<(), StorageFault> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.family(META_CF), meta_key, checksum::seal(meta));
        let first = end.saturating_add(1).to_be_bytes();
        batch.put_cf(self.family(META_CF), FIRST_KEY, checksum::seal(&first));
        self.sync_write(batch)?;
        self.log.purge_through(end)
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
        get_meta(&self.db, key)
    }
}

fn family<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name)
        .expect("column families are created at open")
}

fn get_meta(db: &DB, key: &str) -> Result<Option<Vec<u8>>, StorageFault> {
    match db.get_cf(family(db, META_CF), key)? {
        None => Ok(None),
        Some(value) => Ok(Some(
            checksum::open(&value, &|| format!("meta {key}"))?.to_vec(),
        )),
    }
}

/// Moves a log kept in the `log` family (data directory format 2) into segments under
/// `segments_dir`: written whole into a staging directory, synced, renamed into place, and only
/// then deleted from the family. A crash at any point leaves either the family or the segments
/// whole; the next open finishes the move.
fn migrate(db: &DB, segments_dir: &Path, segment_bytes: u64) -> Result<(), StorageFault> {
    let log = family(db, LOG_CF);
    let legacy = db.iterator_cf(log, IteratorMode::Start).next().is_some();
    if segments_dir.exists() {
        if legacy {
            empty_log_family(db)?;
        }
        return Ok(());
    }
    let mut staging = segments_dir.as_os_str().to_owned();
    staging.push(".migrating");
    let staging = std::path::PathBuf::from(staging);
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io_fault(&staging))?;
    }
    if legacy {
        let segments = SegmentLog::open(&staging, segment_bytes, 0)?;
        let mut batch: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut batch_bytes = 0;
        let mut moved = 0u64;
        for item in db.iterator_cf(log, IteratorMode::Start) {
            let (key, value) = item?;
            let index = decode_index(&key)?;
            let body = checksum::open(&value, &|| format!("log entry {index}"))?;
            batch_bytes += body.len();
            batch.push((index, body.to_vec()));
            if batch_bytes >= MIGRATION_BATCH_BYTES {
                segments.append(&std::mem::take(&mut batch))?;
                batch_bytes = 0;
            }
            moved += 1;
        }
        segments.append(&batch)?;
        drop(segments);
        fs::rename(&staging, segments_dir).map_err(io_fault(segments_dir))?;
        tracing::info!(
            entries = moved,
            "moved the log from RocksDB into segment files"
        );
    } else {
        fs::create_dir_all(segments_dir).map_err(io_fault(segments_dir))?;
    }
    sync_dir(segments_dir.parent().unwrap_or(Path::new(".")))?;
    if legacy {
        empty_log_family(db)?;
    }
    Ok(())
}

/// Deletes every record of the `log` family, durably.
fn empty_log_family(db: &DB) -> Result<(), StorageFault> {
    let mut batch = WriteBatch::default();
    let log = family(db, LOG_CF);
    batch.delete_range_cf(log, 0u64.to_be_bytes(), u64::MAX.to_be_bytes());
    // delete_range excludes its end key.
    batch.delete_cf(log, u64::MAX.to_be_bytes());
    let mut write_options = WriteOptions::default();
    write_options.set_sync(true);
    db.write_opt(batch, &write_options)?;
    Ok(())
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

    fn open_in(directory: &Path) -> LogDb {
        LogDb::open(&directory.join("db"), &directory.join("segments")).unwrap()
    }

    #[test]
    fn append_truncate_purge_and_reopen() {
        let directory = tempfile::tempdir().unwrap();
        {
            let log = open_in(directory.path());
            let records: Vec<(u64, Vec<u8>)> =
                (1..=10).map(|index| (index, vec![index as u8])).collect();
            log.append(&records).unwrap();
            log.truncate_from(8).unwrap();
            log.purge_through(3, "purged", b"3").unwrap();
            log.put_meta("vote", b"v").unwrap();
        }
        let log = open_in(directory.path());
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

    /// A data directory of format 2: entries 5 to 12 in the `log` family, as that format kept
    /// them, and a vote in `meta`.
    fn write_format_2(db_dir: &Path) -> Vec<(u64, Vec<u8>)> {
        let records: Vec<(u64, Vec<u8>)> = (5..=12)
            .map(|index| (index, vec![index as u8; 300]))
            .collect();
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let db = DB::open_cf(&options, db_dir, [LOG_CF, META_CF]).unwrap();
        let mut batch = WriteBatch::default();
        for (index, body) in &records {
            let log = db.cf_handle(LOG_CF).unwrap();
            batch.put_cf(log, index.to_be_bytes(), checksum::seal(body));
        }
        batch.put_cf(db.cf_handle(META_CF).unwrap(), "vote", checksum::seal(b"v"));
        db.write(batch).unwrap();
        records
    }

    fn legacy_records(db_dir: &Path) -> usize {
        let db = DB::open_cf(&Options::default(), db_dir, [LOG_CF, META_CF]).unwrap();
        let log = db.cf_handle(LOG_CF).unwrap();
        db.iterator_cf(log, IteratorMode::Start).count()
    }

    #[test]
    fn a_log_of_format_2_moves_into_segments_once_and_a_crash_part_way_finishes_it() {
        let directory = tempfile::tempdir().unwrap();
        let (db_dir, segments_dir) = (directory.path().join("db"), directory.path().join("seg"));
        let records = write_format_2(&db_dir);
        let opened = LogDb::open(&db_dir, &segments_dir).unwrap();
        assert_eq!(opened.read_range(0, u64::MAX).unwrap(), records);
        assert_eq!(opened.get_meta("vote").unwrap(), Some(b"v".to_vec()));
        opened.append(&[(13, b"new".to_vec())]).unwrap();
        drop(opened);
        assert_eq!(legacy_records(&db_dir), 0, "the family is emptied");

        // A crash before the staging directory was renamed: the move starts again.
        let directory = tempfile::tempdir().unwrap();
        let (db_dir, segments_dir) = (directory.path().join("db"), directory.path().join("seg"));
        let records = write_format_2(&db_dir);
        let staging = directory.path().join("seg.migrating");
        SegmentLog::open(&staging, SEGMENT_BYTES, 0)
            .unwrap()
            .append(&records[..3])
            .unwrap();
        let opened = LogDb::open(&db_dir, &segments_dir).unwrap();
        assert_eq!(opened.read_range(0, u64::MAX).unwrap(), records);
        assert!(!staging.exists());
        drop(opened);

        // A crash after the rename, before the family was emptied: the segments are the log.
        let directory = tempfile::tempdir().unwrap();
        let (db_dir, segments_dir) = (directory.path().join("db"), directory.path().join("seg"));
        let records = write_format_2(&db_dir);
        SegmentLog::open(&segments_dir, SEGMENT_BYTES, 0)
            .unwrap()
            .append(&records)
            .unwrap();
        let opened = LogDb::open(&db_dir, &segments_dir).unwrap();
        assert_eq!(opened.read_range(0, u64::MAX).unwrap(), records);
        drop(opened);
        assert_eq!(legacy_records(&db_dir), 0);
    }

    #[test]
    fn a_purge_survives_a_crash_before_its_segments_were_deleted() {
        let directory = tempfile::tempdir().unwrap();
        let (db_dir, segments_dir) = (directory.path().join("db"), directory.path().join("seg"));
        let limits = LogDbLimits {
            segment_bytes: 1024,
            ..LogDbLimits::default()
        };
        let log = LogDb::open_with(&db_dir, &segments_dir, limits).unwrap();
        let records: Vec<(u64, Vec<u8>)> = (1..=20).map(|index| (index, vec![1; 200])).collect();
        log.append(&records).unwrap();
        // The purge's batch reached the disk; its deletes did not.
        let saved: Vec<(std::path::PathBuf, Vec<u8>)> = fs::read_dir(&segments_dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .map(|path| (path.clone(), fs::read(&path).unwrap()))
            .collect();
        log.purge_through(30, "purged", b"30").unwrap();
        drop(log);
        for (path, bytes) in &saved {
            fs::write(path, bytes).unwrap();
        }
        let log = LogDb::open_with(&db_dir, &segments_dir, limits).unwrap();
        assert_eq!(log.last().unwrap(), None);
        assert!(log.read_range(0, u64::MAX).unwrap().is_empty());
        // The log goes on after the purged entries, as after a snapshot is installed.
        log.append(&[(31, b"next".to_vec())]).unwrap();
        assert_eq!(log.last().unwrap(), Some((31, b"next".to_vec())));
        assert_eq!(fs::read_dir(&segments_dir).unwrap().count(), 1);
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
            segment_bytes: 1 << 20,
        };
        let (db_dir, segments_dir) = (directory.path().join("db"), directory.path().join("seg"));
        let log = LogDb::open_with(&db_dir, &segments_dir, limits).unwrap();
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
        while wal_bytes(&db_dir) > bound && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let held = wal_bytes(&db_dir);
        assert!(
            held <= bound,
            "{held} bytes of write-ahead log after 16 MiB written, bound {bound}"
        );
        // Nothing was lost by writing the families out, and all of it is read back after a
        // restart.
        drop(log);
        let log = LogDb::open_with(&db_dir, &segments_dir, limits).unwrap();
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
