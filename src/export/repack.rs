//! Parallel deflate for the workbook's zip.
//!
//! rust_xlsxwriter deflates every part on the thread that calls `save`. For a large sheet that
//! is the biggest single cost of an export (1M rows × 12 columns: 580 MB of sheet XML, ~5.8 s
//! of deflate on this kind of machine) while the other cores sit idle, and the crate offers no
//! hook into its compressor. So [`Repack`] sits between it and the output: rust_xlsxwriter
//! writes its zip at level 1 (the fastest it allows), `Repack` inflates each part as it streams
//! past and deflates it again at the default level on several threads, in 1 MiB chunks. This is
//! pigz's scheme: every chunk is primed with the 32 KiB before it (so matches reach back across
//! the seam as they would in one stream) and ends on a sync flush (so it stops on a byte
//! boundary with the final-block bit clear); the chunks then concatenate into one ordinary
//! deflate stream that any inflater reads.
//!
//! The zip around the data is written anew in the layout rust_xlsxwriter's own (streaming) zip
//! writer uses: each local header copied as it came, the new data, a data descriptor with the
//! part's CRC-32 (the content is unchanged, so is its CRC) and the new compressed size, then a
//! central directory with the new sizes and offsets. The input's own central directory is not
//! copied: its sizes and offsets describe the level-1 data. Parts come with ZIP64 sizes only if
//! the workbook asked for large-file records (see `XlsxExport::save`); they are kept that way.
//!
//! Memory stays bounded: at most one chunk per thread and one more (1 MiB in, about 150 KiB
//! out each) exist at once, whatever the size of the part, and one compressor per thread, kept
//! by a small pool started with the first chunk (a workbook of less than 1 MiB of XML per part
//! starts none).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Uncompressed bytes per chunk. Smaller chunks cost ratio (each restarts its Huffman tables)
/// and a thread hand-off each; larger ones hold more memory per thread. 1 MiB measured within
/// 0.01% of a single stream's size on the benchmark sheet.
const CHUNK: usize = 1 << 20;
/// Deflate's window: a chunk's matches may reach this far back into the previous chunk.
const WINDOW: usize = 32 * 1024;

const LOCAL_HEADER: u32 = 0x0403_4b50;
const DATA_DESCRIPTOR: u32 = 0x0807_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const ZIP64_END: u32 = 0x0606_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
const END: u32 = 0x0605_4b50;
const ZIP64_EXTRA: u16 = 0x0001;
/// The flag saying sizes and CRC follow the data (a data descriptor).
const FLAG_DESCRIPTOR: u16 = 1 << 3;
const METHOD_DEFLATE: u16 = 8;
/// "Made by" Unix (with the part's "version needed"), and the mode rust_xlsxwriter gives every
/// part (a regular file, 0600) — the values its zip writer puts in the central directory.
const MADE_BY_UNIX: u16 = 0x0300;
const EXTERNAL_ATTRIBUTES: u32 = 0o100_600 << 16;

/// What the zip stream holds next.
enum State {
    /// A local file header, collected in `pending` until whole.
    Header,
    /// A part's deflate data, being inflated.
    Data(Box<Part>),
    /// The data descriptor after it (24 bytes with ZIP64 sizes, else 16), collected in `pending`.
    Descriptor(Box<Part>),
    /// The input's central directory and end records: not copied.
    Trailer,
}

/// A part being repacked.
struct Part {
    /// The local header as it came (name, flags, method, time), copied to the output.
    header: Vec<u8>,
    /// Where that header starts in the output.
    offset: u64,
    /// Whether the header has a ZIP64 record, so the descriptor has 8-byte sizes.
    zip64: bool,
    inflate: Decompress,
    /// The next chunk: its uncompressed bytes so far, and the last [`WINDOW`] bytes before it
    /// as its dictionary.
    chunk: Buffers,
    /// Compressed bytes written so far.
    compressed: u64,
}

/// What the central directory needs of a finished part.
struct Entry {
    header: Vec<u8>,
    offset: u64,
    zip64: bool,
    crc: u32,
    size: u64,
    compressed: u64,
}

