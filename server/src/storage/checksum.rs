//! Checksummed record framing: `crc32 (4 bytes, little endian) ‖ body`.

use super::fault::StorageFault;

/// Frames `body` with its checksum.
pub fn seal(body: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(body.len() + 4);
    record.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    record.extend_from_slice(body);
    record
}

/// Verifies and strips the checksum of a record made by `seal`.
pub fn open<'a>(record: &'a [u8], location: &dyn Fn() -> String) -> Result<&'a [u8], StorageFault> {
    if record.len() < 4 {
        return Err(StorageFault::Corrupt {
            location: location(),
            reason: "record shorter than its checksum".into(),
        });
    }
    let (stored, body) = record.split_at(4);
    let stored = u32::from_le_bytes(stored.try_into().expect("split at 4"));
    let actual = crc32fast::hash(body);
    if stored != actual {
        return Err(StorageFault::Corrupt {
            location: location(),
            reason: format!("checksum {actual:#010x} does not match stored {stored:#010x}"),
        });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flipped_bit_is_caught() {
        let mut record = seal(b"hello");
        assert_eq!(open(&record, &|| "test".into()).unwrap(), b"hello");
        record[6] ^= 1;
        assert!(matches!(
            open(&record, &|| "test".into()),
            Err(StorageFault::Corrupt { .. })
        ));
    }
}
