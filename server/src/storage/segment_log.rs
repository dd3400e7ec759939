//! `SegmentLog`: the Raft log's entries in preallocated segment files of our own.
//!
//! Why not RocksDB: each append is one `fdatasync`, and on a file that grows, that sync also
//! writes the file's inode (its new size). RocksDB preallocates its write-ahead log only with
//! `FALLOC_FL_KEEP_SIZE`, so every append grew the file. A segment here is allocated to its full
//! length when it is created, so an append writes inside the file and its sync writes the data
//! alone; it also skips RocksDB's memtable, flushes and compactions of data that is read once.
//!
//! Format (all integers little endian), one directory of files named
//! `<first index, 20 digits>-<sequence, 20 digits>.seg`:
//!
//! ```text
//! segment = "coordseg" (8 bytes) ‖ format u32 (= 1) ‖ reserved u32 (= 0) ‖ record*
//! record  = crc32 u32 ‖ kind u32 ‖ index u64 ‖ length u32 ‖ body (length bytes)
//!           crc32 covers kind, index, length and body
//! kind 1  = a log entry at `index`
//! kind 2  = a seal: the segment ends here and the log goes on at `index`, in the segment
//!           named with that first index and the highest sequence
//! ```
//!
//! Invariants:
//! - The log is the chain of segments from the one with the lowest first index, following
//!   seals. Recovery reads each segment's records while they check (checksum, kind, and the
//!   next index in order) and stops at the first that does not; a segment that does not end in a
//!   seal ends the chain, and every file off the chain is deleted.
//! - Nothing is ever appended after a point recovery stopped at: an open seals the last segment
//!   where its readable records end and starts a new one. So bytes from before a crash (a record
//!   written but never synced, a stale tail) can never be read back as part of the log, even if
//!   they happen to check.
//! - A truncation deletes the later segments first (newest first), then seals the segment that
//!   held the first removed entry at that entry; a purge deletes whole segments oldest first.
//!   A crash part-way through either leaves a prefix (truncation) or a suffix (purge) of the
//!   chain, both valid logs. Sequences only grow, so a segment written after a truncation wins
//!   over a stale one with the same first index.
//! - Every change is synced before the call returns: appended records and seals with
//!   `fdatasync`, created and deleted files with an `fsync` of the directory.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::fault::StorageFault;

const MAGIC: &[u8; 8] = b"coordseg";
const FORMAT: u32 = 1;
const SEGMENT_HEADER: u64 = 16;
const RECORD_HEADER: u64 = 20;
const KIND_ENTRY: u32 = 1;
const KIND_SEAL: u32 = 2;
const SUFFIX: &str = ".seg";

/// The default length a segment is allocated to: 64 MiB, as etcd's write-ahead log.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// One segment file of the chain.
struct Segment {
    first: u64,
    sequence: u64,
    path: PathBuf,
    file: Arc<File>,
    /// The offset of each entry record: `offsets[i]` holds index `first + i`.
    offsets: Vec<u64>,
    /// Where the next record goes: the end of the last one.
    end: u64,
    /// Whether the segment ends in a seal; only the last segment may be open.
    sealed: bool,
}

impl Segment {
    fn next_index(&self) -> u64 {
        self.first + self.offsets.len() as u64
    }

    /// Offset and body length of the entry at `index`, which the segment holds.
    fn span(&self, index: u64) -> (u64, u64) {
        let slot = (index - self.first) as usize;
        let start = self.offsets[slot];
        let stop = self.offsets.get(slot + 1).copied().unwrap_or(self.end);
        (start, stop - start - RECORD_HEADER)
    }
}

struct State {
    /// The chain, oldest first.
    segments: Vec<Segment>,
    /// The lowest index still in the log: entries below it are purged, even where their
    /// segment is still on disk.
    first: u64,
    next_sequence: u64,
}

