//! The payload: AES-256-GCM STREAM segments (specification, 4.4), sealed and
//! opened as streams, in memory, or by random access.

use std::io::{self, IoSlice, Read, Seek, SeekFrom, Write};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::header::{Header, Seal, Unlock, read_full};
use crate::keys::{FileKey, Kek};

/// Plaintext bytes per segment (64 KiB).
pub const SEGMENT_SIZE: usize = 1 << 16;
/// Bytes the AES-GCM tag adds to every segment.
pub const TAG_SIZE: usize = 16;
/// Bytes of a full segment on disk.
pub const SEALED_SEGMENT_SIZE: usize = SEGMENT_SIZE + TAG_SIZE;

fn nonce(counter: u64, last: bool) -> Nonce {
    // An 11-byte big-endian counter (the top three bytes stay zero: 2^64
    // segments are more than any file) followed by the last-segment flag.
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

/// The segmentation implied by a payload length (specification, 4.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Number of segments (at least one).
    pub segments: u64,
    /// Plaintext length.
    pub plaintext_len: u64,
}

impl Layout {
    /// The layout of a payload of `payload_len` bytes, or `None` if no valid
    /// payload has that length.
    pub fn of_payload(payload_len: u64) -> Option<Layout> {
        let full = SEALED_SEGMENT_SIZE as u64;
        let segments = payload_len.div_ceil(full).max(1);
        let last = payload_len.checked_sub((segments - 1) * full)?;
        let min_last = if segments == 1 {
            TAG_SIZE
        } else {
            TAG_SIZE + 1
        };
        if last < min_last as u64 {
            return None;
        }
        Some(Layout {
            segments,
            plaintext_len: payload_len - segments * TAG_SIZE as u64,
        })
    }

    /// The payload length of a plaintext of `plaintext_len` bytes.
    pub fn sealed_payload_len(plaintext_len: u64) -> u64 {
        let segments = plaintext_len.div_ceil(SEGMENT_SIZE as u64).max(1);
        plaintext_len + segments * TAG_SIZE as u64
    }
}

/// Segments a [`Sealer`] or [`Opener`] holds at once: their output or input
/// moves in system calls of about 1 MiB, which measured faster on files than
/// one call per 64 KiB segment, and their memory stays at about 1 MiB.
pub const BATCH_SEGMENTS: usize = 16;

/// Seals a stream: writes the header at once, then the segments in batches
/// of [`BATCH_SEGMENTS`]. [`Sealer::finish`] MUST be called, or the output is
/// truncated (and any reader will reject it). Memory: one batch.
pub struct Sealer<W: Write> {
    inner: W,
    key: LessSafeKey,
    /// Sealed segments laid out as on disk; slot `slot` is being filled
    /// with plaintext, slots before it are sealed and not yet written.
    buf: Box<[u8]>,
    slot: usize,
    len: usize,
    counter: u64,
    poisoned: bool,
}

impl<W: Write> Sealer<W> {
    /// Writes a fresh header for `keys` and `context` to `inner`.
    pub fn new(inner: W, keys: &[Kek], context: &Context) -> Result<Self> {
        Self::start(inner, Seal::Fresh(keys, context))
    }

    /// Writes `header`, a complete header built by a key manager with
    /// [`new_header`](crate::new_header), to `inner`, and seals the payload
    /// under `file_key` (specification, section 9).
    ///
    /// The header is parsed and verified against `file_key` (commitment and
    /// header MAC) *before* anything is written, so a key manager's mistake
    /// or a modified header cannot produce a file that nobody can open.
    ///
    /// # Errors
    ///
    /// The header's structure errors ([`Error::NotTwinseal`],
    /// [`Error::UnsupportedVersion`], [`Error::InvalidHeader`], also for
    /// bytes after the header), or [`Error::DecryptionFailed`] if `file_key`
    /// is not the header's key or the header was modified. In every such case
    /// `inner` is left untouched.
    pub fn with_header(inner: W, header: &[u8], file_key: &FileKey) -> Result<Self> {
        Self::start(inner, Seal::Given(header, file_key))
    }

