//! Binary encoding of the records kept on disk (write-ahead log and snapshot).
//!
//! Framing, the same in both files: `u32 length | u32 crc32(payload) | payload`, little
//! endian. A record whose length runs past the end of the file, or whose checksum does not
//! match, is torn or corrupt; readers stop there.

use std::io::{ErrorKind, Read};

use crate::store::{EntryId, NewEntry};

/// One change to the store.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Insert { id: EntryId, created_ms: u64, expires_ms: Option<u64>, entry: NewEntry },
    Remove { id: EntryId },
    /// Ids below this are taken: written at each open under the interval policy, so ids
    /// handed out in an interval a crash then lost are never handed out again.
    IdFloor { id: EntryId },
}

const INSERT: u8 = 1;
const REMOVE: u8 = 2;
const ID_FLOOR: u8 = 3;
/// Largest payload a reader accepts: a length past this is corruption, not a record.
pub const MAX_RECORD_BYTES: usize = 256 << 20;

pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Reads the next framed payload into `buf`. Ok(Some(frame size)) for a record, Ok(None)
/// at a clean end of file, Err(reason) when the bytes there are torn or corrupt.
pub fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<Option<usize>, &'static str> {
    let mut header = [0u8; 8];
    let mut got = 0;
    while got < header.len() {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err("record header cut short"),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Err("read error"),
        }
    }
    let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().unwrap());
    if len > MAX_RECORD_BYTES {
        return Err("record length out of range");
    }
    buf.resize(len, 0);
    r.read_exact(buf).map_err(|_| "record cut short")?;
    if crc32fast::hash(buf) != crc {
        return Err("checksum mismatch");
    }
    Ok(Some(8 + len))
}

pub fn encode(record: &Record, out: &mut Vec<u8>) {
    match record {
        Record::Insert { id, created_ms, expires_ms, entry } => {
            out.push(INSERT);
            put_u64(out, *id);
            put_u64(out, *created_ms);
            put_u64(out, expires_ms.unwrap_or(0));
            for s in [&entry.namespace, &entry.prompt, &entry.response, &entry.model] {
                put_bytes(out, s.as_bytes());
            }
            put_u64(out, entry.metadata.len() as u64);
            for (k, v) in &entry.metadata {
                put_bytes(out, k.as_bytes());
                put_bytes(out, v.as_bytes());
            }
            put_u64(out, entry.vector.len() as u64);
            for x in &entry.vector {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        Record::Remove { id } => {
            out.push(REMOVE);
            put_u64(out, *id);
        }
        Record::IdFloor { id } => {
            out.push(ID_FLOOR);
            put_u64(out, *id);
        }
    }
}

pub fn decode(payload: &[u8]) -> Result<Record, &'static str> {
    let mut r = Reader { buf: payload, pos: 0 };
    let record = match r.u8()? {
        INSERT => {
            let id = r.u64()?;
            let created_ms = r.u64()?;
            let expires_ms = Some(r.u64()?).filter(|&at| at != 0);
            let namespace = r.string()?;
            let prompt = r.string()?;
            let response = r.string()?;
            let model = r.string()?;
            let n = r.count(8)?;
            let mut metadata = Vec::with_capacity(n);
            for _ in 0..n {
                metadata.push((r.string()?, r.string()?));
            }
            let dims = r.count(4)?;
            let mut vector = Vec::with_capacity(dims);
            for _ in 0..dims {
                vector.push(f32::from_le_bytes(r.take(4)?.try_into().unwrap()));
            }
            let entry = NewEntry { namespace, prompt, response, vector, model, metadata, ttl_ms: None };
            Record::Insert { id, created_ms, expires_ms, entry }
        }
        REMOVE => Record::Remove { id: r.u64()? },
        ID_FLOOR => Record::IdFloor { id: r.u64()? },
        _ => return Err("unknown record type"),
    };
    if r.pos != payload.len() {
        return Err("trailing bytes after record");
    }
    Ok(record)
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u64(out, b.len() as u64);
    out.extend_from_slice(b);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.buf.len() - self.pos < n {
            return Err("record shorter than its fields");
        }
        self.pos += n;
        Ok(&self.buf[self.pos - n..self.pos])
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    /// A count of items of at least `min_size` bytes each, checked against what is left.
    fn count(&mut self, min_size: usize) -> Result<usize, &'static str> {
        let n = self.u64()? as usize;
        if n.saturating_mul(min_size) > self.buf.len() - self.pos {
            return Err("count larger than the record");
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, &'static str> {
        let n = self.count(1)?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "invalid UTF-8 in record")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert() -> Record {
        Record::Insert {
            id: 7,
            created_ms: 1000,
            expires_ms: Some(5000),
            entry: NewEntry {
                namespace: "ns".into(),
                prompt: "héllo?".into(),
                response: "world".into(),
                vector: vec![0.25, -1.5],
                model: "m@1".into(),
                metadata: vec![("k".into(), "v".into())],
                ttl_ms: None,
            },
        }
    }

    fn framed(records: &[Record]) -> Vec<u8> {
        let mut file = Vec::new();
        for record in records {
            let mut payload = Vec::new();
            encode(record, &mut payload);
            frame(&payload, &mut file);
        }
        file
    }

    #[test]
    fn records_round_trip_through_frames() {
        let file = framed(&[insert(), Record::Remove { id: 7 }]);
        let mut reader = &file[..];
        let mut buf = Vec::new();
        assert!(read_frame(&mut reader, &mut buf).unwrap().is_some());
        assert_eq!(decode(&buf).unwrap(), insert());
        assert_eq!(read_frame(&mut reader, &mut buf).unwrap(), Some(8 + 9));
        assert_eq!(decode(&buf).unwrap(), Record::Remove { id: 7 });
        assert_eq!(read_frame(&mut reader, &mut buf).unwrap(), None);
    }

    #[test]
    fn torn_and_corrupt_frames_are_detected() {
        let file = framed(&[insert()]);
        let mut buf = Vec::new();
        assert_eq!(read_frame(&mut &file[..file.len() - 1], &mut buf), Err("record cut short"));
        assert_eq!(read_frame(&mut &file[..5], &mut buf), Err("record header cut short"));
        let mut flipped = file.clone();
        *flipped.last_mut().unwrap() ^= 0x40;
        assert_eq!(read_frame(&mut &flipped[..], &mut buf), Err("checksum mismatch"));
        let payload = &file[8..];
        assert!(decode(&payload[..payload.len() - 3]).is_err());
    }
}
