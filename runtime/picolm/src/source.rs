//! Where a model's bytes come from.
//!
//! The GGUF reader and the forward pass read a model through one small trait, [`ByteSource`]:
//! "give me bytes `[offset, offset + len)`". A source is either
//!
//! - **resident**: its whole content is addressable ([`ByteSource::resident`]); weights are read
//!   in place, with no copy. [`MmapSource`] (a read-only map of a plaintext file) and
//!   [`MemorySource`] (bytes someone else holds, e.g. decrypted plaintext in locked memory) are
//!   resident. Layer streaming on an mmap drops each layer's pages after use.
//! - **streaming**: only [`ByteSource::read_at`] works. The engine copies one layer's matrices
//!   (or one slice of the output head, or one embedding row) into a reusable buffer, runs it,
//!   and wipes the buffer (see [`crate::stream`]). The encrypted-model source of `a3s-power`
//!   is one: it decrypts only the chunks covering the requested range.
//!
//! picolm knows nothing of keys or ciphers. A source's errors say which bytes failed and why;
//! they must never contain the bytes themselves.

#![allow(unsafe_code)] // one mmap, its madvise calls and one fadvise, see `MmapSource`

use std::fmt;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A model's bytes, resident or produced on demand. See the module documentation.
pub trait ByteSource: Send + Sync + fmt::Debug {
    /// Total length in bytes.
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole content when it is addressable in memory; `None` for a streaming source.
    fn resident(&self) -> Option<&[u8]>;

    /// Fill `buf` with bytes `[offset, offset + buf.len())`. A range past the end is an error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// Hint: `[offset, offset + len)` is not needed for a while.
    fn release(&self, _offset: u64, _len: u64) {}

    /// Hint: `[offset, offset + len)` is needed next.
    fn prefetch(&self, _offset: u64, _len: u64) {}

    /// Hint: from now on the content is used one window at a time (a layer, a slice of the
    /// output head), each [`ByteSource::prefetch`]ed before use and [`ByteSource::release`]d
    /// after (layer streaming). Called once, after the model is loaded. Returns the share of
    /// the content the source will serve as huge pages, when it can tell.
    fn prepare_streaming(&self) -> Option<f64> {
        None
    }
}

/// `[offset, offset + len)` of `bytes`, or an error naming `what` and the range.
pub fn slice_range<'a>(what: &str, bytes: &'a [u8], offset: u64, len: usize) -> Result<&'a [u8]> {
    usize::try_from(offset)
        .ok()
        .and_then(|o| Some(o..o.checked_add(len)?))
        .and_then(|r| bytes.get(r))
        .ok_or_else(|| {
            Error::Source(format!(
                "{what}: range {offset}+{len} is beyond the end ({} bytes)",
                bytes.len()
            ))
        })
}

/// A plaintext file mapped read-only into memory. [`ByteSource::read_at`] reads with `pread`,
/// so a copy never maps pages into this process.
pub struct MmapSource {
    path: PathBuf,
    file: File,
    map: memmap2::Mmap,
}

impl fmt::Debug for MmapSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmapSource")
            .field("path", &self.path)
            .field("len", &self.map.len())
            .finish()
    }
}

impl MmapSource {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        // SAFETY: the map is read-only and private to this process. Another process truncating
        // the file underneath us would fault (SIGBUS); model files are immutable blobs in the
        // content-addressed store, which is the same assumption llama.cpp makes.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Ok(MmapSource { path, file, map })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn range(&self, offset: u64, len: u64) -> Option<(usize, usize)> {
        let o = usize::try_from(offset).ok()?;
        let l = usize::try_from(len).ok()?;
        (l > 0 && o.checked_add(l)? <= self.map.len()).then_some((o, l))
    }
}

impl ByteSource for MmapSource {
    fn len(&self) -> u64 {
        self.map.len() as u64
    }

    fn resident(&self) -> Option<&[u8]> {
        Some(&self.map)
    }

