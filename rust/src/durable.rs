//! Persistence around [`Store`]: a write-ahead log of segments plus snapshots.
//!
//! Data directory layout:
//! * `wal-<seq>.log`: framed records ([`crate::codec`]), appended before a change is
//!   applied in memory and flushed before the caller is told it is stored (by
//!   [`crate::sync::SharedStore`] after it lets go of the store: one flush for every
//!   change made meanwhile);
//! * `snapshot.bin`: every live entry when a snapshot was taken, and the last log segment
//!   it covers. A snapshot bounds the log: segments it covers are deleted.
//!
//! Recovery loads the snapshot (a corrupt one is refused, never served), replays the later
//! segments in order, and truncates a torn or corrupt record at the tail of the last one
//! with a warning naming what was dropped. Entries whose time is up stay gone.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::codec::{self, Record};
use crate::store::{Config, EntryId, Limits, NewEntry, RemovalReason, Store, StoreError};

const SNAPSHOT: &str = "snapshot.bin";
const SNAPSHOT_TMP: &str = "snapshot.tmp";
const SNAPSHOT_MAGIC: &[u8; 8] = b"SEMCSNP1";
const SNAPSHOT_HEADER: usize = 8 + 8 + 8 + 8 + 4;
/// Ids skipped at each open under `Fsync::Interval`: far more than one interval can use.
const ID_BLOCK: u64 = 1 << 32;

/// When a logged change reaches the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// Before the change is acknowledged: nothing acknowledged is lost. One disk flush per
    /// change, or per group of changes when [`crate::sync::SharedStore`] flushes for them.
    Always,
    /// When [`Durable::sync`] runs (the server calls it on an interval): a crash loses at
    /// most the changes of the last interval; writes cost no flush each.
    Interval,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    Store(StoreError),
    /// The disk refused a write or a read (full, read-only, gone).
    Io(String),
    /// Data on disk that must not be served; the message says which file and what to do.
    Corrupt(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Store(e) => write!(f, "{e}"),
            Error::Io(m) | Error::Corrupt(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Store(e)
    }
}

fn io_error(what: &str, path: &Path, e: io::Error) -> Error {
    Error::Io(format!("could not {what} {}: {e}", path.display()))
}

/// What a recovery found, for the server's log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub snapshot_entries: usize,
    pub replayed_records: usize,
    pub warnings: Vec<String>,
}

struct Log {
    dir: PathBuf,
    fsync: Fsync,
    seq: u64,
    file: Arc<File>,
    len: u64,
    /// Set when a failed write could not be cut off: records appended after the garbage
    /// would be dropped at recovery as a torn tail, so no more are accepted.
    broken: bool,
}

/// The store, with its changes logged when it has a data directory.
pub struct Durable {
    store: Store,
    log: Option<Log>,
    frame: Vec<u8>,
    /// Bytes logged since open, over all segments: a position a flush can cover.
    written: u64,
    /// Set when the caller flushes after each change ([`Durable::defer_flushes`]).
    deferred: bool,
}

impl Durable {
    pub fn in_memory(config: Config) -> Self {
        Durable { store: Store::with_config(config), log: None, frame: Vec::new(), written: 0, deferred: false }
    }

