//! Encrypted models (`.enc`, DESIGN §3.5): chunked AES-256-GCM for random access, after age's
//! STREAM construction.
//!
//! ```text
//! header (64 bytes): "A3SPENC1" | be16 version=1 | be16 flags=0 | be32 chunk_size
//!                    | be64 plaintext_len | nonce_prefix[8] | key_id[32]
//! chunk i:           AES-256-GCM(key, nonce = prefix || be32(i),
//!                                aad = header || be64(i) || last_flag) = ciphertext || tag16
//! ```
//!
//! The file size is fixed by the header, every chunk authenticates the whole header, its index
//! and whether it is last, and each file has its own random nonce prefix: truncation, extension,
//! reordering, splicing between files, header edits and a wrong key all fail. Decryption modes:
//! memory (locked, zeroized), temporary file (overwritten and removed on drop) and streaming
//! (only the chunks covering a byte range: [`EncryptedModel::read_into`] decrypts them in place
//! in the caller's buffer, the partial ones at the range's edges through a zeroizing buffer).
//! Errors name the file, the chunk and its offsets, never plaintext or key material.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result, parse_hex};
use crate::reader::Reader;

pub const MAGIC: &[u8; 8] = b"A3SPENC1";
pub const HEADER_LEN: usize = 64;
pub const TAG_LEN: usize = 16;
pub const VERSION: u16 = 1;
pub const MIN_CHUNK: u32 = 4096;
pub const MAX_CHUNK: u32 = 64 << 20;
pub const DEFAULT_CHUNK: u32 = 1 << 20;
/// Plaintexts up to 1 TiB.
pub const MAX_PLAINTEXT: u64 = 1 << 40;
const KEY_ID_TAG: &[u8] = b"a3s-power/model-key/v1";

/// A 256-bit model key (zeroized on drop).
#[derive(Clone)]
pub struct ModelKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for ModelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ModelKey(id {})", hex::encode(&self.key_id()[..8]))
    }
}

impl ModelKey {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        ModelKey(Zeroizing::new(b))
    }
    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
        let k = ModelKey::from_bytes(b);
        b.zeroize();
        k
    }
    pub fn from_hex(source: &str, text: &str) -> Result<Self> {
        Ok(ModelKey::from_bytes(parse_hex::<32>(source, text.trim())?))
    }
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(*self.0))
    }
    /// SHA-256(tag || 0 || key): names the key in headers without revealing it.
    pub fn key_id(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(KEY_ID_TAG);
        h.update([0]);
        h.update(*self.0);
        h.finalize().into()
    }
    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&*self.0).into())
    }
}

/// Where keys come from.
pub trait KeyProvider: Send + Sync + std::fmt::Debug {
    /// The key to encrypt with.
    fn current(&self) -> Result<ModelKey>;
    /// The key whose id is `key_id`.
    fn key_for(&self, key_id: &[u8; 32]) -> Result<ModelKey>;
}

/// One key, from a hex file or an environment variable.
#[derive(Debug, Clone)]
pub struct StaticKeyProvider(ModelKey);

impl StaticKeyProvider {
    pub fn new(key: ModelKey) -> Self {
        StaticKeyProvider(key)
    }
    pub fn from_file(path: &Path) -> Result<Self> {
        let t = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| Error::io(path.display(), e))?,
        );
        Ok(StaticKeyProvider(ModelKey::from_hex(
            &path.display().to_string(),
            &t,
        )?))
    }
    pub fn from_env(var: &str) -> Result<Self> {
        let t = Zeroizing::new(std::env::var(var).map_err(|_| Error::Key {
            source_name: format!("${var}"),
            reason: "not set".into(),
        })?);
        Ok(StaticKeyProvider(ModelKey::from_hex(
            &format!("${var}"),
            &t,
        )?))
    }
}

