//! `SnapshotFile`: the latest snapshot, replaced atomically (write a temporary file, fsync,
//! rename over the old one, fsync the directory), so a crash leaves the old or the new one whole.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::checksum;
use super::fault::StorageFault;

const MAGIC: &[u8; 8] = b"COORDSNP";

#[derive(Debug, Clone)]
pub struct SnapshotFile {
    path: PathBuf,
}

impl SnapshotFile {
    pub fn new(data_dir: &Path) -> SnapshotFile {
        SnapshotFile {
            path: data_dir.join("snapshot"),
        }
    }

    /// Durably replaces the stored snapshot with `body`.
    pub fn save(&self, body: &[u8]) -> Result<(), StorageFault> {
        let temporary = self.path.with_extension("tmp");
        let io_fault = |path: &Path| {
            let path = path.display().to_string();
            move |source| StorageFault::Io { path, source }
        };
        let mut file = fs::File::create(&temporary).map_err(io_fault(&temporary))?;
        file.write_all(MAGIC).map_err(io_fault(&temporary))?;
        file.write_all(&checksum::seal(body))
            .map_err(io_fault(&temporary))?;
        file.sync_all().map_err(io_fault(&temporary))?;
        drop(file);
        fs::rename(&temporary, &self.path).map_err(io_fault(&self.path))?;
        let directory = self
            .path
            .parent()
            .expect("the snapshot file lives in the data directory");
        fs::File::open(directory)
            .and_then(|dir| dir.sync_all())
            .map_err(io_fault(directory))?;
        Ok(())
    }

    /// The stored snapshot, verified, or `None` if none was ever saved.
    pub fn load(&self) -> Result<Option<Vec<u8>>, StorageFault> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StorageFault::Io {
                    path: self.path.display().to_string(),
                    source,
                })
            }
        };
        let location = || self.path.display().to_string();
        let Some(record) = bytes.strip_prefix(MAGIC) else {
            return Err(StorageFault::Corrupt {
                location: location(),
                reason: "not a Coord snapshot".into(),
            });
        };
        Ok(Some(checksum::open(record, &location)?.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_replaces_and_load_verifies() {
        let directory = tempfile::tempdir().unwrap();
        let snapshots = SnapshotFile::new(directory.path());
        assert_eq!(snapshots.load().unwrap(), None);
        snapshots.save(b"first").unwrap();
        snapshots.save(b"second").unwrap();
        assert_eq!(snapshots.load().unwrap(), Some(b"second".to_vec()));
        let mut bytes = fs::read(directory.path().join("snapshot")).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(directory.path().join("snapshot"), bytes).unwrap();
        assert!(matches!(
            snapshots.load(),
            Err(StorageFault::Corrupt { .. })
        ));
    }
}