/// A [`Write`] that takes the zip stream rust_xlsxwriter writes and passes on the same zip
/// with every part deflated again, at the default level, on several threads. Hand it to
/// `Workbook::save_to_writer`, then call [`Repack::finish`].
pub struct Repack<W: Write> {
    out: W,
    /// Bytes written to `out` so far: the offset of whatever comes next.
    written: u64,
    state: State,
    pending: Vec<u8>,
    /// Chunks being compressed, oldest first; their output is written in this order.
    chunks: VecDeque<Receiver<io::Result<Buffers>>>,
    in_flight: usize,
    pool: Option<Pool>,
    /// Buffers back from written chunks, for the next ones.
    spare: Vec<Buffers>,
    entries: Vec<Entry>,
}

/// A chunk's buffers. They go to a compressing thread with the chunk and come back with its
/// output, so a part of any size cycles through the same few: no allocation per chunk, and no
/// memory freed on another thread than the one that took it (which costs allocators dearly).
#[derive(Default)]
struct Buffers {
    data: Vec<u8>,
    dictionary: Vec<u8>,
    out: Vec<u8>,
}

/// A chunk to compress and where its buffers go back.
struct Job {
    buffers: Buffers,
    done: SyncSender<io::Result<Buffers>>,
}

/// One compressing thread per core, each keeping its compressor from chunk to chunk.
struct Pool {
    jobs: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn start(threads: usize) -> Self {
        let (jobs, queue) = channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let workers = (0..threads)
            .map(|_| {
                let queue = Arc::clone(&queue);
                std::thread::spawn(move || {
                    let mut compress = Compress::new(Compression::default(), false);
                    loop {
                        // The lock is held only to take a job, not while compressing it.
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => return,
                        };
                        let Ok(Job { mut buffers, done }) = job else { return };
                        let b = &mut buffers;
                        let result = deflate_chunk(&mut compress, &b.data, &b.dictionary, false, &mut b.out).map(|()| buffers);
                        // The receiver is gone only when the save was abandoned.
                        let _ = done.send(result);
                    }
                })
            })
            .collect();
        Self { jobs: Some(jobs), workers }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the queue ends each worker after its current chunk.
        self.jobs.take();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

impl<W: Write> Repack<W> {
    /// Deflates on `threads` threads (one per core is the point).
    pub fn new(out: W, threads: usize) -> Self {
        let threads = threads.max(1);
        Self {
            out,
            written: 0,
            state: State::Header,
            pending: Vec::new(),
            chunks: VecDeque::new(),
            // One chunk per thread compressing, and one more queued so a core is never idle
            // while the saving thread inflates the next chunk.
            in_flight: threads + 1,
            pool: None,
            spare: Vec::new(),
            entries: Vec::new(),
        }
    }