/// The log's entries, durably, in segment files under one directory.
pub struct SegmentLog {
    dir: PathBuf,
    segment_bytes: u64,
    state: Mutex<State>,
    /// Held for the whole of each change, syncs included, so changes happen one at a time;
    /// reads take only `state`, which no sync holds.
    writing: Mutex<()>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn io_fault(path: &Path) -> impl FnOnce(std::io::Error) -> StorageFault + '_ {
    move |source| StorageFault::Io {
        path: path.display().to_string(),
        source,
    }
}

fn corrupt(location: String, reason: String) -> StorageFault {
    StorageFault::Corrupt { location, reason }
}

/// The bytes of one record.
fn encode_record(buffer: &mut Vec<u8>, kind: u32, index: u64, body: &[u8]) {
    let start = buffer.len();
    buffer.extend_from_slice(&[0; 4]);
    buffer.extend_from_slice(&kind.to_le_bytes());
    buffer.extend_from_slice(&index.to_le_bytes());
    buffer.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buffer.extend_from_slice(body);
    let crc = crc32fast::hash(&buffer[start + 4..]);
    buffer[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// A record's header fields, once its checksum has been verified with its body.
struct Header {
    crc: u32,
    kind: u32,
    index: u64,
    length: u64,
}

fn decode_header(bytes: &[u8]) -> Header {
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    Header {
        crc: u32_at(0),
        kind: u32_at(4),
        index: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
        length: u64::from(u32_at(16)),
    }
}

fn checks(header_bytes: &[u8], body: &[u8], crc: u32) -> bool {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header_bytes[4..]);
    hasher.update(body);
    hasher.finalize() == crc
}

fn segment_name(first: u64, sequence: u64) -> String {
    format!("{first:020}-{sequence:020}{SUFFIX}")
}

fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (first, sequence) = stem.split_once('-')?;
    Some((first.parse().ok()?, sequence.parse().ok()?))
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), StorageFault> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_fault(dir))
}

/// Allocates `bytes` of `file` (its length becomes at least that) so that later writes inside
/// it do not change its size. Where the filesystem cannot, the file simply grows as written.
fn preallocate(file: &File, bytes: u64) {
    // Mode 0: allocate and extend the file (not `KEEP_SIZE`, which is what RocksDB does).
    if let Err(error) = rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, bytes) {
        tracing::debug!(%error, "a log segment is not preallocated; it grows as written");
    }
}

/// What reading a segment from its start found.
struct Scanned {
    offsets: Vec<u64>,
    end: u64,
    /// The index a seal says the log goes on at.
    sealed_at: Option<u64>,
}

/// Reads `path`'s records while they check, expecting the first entry at `first`. `None` for
/// a file whose header was never written (a crash while it was created); a header that was
/// written and no longer checks is a fault.
fn scan(path: &Path, first: u64) -> Result<Option<Scanned>, StorageFault> {
    let file = File::open(path).map_err(io_fault(path))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; SEGMENT_HEADER as usize];
    let mut scanned = Scanned {
        offsets: Vec::new(),
        end: SEGMENT_HEADER,
        sealed_at: None,
    };
    if reader.read_exact(&mut header).is_err() || header == [0; SEGMENT_HEADER as usize] {
        return Ok(None);
    }
    if &header[..8] != MAGIC {
        return Err(corrupt(
            path.display().to_string(),
            "the segment header does not start with \"coordseg\"".into(),
        ));
    }
    let format = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if format != FORMAT {
        return Err(corrupt(
            path.display().to_string(),
            format!("segment format {format}; this build reads format {FORMAT}"),
        ));
    }
    let mut record_header = [0u8; RECORD_HEADER as usize];
    let mut body = Vec::new();
    while reader.read_exact(&mut record_header).is_ok() {
        let fields = decode_header(&record_header);
        body.clear();
        let read = (&mut reader).take(fields.length).read_to_end(&mut body);
        let expected = first + scanned.offsets.len() as u64;
        let whole = read.is_ok() && body.len() as u64 == fields.length;
        if !whole || !checks(&record_header, &body, fields.crc) {
            break;
        }
        match fields.kind {
            KIND_ENTRY if fields.index == expected => scanned.offsets.push(scanned.end),
            KIND_SEAL if fields.length == 0 && fields.index == expected => {
                scanned.sealed_at = Some(fields.index);
                break;
            }
            _ => break,
        }
        scanned.end += RECORD_HEADER + fields.length;
    }
    Ok(Some(scanned))
}