    /// `pread` rather than a copy out of the map: with layer streaming the pages it reads must
    /// not become part of this process's resident set.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        // Decode reads embedding rows through here: no allocation unless it fails.
        let what = || self.path.display().to_string();
        if buf.is_empty() || self.range(offset, buf.len() as u64).is_none() {
            slice_range(&what(), &self.map, offset, buf.len())?;
        }
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| Error::Source(format!("{}: read at {offset}: {e}", what())))
    }

    /// Drop the pages backing the range from this process's resident set
    /// (`madvise(MADV_DONTNEED)`); the kernel reads them again from the file (usually from the
    /// page cache) on the next access.
    fn release(&self, offset: u64, len: u64) {
        let Some((o, l)) = self.range(offset, len) else {
            return;
        };
        // SAFETY: the mapping is private and read-only over an immutable file, so dropped
        // pages come back with the same contents: no reference into the map can observe a
        // change. Failure only means the pages stay resident.
        let _ = unsafe {
            self.map
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, o, l)
        };
    }

    /// Map the range ahead of use (`MADV_POPULATE_READ`, falling back to `MADV_WILLNEED` on
    /// kernels without it).
    fn prefetch(&self, offset: u64, len: u64) {
        let Some((o, l)) = self.range(offset, len) else {
            return;
        };
        if self
            .map
            .advise_range(memmap2::Advice::PopulateRead, o, l)
            .is_err()
        {
            let _ = self.map.advise_range(memmap2::Advice::WillNeed, o, l);
        }
    }

    /// Ask for huge pages and make sure the page cache can serve them.
    ///
    /// Streaming maps and unmaps every weight once per token. Mapping 4 KiB pages one by one
    /// costs ~40-60 ms per token for a 640 MiB model (160k page-table entries each way), more
    /// than the whole decode step; a 2 MiB page cache folio mapped by one PMD entry costs
    /// almost nothing (the whole file in ~1 ms). So: `MADV_HUGEPAGE` on the map (faults and
    /// readahead then use PMD-sized folios where the file system allows), drop whatever
    /// loading mapped, then map the file window by window and ask the kernel how much went
    /// in as huge pages. A window cached in small folios (the file was read piecemeal before)
    /// is evicted (`POSIX_FADV_DONTNEED`, which leaves alone pages another process has
    /// mapped) and read back at once as huge folios. If that does not give huge pages (a file
    /// system without large folios), nothing more is evicted.
    fn prepare_streaming(&self) -> Option<f64> {
        let _ = self.map.advise(memmap2::Advice::HugePage);
        self.release(0, self.len());
        if thp_disabled() || !(self.map.as_ptr() as usize).is_multiple_of(HUGE_PAGE) {
            return None;
        }
        let end = self.map.len() & !(HUGE_PAGE - 1);
        let (mut huge, mut evicted, mut evict) = (0usize, 0usize, true);
        for at in (0..end).step_by(PROBE_WINDOW) {
            let w = PROBE_WINDOW.min(end - at);
            let mut pmd = self.pmd_mapped(at, w)?;
            if pmd < w && evict {
                // SAFETY: a syscall on a descriptor we own; page cache advice only, no
                // effect on this process's memory.
                unsafe {
                    libc::posix_fadvise(
                        self.file.as_raw_fd(),
                        at as libc::off_t,
                        w as libc::off_t,
                        libc::POSIX_FADV_DONTNEED,
                    );
                }
                evicted += w;
                pmd = self.pmd_mapped(at, w)?;
                evict = pmd == w;
            }
            huge += pmd;
        }
        let share = huge as f64 / self.map.len().max(1) as f64;
        tracing::debug!(
            path = %self.path.display(),
            huge_page_share = share,
            evicted_mib = evicted >> 20,
            "layer streaming: page cache prepared"
        );
        Some(share)
    }
}

/// The PMD page size on x86-64 and 4 KiB-page aarch64: layer streaming maps and releases the
/// file in windows aligned to it.
pub const HUGE_PAGE: usize = 2 << 20;

/// Bytes mapped at a time while checking the page cache for huge pages.
const PROBE_WINDOW: usize = 16 << 20;

/// Whether transparent huge pages are off system-wide (`[never]`).
fn thp_disabled() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|s| s.contains("[never]"))
}

