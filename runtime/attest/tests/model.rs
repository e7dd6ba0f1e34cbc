//! Model sealing (Ed25519 `.sig`) and the chunked AES-256-GCM `.enc` format with its negative
//! cases: truncation, extension, chunk reordering, splicing between files, header edits, wrong key.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use power_attest::model_crypt::{
    self, EncryptedModel, HEADER_LEN, Header, ModelKey, RotatingKeyProvider, StaticKeyProvider,
    TAG_LEN,
};
use power_attest::model_seal;
use sha2::Digest;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("a3s-model-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn plaintext(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[0] ^ seed)
        .collect()
}

#[test]
fn seal_and_verify() {
    let d = dir("seal");
    let f = d.join("m.gguf");
    std::fs::write(&f, plaintext(10_000, 1)).unwrap();
    let sk = model_seal::generate_signing_key();
    let (digest, sig) = model_seal::seal_file(&f, &sk).unwrap();
    assert_eq!(sig, d.join("m.gguf.sig"));
    let vk = sk.verifying_key();
    assert_eq!(
        model_seal::verify_file(&f, &vk, Some(&digest)).unwrap(),
        digest
    );
    // Message layout is exactly tag || 0 || sha256.
    assert_eq!(
        model_seal::seal_message(&[7; 32]),
        [b"a3s-power/model/v1".as_slice(), &[0], &[7; 32]].concat()
    );
    // Tampered model, wrong pin, wrong key, edited signature.
    let other = model_seal::generate_signing_key().verifying_key();
    assert!(model_seal::verify_file(&f, &other, None).is_err());
    assert!(
        model_seal::verify_file(&f, &vk, Some(&[0; 32]))
            .unwrap_err()
            .to_string()
            .contains("pinned")
    );
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[5] ^= 1;
    std::fs::write(&f, &bytes).unwrap();
    assert!(model_seal::verify_file(&f, &vk, None).is_err());
    std::fs::remove_dir_all(&d).ok();
}

fn encrypted(
    d: &std::path::Path,
    name: &str,
    len: usize,
    key: &ModelKey,
) -> (PathBuf, Vec<u8>, [u8; 32]) {
    let src = d.join(format!("{name}.gguf"));
    let pt = plaintext(len, name.len() as u8);
    std::fs::write(&src, &pt).unwrap();
    let dst = d.join(format!("{name}.enc"));
    let (h, digest) = model_crypt::encrypt_file(&src, &dst, key, 4096).unwrap();
    assert_eq!(h.plaintext_len, len as u64);
    (dst, pt, digest)
}