/// The segment files in `dir`, by first index, each first index's highest sequence first.
fn list(dir: &Path) -> Result<BTreeMap<u64, Vec<(u64, PathBuf)>>, StorageFault> {
    let mut files: BTreeMap<u64, Vec<(u64, PathBuf)>> = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(io_fault(dir))? {
        let entry = entry.map_err(io_fault(dir))?;
        if let Some((first, sequence)) = entry.file_name().to_str().and_then(parse_name) {
            files
                .entry(first)
                .or_default()
                .push((sequence, entry.path()));
        }
    }
    for candidates in files.values_mut() {
        candidates.sort_by_key(|(sequence, _)| std::cmp::Reverse(*sequence));
    }
    Ok(files)
}

fn open_file(path: &Path) -> Result<Arc<File>, StorageFault> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_fault(path))?;
    Ok(Arc::new(file))
}

/// Follows the chain of segments from the lowest first index (see the module's invariants).
fn read_chain(files: &BTreeMap<u64, Vec<(u64, PathBuf)>>) -> Result<Vec<Segment>, StorageFault> {
    let mut chain: Vec<Segment> = Vec::new();
    let mut next = files.keys().next().copied();
    while let Some(first) = next {
        let after = chain.last().map_or(0, |segment| segment.sequence + 1);
        let Some((sequence, path)) = files
            .get(&first)
            .and_then(|candidates| candidates.iter().find(|(sequence, _)| *sequence >= after))
        else {
            break;
        };
        let Some(scanned) = scan(path, first)? else {
            break;
        };
        next = scanned.sealed_at;
        chain.push(Segment {
            first,
            sequence: *sequence,
            path: path.clone(),
            file: open_file(path)?,
            offsets: scanned.offsets,
            end: scanned.end,
            sealed: scanned.sealed_at.is_some(),
        });
    }
    Ok(chain)
}

