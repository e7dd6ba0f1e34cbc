//! Weights from a streaming source, one layer at a time.
//!
//! With a resident source (an mmap, plaintext in memory) the forward pass reads every matrix in
//! place. With a streaming source (an encrypted file, see [`crate::source`]) nothing is
//! addressable: before layer `l` runs, its seven matrices are read into one reusable
//! [`Staging`] buffer (the file's contiguous runs, one `read_at` each) and the layer runs
//! against a copy of its [`Layer`] whose matrix offsets point into that buffer. After the layer
//! the buffer is wiped. Embedding rows and slices of the output head go through the same
//! buffer. It only grows, to the largest layer or head slice, so steady-state decode does not
//! allocate.
//!
//! With a resident source (an mmap) and layer streaming on, the same hooks map a layer's pages
//! before it runs (`MADV_POPULATE_READ`) and drop them after (`MADV_DONTNEED`), in windows
//! widened to whole huge pages so nothing stays mapped at the edges; embedding rows are read
//! with `pread`. Huge pages are what make this fast (see
//! [`crate::source::ByteSource::prepare_streaming`]): a 2 MiB page cache folio is mapped by one
//! page-table entry, so re-mapping every weight once per token costs about a millisecond for a
//! 640 MiB model, where copying the weights out of the page cache (`pread` into a staging
//! buffer) costs 25-60 ms, more than the decode step itself.

use zeroize::Zeroize;

use crate::error::{Error, Result};
use crate::model::{Layer, Model, Weight};
use crate::quant;
use crate::source::HUGE_PAGE;

/// A reusable buffer for plaintext weights read from a streaming source. Whatever it held is
/// wiped after each use, before it grows, and when it is dropped.
#[derive(Default)]
pub struct Staging {
    buf: Vec<u8>,
    /// Bytes that may hold plaintext now.
    used: usize,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging")
            .field("capacity", &self.buf.len())
            .field("used", &self.used)
            .finish()
    }
}

impl Staging {
    /// `len` writable bytes (contents unspecified; callers overwrite them all).
    fn take(&mut self, len: usize) -> &mut [u8] {
        if self.buf.len() < len {
            // Never let the allocator copy or free plaintext: wipe, then replace.
            self.buf.zeroize();
            self.buf = vec![0u8; len];
        }
        self.used = len;
        &mut self.buf[..len]
    }

    /// Zero the bytes the last use wrote.
    pub fn wipe(&mut self) {
        let n = self.used.min(self.buf.len());
        self.buf[..n].zeroize();
        self.used = 0;
    }

    /// Bytes currently reserved (the largest layer or head slice seen so far).
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

/// One contiguous byte range of the file and where it goes in the staging buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    file: u64,
    len: usize,
    at: usize,
}

/// Tensors this close are read as one run: GGUF pads each tensor to `general.alignment`, so a
/// layer written in order is a single run with a few padding bytes inside.
const MERGE_GAP: u64 = 4096;

/// Where a layer's matrices are in the file, and the layer re-addressed into the staging buffer.
#[derive(Clone, Debug)]
pub(crate) struct StagedLayer {
    runs: Vec<Run>,
    len: usize,
    layer: Layer,
}

impl StagedLayer {
    pub(crate) fn plan(layer: &Layer) -> Result<Self> {
        let mut spans: Vec<(u64, u64)> = layer
            .weights()
            .iter()
            .map(|w| (w.offset as u64, (w.offset + w.size) as u64))
            .collect();
        spans.sort_unstable();
        let mut runs: Vec<Run> = Vec::new();
        let mut at = 0usize;
        for (start, end) in spans {
            match runs.last_mut() {
                Some(r) if start <= r.file + r.len as u64 + MERGE_GAP => {
                    let new_end = end.max(r.file + r.len as u64);
                    let grown = usize::try_from(new_end - r.file)
                        .map_err(|_| Error::Unsupported("layer larger than memory".into()))?;
                    at += grown - r.len;
                    r.len = grown;
                }
                _ => {
                    let len = usize::try_from(end - start)
                        .map_err(|_| Error::Unsupported("tensor larger than memory".into()))?;
                    runs.push(Run {
                        file: start,
                        len,
                        at,
                    });
                    at += len;
                }
            }
        }
        let mut staged = layer.clone();
        for w in [
            &mut staged.wq,
            &mut staged.wk,
            &mut staged.wv,
            &mut staged.wo,
            &mut staged.w_gate,
            &mut staged.w_up,
            &mut staged.w_down,
        ] {
            let o = w.offset as u64;
            let r = runs
                .iter()
                .find(|r| o >= r.file && o + w.size as u64 <= r.file + r.len as u64)
                .ok_or_else(|| Error::tensor(&w.name, "not covered by its layer's runs"))?;
            w.offset = r.at + (o - r.file) as usize;
        }
        Ok(StagedLayer {
            runs,
            len: at,
            layer: staged,
        })
    }
}