#[test]
fn round_trip_in_all_modes() {
    let d = dir("rt");
    let key = ModelKey::generate();
    let keys = StaticKeyProvider::new(key.clone());
    for len in [0usize, 1, 4095, 4096, 4097, 3 * 4096 + 17] {
        let (enc, pt, digest) = encrypted(&d, &format!("m{len}"), len, &key);
        assert_eq!(
            std::fs::metadata(&enc).unwrap().len() as usize,
            HEADER_LEN + len + len.div_ceil(4096).max(1) * TAG_LEN
        );
        let m = EncryptedModel::open(&enc, &keys).unwrap();
        assert_eq!(
            m.decrypt_to_memory(Some(&digest)).unwrap().as_bytes(),
            pt.as_slice()
        );
        let tmp = m.decrypt_to_temp_file(&d, Some(&digest)).unwrap();
        assert_eq!(std::fs::read(tmp.path()).unwrap(), pt);
        let p = tmp.path().to_path_buf();
        drop(tmp);
        assert!(!p.exists(), "temporary plaintext removed on drop");
        if len > 10 {
            for (off, n) in [
                (0u64, 1usize),
                (4090, 20),
                (len as u64 - 3, 3),
                (1, len - 2),
            ] {
                if off as usize + n > len {
                    continue;
                }
                assert_eq!(
                    m.read_range(off, n).unwrap().as_slice(),
                    &pt[off as usize..off as usize + n]
                );
            }
            assert!(m.read_range(len as u64 - 1, 2).is_err());
        }
        m.verify_digest(&digest).unwrap();
        assert!(
            m.verify_digest(&[0; 32])
                .unwrap_err()
                .to_string()
                .contains("pinned")
        );
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn streaming_reads_decrypt_the_covering_chunks_in_place() {
    let d = dir("stream");
    let key = ModelKey::generate();
    let keys = StaticKeyProvider::new(key.clone());
    let len = 5 * 4096 + 123;
    let (enc, pt, _) = encrypted(&d, "s", len, &key);
    let m = EncryptedModel::open(&enc, &keys).unwrap();
    // Ranges inside one chunk, across boundaries, covering whole chunks, up to the end.
    for off in [0usize, 1, 4095, 4096, 4097, 8191, 12_000, len - 1, len] {
        for n in [0usize, 1, 2, 4096, 4097, 8193, 3 * 4096, len] {
            if off + n > len {
                continue;
            }
            let mut buf = vec![0xAA; n];
            m.read_into(off as u64, &mut buf).unwrap();
            assert!(buf == pt[off..off + n], "range {off}+{n}");
        }
    }
    let mut one = [0u8; 1];
    let e = m.read_into(len as u64, &mut one).unwrap_err().to_string();
    assert!(
        e.contains("beyond plaintext length") && e.contains("s.enc"),
        "{e}"
    );
    assert!(m.read_into(u64::MAX, &mut one).is_err());

    // Chunk 2 edited after open: ranges that avoid it still read; ranges that touch it fail,
    // name the chunk and its offsets, and leave the caller's buffer zeroed.
    let mut bytes = std::fs::read(&enc).unwrap();
    let c2 = HEADER_LEN + 2 * (4096 + TAG_LEN) + 10;
    bytes[c2] ^= 1;
    std::fs::write(&enc, &bytes).unwrap();
    let mut buf = vec![0u8; 100];
    m.read_into(4096 + 50, &mut buf).unwrap();
    assert!(buf == pt[4096 + 50..4096 + 150]);
    for (off, n) in [(2 * 4096 + 5, 10), (4096, 2 * 4096), (0, len)] {
        let mut buf = vec![0xAA; n];
        let e = m.read_into(off as u64, &mut buf).unwrap_err().to_string();
        assert!(
            e.contains("chunk 2 of 6") && e.contains("plaintext bytes 8192..12288"),
            "{e}"
        );
        assert!(
            e.contains("s.enc") && e.contains("fails authentication"),
            "{e}"
        );
        assert!(
            buf.iter().all(|&b| b == 0),
            "buffer wiped after a failed read"
        );
    }
    let e = m.plaintext_digest(None).unwrap_err().to_string();
    assert!(e.contains("chunk 2 of 6"), "{e}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn memory_and_file_modes_report_the_plaintext_digest() {
    let d = dir("digest");
    let key = ModelKey::generate();
    let keys = StaticKeyProvider::new(key.clone());
    let (enc, pt, digest) = encrypted(&d, "m", 3 * 4096 + 5, &key);
    assert_eq!(<[u8; 32]>::from(sha2::Sha256::digest(&pt)), digest);
    let m = EncryptedModel::open(&enc, &keys).unwrap();
    let mem = m.decrypt_to_memory(None).unwrap();
    assert_eq!((mem.sha256(), mem.as_ref()), (digest, pt.as_slice()));
    let tmp = m.decrypt_to_temp_file(&d, None).unwrap();
    assert_eq!(tmp.sha256(), digest);
    assert_eq!(m.plaintext_digest(None).unwrap(), digest);
    let e = m.decrypt_to_memory(Some(&[1; 32])).unwrap_err().to_string();
    assert!(
        e.contains("m.enc") && e.contains(&hex::encode(digest)),
        "{e}"
    );
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn every_tampering_is_detected() {
    let d = dir("neg");
    let key = ModelKey::generate();
    let keys = StaticKeyProvider::new(key.clone());
    let (enc, _, digest) = encrypted(&d, "a", 3 * 4096 + 100, &key);
    let (enc_b, _, _) = encrypted(&d, "b", 3 * 4096 + 100, &key);
    let orig = std::fs::read(&enc).unwrap();
    let other = std::fs::read(&enc_b).unwrap();
    let chunk = 4096 + TAG_LEN;
    let fails = |bytes: &[u8], what: &str| {
        let p = d.join("t.enc");
        std::fs::write(&p, bytes).unwrap();
        let r = EncryptedModel::open(&p, &keys).and_then(|m| m.decrypt_to_memory(Some(&digest)));
        assert!(r.is_err(), "{what} was not detected");
    };
    // Truncation: drop the last chunk, cut inside it, and a consistent header edit + cut.
    fails(
        &orig[..orig.len() - (100 + TAG_LEN)],
        "dropping the last chunk",
    );
    fails(&orig[..orig.len() - 1], "cutting one byte");
    let mut shorter = orig[..HEADER_LEN + 3 * chunk].to_vec();
    shorter[16..24].copy_from_slice(&(3u64 * 4096).to_be_bytes());
    fails(&shorter, "truncation with an edited length");
    // Extension.
    fails(&[orig.as_slice(), &[0u8; 16]].concat(), "appended bytes");
    // Reordering chunks 0 and 1.
    let mut swapped = orig.clone();
    swapped[HEADER_LEN..HEADER_LEN + chunk]
        .copy_from_slice(&orig[HEADER_LEN + chunk..HEADER_LEN + 2 * chunk]);
    swapped[HEADER_LEN + chunk..HEADER_LEN + 2 * chunk]
        .copy_from_slice(&orig[HEADER_LEN..HEADER_LEN + chunk]);
    fails(&swapped, "reordered chunks");
    // Splicing chunk 1 of another file encrypted with the same key.
    let mut spliced = orig.clone();
    spliced[HEADER_LEN + chunk..HEADER_LEN + 2 * chunk]
        .copy_from_slice(&other[HEADER_LEN + chunk..HEADER_LEN + 2 * chunk]);
    fails(&spliced, "spliced chunk");
    // Header edits: every byte of the nonce prefix and key id region, version and flags.
    for off in [8usize, 10, 11, 24, 31, 40, 63] {
        let mut h = orig.clone();
        h[off] ^= 1;
        fails(&h, &format!("header byte {off}"));
    }
    // Ciphertext and tag bit flips.
    for off in [
        HEADER_LEN,
        HEADER_LEN + 4095,
        HEADER_LEN + 4096,
        orig.len() - 1,
    ] {
        let mut c = orig.clone();
        c[off] ^= 0x80;
        fails(&c, &format!("ciphertext byte {off}"));
    }
    // Wrong key (even with a forged key id the tags fail).
    let wrong = ModelKey::generate();
    assert!(
        EncryptedModel::open(&enc, &StaticKeyProvider::new(wrong.clone()))
            .unwrap_err()
            .to_string()
            .contains("key id")
    );
    let mut forged = orig.clone();
    forged[32..64].copy_from_slice(&wrong.key_id());
    std::fs::write(d.join("f.enc"), &forged).unwrap();
    let m = EncryptedModel::open(&d.join("f.enc"), &StaticKeyProvider::new(wrong)).unwrap();
    assert!(m.decrypt_chunk(0).is_err());
    // Rotation: an old key still decrypts, new files use the current key.
    let rot = RotatingKeyProvider {
        current: ModelKey::generate(),
        previous: vec![key.clone()],
    };
    assert!(
        EncryptedModel::open(&enc, &rot)
            .unwrap()
            .verify_digest(&digest)
            .is_ok()
    );
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn header_parser_is_strict() {
    let key = ModelKey::generate();
    let d = dir("hdr");
    let (enc, _, _) = encrypted(&d, "h", 5000, &key);
    let raw = std::fs::read(&enc).unwrap();
    let h = Header::parse(&raw[..HEADER_LEN]).unwrap();
    assert_eq!(
        (h.chunk_size, h.plaintext_len, h.chunk_count()),
        (4096, 5000, 2)
    );
    for n in 0..HEADER_LEN {
        assert!(Header::parse(&raw[..n]).is_err());
    }
    let mut bad = raw[..HEADER_LEN].to_vec();
    bad[12..16].copy_from_slice(&1u32.to_be_bytes());
    assert!(
        Header::parse(&bad)
            .unwrap_err()
            .to_string()
            .contains("chunk size")
    );
    let mut bad = raw[..HEADER_LEN].to_vec();
    bad[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
    assert!(
        Header::parse(&bad)
            .unwrap_err()
            .to_string()
            .contains("plaintext length")
    );
    std::fs::remove_dir_all(&d).ok();
}