    fn start(mut inner: W, seal: Seal<'_>) -> Result<Self> {
        let (header, derived) = seal.prepare()?;
        inner.write_all(&header)?;
        Ok(Sealer {
            inner,
            key: derived.payload,
            buf: vec![0u8; BATCH_SEGMENTS * SEALED_SEGMENT_SIZE].into_boxed_slice(),
            slot: 0,
            len: 0,
            counter: 0,
            poisoned: false,
        })
    }

    /// Offset of the slot being filled.
    fn off(&self) -> usize {
        self.slot * SEALED_SEGMENT_SIZE
    }

    /// Moves to the next slot after sealing one; writes the batch out when
    /// it is full or the segment was the last.
    fn advance(&mut self, end: usize, last: bool) -> io::Result<()> {
        self.counter += 1;
        self.len = 0;
        self.slot += 1;
        if last || self.slot == BATCH_SEGMENTS {
            self.inner.write_all(&self.buf[..end])?;
            self.slot = 0;
        }
        Ok(())
    }

    /// Encrypts the slot being filled in place.
    fn seal_slot(&mut self, last: bool) -> io::Result<()> {
        let (off, len) = (self.off(), self.len);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                nonce(self.counter, last),
                Aad::empty(),
                &mut self.buf[off..off + len],
            )
            .map_err(|_| Error::Crypto.into_io())?;
        self.buf[off + len..off + len + TAG_SIZE].copy_from_slice(tag.as_ref());
        self.advance(off + len + TAG_SIZE, last)
    }

    fn write_inner(&mut self, data: &[u8]) -> io::Result<()> {
        let mut rest = data;
        while !rest.is_empty() {
            if self.len == SEGMENT_SIZE {
                // More plaintext follows, so the buffered segment is not last.
                self.seal_slot(false)?;
            }
            if self.len == 0 && rest.len() > SEGMENT_SIZE {
                // A whole non-final segment is at hand: encrypt it straight
                // from the caller's buffer into its slot, saving a copy.
                let off = self.off();
                let slot = &mut self.buf[off..off + SEALED_SEGMENT_SIZE];
                let (seg, tag) = slot.split_at_mut(SEGMENT_SIZE);
                self.key
                    .seal_out_of_place_scatter(
                        nonce(self.counter, false),
                        Aad::empty(),
                        &rest[..SEGMENT_SIZE],
                        seg,
                        &[],
                        tag,
                    )
                    .map_err(|_| Error::Crypto.into_io())?;
                self.advance(off + SEALED_SEGMENT_SIZE, false)?;
                rest = &rest[SEGMENT_SIZE..];
                continue;
            }
            let off = self.off() + self.len;
            let n = (SEGMENT_SIZE - self.len).min(rest.len());
            self.buf[off..off + n].copy_from_slice(&rest[..n]);
            self.len += n;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Reads `reader` to its end straight into the segment slots and seals
    /// it (no intermediate copy). Returns the bytes read.
    pub fn copy_from<R: Read + ?Sized>(&mut self, reader: &mut R) -> Result<u64> {
        self.check_poisoned()?;
        let mut total = 0u64;
        loop {
            // Read one byte past a full segment (into the tag's place) to
            // learn whether more follows.
            let off = self.off();
            let got = read_full(reader, &mut self.buf[off + self.len..=off + SEGMENT_SIZE]);
            let got = got.inspect_err(|_| self.poisoned = true)?;
            total += got as u64;
            self.len += got;
            if self.len <= SEGMENT_SIZE {
                return Ok(total);
            }
            let carry = self.buf[off + SEGMENT_SIZE];
            self.len = SEGMENT_SIZE;
            self.seal_slot(false)
                .inspect_err(|_| self.poisoned = true)?;
            let off = self.off();
            self.buf[off] = carry;
            self.len = 1;
        }
    }

    fn check_poisoned(&self) -> Result<()> {
        if self.poisoned {
            Err(Error::Io(io::Error::other(
                "sealer unusable after an earlier error",
            )))
        } else {
            Ok(())
        }
    }

    /// Seals the final segment, writes what is pending, flushes and returns
    /// the inner writer.
    pub fn finish(mut self) -> Result<W> {
        self.check_poisoned()?;
        self.seal_slot(true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for Sealer<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.check_poisoned().map_err(Error::into_io)?;
        // All or nothing: after a failed inner write the stream is broken.
        self.write_inner(data)
            .inspect_err(|_| self.poisoned = true)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Segments are only written whole; flushing passes on what was written.
        self.inner.flush()
    }
}

/// Opens a stream sequentially. `read` only returns plaintext whose segment
/// authenticated, and only returns `Ok(0)` after the final segment
/// authenticated and the input ended. A reader that stops before `Ok(0)` has
/// not checked for truncation. Memory: one batch of [`BATCH_SEGMENTS`].
pub struct Opener<R: Read> {
    inner: R,
    header: Header,
    key: LessSafeKey,
    /// Sealed bytes read ahead: a batch of segments and one byte more.
    buf: Box<[u8]>,
    /// `buf[cursor..filled]` is read but not yet decrypted.
    cursor: usize,
    filled: usize,
    eof: bool,
    /// Window of decrypted plaintext in `buf` still to hand out.
    pos: usize,
    end: usize,
    counter: u64,
    done: bool,
    failed: bool,
}

impl<R: Read> Opener<R> {
    /// Reads the header and unlocks it with one of `keys`, requiring exactly
    /// `context` (specification, section 6, steps 1 to 6).
    pub fn new(inner: R, keys: &[Kek], context: &Context) -> Result<Self> {
        Self::start(inner, Unlock::Keks(keys), context)
    }

    /// Reads the header and unlocks it with `file_key`, released by a key
    /// manager, requiring exactly `context` (specification, sections 6 and 9).
    /// The same checks as [`Opener::new`], except that no stanza is used: a
    /// context other than the header's is [`Error::ContextMismatch`], and a
    /// key that is not the header's is [`Error::DecryptionFailed`].
    pub fn with_file_key(inner: R, file_key: &FileKey, context: &Context) -> Result<Self> {
        Self::start(inner, Unlock::FileKey(file_key), context)
    }

    fn start(mut inner: R, by: Unlock<'_>, context: &Context) -> Result<Self> {
        let header = Header::read_from(&mut inner)?;
        let derived = header.unlock(by, context)?;
        Ok(Opener {
            inner,
            header,
            key: derived.payload,
            buf: vec![0u8; BATCH_SEGMENTS * SEALED_SEGMENT_SIZE + 1].into_boxed_slice(),
            cursor: 0,
            filled: 0,
            eof: false,
            pos: 0,
            end: 0,
            counter: 0,
            done: false,
            failed: false,
        })
    }

    /// The authenticated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Whether the next segment needs more input than is buffered.
    fn needs_input(&self) -> bool {
        !self.eof && self.filled - self.cursor <= SEALED_SEGMENT_SIZE
    }

    /// Decrypts the next segment in place; returns where its plaintext lies
    /// in `buf`, or `None` after the final one. Plaintext handed out before
    /// must have been consumed: refilling moves the buffer's contents.
    fn next_segment(&mut self) -> Result<Option<(usize, usize)>> {
        if self.failed {
            return Err(Error::DecryptionFailed);
        }
        if self.done {
            return Ok(None);
        }
        if self.needs_input() {
            self.buf.copy_within(self.cursor..self.filled, 0);
            self.filled -= self.cursor;
            self.cursor = 0;
            self.filled += read_full(&mut self.inner, &mut self.buf[self.filled..])?;
            self.eof = self.filled < self.buf.len();
        }
        // More than one sealed segment available means this one is not last;
        // otherwise the input has ended (`needs_input` is false).
        let available = self.filled - self.cursor;
        let last = available <= SEALED_SEGMENT_SIZE;
        let sealed_len = available.min(SEALED_SEGMENT_SIZE);
        let min = if self.counter == 0 {
            TAG_SIZE
        } else {
            TAG_SIZE + 1
        };
        if sealed_len < min {
            self.failed = true;
            return Err(Error::DecryptionFailed);
        }
        let start = self.cursor;
        let opened = self.key.open_in_place(
            nonce(self.counter, last),
            Aad::empty(),
            &mut self.buf[start..start + sealed_len],
        );
        let Ok(plain) = opened else {
            self.failed = true;
            return Err(Error::DecryptionFailed);
        };
        let len = plain.len();
        self.cursor += sealed_len;
        self.counter += 1;
        self.done = last;
        Ok(Some((start, len)))
    }

    /// Decrypts everything to `out`, handing it each batch's plaintext
    /// straight from the internal buffer (one vectored write per batch, no
    /// extra copy). Returns the plaintext length.
    pub fn copy_to<W: Write + ?Sized>(&mut self, out: &mut W) -> Result<u64> {
        let mut total = (self.end - self.pos) as u64;
        out.write_all(&self.buf[self.pos..self.end])?;
        self.pos = self.end;
        let mut ranges = Vec::with_capacity(BATCH_SEGMENTS + 1);
        loop {
            ranges.clear();
            while let Some((start, len)) = self.next_segment()? {
                if len > 0 {
                    ranges.push(start..start + len);
                    total += len as u64;
                }
                if self.done || self.needs_input() {
                    break;
                }
            }
            let mut slices: Vec<IoSlice<'_>> = ranges
                .iter()
                .map(|r| IoSlice::new(&self.buf[r.clone()]))
                .collect();
            let mut rest = &mut slices[..];
            while !rest.is_empty() {
                let n = out.write_vectored(rest)?;
                if n == 0 {
                    return Err(io::Error::from(io::ErrorKind::WriteZero).into());
                }
                IoSlice::advance_slices(&mut rest, n);
            }
            if self.done {
                return Ok(total);
            }
        }
    }

    /// Returns the inner reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for Opener<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.pos == self.end {
            match self.next_segment().map_err(Error::into_io)? {
                None => return Ok(0),
                Some((start, len)) => {
                    self.pos = start;
                    self.end = start + len;
                }
            }
        }
        let n = (self.end - self.pos).min(out.len());
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Opens a seekable sealed file for random access: any segment can be read
/// without reading those before it. The final segment is authenticated when
/// opening, so [`SeekableOpener::len`] is authenticated. Memory: one segment.
pub struct SeekableOpener<R: Read + Seek> {
    inner: R,
    header: Header,
    key: LessSafeKey,
    layout: Layout,
    buf: Box<[u8]>,
    cached: Option<(u64, usize)>,
    pos: u64,
}

impl<R: Read + Seek> SeekableOpener<R> {
    /// Reads and unlocks the header, then authenticates the last segment.
    pub fn new(inner: R, keys: &[Kek], context: &Context) -> Result<Self> {
        Self::start(inner, Unlock::Keks(keys), context)
    }

    /// Like [`SeekableOpener::new`], but unlocks the header with `file_key`,
    /// released by a key manager (see [`Opener::with_file_key`]).
    pub fn with_file_key(inner: R, file_key: &FileKey, context: &Context) -> Result<Self> {
        Self::start(inner, Unlock::FileKey(file_key), context)
    }

    fn start(mut inner: R, by: Unlock<'_>, context: &Context) -> Result<Self> {
        inner.seek(SeekFrom::Start(0))?;
        let header = Header::read_from(&mut inner)?;
        let derived = header.unlock(by, context)?;
        let total = inner.seek(SeekFrom::End(0))?;
        let layout = total
            .checked_sub(header.len() as u64)
            .and_then(Layout::of_payload)
            .ok_or(Error::DecryptionFailed)?;
        let mut opener = SeekableOpener {
            inner,
            header,
            key: derived.payload,
            layout,
            buf: vec![0u8; SEALED_SEGMENT_SIZE].into_boxed_slice(),
            cached: None,
            pos: 0,
        };
        opener.load(layout.segments - 1)?;
        Ok(opener)
    }

    /// The authenticated plaintext length.
    pub fn len(&self) -> u64 {
        self.layout.plaintext_len
    }

    /// Whether the plaintext is empty.
    pub fn is_empty(&self) -> bool {
        self.layout.plaintext_len == 0
    }

    /// The authenticated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Decrypts segment `index` into the cache; returns its plaintext length.
    fn load(&mut self, index: u64) -> Result<usize> {
        if let Some((cached, len)) = self.cached
            && cached == index
        {
            return Ok(len);
        }
        self.cached = None;
        let last = index + 1 == self.layout.segments;
        let offset = self.header.len() as u64 + index * SEALED_SEGMENT_SIZE as u64;
        let sealed_len = if last {
            (self.layout.plaintext_len - index * SEGMENT_SIZE as u64) as usize + TAG_SIZE
        } else {
            SEALED_SEGMENT_SIZE
        };
        self.inner.seek(SeekFrom::Start(offset))?;
        if read_full(&mut self.inner, &mut self.buf[..sealed_len])? != sealed_len {
            // The file shrank since it was opened.
            return Err(Error::DecryptionFailed);
        }
        let len = self
            .key
            .open_in_place(
                nonce(index, last),
                Aad::empty(),
                &mut self.buf[..sealed_len],
            )
            .map_err(|_| Error::DecryptionFailed)?
            .len();
        self.cached = Some((index, len));
        Ok(len)
    }
}

impl<R: Read + Seek> Read for SeekableOpener<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || self.pos >= self.layout.plaintext_len {
            return Ok(0);
        }
        let index = self.pos / SEGMENT_SIZE as u64;
        let offset = (self.pos % SEGMENT_SIZE as u64) as usize;
        let len = self.load(index).map_err(Error::into_io)?;
        let n = (len - offset).min(out.len());
        out[..n].copy_from_slice(&self.buf[offset..offset + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for SeekableOpener<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.layout.plaintext_len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let target = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        self.pos = target;
        Ok(target)
    }
}

/// Seals a byte string in memory, encrypting straight into the output.
pub fn seal_bytes(plaintext: &[u8], keys: &[Kek], context: &Context) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    seal_bytes_into(plaintext, keys, context, &mut out)?;
    Ok(out)
}

/// Like [`seal_bytes`], but reuses `out` (its old contents are replaced):
/// a buffer that is already long enough is neither zeroed nor reallocated.
pub fn seal_bytes_into(
    plaintext: &[u8],
    keys: &[Kek],
    context: &Context,
    out: &mut Vec<u8>,
) -> Result<()> {
    seal_into(plaintext, Seal::Fresh(keys, context), out)
}

/// Seals a byte string in memory under `header` and `file_key`, from a key
/// manager's [`new_header`](crate::new_header); see [`Sealer::with_header`]
/// for the checks made on the header first.
pub fn seal_bytes_with_header(
    plaintext: &[u8],
    header: &[u8],
    file_key: &FileKey,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    seal_into(plaintext, Seal::Given(header, file_key), &mut out)?;
    Ok(out)
}

fn seal_into(plaintext: &[u8], seal: Seal<'_>, out: &mut Vec<u8>) -> Result<()> {
    let (header, derived) = seal.prepare()?;
    let total = header.len() + Layout::sealed_payload_len(plaintext.len() as u64) as usize;
    fit(out, total);
    out[..header.len()].copy_from_slice(&header);
    let segments = plaintext.len().div_ceil(SEGMENT_SIZE).max(1);
    let sealed = out[header.len()..].chunks_mut(SEALED_SEGMENT_SIZE);
    for (i, seg) in sealed.enumerate() {
        let start = i * SEGMENT_SIZE;
        let chunk = &plaintext[start..(start + SEGMENT_SIZE).min(plaintext.len())];
        let (ct, tag) = seg.split_at_mut(chunk.len());
        derived.payload.seal_out_of_place_scatter(
            nonce(i as u64, i + 1 == segments),
            Aad::empty(),
            chunk,
            ct,
            &[],
            tag,
        )?;
    }
    Ok(())
}

/// Makes `buf` exactly `len` bytes long, writing zeros only where it grows.
fn fit(buf: &mut Vec<u8>, len: usize) {
    if buf.len() >= len {
        buf.truncate(len);
    } else {
        buf.resize(len, 0);
    }
}

/// Opens a sealed byte string in memory, decrypting straight into the output.
pub fn open_bytes(sealed: &[u8], keys: &[Kek], context: &Context) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    open_bytes_into(sealed, keys, context, &mut out)?;
    Ok(out)
}