impl Model {
    /// Whether weights are staged from a streaming source instead of read in place.
    pub fn is_staged(&self) -> bool {
        self.file.resident().is_none()
    }

    /// Layer `l`'s weights and the bytes their offsets index: the resident file and the layer
    /// itself, or the staging buffer filled from the source and the re-addressed layer.
    pub(crate) fn layer_weights<'a>(
        &'a self,
        l: usize,
        file: &'a [u8],
        stage: &'a mut Staging,
    ) -> Result<(&'a [u8], &'a Layer)> {
        let Some(plan) = self.staged.get(l) else {
            let layer = self
                .layers
                .get(l)
                .ok_or_else(|| Error::Request(format!("no layer {l}")))?;
            if self.layer_streaming {
                let (lo, hi) = layer_span(layer);
                self.file.prefetch(lo, hi - lo);
            }
            return Ok((file, layer));
        };
        let buf = stage.take(plan.len);
        for r in &plan.runs {
            if let Err(e) = self.file.read_at(r.file, &mut buf[r.at..r.at + r.len]) {
                stage.wipe();
                return Err(e);
            }
        }
        Ok((&stage.buf[..plan.len], &plan.layer))
    }

    /// After layer `l`: wipe the staged plaintext, or drop the layer's pages (layer streaming).
    pub(crate) fn finish_layer(&self, l: usize, stage: &mut Staging) {
        if self.is_staged() {
            stage.wipe();
        } else if self.layer_streaming
            && let Some(layer) = self.layers.get(l)
        {
            let (lo, hi) = layer_span(layer);
            self.release_window(lo, hi);
        }
    }

    /// Drop `[lo, hi)` widened to whole huge pages: a huge page mapped for the first or last
    /// bytes of a window (or by fault-around next to them) would otherwise stay mapped until
    /// its other part is released, a token later. Only one window is in use at a time, so
    /// dropping a neighbour's edge costs at most one re-map.
    fn release_window(&self, lo: usize, hi: usize) {
        let len = usize::try_from(self.file.len()).unwrap_or(usize::MAX);
        let (a, b) = widen_to_huge_pages(lo, hi, len);
        if a < b {
            self.file.release(a, b - a);
        }
    }

    /// Dequantize token `t`'s embedding row into `out` (`n_embd` floats).
    pub(crate) fn embed_token(
        &self,
        t: usize,
        out: &mut [f32],
        file: &[u8],
        stage: &mut Staging,
    ) -> Result<()> {
        let w = &self.tok_embd;
        let rb = w.row_bytes;
        let off = w.offset + t * rb;
        let dq = |row: &[u8], out: &mut [f32]| {
            quant::dequantize(w.ty, row, out).map_err(|e| Error::Quant(e.to_string()))
        };
        if self.is_staged() || self.layer_streaming {
            // Read (for an mmap: `pread`), so the row's pages never join the resident set.
            let buf = stage.take(rb);
            let r = self
                .file
                .read_at(off as u64, buf)
                .and_then(|()| dq(buf, out));
            stage.wipe();
            return r;
        }
        let row = file
            .get(off..off + rb)
            .ok_or_else(|| Error::tensor(&w.name, format!("row {t} is outside the file")))?;
        dq(row, out)
    }

    /// Rows `r0..r0 + rows` of the output head as a matrix of their own, and the bytes its
    /// offset indexes (the resident file, or the staging buffer filled from the source).
    pub(crate) fn head_rows<'a>(
        &'a self,
        r0: usize,
        rows: usize,
        file: &'a [u8],
        stage: &'a mut Staging,
    ) -> Result<(&'a [u8], Weight)> {
        let w = &self.output;
        let mut part = Weight {
            name: String::new(),
            ty: w.ty,
            rows,
            cols: w.cols,
            offset: w.offset + r0 * w.row_bytes,
            size: rows * w.row_bytes,
            row_bytes: w.row_bytes,
        };
        if !self.is_staged() {
            self.file.prefetch(part.offset, part.size);
            return Ok((file, part));
        }
        let buf = stage.take(part.size);
        if let Err(e) = self.file.read_at(part.offset as u64, buf) {
            stage.wipe();
            return Err(e);
        }
        part.offset = 0;
        Ok((&stage.buf[..part.size], part))
    }

    /// After a slice of the output head: wipe it, or drop its pages.
    pub(crate) fn finish_head_rows(&self, part: &Weight, stage: &mut Staging) {
        if self.is_staged() {
            stage.wipe();
        } else {
            self.release_window(part.offset, part.offset + part.size);
        }
    }
}