    /// Opens (and recovers) the store kept in `dir`, creating it when new.
    pub fn open(dir: &Path, config: Config, fsync: Fsync, now_ms: u64) -> Result<(Self, Recovery), Error> {
        fs::create_dir_all(dir).map_err(|e| io_error("create", dir, e))?;
        // Replay without bounds: the log records evictions, but not the reads and expiries
        // that chose them, so a bounded replay would evict different entries than the live
        // store did. The bounds apply once history is rebuilt.
        let unbounded = Config { limits: Limits::NONE, namespace_limits: Limits::NONE, ..config };
        let mut store = Store::with_config(unbounded);
        let mut recovery = Recovery::default();
        let _ = fs::remove_file(dir.join(SNAPSHOT_TMP)); // a snapshot a crash left half-written
        let covered = match load_snapshot(&dir.join(SNAPSHOT), &mut store, now_ms)? {
            Some((covered, count)) => {
                recovery.snapshot_entries = count;
                covered
            }
            None => 0,
        };
        let segments = list_segments(dir)?;
        let mut last = covered;
        let later: Vec<u64> = segments.iter().copied().filter(|&s| s > covered).collect();
        for (i, &seq) in later.iter().enumerate() {
            let path = segment_path(dir, seq);
            let is_last = i + 1 == later.len();
            recovery.replayed_records += replay_segment(&path, is_last, &mut store, &mut recovery.warnings)?;
            last = seq;
        }
        for &seq in segments.iter().filter(|&&s| s <= covered) {
            let _ = fs::remove_file(segment_path(dir, seq)); // covered by the snapshot
        }
        store.expire(now_ms);
        store.reset_history();
        let log = Log::open(dir, if later.is_empty() { covered + 1 } else { last }, fsync)?;
        let mut durable = Durable { store, log: Some(log), frame: Vec::new(), written: 0, deferred: false };
        if !segments.is_empty() || covered > 0 {
            // Ids handed out just before a crash under the interval policy were lost with
            // their entries, but clients may still hold them: skip past them for good (on
            // every reopen, as the policy may have changed since).
            let floor = durable.store.next_id().saturating_add(ID_BLOCK);
            durable.append(&[Record::IdFloor { id: floor }])?;
            durable.sync()?;
            durable.store.bump_next_id(floor);
        }
        durable.logged(|s| s.set_limits(config.limits, config.namespace_limits))?;
        Ok((durable, recovery))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// For reads that update recency and hit counts (not logged: they are not data).
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    pub fn insert(&mut self, new: NewEntry, now_ms: u64) -> Result<EntryId, Error> {
        self.store.check(&new)?;
        let id = self.store.next_id();
        let expires_ms = new.ttl_ms.map(|ttl| now_ms.saturating_add(ttl));
        let record = [Record::Insert { id, created_ms: now_ms, expires_ms, entry: new }];
        self.append(&record)?;
        let [Record::Insert { entry, .. }] = record else { unreachable!() };
        let evictions = self.logged(|s| s.insert_at(id, entry, now_ms, expires_ms));
        match evictions {
            // The insert is durable and applied: it is done even when its evictions could
            // not be logged. The log then refuses further writes until a restart, so that
            // no later change (an invalidation) can depend on Remove records that are
            // missing; a restart brings the evicted entries back, to be evicted again.
            Ok(result) => result.map(|()| id).map_err(Error::from),
            Err(_) => Ok(id),
        }
    }

    /// Bounds one namespace, logging what that evicts.
    pub fn set_namespace_limits(&mut self, namespace: &str, limits: Limits) -> Result<(), Error> {
        self.logged(|s| s.set_namespace_limits(namespace, limits))
    }

    /// Runs `change` on the store and logs the evictions it caused, so a restart does not
    /// bring evicted entries back. When that log write fails, the log is closed to writes.
    fn logged<R>(&mut self, change: impl FnOnce(&mut Store) -> R) -> Result<R, Error> {
        let before = self.store.pending_removals().len();
        let result = change(&mut self.store);
        let evicted: Vec<Record> = self.store.pending_removals()[before..]
            .iter()
            .filter(|r| r.reason == RemovalReason::Evicted)
            .map(|r| Record::Remove { id: r.id })
            .collect();
        if let Err(e) = self.append(&evicted) {
            if let Some(log) = &mut self.log {
                log.broken = true;
            }
            return Err(e);
        }
        Ok(result)
    }

    pub fn remove(&mut self, id: EntryId) -> Result<bool, Error> {
        if !self.store.contains(id) {
            return Ok(false);
        }
        self.append(&[Record::Remove { id }])?;
        Ok(self.store.remove(id))
    }

    pub fn remove_prompt(&mut self, namespace: &str, prompt: &str) -> Result<Option<EntryId>, Error> {
        let Some(id) = self.store.find_exact(namespace, prompt) else {
            return Ok(None);
        };
        self.remove(id).map(|_| Some(id))
    }

    pub fn clear_namespace(&mut self, namespace: &str) -> Result<usize, Error> {
        let ids = self.store.namespace_ids(namespace);
        // One write and one flush for the whole namespace.
        self.append(&ids.iter().map(|&id| Record::Remove { id }).collect::<Vec<_>>())?;
        for &id in &ids {
            self.store.remove(id);
        }
        Ok(ids.len())
    }

    /// Under `Fsync::Always`, appends no longer flush: the caller flushes with
    /// [`Durable::flush_target`] before it acknowledges a change, without holding the store
    /// (a flush can take milliseconds, and lookups wait on the store).
    pub fn defer_flushes(&mut self) {
        self.deferred = true;
    }

    /// The log's flush policy; None without a data directory.
    pub fn fsync(&self) -> Option<Fsync> {
        self.log.as_ref().map(|log| log.fsync)
    }

    /// Whether the log is closed to writes (after a failed write or flush).
    pub fn log_closed(&self) -> bool {
        self.log.as_ref().is_some_and(|log| log.broken)
    }

    /// Bytes logged since open: a change is on disk once a flush covered its position.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// What a flush must sync to cover everything logged so far: the open segment (those
    /// before it were flushed when the log moved on), the position it covers, and its path
    /// for errors. None without a data directory.
    pub fn flush_target(&self) -> Option<(Arc<File>, u64, PathBuf)> {
        self.log.as_ref().map(|log| (log.file.clone(), self.written, log.path()))
    }

    /// Closes the log to writes after a failed flush: what reached the disk is unknown, and
    /// records appended after a lost one would be replayed without it.
    pub fn close_log(&mut self) {
        if let Some(log) = &mut self.log {
            log.broken = true;
        }
    }

    /// Flushes logged changes to the disk (the interval policy's flush).
    pub fn sync(&mut self) -> Result<(), Error> {
        match &mut self.log {
            Some(log) => log.file.sync_data().map_err(|e| io_error("flush", &log.path(), e)),
            None => Ok(()),
        }
    }

    /// Bytes in the current log segment: the server snapshots when this grows large.
    pub fn log_bytes(&self) -> u64 {
        self.log.as_ref().map_or(0, |log| log.len)
    }

    /// Writes every live entry to a new snapshot and deletes the log it makes redundant
    /// (in one go; [`crate::sync::SharedStore::snapshot`] does it in chunks).
    pub fn snapshot(&mut self, now_ms: u64) -> Result<usize, Error> {
        let Some(mut writer) = self.begin_snapshot()? else { return Ok(0) };
        let ids = std::mem::take(&mut writer.ids);
        let mut records = Vec::new();
        let count = self.encode_entries(&ids, now_ms, &mut records);
        writer.write(&records, count)?;
        writer.finish()
    }

    /// Starts a snapshot: flushes the log and moves on to a new segment, so the snapshot
    /// covers every earlier one. None without a data directory.
    pub fn begin_snapshot(&mut self) -> Result<Option<SnapshotWriter>, Error> {
        let Some(log) = &mut self.log else { return Ok(None) };
        if log.broken {
            // Rotating away from a damaged segment would leave it in the middle of the
            // log, where recovery refuses it: keep it last until a restart repairs it.
            return Err(log.broken_error());
        }
        if let Err(e) = log.file.sync_data() {
            // As after any failed flush, what reached the disk is unknown: a later flush of
            // the same file could succeed without writing it (see `close_log`).
            log.broken = true;
            return Err(io_error("flush", &log.path(), e));
        }
        let covered = log.seq;
        let dir = log.dir.clone();
        *log = Log::open(&dir, covered + 1, log.fsync)?;
        let ids = self.store.entries().map(|(e, _)| e.id).collect();
        SnapshotWriter::create(&dir, covered, self.store.next_id(), ids).map(Some)
    }

    /// Appends the snapshot records of those of `ids` still live at `now_ms`; returns how many.
    pub fn encode_entries(&self, ids: &[EntryId], now_ms: u64, out: &mut Vec<u8>) -> usize {
        let mut payload = Vec::new();
        let mut count = 0;
        for &id in ids {
            let Some((entry, vector)) = self.store.entry_with_vector(id) else { continue };
            if entry.expires_ms.is_some_and(|at| at <= now_ms) {
                continue;
            }
            let new = NewEntry {
                namespace: entry.namespace.to_string(),
                prompt: entry.prompt.clone(),
                response: entry.response.clone(),
                vector: vector.to_vec(),
                model: entry.model.clone(),
                metadata: entry.metadata.clone(),
                ttl_ms: None,
            };
            let record = Record::Insert { id, created_ms: entry.created_ms, expires_ms: entry.expires_ms, entry: new };
            payload.clear();
            codec::encode(&record, &mut payload);
            codec::frame(&payload, out);
            count += 1;
        }
        count
    }

    /// Logs records with one write (and, under `Fsync::Always`, one flush).
    fn append(&mut self, records: &[Record]) -> Result<(), Error> {
        let Some(log) = &mut self.log else { return Ok(()) };
        if records.is_empty() {
            return Ok(());
        }
        let mut payload = std::mem::take(&mut self.frame);
        let mut framed = Vec::new();
        for record in records {
            payload.clear();
            codec::encode(record, &mut payload);
            codec::frame(&payload, &mut framed);
        }
        self.frame = payload;
        let flush = log.fsync == Fsync::Always && !self.deferred;
        log.append(&framed, flush)?;
        self.written += framed.len() as u64;
        Ok(())
    }
}

impl Log {
    fn open(dir: &Path, seq: u64, fsync: Fsync) -> Result<Log, Error> {
        let path = segment_path(dir, seq);
        let existed = path.exists();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error("open", &path, e))?;
        let len = file.metadata().map_err(|e| io_error("stat", &path, e))?.len();
        if !existed {
            sync_dir(dir)?;
        }
        Ok(Log { dir: dir.to_path_buf(), fsync, seq, file: Arc::new(file), len, broken: false })
    }