impl SegmentLog {
    /// Opens (creating it if missing) the log in `dir`; entries below `first` count as purged.
    /// Seals the last segment where its readable records end and deletes every file off the
    /// chain (see the module's invariants).
    pub fn open(dir: &Path, segment_bytes: u64, first: u64) -> Result<SegmentLog, StorageFault> {
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(io_fault(dir))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let files = list(dir)?;
        let mut segments = read_chain(&files)?;
        if let Some(last) = segments.last_mut() {
            if !last.sealed {
                seal(last)?;
            }
        }
        let mut removed = false;
        for (sequence, path) in files.values().flatten() {
            if !segments.iter().any(|segment| segment.sequence == *sequence) {
                tracing::warn!(path = %path.display(), "deleting a log segment off the chain");
                fs::remove_file(path).map_err(io_fault(path))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(dir)?;
        }
        let next_sequence = files
            .values()
            .flatten()
            .map(|(sequence, _)| sequence + 1)
            .max()
            .unwrap_or(1);
        let oldest = segments
            .first()
            .map_or(first, |oldest| oldest.first.max(first));
        let log = SegmentLog {
            dir: dir.to_owned(),
            segment_bytes,
            state: Mutex::new(State {
                segments,
                first: oldest,
                next_sequence,
            }),
            writing: Mutex::new(()),
        };
        // A crash during a purge can leave segments that hold only purged entries.
        if let Some(end) = first.checked_sub(1) {
            log.purge_through(end)?;
        }
        Ok(log)
    }
}

/// Writes a seal at `segment.end` (the log goes on at the segment's next index), drops what
/// lies after it and syncs.
fn seal(segment: &mut Segment) -> Result<(), StorageFault> {
    let mut record = Vec::with_capacity(RECORD_HEADER as usize);
    encode_record(&mut record, KIND_SEAL, segment.next_index(), &[]);
    let length = segment.end + RECORD_HEADER;
    let path = &segment.path;
    segment
        .file
        .write_all_at(&record, segment.end)
        .and_then(|()| segment.file.set_len(length))
        .and_then(|()| segment.file.sync_data())
        .map_err(io_fault(path))?;
    segment.sealed = true;
    Ok(())
}

impl SegmentLog {
    /// Appends `(index, body)` records durably: each must be the next index after the last
    /// (any index for an empty log), and the call returns once they are synced.
    pub fn append(&self, records: &[(u64, Vec<u8>)]) -> Result<(), StorageFault> {
        let _writing = locked(&self.writing);
        let mut state = locked(&self.state);
        // Sized once for every record: grown as records went in, its reallocations (and the
        // fresh pages they touched) were 1.9 % of the members' CPU under 64 writers.
        let total: u64 = records
            .iter()
            .map(|(_, body)| RECORD_HEADER + body.len() as u64)
            .sum();
        let mut pending = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        let mut to_sync: Vec<usize> = Vec::new();
        for (index, body) in records {
            let bytes = RECORD_HEADER + body.len() as u64;
            if self.needs_segment(&state, *index, bytes + pending.len() as u64)? {
                write_pending(&mut state, &mut pending)?;
                if let Some(last) = state.segments.last_mut().filter(|last| !last.sealed) {
                    seal(last)?;
                }
                self.create(&mut state, *index)?;
            }
            let slot = state.segments.len() - 1;
            if to_sync.last() != Some(&slot) {
                to_sync.push(slot);
            }
            let segment = state.segments.last_mut().expect("an open segment");
            segment.offsets.push(segment.end + pending.len() as u64);
            encode_record(&mut pending, KIND_ENTRY, *index, body);
        }
        write_pending(&mut state, &mut pending)?;
        let files: Vec<(Arc<File>, PathBuf)> = to_sync
            .into_iter()
            .filter_map(|slot| state.segments.get(slot))
            .map(|segment| (segment.file.clone(), segment.path.clone()))
            .collect();
        // Readers may go on while the disk syncs.
        drop(state);
        for (file, path) in files {
            file.sync_data().map_err(io_fault(&path))?;
        }
        Ok(())
    }

    /// Whether the record at `index` needs a new segment, with `bytes` still to write (its
    /// own and those pending before it); an error if it does not follow the log.
    fn needs_segment(&self, state: &State, index: u64, bytes: u64) -> Result<bool, StorageFault> {
        let Some(last) = state.segments.last() else {
            return Ok(true);
        };
        if index != last.next_index() {
            return Err(corrupt(
                format!("log segment {}", last.path.display()),
                format!(
                    "an append of entry {index} where the log goes on at {}",
                    last.next_index()
                ),
            ));
        }
        Ok(last.sealed || (!last.offsets.is_empty() && last.end + bytes > self.segment_bytes))
    }

    /// Creates the segment whose first entry is `first`, allocated to its full length, and
    /// syncs it and the directory.
    fn create(&self, state: &mut State, first: u64) -> Result<(), StorageFault> {
        let sequence = state.next_sequence;
        state.next_sequence += 1;
        let path = self.dir.join(segment_name(first, sequence));
        let mut header = [0u8; SEGMENT_HEADER as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&FORMAT.to_le_bytes());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|file| {
                file.write_all_at(&header, 0)?;
                preallocate(&file, self.segment_bytes);
                file.sync_all()?;
                Ok(file)
            })
            .map_err(io_fault(&path))?;
        sync_dir(&self.dir)?;
        state.segments.push(Segment {
            first,
            sequence,
            path,
            file: Arc::new(file),
            offsets: Vec::new(),
            end: SEGMENT_HEADER,
            sealed: false,
        });
        Ok(())
    }

