//! The export cache: closed stretches of the audit log kept as the NDJSON bytes an export sent
//! for them, so the next export copies them from a file instead of reading and formatting
//! every row again.
//!
//! - **Segments.** Ids are cut into segments of [`SEGMENT_IDS`] ids: segment `k` holds the rows
//!   with ids in `(k × SEGMENT_IDS, (k + 1) × SEGMENT_IDS]`. A segment is *closed* once a row
//!   with a larger id exists: the log is append-only, so ordinary writes never land in it
//!   again.
//! - **Written by exports.** An unfiltered NDJSON export on an SQLite file that reads a closed
//!   segment from its start writes the bytes it sends for it to an unnamed file in the
//!   database's folder as well ([`Builder`]); when the segment is done it is kept, if the log
//!   did not change under it (below) and the cache has room (`TIDINGS_EXPORT_CACHE_MB`).
//! - **Read by exports.** The next such export that reaches a kept segment from its start
//!   (and whose snapshot the segment is closed within) sends the file in chunks of whole pages
//!   of up to 256 KiB, or one larger page ([`Segment::read`]), each with its row count and
//!   last id noted when it was written, instead of reading the rows.
//! - **Never stale.** A row landing below the last id (an import filling a hole), or a row
//!   changed or deleted, bumps a counter in the database (`audit_log_epoch`, kept by triggers,
//!   whoever writes). Each export reads it when it starts and uses and keeps segments of that
//!   counter only; a larger one drops every segment. A segment is kept only if the counter
//!   after its last row was read is the one read before its first, and an export reads the
//!   counter again before it sends each kept segment.
//! - **Bounded.** At most `TIDINGS_EXPORT_CACHE_MB` and [`MAX_SEGMENTS`] segments (each holds
//!   a file descriptor); a segment of fewer than [`MIN_ROWS`] rows (sparse imported ids) is
//!   not kept, and a writer holds its first MiB in memory, so such a segment never touches
//!   the disk.
//! - **Nothing left behind.** The files have no name (`O_TMPFILE`): the space is freed when
//!   the last export reading a dropped segment ends, and when the server stops, however it
//!   stops. Memory holds only the index (about a kilobyte per segment: where each chunk ends).
//!
//! An error writing the cache (a full disk) only means the segment is not kept: the export
//! itself goes on.
//!
//! Tests: `cargo test --features ssr export::cache`; `tests/it/export.rs` compares exports
//! served from the cache with the rows read again.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{Read, Seek, SeekFrom, Write},
    path::PathBuf,
    sync::{Arc, Mutex},
};

use bytes::Bytes;

/// Ids per segment: about 15 MB of NDJSON with the app's own rows.
pub const SEGMENT_IDS: i64 = 65_536;
/// Fewest rows a segment must hold to be kept: sparse ids (an import may keep any id up to
/// 2^53) would otherwise make a file, and hold a descriptor, for a handful of rows.
const MIN_ROWS: u32 = 4_096;
/// Most segments kept (each holds a file descriptor): 256 full segments are about 3.8 GB,
/// past the default size cap.
const MAX_SEGMENTS: usize = 256;
/// How much of a segment's file one chunk of the body holds, at most (unless one chunk the
/// export that wrote it sent was larger): whole rows, so each chunk's row count is known
/// without looking at its bytes.
const READ_CHUNK: u64 = 256 * 1024;

/// The segment holding `id`.
pub fn segment_of(id: i64) -> i64 {
    (id - 1).div_euclid(SEGMENT_IDS)
}

/// The id just below segment `k` (its rows have larger ids).
pub fn segment_start(k: i64) -> i64 {
    k.saturating_mul(SEGMENT_IDS)
}

/// The last id segment `k` may hold.
pub fn segment_end(k: i64) -> i64 {
    k.saturating_add(1).saturating_mul(SEGMENT_IDS)
}

/// The cache, one per process. See the module docs.
#[derive(Debug)]
pub struct ExportCache {
    dir: PathBuf,
    cap_bytes: u64,
    /// Fewest rows a segment must hold to be kept ([`MIN_ROWS`]; tests lower it).
    min_rows: u32,
    state: Mutex<State>,
    /// Whether a failure to make a file was logged as a warning already (once: the folder
    /// may be read-only, and every export would log it again).
    warned: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    /// The log's change counter the segments were written at.
    epoch: i64,
    segments: BTreeMap<i64, Arc<Segment>>,
    /// Their total length.
    bytes: u64,
}