/// `[lo, hi)` widened to whole huge pages, clipped to a file of `len` bytes.
fn widen_to_huge_pages(lo: usize, hi: usize, len: usize) -> (usize, usize) {
    let a = lo & !(HUGE_PAGE - 1);
    let b = hi.saturating_add(HUGE_PAGE - 1) & !(HUGE_PAGE - 1);
    (a.min(len), b.min(len))
}

/// The bytes of the file a layer's matrices cover (with the padding and small tensors between
/// them: a layer is written contiguously).
fn layer_span(layer: &Layer) -> (usize, usize) {
    let ws = layer.weights();
    let lo = ws.iter().map(|w| w.offset).min().unwrap_or(0);
    let hi = ws.iter().map(|w| w.offset + w.size).max().unwrap_or(lo);
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::GgmlType;

    fn w(name: &str, offset: usize, size: usize) -> Weight {
        Weight {
            name: name.into(),
            ty: GgmlType::F32,
            rows: 1,
            cols: size / 4,
            offset,
            size,
            row_bytes: size,
        }
    }

    fn layer(offsets: [(usize, usize); 7]) -> Layer {
        let m = |i: usize| w(&format!("m{i}"), offsets[i].0, offsets[i].1);
        Layer {
            attn_norm: vec![],
            wq: m(0),
            wk: m(1),
            wv: m(2),
            wo: m(3),
            bq: None,
            bk: None,
            bv: None,
            ffn_norm: vec![],
            w_gate: m(4),
            w_up: m(5),
            w_down: m(6),
        }
    }

    #[test]
    fn a_layer_written_in_order_is_one_run() {
        // 64-byte tensors padded to 96: one run covering everything, padding included.
        let l = layer(std::array::from_fn(|i| (1000 + i * 96, 64)));
        let p = StagedLayer::plan(&l).expect("plan");
        assert_eq!(
            p.runs,
            vec![Run {
                file: 1000,
                len: 6 * 96 + 64,
                at: 0
            }]
        );
        for (orig, st) in l.weights().iter().zip(p.layer.weights()) {
            assert_eq!(st.offset, orig.offset - 1000);
            assert_eq!(st.size, orig.size);
        }
    }

    #[test]
    fn scattered_and_overlapping_tensors_are_packed() {
        let mut o = [(0usize, 0usize); 7];
        o[0] = (1 << 20, 100); // far away: its own run
        for (i, x) in o.iter_mut().enumerate().skip(1) {
            *x = (10 * i, 30); // overlapping neighbours: one run
        }
        let l = layer(o);
        let p = StagedLayer::plan(&l).expect("plan");
        assert_eq!(p.runs.len(), 2);
        assert_eq!(p.len, (60 + 30 - 10) + 100);
        // Every matrix lands where its bytes were copied to.
        for (orig, st) in l.weights().iter().zip(p.layer.weights()) {
            let r = p
                .runs
                .iter()
                .find(|r| st.offset >= r.at && st.offset + st.size <= r.at + r.len)
                .expect("inside a run");
            assert_eq!(
                r.file as usize + (st.offset - r.at),
                orig.offset,
                "{}",
                orig.name
            );
        }
    }

    #[test]
    fn released_windows_cover_whole_huge_pages_inside_the_file() {
        const H: usize = HUGE_PAGE;
        assert_eq!(widen_to_huge_pages(H + 5, 2 * H + 1, 10 * H), (H, 3 * H));
        assert_eq!(widen_to_huge_pages(H, 2 * H, 10 * H), (H, 2 * H));
        assert_eq!(widen_to_huge_pages(0, 1, 10 * H), (0, H));
        // The last huge page is clipped to the end of the file.
        assert_eq!(
            widen_to_huge_pages(9 * H + 7, 9 * H + 9, 9 * H + 100),
            (9 * H, 9 * H + 100)
        );
        // No overflow at the top of the address space.
        let (a, b) = widen_to_huge_pages(usize::MAX - 3, usize::MAX, usize::MAX);
        assert!(a <= b);
    }

    #[test]
    fn staging_is_wiped_after_use_and_before_growing() {
        let mut s = Staging::default();
        s.take(8).copy_from_slice(&[7u8; 8]);
        s.wipe();
        assert!(s.buf.iter().all(|&b| b == 0));
        s.take(4).copy_from_slice(&[9u8; 4]);
        let _ = s.take(64); // grows: the old buffer is wiped before it is freed
        assert_eq!(s.capacity(), 64);
        assert!(s.buf.iter().all(|&b| b == 0));
    }
}