impl KeyProvider for StaticKeyProvider {
    fn current(&self) -> Result<ModelKey> {
        Ok(self.0.clone())
    }
    fn key_for(&self, key_id: &[u8; 32]) -> Result<ModelKey> {
        if &self.0.key_id() == key_id {
            Ok(self.0.clone())
        } else {
            Err(Error::Key {
                source_name: "static key".into(),
                reason: format!(
                    "file needs key id {}, have {}",
                    hex::encode(key_id),
                    hex::encode(self.0.key_id())
                ),
            })
        }
    }
}

/// A current key plus previous ones still accepted for decryption (key rotation).
#[derive(Debug, Clone)]
pub struct RotatingKeyProvider {
    pub current: ModelKey,
    pub previous: Vec<ModelKey>,
}

impl KeyProvider for RotatingKeyProvider {
    fn current(&self) -> Result<ModelKey> {
        Ok(self.current.clone())
    }
    fn key_for(&self, key_id: &[u8; 32]) -> Result<ModelKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| &k.key_id() == key_id)
            .cloned()
            .ok_or_else(|| Error::Key {
                source_name: "rotating keys".into(),
                reason: format!("no key with id {}", hex::encode(key_id)),
            })
    }
}

/// The parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub chunk_size: u32,
    pub plaintext_len: u64,
    pub nonce_prefix: [u8; 8],
    pub key_id: [u8; 32],
    raw: [u8; HEADER_LEN],
}

impl Header {
    fn new(chunk_size: u32, plaintext_len: u64, nonce_prefix: [u8; 8], key_id: [u8; 32]) -> Header {
        let mut raw = [0u8; HEADER_LEN];
        raw[..8].copy_from_slice(MAGIC);
        raw[8..10].copy_from_slice(&VERSION.to_be_bytes());
        raw[12..16].copy_from_slice(&chunk_size.to_be_bytes());
        raw[16..24].copy_from_slice(&plaintext_len.to_be_bytes());
        raw[24..32].copy_from_slice(&nonce_prefix);
        raw[32..64].copy_from_slice(&key_id);
        Header {
            chunk_size,
            plaintext_len,
            nonce_prefix,
            key_id,
            raw,
        }
    }

    /// Strict parse of the 64 header bytes.
    pub fn parse(b: &[u8]) -> Result<Header> {
        let bad = |off: usize, r: String| Error::Encrypted(format!("header offset {off}: {r}"));
        let mut r = Reader::new("encrypted model header", b);
        let raw: [u8; HEADER_LEN] = r.array("header")?;
        let mut f = Reader::new("encrypted model header", &raw);
        if f.take("magic", 8)? != MAGIC {
            return Err(bad(0, "magic is not \"A3SPENC1\"".into()));
        }
        let version = f.u16_be("version")?;
        if version != VERSION {
            return Err(bad(
                8,
                format!("version {version} unsupported, expected {VERSION}"),
            ));
        }
        let flags = f.u16_be("flags")?;
        if flags != 0 {
            return Err(bad(10, format!("unknown flags {flags:#06x}")));
        }
        let chunk_size = f.u32_be("chunk_size")?;
        if !(MIN_CHUNK..=MAX_CHUNK).contains(&chunk_size) {
            return Err(bad(
                12,
                format!("chunk size {chunk_size} not in {MIN_CHUNK}..={MAX_CHUNK}"),
            ));
        }
        let plaintext_len = f.u64_be("plaintext_len")?;
        if plaintext_len > MAX_PLAINTEXT {
            return Err(bad(
                16,
                format!("plaintext length {plaintext_len} exceeds {MAX_PLAINTEXT}"),
            ));
        }
        let nonce_prefix = f.array("nonce_prefix")?;
        let key_id = f.array("key_id")?;
        Ok(Header {
            chunk_size,
            plaintext_len,
            nonce_prefix,
            key_id,
            raw,
        })
    }
    pub fn chunk_count(&self) -> u64 {
        self.plaintext_len.div_ceil(self.chunk_size as u64).max(1)
    }
    /// Total `.enc` size implied by the header.
    pub fn file_len(&self) -> u64 {
        HEADER_LEN as u64 + self.plaintext_len + self.chunk_count() * TAG_LEN as u64
    }
    /// Plaintext offset of chunk `i`.
    pub fn chunk_start(&self, i: u64) -> u64 {
        i * self.chunk_size as u64
    }
    /// `.enc` file offset of chunk `i` (its ciphertext, then its tag).
    pub fn chunk_file_offset(&self, i: u64) -> u64 {
        HEADER_LEN as u64 + i * (self.chunk_size as u64 + TAG_LEN as u64)
    }
    pub fn chunk_plain_len(&self, i: u64) -> usize {
        let start = i * self.chunk_size as u64;
        (self.plaintext_len - start).min(self.chunk_size as u64) as usize
    }
    fn nonce(&self, i: u64) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&self.nonce_prefix);
        n[8..].copy_from_slice(&(i as u32).to_be_bytes());
        n
    }
    fn aad(&self, i: u64) -> [u8; HEADER_LEN + 9] {
        let mut a = [0u8; HEADER_LEN + 9];
        a[..HEADER_LEN].copy_from_slice(&self.raw);
        a[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&i.to_be_bytes());
        a[HEADER_LEN + 8] = (i + 1 == self.chunk_count()) as u8;
        a
    }
    pub fn raw(&self) -> &[u8; HEADER_LEN] {
        &self.raw
    }
}