    /// Writes the central directory and returns the output. Fails if the zip stream stopped
    /// inside a part.
    pub fn finish(mut self) -> io::Result<W> {
        if !matches!(self.state, State::Trailer) {
            return Err(invalid("the zip stream ended inside a part"));
        }
        let start = self.written;
        let mut directory = Vec::new();
        for entry in &self.entries {
            central_header(&mut directory, entry);
        }
        end_records(&mut directory, self.entries.len() as u64, start);
        self.put(&directory)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Takes bytes of a local header from `input`; returns how many it took.
    fn header(&mut self, input: &[u8]) -> io::Result<usize> {
        // The fixed part first (30 bytes), then the name and extra field whose lengths it gives.
        let need = if self.pending.len() < 30 { 30 } else { header_len(&self.pending) };
        let take = (need - self.pending.len()).min(input.len());
        self.pending.extend_from_slice(&input[..take]);
        if self.pending.len() >= 4 && u32_at(&self.pending, 0) == CENTRAL_HEADER {
            self.pending.clear();
            self.state = State::Trailer;
            return Ok(take);
        }
        if self.pending.len() < 30 || self.pending.len() < header_len(&self.pending) {
            return Ok(take);
        }
        let header = std::mem::take(&mut self.pending);
        if u32_at(&header, 0) != LOCAL_HEADER {
            return Err(invalid("expected a local file header"));
        }
        if u16_at(&header, 6) & FLAG_DESCRIPTOR == 0 || u16_at(&header, 8) != METHOD_DEFLATE {
            return Err(invalid("expected a deflated part with a data descriptor"));
        }
        let zip64 = has_zip64_extra(&header);
        let offset = self.written;
        self.put(&header)?;
        let chunk = self.spare_buffers();
        self.state = State::Data(Box::new(Part {
            header,
            offset,
            zip64,
            inflate: Decompress::new(false),
            chunk,
            compressed: 0,
        }));
        Ok(take)
    }

    /// Inflates `input` into the part's chunks; returns how many bytes it took and whether the
    /// part's deflate stream ended.
    fn data(&mut self, part: &mut Part, input: &[u8]) -> io::Result<(usize, bool)> {
        let before = part.inflate.total_in();
        let data = &mut part.chunk.data;
        let made = data.len();
        // Inflates into the chunk's spare capacity only: a chunk never grows past CHUNK.
        let status = part
            .inflate
            .decompress_vec(input, data, FlushDecompress::None)
            .map_err(|e| invalid(&format!("a part's deflate data is damaged: {e}")))?;
        let took = (part.inflate.total_in() - before) as usize;
        let ended = status == Status::StreamEnd;
        let full = data.len() == data.capacity();
        if full {
            self.send(part)?;
        } else if !ended && took == 0 && data.len() == made && !input.is_empty() {
            return Err(invalid("a part's deflate data makes no progress"));
        }
        Ok((took, ended))
    }

    /// Empty buffers for a chunk, with room for [`CHUNK`] bytes: spare ones when there are.
    fn spare_buffers(&mut self) -> Buffers {
        let mut b = self.spare.pop().unwrap_or_default();
        b.data.clear();
        b.dictionary.clear();
        b.out.clear();
        b.data.reserve_exact(CHUNK);
        b
    }

    /// Hands the part's full chunk (not its last) to a compressing thread, first writing out
    /// the oldest chunk if as many as allowed are already in flight.
    fn send(&mut self, part: &mut Part) -> io::Result<()> {
        while self.chunks.len() >= self.in_flight {
            self.write_oldest(part)?;
        }
        let mut next = self.spare_buffers();
        let data = &part.chunk.data;
        next.dictionary.extend_from_slice(&data[data.len().saturating_sub(WINDOW)..]);
        let buffers = std::mem::replace(&mut part.chunk, next);
        let threads = self.in_flight - 1;
        let pool = self.pool.get_or_insert_with(|| Pool::start(threads));
        let (done, result) = sync_channel(1);
        let job = Job { buffers, done };
        pool.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(job).ok())
            .ok_or_else(|| io::Error::other("the deflate threads stopped"))?;
        self.chunks.push_back(result);
        Ok(())
    }

    fn write_oldest(&mut self, part: &mut Part) -> io::Result<()> {
        if let Some(result) = self.chunks.pop_front() {
            // A closed channel means the worker panicked on this chunk.
            let buffers = result.recv().map_err(|_| io::Error::other("a deflate thread stopped"))??;
            self.put(&buffers.out)?;
            part.compressed += buffers.out.len() as u64;
            self.spare.push(buffers);
        }
        Ok(())
    }

    /// Takes bytes of the part's data descriptor; when it is whole, finishes the part: the last
    /// chunk (compressed here, it is the only one of a small part), then the new descriptor.
    fn descriptor(&mut self, mut part: Box<Part>, input: &[u8]) -> io::Result<usize> {
        let len = if part.zip64 { 24 } else { 16 };
        let take = (len - self.pending.len()).min(input.len());
        self.pending.extend_from_slice(&input[..take]);
        if self.pending.len() < len {
            self.state = State::Descriptor(part);
            return Ok(take);
        }
        let d = std::mem::take(&mut self.pending);
        if u32_at(&d, 0) != DATA_DESCRIPTOR {
            return Err(invalid("expected a data descriptor after a part"));
        }
        let crc = u32_at(&d, 4);
        let size = if part.zip64 { u64_at(&d, 16) } else { u64::from(u32_at(&d, 12)) };
        if size != part.inflate.total_out() {
            return Err(invalid("a part's data descriptor disagrees with its data"));
        }
        while !self.chunks.is_empty() {
            self.write_oldest(&mut part)?;
        }
        let mut compress = Compress::new(Compression::default(), false);
        let mut last = std::mem::take(&mut part.chunk);
        deflate_chunk(&mut compress, &last.data, &last.dictionary, true, &mut last.out)?;
        self.put(&last.out)?;
        part.compressed += last.out.len() as u64;
        self.spare.push(last);
        let mut descriptor = Vec::with_capacity(24);
        descriptor.extend_from_slice(&DATA_DESCRIPTOR.to_le_bytes());
        descriptor.extend_from_slice(&crc.to_le_bytes());
        if part.zip64 {
            descriptor.extend_from_slice(&part.compressed.to_le_bytes());
            descriptor.extend_from_slice(&size.to_le_bytes());
        } else {
            // Deflate grows incompressible data by a few bytes per 64 KiB at most, so this
            // only fails for a part within a hair of 4 GiB that the writer sent without ZIP64.
            let compressed = u32::try_from(part.compressed).map_err(|_| invalid("a part passed 4 GiB without ZIP64 records"))?;
            descriptor.extend_from_slice(&compressed.to_le_bytes());
            descriptor.extend_from_slice(&(size as u32).to_le_bytes());
        }
        self.put(&descriptor)?;
        self.entries.push(Entry {
            header: part.header,
            offset: part.offset,
            zip64: part.zip64,
            crc,
            size,
            compressed: part.compressed,
        });
        self.state = State::Header;
        Ok(take)
    }
}

impl<W: Write> Write for Repack<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut input = buf;
        while !input.is_empty() {
            let took = match std::mem::replace(&mut self.state, State::Trailer) {
                State::Header => {
                    self.state = State::Header;
                    self.header(input)?
                }
                State::Data(mut part) => {
                    let (took, ended) = self.data(&mut part, input)?;
                    self.state = if ended { State::Descriptor(part) } else { State::Data(part) };
                    took
                }
                State::Descriptor(part) => self.descriptor(part, input)?,
                State::Trailer => input.len(),
            };
            input = &input[took..];
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Nothing is held back that a flush could push out: chunks leave when whole.
        self.out.flush()
    }
}