impl MmapSource {
    /// Map `[at, at + len)` (huge-page aligned), read how many of its bytes went in as huge
    /// pages from `/proc/self/smaps`, and drop it again. `None` when the kernel cannot tell.
    fn pmd_mapped(&self, at: usize, len: usize) -> Option<usize> {
        self.map
            .advise_range(memmap2::Advice::PopulateRead, at, len)
            .ok()?;
        let kib = smaps_field(self.map.as_ptr() as usize, "FilePmdMapped:");
        self.release(at as u64, len as u64);
        usize::try_from(kib?).ok()?.checked_mul(1024)
    }
}
/// A `kB` field of the `/proc/self/smaps` entry of the mapping starting at `start`.
fn smaps_field(start: usize, field: &str) -> Option<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let head = format!("{start:x}-");
    // An entry starts with its address range ("7f00-7f80 r--s ..."); its fields follow.
    let is_head = |l: &str| {
        l.split_whitespace().next().is_some_and(|t| {
            t.contains('-') && t.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
        })
    };
    let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&head));
    lines.next()?;
    lines
        .take_while(|l| !is_head(l))
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Bytes held by the caller (a `Vec<u8>`, or plaintext in locked, zeroize-on-drop memory),
/// used in place.
pub struct MemorySource<T> {
    name: String,
    bytes: T,
}

impl<T: AsRef<[u8]>> fmt::Debug for MemorySource<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemorySource")
            .field("name", &self.name)
            .field("len", &self.bytes.as_ref().len())
            .finish()
    }
}

impl<T: AsRef<[u8]>> MemorySource<T> {
    /// `name` appears in error messages (a path, never the content).
    pub fn new(name: impl Into<String>, bytes: T) -> Self {
        MemorySource {
            name: name.into(),
            bytes,
        }
    }
}

impl<T: AsRef<[u8]> + Send + Sync> ByteSource for MemorySource<T> {
    fn len(&self) -> u64 {
        self.bytes.as_ref().len() as u64
    }

    fn resident(&self) -> Option<&[u8]> {
        Some(self.bytes.as_ref())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        buf.copy_from_slice(slice_range(
            &self.name,
            self.bytes.as_ref(),
            offset,
            buf.len(),
        )?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_past_the_end_are_errors_not_panics() {
        let s = MemorySource::new("mem", vec![1u8, 2, 3, 4]);
        let mut b = [0u8; 2];
        s.read_at(2, &mut b).expect("in range");
        assert_eq!(b, [3, 4]);
        for (off, len) in [(3u64, 2usize), (5, 0), (u64::MAX, 1), (u64::MAX - 1, 4)] {
            let mut b = vec![0u8; len];
            let e = s
                .read_at(off, &mut b)
                .expect_err("out of range")
                .to_string();
            assert!(e.contains("mem") && e.contains(&off.to_string()), "{e}");
        }
        assert!(s.read_at(4, &mut []).is_ok(), "an empty read at the end");
    }

    #[test]
    fn an_mmap_reads_with_pread_and_maps_only_what_is_prefetched() {
        let path = std::env::temp_dir().join(format!("picolm-mmap-{}.bin", std::process::id()));
        let data: Vec<u8> = (0..6usize << 20).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let s = MmapSource::open(&path).expect("open");
        let rss = || smaps_field(s.map.as_ptr() as usize, "Rss:").expect("smaps");
        let _ = s.prepare_streaming();
        assert_eq!(rss(), 0, "nothing mapped once streaming is prepared");
        let mut buf = vec![0u8; 1 << 20];
        s.read_at(3 << 20, &mut buf).expect("read");
        assert!(buf == data[3 << 20..4 << 20]);
        assert_eq!(rss(), 0, "a read maps nothing");
        s.prefetch(1 << 20, 1 << 20);
        assert!(rss() >= 1024, "prefetch maps the range");
        s.release(0, s.len());
        assert_eq!(rss(), 0, "release drops it");
        let e = s
            .read_at(s.len() - 1, &mut [0u8; 2])
            .expect_err("past the end")
            .to_string();
        assert!(
            e.contains("picolm-mmap") && e.contains("beyond the end"),
            "{e}"
        );
        let _ = std::fs::remove_file(&path);
    }
}