/// Encrypt `src` to `dst` with `key`. Returns the header and the plaintext SHA-256.
pub fn encrypt_file(
    src: &Path,
    dst: &Path,
    key: &ModelKey,
    chunk_size: u32,
) -> Result<(Header, [u8; 32])> {
    if !(MIN_CHUNK..=MAX_CHUNK).contains(&chunk_size) {
        return Err(Error::Encrypted(format!(
            "chunk size {chunk_size} not in {MIN_CHUNK}..={MAX_CHUNK}"
        )));
    }
    let mut input = File::open(src).map_err(|e| Error::io(src.display(), e))?;
    let len = input
        .metadata()
        .map_err(|e| Error::io(src.display(), e))?
        .len();
    if len > MAX_PLAINTEXT {
        return Err(Error::Encrypted(format!(
            "{}: {len} bytes exceeds {MAX_PLAINTEXT}",
            src.display()
        )));
    }
    let mut prefix = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut prefix);
    let header = Header::new(chunk_size, len, prefix, key.key_id());
    if header.chunk_count() > u32::MAX as u64 {
        return Err(Error::Encrypted(
            "too many chunks; use a larger chunk size".into(),
        ));
    }
    let tmp = dst.with_extension("enc.partial");
    let mut out = File::create(&tmp).map_err(|e| Error::io(tmp.display(), e))?;
    out.write_all(&header.raw)
        .map_err(|e| Error::io(tmp.display(), e))?;
    let cipher = key.cipher();
    let mut digest = Sha256::new();
    let mut buf = Zeroizing::new(vec![0u8; chunk_size as usize]);
    for i in 0..header.chunk_count() {
        let n = header.chunk_plain_len(i);
        input
            .read_exact(&mut buf[..n])
            .map_err(|e| Error::io(src.display(), e))?;
        digest.update(&buf[..n]);
        let ct = cipher
            .encrypt(
                &Nonce::from(header.nonce(i)),
                Payload {
                    msg: &buf[..n],
                    aad: &header.aad(i),
                },
            )
            .map_err(|_| Error::Encrypted("AES-GCM encryption failed".into()))?;
        out.write_all(&ct)
            .map_err(|e| Error::io(tmp.display(), e))?;
    }
    out.sync_all().map_err(|e| Error::io(tmp.display(), e))?;
    std::fs::rename(&tmp, dst).map_err(|e| Error::io(dst.display(), e))?;
    Ok((header, digest.finalize().into()))
}

/// An opened `.enc` file.
#[derive(Debug)]
pub struct EncryptedModel {
    file: File,
    path: PathBuf,
    pub header: Header,
    key: ModelKey,
    /// Streaming mode: a chunk only partly inside a requested range is decrypted here (one
    /// chunk, allocated on first use, wiped after each use).
    edge: Mutex<Zeroizing<Vec<u8>>>,
}