impl State {
    /// Moves to `epoch` if it is newer (dropping every segment); whether `epoch` is current.
    fn at(&mut self, epoch: i64) -> bool {
        if epoch > self.epoch {
            self.epoch = epoch;
            self.segments.clear();
            self.bytes = 0;
        }
        epoch == self.epoch
    }
}

/// One kept segment: its bytes (an unnamed file), rows and last id.
#[derive(Debug)]
pub struct Segment {
    /// Exports reading it at once take turns for each chunk (a seek, then a read).
    file: Mutex<File>,
    /// Its chunks, in order (at least one).
    blocks: Vec<Block>,
}

impl Segment {
    /// Its bytes in chunks of whole rows, each with its row count and last id, read as they
    /// are taken: at most 256 KiB, or one chunk the export that wrote it sent if that was
    /// larger.
    pub fn read(&self) -> impl Iterator<Item = std::io::Result<(Bytes, Block)>> + '_ {
        let mut start = 0u64;
        self.blocks.iter().map(move |&block| {
            let end = block.end;
            let len = end - start;
            // Read into spare capacity: no zeroing of a buffer about to be overwritten.
            let mut buf = Vec::with_capacity(len as usize);
            {
                let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
                file.seek(SeekFrom::Start(start))?;
                (&mut *file).take(len).read_to_end(&mut buf)?;
            }
            if buf.len() as u64 != len {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "an export cache file is shorter than written",
                ));
            }
            start = end;
            Ok((Bytes::from(buf), block))
        })
    }

    /// Its length in bytes.
    pub fn bytes(&self) -> u64 {
        self.blocks.last().map_or(0, |b| b.end)
    }

    /// Rows in it.
    pub fn rows(&self) -> u32 {
        self.blocks.iter().map(|b| b.rows).sum()
    }

    /// Its last row's id.
    pub fn last_id(&self) -> i64 {
        self.blocks.last().map_or(0, |b| b.last_id)
    }
}

/// One chunk of a segment's file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// Where it ends in the file.
    end: u64,
    /// Its rows.
    pub rows: u32,
    /// Its last row's id.
    pub last_id: i64,
}

impl ExportCache {
    /// A cache of at most `cap_mb` MB in `dir` (the SQLite file's folder); `None` when
    /// `cap_mb` is 0 (`TIDINGS_EXPORT_CACHE_MB=0` turns it off).
    pub fn new(dir: PathBuf, cap_mb: u64) -> Option<Arc<Self>> {
        (cap_mb > 0).then(|| Self::with(dir, cap_mb.saturating_mul(1_000_000), MIN_ROWS))
    }