    fn path(&self) -> PathBuf {
        segment_path(&self.dir, self.seq)
    }

    fn broken_error(&self) -> Error {
        Error::Io(format!(
            "{} is closed to writes after a failed write; restart the server to recover it",
            self.path().display()
        ))
    }

    fn append(&mut self, framed: &[u8], flush: bool) -> Result<(), Error> {
        if self.broken {
            return Err(self.broken_error());
        }
        let mut file: &File = &self.file;
        let written = file.write_all(framed).and_then(|()| if flush { file.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            // Cut a partial record off, so records appended later stay readable.
            self.broken = self.file.set_len(self.len).is_err();
            return Err(io_error("append to", &self.path(), e));
        }
        self.len += framed.len() as u64;
        Ok(())
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("wal-{seq:010}.log"))
}

fn list_segments(dir: &Path) -> Result<Vec<u64>, Error> {
    let mut seqs: Vec<u64> = fs::read_dir(dir)
        .map_err(|e| io_error("list", dir, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("wal-")?.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error("flush directory", dir, e))
}

fn apply(store: &mut Store, record: Record) {
    match record {
        Record::Insert { id, created_ms, expires_ms, entry } => {
            // Logged inserts passed the same check when they were written.
            let _ = store.insert_at(id, entry, created_ms, expires_ms);
        }
        Record::Remove { id } => {
            store.remove(id);
        }
        Record::IdFloor { id } => store.bump_next_id(id),
    }
}

fn replay_segment(path: &Path, is_last: bool, store: &mut Store, warnings: &mut Vec<String>) -> Result<usize, Error> {
    let file = File::open(path).map_err(|e| io_error("open", path, e))?;
    let size = file.metadata().map_err(|e| io_error("stat", path, e))?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut buf = Vec::new();
    let (mut offset, mut count) = (0u64, 0usize);
    loop {
        let problem = match codec::read_frame(&mut reader, &mut buf) {
            Ok(None) => return Ok(count),
            Ok(Some(n)) => match codec::decode(&buf) {
                Ok(record) => {
                    apply(store, record);
                    offset += n as u64;
                    count += 1;
                    continue;
                }
                Err(reason) => reason,
            },
            Err(reason) => reason,
        };
        if !is_last {
            return Err(Error::Corrupt(format!(
                "{} is corrupt at byte {offset} ({problem}) and later segments depend on it; \
                 move the data directory aside to start empty, or restore a backup",
                path.display()
            )));
        }
        let dropped = size - offset;
        OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(offset).and_then(|()| f.sync_all()))
            .map_err(|e| io_error("truncate", path, e))?;
        warnings.push(format!(
            "{}: dropped {dropped} bytes at byte {offset} ({problem}): a record torn by a crash \
             or damaged on disk; the {count} records before it were recovered",
            path.display()
        ));
        return Ok(count);
    }
}

/// A snapshot being written. It starts under the store's lock (the log is rotated there,
/// so the snapshot covers everything before the new segment), is filled chunk by chunk
/// (entries encoded under the lock, written outside it), and finishes without the lock.
///
/// Entries change between chunks, so the file is fuzzy: an entry may be in it and also be
/// inserted or removed again by the new segment. Replay makes that right: an insert with an
/// id already present replaces it with the same content, and a removal of an absent id does
/// nothing.
pub struct SnapshotWriter {
    dir: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
    covered: u64,
    next_id: u64,
    count: u64,
    /// The entries to write, next to be evicted first.
    pub ids: Vec<EntryId>,
}

impl SnapshotWriter {
    fn create(dir: &Path, covered: u64, next_id: u64, ids: Vec<EntryId>) -> Result<Self, Error> {
        let tmp = dir.join(SNAPSHOT_TMP);
        let file = File::create(&tmp).map_err(|e| io_error("create", &tmp, e))?;
        let mut writer = SnapshotWriter {
            dir: dir.to_path_buf(),
            tmp,
            out: BufWriter::with_capacity(1 << 20, file),
            covered,
            next_id,
            count: 0,
            ids,
        };
        let header = writer.header(); // rewritten with the final count by `finish`
        writer.write(&header, 0)?;
        Ok(writer)
    }