impl EncryptedModel {
    /// Open, parse the header, check the file size and fetch the key by id.
    pub fn open(path: &Path, keys: &dyn KeyProvider) -> Result<EncryptedModel> {
        let mut file = File::open(path).map_err(|e| Error::io(path.display(), e))?;
        let mut raw = [0u8; HEADER_LEN];
        file.read_exact(&mut raw)
            .map_err(|e| Error::Encrypted(format!("{}: header: {e}", path.display())))?;
        let header = Header::parse(&raw)?;
        let actual = file
            .metadata()
            .map_err(|e| Error::io(path.display(), e))?
            .len();
        if actual != header.file_len() {
            return Err(Error::Encrypted(format!(
                "{}: file is {actual} bytes, header implies {} (truncated or extended)",
                path.display(),
                header.file_len()
            )));
        }
        let key = keys.key_for(&header.key_id).map_err(|e| match e {
            Error::Key {
                source_name,
                reason,
            } => Error::Key {
                source_name,
                reason: format!("{}: {reason}", path.display()),
            },
            other => other,
        })?;
        Ok(EncryptedModel {
            file,
            path: path.to_path_buf(),
            header,
            key,
            edge: Mutex::new(Zeroizing::new(Vec::new())),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Decrypt chunk `i` in place: `buf` (exactly the chunk's plaintext length) receives its
    /// ciphertext, then its plaintext once the tag verifies. On failure `buf` is zeroed.
    fn decrypt_chunk_into(&self, cipher: &Aes256Gcm, i: u64, buf: &mut [u8]) -> Result<()> {
        let h = &self.header;
        let off = h.chunk_file_offset(i);
        let (p0, p1) = (h.chunk_start(i), h.chunk_start(i) + buf.len() as u64);
        let mut tag = [0u8; TAG_LEN];
        let read = self
            .file
            .read_exact_at(buf, off)
            .and_then(|()| self.file.read_exact_at(&mut tag, off + buf.len() as u64));
        if let Err(e) = read {
            buf.zeroize();
            return Err(Error::Encrypted(format!(
                "{}: chunk {i} (file offset {off}): {e}",
                self.path.display()
            )));
        }
        cipher
            .decrypt_in_place_detached(&Nonce::from(h.nonce(i)), &h.aad(i), buf, &Tag::from(tag))
            .map_err(|_| {
                buf.zeroize();
                Error::Encrypted(format!(
                    "{}: chunk {i} of {} (file offset {off}, plaintext bytes {p0}..{p1}) fails \
                     authentication: wrong key, or the file was edited, truncated, reordered or \
                     spliced",
                    self.path.display(),
                    h.chunk_count()
                ))
            })
    }

    /// Streaming mode without allocation: plaintext bytes `[offset, offset + out.len())` into
    /// `out`, decrypting and authenticating exactly the chunks that cover them. Chunks wholly
    /// inside the range are decrypted in place in `out`; the one or two at its edges go
    /// through a zeroizing buffer. On error, `out` is zeroed.
    pub fn read_into(&self, offset: u64, out: &mut [u8]) -> Result<()> {
        let h = &self.header;
        let end = offset
            .checked_add(out.len() as u64)
            .filter(|e| *e <= h.plaintext_len)
            .ok_or_else(|| {
                Error::Encrypted(format!(
                    "{}: range {offset}+{} beyond plaintext length {}",
                    self.path.display(),
                    out.len(),
                    h.plaintext_len
                ))
            })?;
        if out.is_empty() {
            return Ok(());
        }
        let r = self.read_chunks(offset, end, out);
        if r.is_err() {
            out.zeroize();
        }
        r
    }

    fn read_chunks(&self, offset: u64, end: u64, out: &mut [u8]) -> Result<()> {
        let h = &self.header;
        let cipher = self.key.cipher();
        let cs = h.chunk_size as u64;
        for i in offset / cs..=(end - 1) / cs {
            let (base, n) = (h.chunk_start(i), h.chunk_plain_len(i));
            let (a, b) = (offset.max(base), end.min(base + n as u64));
            let dst = &mut out[(a - offset) as usize..(b - offset) as usize];
            if a == base && b == base + n as u64 {
                self.decrypt_chunk_into(&cipher, i, dst)?;
                continue;
            }
            let mut edge = self
                .edge
                .lock()
                .map_err(|_| Error::Encrypted("edge buffer poisoned".into()))?;
            if edge.len() < n {
                edge.zeroize();
                *edge = Zeroizing::new(vec![0u8; h.chunk_size as usize]);
            }
            self.decrypt_chunk_into(&cipher, i, &mut edge[..n])?;
            dst.copy_from_slice(&edge[(a - base) as usize..(b - base) as usize]);
            edge[..n].zeroize();
        }
        Ok(())
    }

    pub fn plaintext_len(&self) -> u64 {
        self.header.plaintext_len
    }

    /// Decrypt chunk `i` into a zeroizing buffer.
    pub fn decrypt_chunk(&self, i: u64) -> Result<Zeroizing<Vec<u8>>> {
        if i >= self.header.chunk_count() {
            return Err(Error::Encrypted(format!(
                "{}: chunk {i} out of range (0..{})",
                self.path.display(),
                self.header.chunk_count()
            )));
        }
        let mut buf = Zeroizing::new(vec![0u8; self.header.chunk_plain_len(i)]);
        self.decrypt_chunk_into(&self.key.cipher(), i, &mut buf)?;
        Ok(buf)
    }

    /// Streaming mode: plaintext bytes `offset..offset+len` in a new zeroizing buffer,
    /// decrypting only the chunks covering them (see [`EncryptedModel::read_into`]).
    pub fn read_range(&self, offset: u64, len: usize) -> Result<Zeroizing<Vec<u8>>> {
        if offset
            .checked_add(len as u64)
            .is_none_or(|e| e > self.header.plaintext_len)
        {
            return Err(Error::Encrypted(format!(
                "{}: range {offset}+{len} beyond plaintext length {}",
                self.path.display(),
                self.header.plaintext_len
            )));
        }
        let mut out = Zeroizing::new(vec![0u8; len]);
        self.read_into(offset, &mut out)?;
        Ok(out)
    }

    /// Decrypt every chunk in order, feeding `sink`, and check the plaintext SHA-256 against
    /// `pinned`. One chunk-sized zeroizing buffer is reused.
    pub fn for_each_chunk(
        &self,
        pinned: Option<&[u8; 32]>,
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<[u8; 32]> {
        let cipher = self.key.cipher();
        let mut h = Sha256::new();
        let cap = (self.header.chunk_size as u64).min(self.header.plaintext_len) as usize;
        let mut buf = Zeroizing::new(vec![0u8; cap]);
        for i in 0..self.header.chunk_count() {
            let c = &mut buf[..self.header.chunk_plain_len(i)];
            self.decrypt_chunk_into(&cipher, i, c)?;
            h.update(&*c);
            sink(c)?;
        }
        let d: [u8; 32] = h.finalize().into();
        self.check_pin(&d, pinned)?;
        Ok(d)
    }

    fn check_pin(&self, digest: &[u8; 32], pinned: Option<&[u8; 32]>) -> Result<()> {
        match pinned {
            Some(p) if p != digest => Err(Error::Encrypted(format!(
                "{}: plaintext sha256 {} differs from the pinned {}",
                self.path.display(),
                hex::encode(digest),
                hex::encode(p)
            ))),
            _ => Ok(()),
        }
    }

    /// Streaming mode's load-time check: decrypt and authenticate every chunk, hash the
    /// plaintext (nothing is kept) and compare with the pin. Returns the digest.
    pub fn plaintext_digest(&self, pinned: Option<&[u8; 32]>) -> Result<[u8; 32]> {
        self.for_each_chunk(pinned, |_| Ok(()))
    }

    /// [`EncryptedModel::plaintext_digest`] against a pin.
    pub fn verify_digest(&self, pinned: &[u8; 32]) -> Result<()> {
        self.plaintext_digest(Some(pinned)).map(|_| ())
    }

    /// Memory mode: the whole plaintext in locked (where the memlock limit allows; see
    /// [`LockedPlaintext::is_locked`]), zeroize-on-drop memory, digest checked. The buffer is
    /// locked before any plaintext is written to it and every chunk is decrypted in place.
    pub fn decrypt_to_memory(&self, pinned: Option<&[u8; 32]>) -> Result<LockedPlaintext> {
        let len = usize::try_from(self.header.plaintext_len).map_err(|_| {
            Error::Encrypted(format!("{}: too large for memory", self.path.display()))
        })?;
        // Bounded by the real file size (checked in `open`), not only by the header.
        let buf = Zeroizing::new(vec![0u8; len]);
        let lock = region::lock(buf.as_ptr(), len.max(1)).ok();
        // From here on, dropping `lp` (also on error) wipes the plaintext, then unlocks.
        let mut lp = LockedPlaintext {
            lock,
            buf,
            sha256: [0; 32],
        };
        let cipher = self.key.cipher();
        let mut h = Sha256::new();
        for i in 0..self.header.chunk_count() {
            let a = self.header.chunk_start(i) as usize;
            let c = &mut lp.buf[a..a + self.header.chunk_plain_len(i)];
            self.decrypt_chunk_into(&cipher, i, c)?;
            h.update(&*c);
        }
        lp.sha256 = h.finalize().into();
        self.check_pin(&lp.sha256, pinned)?;
        Ok(lp)
    }

    /// File mode: plaintext in a temporary file in `dir` (mode 0600), overwritten and removed on drop.
    pub fn decrypt_to_temp_file(
        &self,
        dir: &Path,
        pinned: Option<&[u8; 32]>,
    ) -> Result<TempPlaintext> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut name = [0u8; 12];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut name);
        let path = dir.join(format!(".a3s-plain-{}", hex::encode(name)));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(path.display(), e))?;
        let mut t = TempPlaintext {
            path: path.clone(),
            len: self.header.plaintext_len,
            sha256: [0; 32],
        };
        t.sha256 = self.for_each_chunk(pinned, |c| {
            f.write_all(c).map_err(|e| Error::io(path.display(), e))
        })?;
        f.sync_all().map_err(|e| Error::io(path.display(), e))?;
        Ok(t)
    }
}

/// Plaintext in memory: locked against swap where permitted, zeroized on drop (before the
/// pages are unlocked).
pub struct LockedPlaintext {
    lock: Option<region::LockGuard>,
    buf: Zeroizing<Vec<u8>>,
    sha256: [u8; 32],
}

impl std::fmt::Debug for LockedPlaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LockedPlaintext({} bytes, locked: {})",
            self.buf.len(),
            self.lock.is_some()
        )
    }
}

impl LockedPlaintext {
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
    /// Whether `mlock` succeeded (it fails beyond `RLIMIT_MEMLOCK`); unlocked plaintext could
    /// reach swap.
    pub fn is_locked(&self) -> bool {
        self.lock.is_some()
    }
    /// SHA-256 of the plaintext, computed while decrypting.
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }
}

impl AsRef<[u8]> for LockedPlaintext {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for LockedPlaintext {
    fn drop(&mut self) {
        self.buf.zeroize();
        self.lock = None;
    }
}

/// A temporary plaintext file; overwritten with zeros and removed on drop.
#[derive(Debug)]
pub struct TempPlaintext {
    path: PathBuf,
    len: u64,
    sha256: [u8; 32],
}

impl TempPlaintext {
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// SHA-256 of the plaintext, computed while decrypting.
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }
}

impl Drop for TempPlaintext {
    fn drop(&mut self) {
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&self.path) {
            let zeros = vec![0u8; 1 << 20];
            let mut left = self.len;
            let _ = f.seek(SeekFrom::Start(0));
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                if f.write_all(&zeros[..n]).is_err() {
                    break;
                }
                left -= n as u64;
            }
            let _ = f.sync_all();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