    fn with(dir: PathBuf, cap_bytes: u64, min_rows: u32) -> Arc<Self> {
        Arc::new(Self {
            dir,
            cap_bytes,
            min_rows,
            state: Mutex::default(),
            warned: Default::default(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Segment `k` as the log stood at `epoch`, if it is kept.
    pub fn get(&self, epoch: i64, k: i64) -> Option<Arc<Segment>> {
        let mut state = self.state();
        if !state.at(epoch) {
            return None;
        }
        state.segments.get(&k).cloned()
    }

    /// A writer for segment `k` at `epoch`, unless it is kept already or the cache is full
    /// (in bytes or in segments). It writes to a file only past 1 MiB: a sparse segment,
    /// too small to keep, never touches the disk.
    pub fn builder(self: &Arc<Self>, epoch: i64, k: i64) -> Option<Builder> {
        let mut state = self.state();
        if !state.at(epoch)
            || state.segments.contains_key(&k)
            || state.segments.len() >= MAX_SEGMENTS
            || state.bytes >= self.cap_bytes
        {
            return None;
        }
        Some(Builder {
            cache: self.clone(),
            k,
            epoch,
            room: self.cap_bytes - state.bytes,
            file: None,
            buf: Vec::new(),
            len: 0,
            blocks: Vec::new(),
            block_rows: 0,
            last_id: segment_start(k),
            failed: false,
        })
    }

    /// Keeps what `builder` wrote if the log's counter is still its `epoch` (`now`), it
    /// wrote without error, it holds enough rows to be worth a file, and it fits; whether it
    /// was kept.
    pub fn keep(&self, mut builder: Builder, now: i64) -> bool {
        builder.close_block();
        let rows: u32 = builder.blocks.iter().map(|b| b.rows).sum();
        if builder.failed || now != builder.epoch || rows < self.min_rows {
            return false;
        }
        builder.spill();
        let Builder {
            k,
            epoch,
            file: Some(file),
            len,
            blocks,
            failed: false,
            ..
        } = builder
        else {
            return false;
        };
        let mut state = self.state();
        if !state.at(epoch)
            || state.segments.contains_key(&k)
            || state.segments.len() >= MAX_SEGMENTS
            || state.bytes.saturating_add(len) > self.cap_bytes
        {
            return false;
        }
        state.bytes += len;
        state.segments.insert(
            k,
            Arc::new(Segment {
                file: Mutex::new(file),
                blocks,
            }),
        );
        true
    }

    /// Segments kept and their total bytes (for tests and logs).
    pub fn usage(&self) -> (usize, u64) {
        let state = self.state();
        (state.segments.len(), state.bytes)
    }
}

/// Writes one segment's bytes as an export sends them, page by page. See
/// [`ExportCache::builder`].
#[derive(Debug)]
pub struct Builder {
    cache: Arc<ExportCache>,
    k: i64,
    epoch: i64,
    /// The most it may write: what the cache had left when it began.
    room: u64,
    /// Made when `buf` first spills.
    file: Option<File>,
    /// Bytes not yet in the file.
    buf: Vec<u8>,
    len: u64,
    /// The chunks [`Segment::read`] will send, but the last, which holds `block_rows` rows so
    /// far: whole pages, so each one's last id is known.
    blocks: Vec<Block>,
    block_rows: u32,
    /// The last id written.
    last_id: i64,
    failed: bool,
}

/// How much a builder holds in memory before it writes to its file.
const SPILL: usize = 1 << 20;

impl Builder {
    /// The segment it writes.
    pub fn segment(&self) -> i64 {
        self.k
    }

    /// Appends a page: its chunks (whole rows each, with their counts), the last row's id
    /// `last_id` (ignored when the page has no rows). Past the room it had, it gives up.
    pub fn write_page(&mut self, chunks: &[(Bytes, u32)], last_id: i64) {
        let page_len: u64 = chunks.iter().map(|(c, _)| c.len() as u64).sum();
        let page_rows: u32 = chunks.iter().map(|&(_, r)| r).sum();
        if self.failed || page_rows == 0 {
            return;
        }
        if self.len + page_len > self.room {
            self.give_up();
            return;
        }
        let block_start = self.blocks.last().map_or(0, |b| b.end);
        if self.len - block_start + page_len > READ_CHUNK {
            self.close_block();
        }
        for (chunk, _) in chunks {
            self.buf.extend_from_slice(chunk);
        }
        self.len += page_len;
        self.block_rows += page_rows;
        self.last_id = last_id;
        if self.buf.len() >= SPILL {
            self.spill();
        }
    }

    /// Ends the chunk being written, if it holds any row.
    fn close_block(&mut self) {
        if self.block_rows > 0 {
            self.blocks.push(Block {
                end: self.len,
                rows: std::mem::take(&mut self.block_rows),
                last_id: self.last_id,
            });
        }
    }

    /// Writes what it holds to its file, making the file first if need be.
    fn spill(&mut self) {
        if self.failed {
            return;
        }
        if self.file.is_none() {
            match tempfile::tempfile_in(&self.cache.dir) {
                Ok(file) => self.file = Some(file),
                Err(e) => {
                    use std::sync::atomic::Ordering;
                    if !self.cache.warned.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, dir = %self.cache.dir.display(), "export cache: cannot make a file (exports read every row; logged once)");
                    } else {
                        tracing::debug!(error = %e, "export cache: cannot make a file");
                    }
                    self.give_up();
                    return;
                }
            }
        }
        if let Some(Err(e)) = self.file.as_mut().map(|f| f.write_all(&self.buf)) {
            tracing::warn!(error = %e, "export cache: writing a segment failed");
            self.give_up();
            return;
        }
        self.buf.clear();
    }

    /// Stops writing, and frees what it holds (the file has no name: closing it frees it).
    fn give_up(&mut self) {
        self.failed = true;
        self.file = None;
        self.buf = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache of `cap_mb` MB in a fresh folder, keeping segments of any row count.
    fn cache(cap_mb: u64) -> (tempfile::TempDir, Arc<ExportCache>) {
        let dir = tempfile::tempdir().unwrap();
        let cache = ExportCache::with(dir.path().to_path_buf(), cap_mb * 1_000_000, 1);
        (dir, cache)
    }

    /// A page of one chunk.
    fn page(bytes: &[u8], rows: u32) -> Vec<(Bytes, u32)> {
        vec![(Bytes::copy_from_slice(bytes), rows)]
    }

    /// A writer for segment `k` at `epoch` holding one row.
    fn one_row(cache: &Arc<ExportCache>, epoch: i64, k: i64) -> Builder {
        let mut b = cache.builder(epoch, k).expect("room for a writer");
        b.write_page(&page(b"{}\n", 1), segment_start(k) + 1);
        b
    }

    /// A segment's bytes and rows, read back; each chunk holds whole rows and names its last
    /// id, and is at most a read chunk's worth unless it is one of the `larger` pages written.
    fn read_all(segment: &Segment, larger: &[&[u8]]) -> (Vec<u8>, u32) {
        let (mut bytes, mut rows, mut last_id) = (Vec::new(), 0, 0);
        for chunk in segment.read() {
            let (chunk, block) = chunk.unwrap();
            assert!(block.last_id > last_id, "each chunk's last id is larger");
            last_id = block.last_id;
            assert!(chunk.ends_with(b"\n"));
            let newlines = chunk.iter().filter(|&&b| b == b'\n').count();
            assert_eq!(newlines, block.rows as usize);
            assert!(
                chunk.len() as u64 <= READ_CHUNK || larger.contains(&&chunk[..]),
                "{}",
                chunk.len()
            );
            bytes.extend_from_slice(&chunk);
            rows += block.rows;
        }
        assert_eq!(last_id, segment.last_id());
        (bytes, rows)
    }

    #[test]
    fn segments_cut_ids_into_aligned_spans() {
        assert_eq!(segment_of(1), 0);
        assert_eq!(segment_of(SEGMENT_IDS), 0);
        assert_eq!(segment_of(SEGMENT_IDS + 1), 1);
        for k in [0, 1, 7, 1 << 30] {
            assert_eq!(segment_of(segment_start(k) + 1), k);
            assert_eq!(segment_of(segment_end(k)), k);
            assert_eq!(segment_end(k) - segment_start(k), SEGMENT_IDS);
        }
        // An import may keep ids up to 2^53; nothing overflows past them.
        assert_eq!(segment_end(i64::MAX / SEGMENT_IDS), i64::MAX);
    }

    #[test]
    fn a_kept_segment_reads_back_the_same_bytes_rows_and_last_ids() {
        let (_dir, cache) = cache(100);
        let mut b = cache.builder(3, 2).unwrap();
        assert_eq!(b.segment(), 2);
        // Pages of 100 rows in two chunks, several read chunks' worth (each chunk read back
        // is whole pages); then a page, and a row, each larger than a read chunk; then a
        // small page, and one with no rows.
        let line = b"{\"id\":131073,\"action\":\"LOGIN\"}\n";
        let mut want = Vec::new();
        for i in 0..200 {
            let half = Bytes::from(line.repeat(50));
            b.write_page(&[(half.clone(), 50), (half, 50)], 131_072 + 100 * (i + 1));
            want.extend_from_slice(&line.repeat(100));
        }
        let big_page = line.repeat(10_000);
        b.write_page(&page(&big_page, 10_000), 160_000);
        let big_row = [vec![b'x'; 300_000], b"\n".to_vec()].concat();
        b.write_page(&page(&big_row, 1), 170_000);
        b.write_page(&page(line, 1), 180_000);
        b.write_page(&[], 0);
        for bytes in [&big_page, &big_row, &line.to_vec()] {
            want.extend_from_slice(bytes);
        }
        assert!(cache.keep(b, 3));
        let seg = cache.get(3, 2).unwrap();
        assert_eq!(
            (seg.rows(), seg.last_id(), seg.bytes()),
            (30_002, 180_000, want.len() as u64)
        );
        let larger = [&big_page[..], &big_row[..]];
        assert_eq!(read_all(&seg, &larger), (want.clone(), 30_002));
        assert_eq!(cache.usage(), (1, want.len() as u64));
        assert!(cache.get(3, 1).is_none());
        // Kept already: no second writer.
        assert!(cache.builder(3, 2).is_none());
    }

    #[test]
    fn a_segment_the_log_changed_under_is_not_kept() {
        let (_dir, cache) = cache(100);
        assert!(
            !cache.keep(one_row(&cache, 0, 0), 1),
            "the counter moved while it was written"
        );
        assert!(cache.get(0, 0).is_none());
        let b = cache.builder(0, 0).unwrap();
        assert!(!cache.keep(b, 0), "no rows: nothing worth keeping");
    }

    #[test]
    fn a_newer_counter_drops_every_segment_and_an_older_one_is_refused() {
        let (_dir, cache) = cache(100);
        let b = one_row(&cache, 5, 0);
        let late = one_row(&cache, 5, 1);
        assert!(cache.keep(b, 5));
        let held = cache.get(5, 0).unwrap();
        // An import filled a hole: counter 6.
        assert!(cache.get(6, 0).is_none());
        assert_eq!(cache.usage(), (0, 0));
        // An export that started before it cannot bring old bytes back.
        assert!(!cache.keep(late, 5));
        assert!(cache.get(5, 0).is_none());
        assert!(cache.builder(5, 0).is_none());
        // An export still reading the dropped segment reads it whole.
        assert_eq!(read_all(&held, &[]), (b"{}\n".to_vec(), 1));
    }

    #[test]
    fn the_cache_keeps_no_more_than_its_cap() {
        let (_dir, cache) = cache(1);
        let big = vec![b'x'; 600_000];
        let mut b = cache.builder(0, 0).unwrap();
        b.write_page(&page(&big, 1), 1);
        assert!(cache.keep(b, 0));
        // 400,000 bytes left: the writer gives up as it passes them.
        let mut b = cache.builder(0, 1).unwrap();
        b.write_page(&page(&big, 1), SEGMENT_IDS + 1);
        assert!(!cache.keep(b, 0), "1.2 MB does not fit in 1 MB");
        assert_eq!(cache.usage(), (1, 600_000));
        assert!(ExportCache::new(PathBuf::from("."), 0).is_none());
    }

    #[test]
    fn sparse_segments_are_not_kept_and_the_count_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ExportCache::new(dir.path().to_path_buf(), 100).unwrap();
        let line = b"{}\n";
        let mut b = cache.builder(0, 0).unwrap();
        b.write_page(&page(&line.repeat(4_095), 4_095), 4_095);
        assert!(!cache.keep(b, 0), "4,095 rows are read, not kept");
        let mut b = cache.builder(0, 0).unwrap();
        b.write_page(&page(&line.repeat(4_096), 4_096), 4_096);
        assert!(cache.keep(b, 0));

        let (_dir, cache) = self::cache(100);
        for k in 0..MAX_SEGMENTS as i64 {
            assert!(cache.keep(one_row(&cache, 0, k), 0), "segment {k}");
        }
        assert_eq!(cache.usage().0, MAX_SEGMENTS);
        assert!(cache.builder(0, MAX_SEGMENTS as i64).is_none());
    }

    #[test]
    fn a_folder_it_cannot_write_to_only_turns_it_off() {
        let cache = ExportCache::with(PathBuf::from("/nonexistent/tidings-cache"), 1 << 30, 1);
        for _ in 0..2 {
            assert!(!cache.keep(one_row(&cache, 0, 0), 0));
        }
        assert!(cache.get(0, 0).is_none());
        assert_eq!(cache.usage(), (0, 0));
    }

    #[test]
    fn its_files_have_no_name() {
        let (dir, cache) = cache(100);
        assert!(cache.keep(one_row(&cache, 0, 0), 0));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