/// Deflates one chunk into `out` at the default level, primed with `dictionary`. A chunk that
/// is not the part's last ends on a sync flush: byte-aligned, final bit clear, so the next one
/// follows it.
fn deflate_chunk(c: &mut Compress, data: &[u8], dictionary: &[u8], last: bool, out: &mut Vec<u8>) -> io::Result<()> {
    c.reset();
    if !dictionary.is_empty() {
        c.set_dictionary(dictionary).map_err(io::Error::other)?;
    }
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
    out.reserve(data.len() / 4 + 64);
    let mut rest = data;
    loop {
        let before = c.total_in();
        let status = c.compress_vec(rest, out, flush).map_err(io::Error::other)?;
        rest = &rest[(c.total_in() - before) as usize..];
        // zlib's contract: the flush is complete once it returns with output space to spare.
        let done = if last {
            status == Status::StreamEnd
        } else {
            rest.is_empty() && out.len() < out.capacity()
        };
        if done {
            return Ok(());
        }
        out.reserve(out.capacity().max(64 * 1024));
    }
}

/// The central directory record of a part. Sizes are in a ZIP64 extra field when the local
/// header had one; the offset is when it passes 4 GiB.
fn central_header(buf: &mut Vec<u8>, e: &Entry) {
    let name_len = u16_at(&e.header, 26);
    let name = &e.header[30..30 + usize::from(name_len)];
    let big_offset = e.offset >= u64::from(u32::MAX);
    let mut extra = Vec::new();
    if e.zip64 {
        extra.extend_from_slice(&e.size.to_le_bytes());
        extra.extend_from_slice(&e.compressed.to_le_bytes());
    }
    if big_offset {
        extra.extend_from_slice(&e.offset.to_le_bytes());
    }
    // The fixed fields hold 0xFFFFFFFF where the extra field has the value.
    let (size32, compressed32) = if e.zip64 {
        (u32::MAX, u32::MAX)
    } else {
        (e.size as u32, e.compressed as u32)
    };
    let offset32 = if big_offset { u32::MAX } else { e.offset as u32 };
    let extra_total = if extra.is_empty() { 0 } else { extra.len() as u16 + 4 };
    buf.extend_from_slice(&CENTRAL_HEADER.to_le_bytes());
    buf.extend_from_slice(&(MADE_BY_UNIX | u16_at(&e.header, 4)).to_le_bytes());
    // Version needed, flags, method, time and date: as in the local header.
    buf.extend_from_slice(&e.header[4..14]);
    buf.extend_from_slice(&e.crc.to_le_bytes());
    buf.extend_from_slice(&compressed32.to_le_bytes());
    buf.extend_from_slice(&size32.to_le_bytes());
    buf.extend_from_slice(&name_len.to_le_bytes());
    buf.extend_from_slice(&extra_total.to_le_bytes());
    buf.extend_from_slice(&[0; 6]); // comment length, disk number, internal attributes
    buf.extend_from_slice(&EXTERNAL_ATTRIBUTES.to_le_bytes());
    buf.extend_from_slice(&offset32.to_le_bytes());
    buf.extend_from_slice(name);
    if !extra.is_empty() {
        buf.extend_from_slice(&ZIP64_EXTRA.to_le_bytes());
        buf.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        buf.extend_from_slice(&extra);
    }
}