    fn header(&self) -> Vec<u8> {
        let mut header = Vec::with_capacity(SNAPSHOT_HEADER);
        header.extend_from_slice(SNAPSHOT_MAGIC);
        header.extend_from_slice(&self.covered.to_le_bytes());
        header.extend_from_slice(&self.next_id.to_le_bytes());
        header.extend_from_slice(&self.count.to_le_bytes());
        let crc = crc32fast::hash(&header);
        header.extend_from_slice(&crc.to_le_bytes());
        header
    }

    /// Appends `count` framed records.
    pub fn write(&mut self, records: &[u8], count: usize) -> Result<(), Error> {
        self.count += count as u64;
        self.out.write_all(records).map_err(|e| io_error("write", &self.tmp, e))
    }

    /// Makes the snapshot durable and current, and deletes the log it covers.
    pub fn finish(self) -> Result<usize, Error> {
        let header = self.header();
        let result = (|| {
            let mut file = self.out.into_inner().map_err(|e| io_error("write", &self.tmp, e.into_error()))?;
            file.seek(SeekFrom::Start(0))
                .and_then(|_| file.write_all(&header))
                .and_then(|()| file.sync_all())
                .map_err(|e| io_error("write", &self.tmp, e))?;
            fs::rename(&self.tmp, self.dir.join(SNAPSHOT)).map_err(|e| io_error("rename", &self.tmp, e))?;
            sync_dir(&self.dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        result?;
        for seq in list_segments(&self.dir)?.into_iter().filter(|&s| s <= self.covered) {
            let _ = fs::remove_file(segment_path(&self.dir, seq));
        }
        Ok(self.count as usize)
    }
}

/// Loads a snapshot into `store`: Some((covered segment, entries)), None when there is none.
fn load_snapshot(path: &Path, store: &mut Store, now_ms: u64) -> Result<Option<(u64, usize)>, Error> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("open", path, e)),
    };
    let corrupt = |what: String| {
        Error::Corrupt(format!(
            "snapshot {} is corrupt ({what}); refusing to serve it. Restore the data directory \
             from a backup, or move it aside to start empty",
            path.display()
        ))
    };
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; SNAPSHOT_HEADER];
    reader.read_exact(&mut header).map_err(|_| corrupt("header cut short".into()))?;
    let field = |i: usize| u64::from_le_bytes(header[8 + 8 * i..16 + 8 * i].try_into().unwrap());
    let crc = u32::from_le_bytes(header[SNAPSHOT_HEADER - 4..].try_into().unwrap());
    if &header[..8] != SNAPSHOT_MAGIC || crc32fast::hash(&header[..SNAPSHOT_HEADER - 4]) != crc {
        return Err(corrupt("bad header".into()));
    }
    let (covered, next_id, count) = (field(0), field(1), field(2));
    let mut buf = Vec::new();
    for i in 0..count {
        match codec::read_frame(&mut reader, &mut buf) {
            Ok(Some(_)) => {}
            Ok(None) => return Err(corrupt(format!("ends after {i} of {count} entries"))),
            Err(reason) => return Err(corrupt(format!("entry {i}: {reason}"))),
        }
        match codec::decode(&buf) {
            Ok(Record::Insert { id, created_ms, expires_ms, entry }) => {
                if expires_ms.is_none_or(|at| at > now_ms) {
                    let _ = store.insert_at(id, entry, created_ms, expires_ms);
                }
            }
            Ok(_) => return Err(corrupt(format!("entry {i} is not an entry"))),
            Err(reason) => return Err(corrupt(format!("entry {i}: {reason}"))),
        }
    }
    if reader.fill_buf().map_or(0, |b| b.len()) != 0 {
        return Err(corrupt("trailing bytes after the last entry".into()));
    }
    store.bump_next_id(next_id);
    Ok(Some((covered, count as usize)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn temp_dir() -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir()
            .join(format!("semcached-durable-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn new(prompt: &str, ttl_ms: Option<u64>) -> NewEntry {
        NewEntry {
            namespace: "ns".into(),
            prompt: prompt.into(),
            response: format!("answer to {prompt}"),
            vector: vec![1.0, 2.0],
            model: "m".into(),
            ttl_ms,
            ..NewEntry::default()
        }
    }

    fn config(max_entries: usize) -> Config {
        let mut config = Config::default();
        config.limits.max_entries = max_entries;
        config.policy = crate::policy::Policy::Lru;
        config
    }

    fn open(dir: &Path, max_entries: usize, now_ms: u64) -> (Durable, Recovery) {
        Durable::open(dir, config(max_entries), Fsync::Always, now_ms).unwrap()
    }

    fn prompts(d: &Durable) -> Vec<String> {
        let mut p: Vec<String> = d.store().entries().map(|(e, _)| e.prompt.clone()).collect();
        p.sort();
        p
    }

    #[test]
    fn changes_survive_a_reopen_and_expired_or_evicted_entries_stay_gone() {
        let dir = temp_dir();
        let (mut d, _) = open(&dir, 3, 0);
        d.insert(new("a", None), 0).unwrap();
        let b = d.insert(new("b", None), 0).unwrap();
        d.insert(new("short", Some(100)), 0).unwrap();
        d.insert(new("c", None), 0).unwrap(); // evicts "a"
        assert!(d.remove(b).unwrap());
        d.insert(new("c", None), 0).unwrap(); // replaces "c"
        drop(d);
        let (d, recovery) = open(&dir, 3, 50);
        assert_eq!(prompts(&d), ["c", "short"]);
        assert!(recovery.warnings.is_empty());
        drop(d);
        let (mut d, _) = open(&dir, 3, 500); // "short" expired while the server was down
        assert_eq!(prompts(&d), ["c"]);
        let fresh = d.insert(new("d", None), 500).unwrap();
        assert!(fresh > b, "ids are never reused");
        d.store().check_invariants().unwrap();
    }

    #[test]
    fn replay_keeps_what_was_live_when_reads_and_expiry_chose_the_evictions() {
        let dir = temp_dir();
        let (mut d, _) = open(&dir, 2, 0);
        d.insert(new("a", None), 0).unwrap();
        d.insert(new("b", None), 0).unwrap();
        d.store_mut().get_exact("ns", "a", 0).unwrap(); // a is now more recent than b
        d.insert(new("c", None), 0).unwrap(); // evicts b, not a
        d.insert(new("short", Some(1)), 0).unwrap(); // evicts a
        d.store_mut().expire(5);
        d.insert(new("e", None), 5).unwrap(); // room left by the expiry: evicts nothing
        let live = prompts(&d);
        drop(d);
        let (d, _) = open(&dir, 2, 5);
        assert_eq!(prompts(&d), live);
        assert_eq!(live, ["c", "e"]);
    }

    #[test]
    fn evictions_from_a_tighter_bound_are_logged_so_invalidations_stick() {
        let dir = temp_dir();
        let (mut d, _) = open(&dir, 100, 0);
        for i in 0..10 {
            d.insert(new(&format!("q{i}"), None), 0).unwrap();
        }
        d.set_namespace_limits("ns", Limits { max_entries: 2, max_bytes: usize::MAX }).unwrap();
        assert_eq!(d.clear_namespace("ns").unwrap(), 2);
        drop(d);
        let (d, _) = open(&dir, 100, 0); // the bound is gone, the evictions are not
        assert!(prompts(&d).is_empty());
    }

    #[test]
    fn ids_from_a_lost_interval_are_never_reused() {
        let dir = temp_dir();
        let (mut d, _) = Durable::open(&dir, config(10), Fsync::Interval, 0).unwrap();
        let lost = d.insert(new("not flushed", None), 0).unwrap();
        drop(d); // as if the process died before the interval's flush
        let (mut d, _) = Durable::open(&dir, config(10), Fsync::Interval, 0).unwrap();
        let fresh = d.insert(new("after restart", None), 0).unwrap();
        assert!(fresh > lost);
        drop(d);
        let (mut d, _) = Durable::open(&dir, config(10), Fsync::Interval, 0).unwrap();
        assert!(d.insert(new("again", None), 0).unwrap() > fresh + ID_BLOCK - 10);
    }

    #[test]
    fn a_torn_tail_is_truncated_with_a_warning_and_the_log_stays_usable() {
        let dir = temp_dir();
        let (mut d, _) = open(&dir, 10, 0);
        d.insert(new("kept", None), 0).unwrap();
        drop(d);
        let segment = segment_path(&dir, 1);
        let good_len = fs::metadata(&segment).unwrap().len();
        OpenOptions::new().append(true).open(&segment).unwrap().write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        let (mut d, recovery) = open(&dir, 10, 0);
        assert_eq!(prompts(&d), ["kept"]);
        assert_eq!(recovery.warnings.len(), 1);
        assert!(recovery.warnings[0].contains("dropped 6 bytes at byte"), "{:?}", recovery.warnings);
        // Cut back to the good records, plus the id floor this open appended (8 + 1 + 8).
        assert_eq!(fs::metadata(&segment).unwrap().len(), good_len + 17);
        d.insert(new("after", None), 0).unwrap();
        drop(d);
        let (d, recovery) = open(&dir, 10, 0);
        assert_eq!(prompts(&d), ["after", "kept"]);
        assert!(recovery.warnings.is_empty());
    }

    #[test]
    fn a_snapshot_bounds_the_log_and_restores_everything() {
        let dir = temp_dir();
        let (mut d, _) = open(&dir, 100, 0);
        for i in 0..20 {
            d.insert(new(&format!("q{i}"), None), 0).unwrap();
        }
        d.remove_prompt("ns", "q3").unwrap();
        assert_eq!(d.snapshot(0).unwrap(), 19);
        assert_eq!(list_segments(&dir).unwrap(), [2]);
        d.insert(new("later", None), 0).unwrap();
        d.clear_namespace("nothing").unwrap();
        drop(d);
        let (d, recovery) = open(&dir, 100, 0);
        assert_eq!(recovery.snapshot_entries, 19);
        assert_eq!(recovery.replayed_records, 1);
        assert_eq!(d.store().len(), 20);
        assert!(d.store().find_exact("ns", "q3").is_none());
        let (entry, vector) = d.store().entries().find(|(e, _)| e.prompt == "q7").unwrap();
        assert_eq!((entry.response.as_str(), vector), ("answer to q7", &[1.0f32, 2.0][..]));
    }

    #[test]
    fn a_corrupt_snapshot_is_refused() {
        let dir = temp_dir();
        let (mut d, _) = open(&dir, 100, 0);
        d.insert(new("q", None), 0).unwrap();
        d.snapshot(0).unwrap();
        drop(d);
        let path = dir.join(SNAPSHOT);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let Err(Error::Corrupt(message)) = Durable::open(&dir, config(100), Fsync::Always, 0) else {
            panic!("a corrupt snapshot was accepted")
        };
        assert!(message.contains("snapshot.bin is corrupt (entry 0: checksum mismatch)"), "{message}");
    }

    #[test]
    fn corruption_before_the_last_segment_is_refused() {
        let dir = temp_dir();
        let (mut d, _) = open(&dir, 100, 0);
        d.insert(new("q", None), 0).unwrap();
        drop(d);
        fs::write(segment_path(&dir, 2), b"").unwrap();
        let first = segment_path(&dir, 1);
        let mut bytes = fs::read(&first).unwrap();
        bytes[10] ^= 0xff;
        fs::write(&first, &bytes).unwrap();
        assert!(matches!(Durable::open(&dir, config(100), Fsync::Always, 0), Err(Error::Corrupt(_))));
    }
}