    /// Entries with `start <= index < end`, in order, checksums verified.
    pub fn read_range(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, StorageFault> {
        self.read_range_bytes(start, end, usize::MAX)
    }

    /// Like `read_range`, but stops once the entries read hold `bytes_max` bytes or more (the
    /// first entry is always returned, however large).
    pub fn read_range_bytes(
        &self,
        start: u64,
        end: u64,
        bytes_max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StorageFault> {
        let state = locked(&self.state);
        let mut records = Vec::new();
        let mut bytes = 0u64;
        let mut index = start.max(state.first);
        for segment in &state.segments {
            // The chain has no gaps: nothing lies before a segment's first index but purged
            // entries and earlier segments.
            index = index.max(segment.first);
            let stop = end.min(segment.next_index());
            if index >= stop {
                if index >= end {
                    break;
                }
                continue;
            }
            let mut through = index;
            while through < stop
                && (records.is_empty() && through == index || bytes < bytes_max as u64)
            {
                bytes += segment.span(through).1;
                through += 1;
            }
            read_entries(segment, index..through, &mut records)?;
            index = through;
            if through < stop {
                break;
            }
        }
        Ok(records)
    }

    /// The last entry in the log, if any.
    pub fn last(&self) -> Result<Option<(u64, Vec<u8>)>, StorageFault> {
        let state = locked(&self.state);
        let Some(segment) = state
            .segments
            .iter()
            .rev()
            .find(|segment| !segment.offsets.is_empty())
        else {
            return Ok(None);
        };
        let index = segment.next_index() - 1;
        if index < state.first {
            return Ok(None);
        }
        let mut records = Vec::with_capacity(1);
        read_entries(segment, index..index + 1, &mut records)?;
        Ok(records.pop())
    }

    /// Removes every entry with `index >= start`, durably: later segments are deleted newest
    /// first, then the segment holding `start` is sealed there.
    pub fn truncate_from(&self, start: u64) -> Result<(), StorageFault> {
        let _writing = locked(&self.writing);
        let mut state = locked(&self.state);
        // Removing every live entry empties the log, purged segments included.
        let start = if start <= state.first { 0 } else { start };
        let mut removed = false;
        while let Some(segment) = state.segments.last().filter(|last| last.first >= start) {
            fs::remove_file(&segment.path).map_err(io_fault(&segment.path))?;
            state.segments.pop();
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        if let Some(segment) = state.segments.last_mut() {
            if segment.next_index() > start {
                let keep = (start - segment.first) as usize;
                segment.end = segment.offsets[keep];
                segment.offsets.truncate(keep);
                seal(segment)?;
            }
        }
        Ok(())
    }

    /// Purges every entry with `index <= end`: they are no longer read, and the segments that
    /// hold nothing else are deleted, oldest first. The caller stores `end + 1` as the log's
    /// first index durably before (`open`'s `first`).
    pub fn purge_through(&self, end: u64) -> Result<(), StorageFault> {
        let _writing = locked(&self.writing);
        let mut state = locked(&self.state);
        state.first = state.first.max(end + 1);
        let spent = state
            .segments
            .iter()
            .take_while(|segment| segment.next_index() <= end + 1)
            .count();
        if spent == 0 {
            return Ok(());
        }
        for segment in state.segments.drain(..spent) {
            fs::remove_file(&segment.path).map_err(io_fault(&segment.path))?;
        }
        sync_dir(&self.dir)
    }
}

/// Writes the records encoded in `pending` after the last segment's synced ones (their offsets
/// are already in place) and empties it.
fn write_pending(state: &mut State, pending: &mut Vec<u8>) -> Result<(), StorageFault> {
    if pending.is_empty() {
        return Ok(());
    }
    let segment = state
        .segments
        .last_mut()
        .expect("pending records have a segment");
    segment
        .file
        .write_all_at(pending, segment.end)
        .map_err(io_fault(&segment.path))?;
    segment.end += pending.len() as u64;
    pending.clear();
    Ok(())
}

/// Reads and verifies the entries in `range`, which `segment` holds, with one read.
fn read_entries(
    segment: &Segment,
    range: std::ops::Range<u64>,
    records: &mut Vec<(u64, Vec<u8>)>,
) -> Result<(), StorageFault> {
    if range.is_empty() {
        return Ok(());
    }
    let start = segment.span(range.start).0;
    let (last_offset, last_length) = segment.span(range.end - 1);
    let mut buffer = vec![0u8; (last_offset + RECORD_HEADER + last_length - start) as usize];
    segment
        .file
        .read_exact_at(&mut buffer, start)
        .map_err(io_fault(&segment.path))?;
    for index in range {
        let (offset, length) = segment.span(index);
        let at = (offset - start) as usize;
        let body_at = at + RECORD_HEADER as usize;
        let header = &buffer[at..body_at];
        let body = &buffer[body_at..body_at + length as usize];
        let fields = decode_header(header);
        let matches = fields.kind == KIND_ENTRY && fields.index == index && fields.length == length;
        if !matches || !checks(header, body, fields.crc) {
            return Err(corrupt(
                format!("log entry {index} in {}", segment.path.display()),
                "its record does not check (checksum, kind, index or length)".into(),
            ));
        }
        records.push((index, body.to_vec()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn body(index: u64, length: usize) -> Vec<u8> {
        (0..length)
            .map(|at| (index as usize * 31 + at) as u8)
            .collect()
    }

    fn records(indexes: std::ops::RangeInclusive<u64>, length: usize) -> Vec<(u64, Vec<u8>)> {
        indexes.map(|index| (index, body(index, length))).collect()
    }

    fn indexes(log: &SegmentLog) -> Vec<u64> {
        let read = log.read_range(0, u64::MAX).unwrap();
        read.into_iter().map(|(index, _)| index).collect()
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        files
    }

    #[test]
    fn entries_are_read_back_across_segments_truncation_purge_and_reopen() {
        let directory = tempfile::tempdir().unwrap();
        let dir = directory.path().join("segments");
        {
            // 100-byte entries in 512-byte segments: four entries to a segment.
            let log = SegmentLog::open(&dir, 512, 0).unwrap();
            log.append(&records(1..=10, 100)).unwrap();
            log.append(&records(11..=40, 100)).unwrap();
            assert!(segment_files(&dir).len() >= 10);
            assert_eq!(log.read_range(5, 9).unwrap(), records(5..=8, 100));
            assert_eq!(log.last().unwrap(), Some((40, body(40, 100))));
            log.truncate_from(25).unwrap();
            log.append(&records(25..=30, 7)).unwrap();
            log.purge_through(10).unwrap();
            assert_eq!(indexes(&log), (11..=30).collect::<Vec<_>>());
        }
        let log = SegmentLog::open(&dir, 512, 11).unwrap();
        let mut expected = records(11..=24, 100);
        expected.extend(records(25..=30, 7));
        assert_eq!(log.read_range(0, u64::MAX).unwrap(), expected);
        assert_eq!(log.last().unwrap(), Some((30, body(30, 7))));
        // A byte budget stops after the entry that reaches it, never before the first.
        assert_eq!(log.read_range_bytes(12, 100, 150).unwrap().len(), 2);
        assert_eq!(log.read_range_bytes(12, 100, 0).unwrap().len(), 1);
        // The log goes on where it ended, in a new segment.
        log.append(&records(31..=31, 3)).unwrap();
        assert!(log.append(&records(33..=33, 3)).is_err());
        assert_eq!(log.last().unwrap(), Some((31, body(31, 3))));
    }

    /// The byte offset of entry `index` in a single segment of entries `1..` of `length` bytes.
    fn offset_of(index: u64, length: u64) -> u64 {
        SEGMENT_HEADER + (index - 1) * (RECORD_HEADER + length)
    }

    #[test]
    fn a_lost_write_ends_the_log_and_what_follows_it_is_never_read_back() {
        let directory = tempfile::tempdir().unwrap();
        let dir = directory.path().join("segments");
        SegmentLog::open(&dir, SEGMENT_BYTES, 0)
            .unwrap()
            .append(&records(1..=10, 50))
            .unwrap();
        // Entry 6 never reached the disk; 7 to 10, written after it, did.
        let file = segment_files(&dir).pop().unwrap();
        let handle = OpenOptions::new().write(true).open(&file).unwrap();
        handle.write_all_at(&[0; 70], offset_of(6, 50)).unwrap();
        drop(handle);
        let log = SegmentLog::open(&dir, SEGMENT_BYTES, 0).unwrap();
        assert_eq!(indexes(&log), (1..=5).collect::<Vec<_>>());
        // A new entry 6 of the same length: 7 to 10 would follow it exactly, but the log goes
        // on in a new segment.
        log.append(&records(6..=6, 50)).unwrap();
        drop(log);
        let log = SegmentLog::open(&dir, SEGMENT_BYTES, 0).unwrap();
        assert_eq!(indexes(&log), (1..=6).collect::<Vec<_>>());
        // A flipped bit ends the log at the entry before it.
        let file = segment_files(&dir).remove(0);
        let handle = OpenOptions::new().write(true).open(&file).unwrap();
        handle.write_all_at(&[0xff], offset_of(3, 50) + 30).unwrap();
        drop(handle);
        let log = SegmentLog::open(&dir, SEGMENT_BYTES, 0).unwrap();
        assert_eq!(indexes(&log), [1, 2]);
        assert_eq!(
            segment_files(&dir).len(),
            1,
            "the segment of entry 6 is off the chain"
        );
    }

    #[test]
    fn files_left_by_a_crash_off_the_chain_are_deleted() {
        let directory = tempfile::tempdir().unwrap();
        let dir = directory.path().join("segments");
        let log = SegmentLog::open(&dir, 512, 0).unwrap();
        log.append(&records(1..=12, 100)).unwrap();
        // A truncation whose deletes never reached the disk: the old segments come back.
        let before: Vec<(PathBuf, Vec<u8>)> = segment_files(&dir)
            .into_iter()
            .map(|path| {
                let bytes = fs::read(&path).unwrap();
                (path, bytes)
            })
            .collect();
        log.truncate_from(3).unwrap();
        log.append(&records(3..=3, 100)).unwrap();
        drop(log);
        for (path, bytes) in &before {
            if !path.exists() {
                fs::write(path, bytes).unwrap();
            }
        }
        // A segment created but never written, where the log would go on.
        fs::write(dir.join(segment_name(4, 999)), b"").unwrap();
        let log = SegmentLog::open(&dir, 512, 0).unwrap();
        assert_eq!(indexes(&log), [1, 2, 3]);
        assert_eq!(log.last().unwrap(), Some((3, body(3, 100))));
        assert_eq!(segment_files(&dir).len(), 2);
        log.append(&records(4..=5, 100)).unwrap();
        assert_eq!(
            indexes(&SegmentLog::open(&dir, 512, 0).unwrap()),
            [1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn a_damaged_segment_header_is_a_fault_not_an_empty_log() {
        let directory = tempfile::tempdir().unwrap();
        let dir = directory.path().join("segments");
        SegmentLog::open(&dir, SEGMENT_BYTES, 0)
            .unwrap()
            .append(&records(1..=3, 10))
            .unwrap();
        let file = segment_files(&dir).pop().unwrap();
        let handle = OpenOptions::new().write(true).open(&file).unwrap();
        handle.write_all_at(b"x", 0).unwrap();
        drop(handle);
        let refused = SegmentLog::open(&dir, SEGMENT_BYTES, 0).err().unwrap();
        assert!(matches!(refused, StorageFault::Corrupt { .. }), "{refused}");
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// The bytes on disk, pinned: a change here is a new segment format (`FORMAT`), read beside
    /// the old one or refused by name.
    #[test]
    fn the_segment_format_is_pinned() {
        let directory = tempfile::tempdir().unwrap();
        let dir = directory.path().join("segments");
        let log = SegmentLog::open(&dir, 4096, 0).unwrap();
        log.append(&[(7, b"ab".to_vec()), (8, b"c".to_vec())])
            .unwrap();
        log.truncate_from(8).unwrap();
        let files = segment_files(&dir);
        assert_eq!(files.len(), 1);
        assert!(files[0].ends_with("00000000000000000007-00000000000000000001.seg"));
        let bytes = fs::read(&files[0]).unwrap();
        let (header, records) = bytes.split_at(SEGMENT_HEADER as usize);
        assert_eq!(hex(header), "636f6f72647365670100000000000000");
        // Entry 7, then the seal that truncation wrote over entry 8: the file ends there.
        let (entry, seal) = records.split_at(RECORD_HEADER as usize + 2);
        assert_eq!(hex(entry), "f528167f010000000700000000000000020000006162");
        assert_eq!(hex(seal), "c818176d02000000080000000000000000000000");
    }

    /// What a log should hold.
    #[derive(Default)]
    struct Model {
        entries: BTreeMap<u64, Vec<u8>>,
        first: u64,
        next: u64,
    }

    #[derive(Debug, Clone)]
    enum Step {
        Append { count: u64, length: usize },
        Truncate { back: u64 },
        Purge { back: u64 },
        Reopen,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (1u64..6, 0usize..300).prop_map(|(count, length)| Step::Append { count, length }),
            1 => (0u64..8).prop_map(|back| Step::Truncate { back }),
            1 => (0u64..12).prop_map(|back| Step::Purge { back }),
            1 => Just(Step::Reopen),
        ]
    }

    fn apply(log: &mut SegmentLog, model: &mut Model, dir: &Path, step: &Step) {
        match *step {
            Step::Append { count, length } => {
                let next = model.next.max(1);
                let batch = records(next..=next + count - 1, length);
                log.append(&batch).unwrap();
                model.entries.extend(batch);
                model.next = next + count;
            }
            Step::Truncate { back } => {
                let start = model.next.saturating_sub(back);
                log.truncate_from(start).unwrap();
                if start <= model.first {
                    model.entries.clear();
                    model.next = model.first;
                } else {
                    model.entries.retain(|index, _| *index < start);
                    model.next = model.next.min(start);
                }
            }
            Step::Purge { back } => {
                let end = (model.next + 3).saturating_sub(back);
                log.purge_through(end).unwrap();
                model.first = model.first.max(end + 1);
                model.entries.retain(|index, _| *index > end);
                model.next = model.next.max(end + 1);
            }
            Step::Reopen => *log = SegmentLog::open(dir, 700, model.first).unwrap(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any sequence of appends, truncations, purges and reopens reads back as a plain map
        /// of entries would.
        #[test]
        fn the_log_reads_back_as_a_map_of_its_entries(steps in prop::collection::vec(step(), 1..40)) {
            let directory = tempfile::tempdir().unwrap();
            let dir = directory.path().join("segments");
            let mut log = SegmentLog::open(&dir, 700, 0).unwrap();
            let mut model = Model::default();
            for step in &steps {
                apply(&mut log, &mut model, &dir, step);
                let expected: Vec<(u64, Vec<u8>)> =
                    model.entries.iter().map(|(index, body)| (*index, body.clone())).collect();
                prop_assert_eq!(log.read_range(0, u64::MAX).unwrap(), expected.clone());
                prop_assert_eq!(log.last().unwrap(), expected.last().cloned());
                if let Some((middle, _)) = expected.get(expected.len() / 2) {
                    let tail = log.read_range(*middle, u64::MAX).unwrap();
                    prop_assert_eq!(tail, expected[expected.len() / 2..].to_vec());
                }
            }
        }
    }
}