/// The end of central directory record, preceded by the ZIP64 end record and its locator when
/// the directory starts past 4 GiB or is itself that large.
fn end_records(buf: &mut Vec<u8>, entries: u64, start: u64) {
    let size = buf.len() as u64;
    let zip64 = start >= u64::from(u32::MAX) || size >= u64::from(u32::MAX) || entries >= u64::from(u16::MAX);
    if zip64 {
        let at = start + size;
        buf.extend_from_slice(&ZIP64_END.to_le_bytes());
        buf.extend_from_slice(&44u64.to_le_bytes()); // the record's size after this field
        buf.extend_from_slice(&(MADE_BY_UNIX | 45).to_le_bytes());
        buf.extend_from_slice(&45u16.to_le_bytes());
        buf.extend_from_slice(&[0; 8]); // this disk, the directory's disk
        buf.extend_from_slice(&entries.to_le_bytes());
        buf.extend_from_slice(&entries.to_le_bytes());
        buf.extend_from_slice(&size.to_le_bytes());
        buf.extend_from_slice(&start.to_le_bytes());
        buf.extend_from_slice(&ZIP64_LOCATOR.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        buf.extend_from_slice(&at.to_le_bytes());
        buf.extend_from_slice(&1u32.to_le_bytes());
    }
    let clamp16 = |v: u64| u16::try_from(v).unwrap_or(u16::MAX);
    let clamp32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    buf.extend_from_slice(&END.to_le_bytes());
    buf.extend_from_slice(&[0; 4]); // this disk, the directory's disk
    buf.extend_from_slice(&clamp16(entries).to_le_bytes());
    buf.extend_from_slice(&clamp16(entries).to_le_bytes());
    buf.extend_from_slice(&clamp32(size).to_le_bytes());
    buf.extend_from_slice(&clamp32(start).to_le_bytes());
    buf.extend_from_slice(&0u16.to_le_bytes()); // comment length
}

/// The length of a local header whose fixed part is in `h`.
fn header_len(h: &[u8]) -> usize {
    30 + usize::from(u16_at(h, 26)) + usize::from(u16_at(h, 28))
}

/// Whether the local header's extra field holds a ZIP64 record (the data descriptor then
/// carries 8-byte sizes).
fn has_zip64_extra(h: &[u8]) -> bool {
    let mut extra = &h[30 + usize::from(u16_at(h, 26))..];
    while extra.len() >= 4 {
        let (id, len) = (u16_at(extra, 0), usize::from(u16_at(extra, 2)));
        if id == ZIP64_EXTRA {
            return true;
        }
        extra = &extra[(4 + len).min(extra.len())..];
    }
    false
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("repacking the workbook: {what}"))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_xlsxwriter::{DocProperties, ExcelDateTime, Workbook};
    use std::io::{Cursor, Read};

    /// A workbook whose sheet XML spans several chunks, so chunk seams, dictionaries and the
    /// compressing threads are all exercised; with or without ZIP64 (large-file) records.
    fn workbook(level: Option<u8>, large: bool) -> Vec<u8> {
        let mut wb = Workbook::new();
        let when = ExcelDateTime::from_ymd(2026, 1, 2).unwrap();
        wb.set_properties(&DocProperties::new().set_title("Seams").set_creation_datetime(&when));
        wb.use_zip_large_file(large);
        if let Some(level) = level {
            wb.set_zip_compression_level(level);
        }
        let ws = wb.add_worksheet();
        for r in 0..40_000u32 {
            ws.write_string(r, 0, format!("Customer {} — 東京 ✓", r % 977)).unwrap();
            ws.write_number(r, 1, f64::from(r) * 1.25).unwrap();
            ws.write_string(r, 2, format!("REF-{:08}", r.wrapping_mul(2_654_435_761))).unwrap();
        }
        let mut out = Vec::new();
        wb.save_to_writer(&mut out).unwrap();
        out
    }

    fn repacked(zip: &[u8]) -> io::Result<Vec<u8>> {
        let mut repack = Repack::new(Vec::new(), 2);
        // Odd-sized writes, so headers and descriptors arrive split across calls.
        for piece in zip.chunks(7_777) {
            repack.write_all(piece)?;
        }
        repack.finish()
    }

    /// Every part's name, content and compressed size, read by the zip crate (which checks each
    /// part's CRC-32 against its content).
    fn parts(zip: &[u8]) -> Vec<(String, Vec<u8>, u64)> {
        let mut archive = zip::ZipArchive::new(Cursor::new(zip)).unwrap();
        (0..archive.len())
            .map(|i| {
                let mut f = archive.by_index(i).unwrap();
                let mut content = Vec::new();
                f.read_to_end(&mut content).unwrap();
                (f.name().unwrap().to_string(), content, f.compressed_size())
            })
            .collect()
    }

    #[test]
    fn the_repacked_zip_holds_the_same_parts_deflated_at_the_default_level() {
        for large in [false, true] {
            same_parts_at_the_default_level(large);
        }
    }

    fn same_parts_at_the_default_level(large: bool) {
        let fast = workbook(Some(1), large);
        let repacked = repacked(&fast).unwrap();
        // ZIP64 records where the input had them, and only there (LibreOffice 7.4 cannot open
        // a workbook whose parts carry them).
        let mut archive = zip::ZipArchive::new(Cursor::new(&repacked)).unwrap();
        for i in 0..archive.len() {
            let at = archive.by_index_raw(i).unwrap().header_start() as usize;
            assert_eq!(has_zip64_extra(&repacked[at..]), large, "part {i}'s local header");
        }
        let ours = parts(&repacked);
        let crate_default = parts(&workbook(None, large));
        let crate_fast = parts(&fast);
        let names = |p: &[(String, Vec<u8>, u64)]| p.iter().map(|(n, _, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(names(&ours), names(&crate_default), "same parts, same order");
        for ((name, content, _), (_, expected, _)) in ours.iter().zip(&crate_default) {
            assert!(content == expected, "{name}: content differs from the crate's own output");
        }
        let sheet = |p: &[(String, Vec<u8>, u64)]| p.iter().find(|(n, _, _)| n == "xl/worksheets/sheet1.xml").cloned().unwrap();
        let (_, xml, ours_size) = sheet(&ours);
        assert!(xml.len() > 3 * CHUNK, "the sheet spans several chunks ({} bytes)", xml.len());
        let (_, _, default_size) = sheet(&crate_default);
        let (_, _, fast_size) = sheet(&crate_fast);
        // Chunking costs almost nothing against one stream at the same level, and it is the
        // default level, not the level-1 pass it came from.
        assert!(
            ours_size as f64 <= default_size as f64 * 1.01,
            "ours {ours_size} vs one stream {default_size}"
        );
        assert!(
            (ours_size as f64) < fast_size as f64 * 0.9,
            "ours {ours_size} vs level 1 {fast_size}"
        );
    }

    #[test]
    fn chunks_concatenate_into_one_deflate_stream_even_when_incompressible() {
        // Random bytes do not compress: each chunk's output outgrows its first buffer.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let data: Vec<u8> = (0..CHUNK * 2 + 12_345)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let pieces: Vec<&[u8]> = data.chunks(CHUNK).collect();
        // One compressor for every chunk, reset in between, as a pool thread keeps it.
        let mut c = Compress::new(Compression::default(), false);
        let mut stream = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let dictionary = if i == 0 { &[][..] } else { &pieces[i - 1][CHUNK - WINDOW..] };
            deflate_chunk(&mut c, piece, dictionary, i + 1 == pieces.len(), &mut stream).unwrap();
        }
        let mut back = Vec::new();
        flate2::read::DeflateDecoder::new(&stream[..]).read_to_end(&mut back).unwrap();
        assert!(back == data, "the concatenated chunks inflate to the input");
        // An empty last chunk (a part that ends on a chunk boundary) still ends the stream.
        let mut two = Vec::new();
        deflate_chunk(&mut c, pieces[0], &[], false, &mut two).unwrap();
        deflate_chunk(&mut c, &[], &pieces[0][CHUNK - WINDOW..], true, &mut two).unwrap();
        let mut back = Vec::new();
        flate2::read::DeflateDecoder::new(&two[..]).read_to_end(&mut back).unwrap();
        assert!(back == pieces[0]);
    }

    #[test]
    fn a_stream_cut_short_or_not_from_the_streaming_writer_is_refused() {
        let fast = workbook(Some(1), false);
        // Cut inside the sheet's data: finish must not write a directory as if it were whole.
        let mut repack = Repack::new(Vec::new(), 2);
        repack.write_all(&fast[..fast.len() / 2]).unwrap();
        let err = repack.finish().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("ended inside a part"), "{err}");

        // A zip written to a seekable file has sizes in its headers and no data descriptors.
        let mut plain = zip::ZipWriter::new(Cursor::new(Vec::new()));
        plain.start_file("a.xml", zip::write::SimpleFileOptions::default()).unwrap();
        plain.write_all(b"<a/>").unwrap();
        let plain = plain.finish().unwrap().into_inner();
        let err = repacked(&plain).unwrap_err();
        assert!(err.to_string().contains("data descriptor"), "{err}");

        // Damaged deflate data.
        let mut damaged = fast.clone();
        let at = damaged.len() / 3;
        damaged[at..at + 64].fill(0xff);
        let err = repacked(&damaged).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }

    #[test]
    fn a_failing_output_fails_the_repack() {
        struct Full(usize);
        impl Write for Full {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                if self.0 < buf.len() {
                    return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
                }
                self.0 -= buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let fast = workbook(Some(1), false);
        let mut repack = Repack::new(Full(100_000), 2);
        let err = repack.write_all(&fast).and_then(|_| repack.finish().map(|_| ())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    }

    #[test]
    fn offsets_past_4_gib_use_zip64_records() {
        let mut header = Vec::new();
        header.extend_from_slice(&LOCAL_HEADER.to_le_bytes());
        header.extend_from_slice(&[45, 0, 8, 0, 8, 0, 0, 0, 0x21, 0]);
        header.extend_from_slice(&[0; 12]);
        header.extend_from_slice(&5u16.to_le_bytes());
        header.extend_from_slice(&20u16.to_le_bytes());
        header.extend_from_slice(b"a.xml");
        header.extend_from_slice(&[1, 0, 16, 0]);
        header.extend_from_slice(&[0; 16]);
        let offset = 5u64 << 30;
        let entry = Entry {
            header,
            offset,
            zip64: true,
            crc: 7,
            size: 6 << 30,
            compressed: 1 << 30,
        };
        let mut cd = Vec::new();
        central_header(&mut cd, &entry);
        assert_eq!(u32_at(&cd, 20), u32::MAX, "compressed size in the extra field");
        assert_eq!(u32_at(&cd, 42), u32::MAX, "offset in the extra field");
        let extra = &cd[46 + 5..];
        assert_eq!((u16_at(extra, 0), u16_at(extra, 2)), (ZIP64_EXTRA, 24));
        assert_eq!((u64_at(extra, 4), u64_at(extra, 12), u64_at(extra, 20)), (6 << 30, 1 << 30, offset));

        let start = 7u64 << 30;
        let cd_len = cd.len() as u64;
        end_records(&mut cd, 1, start);
        let z64 = &cd[cd_len as usize..];
        assert_eq!(u32_at(z64, 0), ZIP64_END);
        assert_eq!((u64_at(z64, 40), u64_at(z64, 48)), (cd_len, start), "directory size and start");
        let locator = &z64[56..];
        assert_eq!(u32_at(locator, 0), ZIP64_LOCATOR);
        assert_eq!(u64_at(locator, 8), start + cd_len, "where the ZIP64 end record is");
        let end = &locator[20..];
        assert_eq!((u32_at(end, 0), u32_at(end, 16)), (END, u32::MAX));

        // Without ZIP64 sizes, only the offset goes to the extra field.
        let small = Entry {
            zip64: false,
            size: 300,
            compressed: 100,
            ..entry
        };
        let mut cd = Vec::new();
        central_header(&mut cd, &small);
        assert_eq!((u32_at(&cd, 20), u32_at(&cd, 24), u32_at(&cd, 42)), (100, 300, u32::MAX));
        let extra = &cd[46 + 5..];
        assert_eq!((u16_at(extra, 0), u16_at(extra, 2), u64_at(extra, 4)), (ZIP64_EXTRA, 8, offset));
    }
}