/// Like [`open_bytes`], but reuses `out`. On failure `out` is cleared, so no
/// unauthenticated plaintext is left in it.
pub fn open_bytes_into(
    sealed: &[u8],
    keys: &[Kek],
    context: &Context,
    out: &mut Vec<u8>,
) -> Result<()> {
    open_into(sealed, Unlock::Keks(keys), context, out)
}

/// Opens a sealed byte string in memory with `file_key`, released by a key
/// manager, requiring exactly `context` (see [`Opener::with_file_key`]).
pub fn open_bytes_with_file_key(
    sealed: &[u8],
    file_key: &FileKey,
    context: &Context,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    open_into(sealed, Unlock::FileKey(file_key), context, &mut out)?;
    Ok(out)
}

/// Opens into `out`, clearing it on failure.
fn open_into(sealed: &[u8], by: Unlock<'_>, context: &Context, out: &mut Vec<u8>) -> Result<()> {
    let result = decrypt_into(sealed, by, context, out);
    if result.is_err() {
        out.clear();
    }
    result
}

fn decrypt_into(sealed: &[u8], by: Unlock<'_>, context: &Context, out: &mut Vec<u8>) -> Result<()> {
    let header = Header::parse(sealed)?;
    let derived = header.unlock(by, context)?;
    let payload = &sealed[header.len()..];
    let layout = Layout::of_payload(payload.len() as u64).ok_or(Error::DecryptionFailed)?;
    fit(out, layout.plaintext_len as usize);
    let segments = layout.segments as usize;
    for (i, seg) in payload.chunks(SEALED_SEGMENT_SIZE).enumerate() {
        let (ct, tag) = seg.split_at(seg.len() - TAG_SIZE);
        let start = i * SEGMENT_SIZE;
        derived
            .payload
            .open_separate_gather(
                nonce(i as u64, i + 1 == segments),
                Aad::empty(),
                ct,
                tag,
                &mut out[start..start + ct.len()],
            )
            .map_err(|_| Error::DecryptionFailed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_follows_the_spec() {
        let full = SEALED_SEGMENT_SIZE as u64;
        let seg = SEGMENT_SIZE as u64;
        for plain in [0, 1, seg - 1, seg, seg + 1, 3 * seg, 3 * seg + 5] {
            let payload = Layout::sealed_payload_len(plain);
            let layout = Layout::of_payload(payload).unwrap();
            assert_eq!(layout.plaintext_len, plain);
            assert_eq!(layout.segments, plain.div_ceil(seg).max(1));
        }
        // Too short for a tag, or an empty last segment after a full one.
        for bad in [0, 15, full + 16, 2 * full + 16] {
            assert_eq!(Layout::of_payload(bad), None, "{bad}");
        }
    }
}
