//! The one mapping from an `InferenceModel` to what the `a3s-power` runtime reads: its HCL
//! configuration file (keys of runtime/server/src/config.rs), its command lines (`serve`,
//! `pull`), ports, paths and environment. Nothing else in the operator knows a runtime key.
//!
//! Model delivery: a `url` or `huggingFace` source is fetched by an init container
//! (`a3s-power pull <servedName> --url <url> --sha256 <hex>`) into the pod's data volume, where
//! the runtime's store hashes every byte and refuses a blob whose digest differs; a `pvc` source
//! is mounted read-only and registered through the `models` block with its pinned digest. Either
//! way `model_hashes` pins the digest again at start, and attestation binds it.
//!
//! Encrypted models: `keyRef` mounts only that key of that Secret into the runtime container and
//! points `model_key_source` at it. This is a Kubernetes Secret, readable by anyone who can read
//! Secrets in the namespace; attestation-gated key release is a later step.

use std::fmt::Write as _;

use power_attest::TeeKind;
use power_crds::InferenceModel;
use power_crds::inference_model::ModelSource;
use sha2::{Digest, Sha256};

/// Plain-HTTP OpenAI API port of the runtime (the Service targets it).
pub const HTTP_PORT: i32 = 11434;
/// RA-TLS port: the attestation gate connects here.
pub const RA_TLS_PORT: i32 = 11443;
/// Where the ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/etc/a3s-power";
pub const CONFIG_FILE: &str = "config.hcl";
/// The runtime's data directory (an emptyDir): model store and pulls.
pub const DATA_DIR: &str = "/var/lib/a3s-power";
/// Where a PVC source is mounted (read-only).
pub const MODELS_DIR: &str = "/models";
/// Where the model key is mounted (only the one key).
pub const KEY_DIR: &str = "/run/a3s-power/keys";
pub const KEY_FILE: &str = "model.key";
/// The runtime binary in the image.
pub const RUNTIME_BINARY: &str = "a3s-power";

/// How the pod obtains the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelDelivery {
    /// An init container pulls this URL.
    Pull {
        url: String,
        token_secret: Option<(String, String)>,
    },
    /// The file at this path inside the mounted claim.
    Volume { claim: String, path: String },
}

/// Everything the pod template needs from the runtime mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimePlan {
    /// The HCL text of `config.hcl`.
    pub hcl: String,
    pub delivery: ModelDelivery,
    /// `serve` command line.
    pub serve_command: Vec<String>,
    /// `pull` command line of the init container (with a Pull delivery).
    pub pull_command: Option<Vec<String>>,
    /// Environment of the runtime container.
    pub env: Vec<(String, String)>,
    /// The key Secret (name, key) to mount, if encrypted.
    pub key_secret: Option<(String, String)>,
    /// Hash of everything above: a change rolls the pods.
    pub hash: String,
}

/// Escape a string for an HCL quoted template.
fn hcl_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' | '%' if chars.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Build the runtime plan. `tee` is the TEE the policy admits when it is a single kind:
/// simulated evidence is switched on only for a simulated-only policy.
pub fn plan(im: &InferenceModel, tee: Option<TeeKind>) -> RuntimePlan {
    let spec = &im.spec;
    let model = &spec.model;
    let name = &model.served_name;
    let digest = model.sha256.as_str();
    let rt = &spec.runtime;

    let delivery = match &model.source {
        ModelSource { pvc: Some(pvc), .. } => ModelDelivery::Volume {
            claim: pvc.claim_name.clone(),
            path: format!("{MODELS_DIR}/{}", pvc.path),
        },
        ModelSource {
            hugging_face: Some(hf),
            ..
        } => ModelDelivery::Pull {
            url: format!(
                "https://huggingface.co/{}/resolve/{}/{}",
                hf.repo,
                hf.revision.as_deref().unwrap_or("main"),
                hf.file
            ),
            token_secret: hf
                .token_secret_ref
                .as_ref()
                .map(|r| (r.name.clone(), r.key.clone())),
        },
        ModelSource { url, .. } => ModelDelivery::Pull {
            url: url.clone().unwrap_or_default(),
            token_secret: None,
        },
    };

    let mut h = String::new();
    let _ = writeln!(
        h,
        "# Generated by a3s-power-operator from InferenceModel {}. Do not edit.",
        im_name(im)
    );
    let _ = writeln!(h, "host = \"0.0.0.0\"");
    let _ = writeln!(h, "port = {HTTP_PORT}");
    let _ = writeln!(h, "data_dir = {}", hcl_string(DATA_DIR));
    let _ = writeln!(h, "tee_mode = true");
    let _ = writeln!(h, "tls_port = {RA_TLS_PORT}");
    let _ = writeln!(h, "ra_tls = true");
    let _ = writeln!(h, "redact_logs = {}", rt.privacy.redact_logs);
    let _ = writeln!(
        h,
        "suppress_token_metrics = {}",
        rt.privacy.suppress_token_metrics
    );
    if let Some(p) = &rt.privacy.timing_padding {
        let _ = writeln!(h, "timing_padding = {}", hcl_string(p.as_str()));
    }
    if let Some(n) = rt.threads {
        let _ = writeln!(h, "num_thread = {n}");
    }
    if let Some(n) = rt.context_size {
        let _ = writeln!(h, "ctx_size = {n}");
    }
    if rt.layer_streaming {
        let _ = writeln!(h, "layer_streaming = true");
    }
    let key_secret = model
        .encryption
        .as_ref()
        .map(|e| (e.key_ref.name.clone(), e.key_ref.key.clone()));
    if key_secret.is_some() {
        let _ = writeln!(
            h,
            "model_key_source = {{ file = {} }}",
            hcl_string(&format!("{KEY_DIR}/{KEY_FILE}"))
        );
        // Never plaintext on disk: decrypted into locked memory, or, with layer streaming,
        // one layer at a time.
        if rt.layer_streaming {
            let _ = writeln!(h, "streaming_decrypt = true");
        } else {
            let _ = writeln!(h, "in_memory_decrypt = true");
        }
    }
    let _ = writeln!(
        h,
        "model_hashes = {{\n  {} = {}\n}}",
        hcl_string(name),
        hcl_string(&format!("sha256:{digest}"))
    );
    // `spec.model.sha256` is the plaintext's digest. A plaintext file is pinned by it as soon
    // as it is fetched or registered; an encrypted file's bytes are ciphertext, so there the
    // pin is `model_hashes` alone, checked while decrypting (every chunk is authenticated)
    // before the server starts serving.
    let file_pin = key_secret.is_none().then_some(digest);
    if let ModelDelivery::Volume { path, .. } = &delivery {
        let pin = file_pin
            .map(|d| format!(", sha256 = {}", hcl_string(d)))
            .unwrap_or_default();
        let _ = writeln!(
            h,
            "models = {{\n  {} = {{ path = {}{pin} }}\n}}",
            hcl_string(name),
            hcl_string(path),
        );
    }

    let config_path = format!("{CONFIG_DIR}/{CONFIG_FILE}");
    let serve_command = vec![
        RUNTIME_BINARY.to_string(),
        "serve".into(),
        "--config".into(),
        config_path.clone(),
    ];
    let pull_command = match &delivery {
        ModelDelivery::Pull { url, .. } => {
            let mut cmd = vec![
                RUNTIME_BINARY.to_string(),
                "pull".into(),
                name.clone(),
                "--url".into(),
                url.clone(),
            ];
            // The pull reads `model_hashes` from the config as a pin on the fetched bytes, so
            // an encrypted pull gets neither (the store location comes from A3S_POWER_HOME).
            if let Some(d) = file_pin {
                cmd.extend([
                    "--sha256".into(),
                    d.to_string(),
                    "--config".into(),
                    config_path,
                ]);
            }
            Some(cmd)
        }
        ModelDelivery::Volume { .. } => None,
    };
    let mut env = vec![("A3S_POWER_HOME".to_string(), DATA_DIR.to_string())];
    if tee == Some(TeeKind::Simulated) {
        env.push(("A3S_TEE_SIMULATE".into(), "1".into()));
    }

    let mut hasher = Sha256::new();
    for part in [
        h.as_str(),
        &serve_command.join(" "),
        &pull_command.clone().unwrap_or_default().join(" "),
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    for (k, v) in &env {
        hasher.update(format!("{k}={v}\0").as_bytes());
    }
    if let Some((s, k)) = &key_secret {
        hasher.update(format!("key:{s}/{k}\0").as_bytes());
    }
    let hash = hex::encode(&hasher.finalize()[..8]);

    RuntimePlan {
        hcl: h,
        delivery,
        serve_command,
        pull_command,
        env,
        key_secret,
        hash,
    }
}

fn im_name(im: &InferenceModel) -> String {
    format!(
        "{}/{}",
        im.metadata.namespace.as_deref().unwrap_or(""),
        im.metadata.name.as_deref().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{DIGEST, ModelExt, model};

    #[test]
    fn url_source_pulls_in_an_init_container_and_pins_the_digest() {
        let p = plan(&model("chat"), Some(TeeKind::Simulated));
        assert!(
            p.hcl
                .contains("tee_mode = true\ntls_port = 11443\nra_tls = true\n"),
            "{}",
            p.hcl
        );
        assert!(
            p.hcl.contains(&format!("\"tiny\" = \"sha256:{DIGEST}\"")),
            "{}",
            p.hcl
        );
        assert!(!p.hcl.contains("models ="));
        let pull = p.pull_command.expect("pull");
        assert_eq!(&pull[..4], ["a3s-power", "pull", "tiny", "--url"]);
        assert!(pull.contains(&DIGEST.to_string()));
        assert!(p.env.contains(&("A3S_TEE_SIMULATE".into(), "1".into())));
    }

    #[test]
    fn hardware_tee_never_simulates() {
        let p = plan(&model("chat"), Some(TeeKind::SevSnp));
        assert!(!p.env.iter().any(|(k, _)| k == "A3S_TEE_SIMULATE"));
        let p = plan(&model("chat"), None);
        assert!(!p.env.iter().any(|(k, _)| k == "A3S_TEE_SIMULATE"));
    }

    #[test]
    fn pvc_source_registers_the_mounted_file() {
        let p = plan(&model("chat").with_pvc("models", "tiny/m.gguf"), None);
        assert_eq!(
            p.delivery,
            ModelDelivery::Volume {
                claim: "models".into(),
                path: "/models/tiny/m.gguf".into()
            }
        );
        assert!(p.hcl.contains(&format!(
            "\"tiny\" = {{ path = \"/models/tiny/m.gguf\", sha256 = \"{DIGEST}\" }}"
        )));
        assert!(p.pull_command.is_none());
    }

    #[test]
    fn digest_change_changes_the_hash() {
        let a = plan(&model("chat"), None);
        let b = plan(&model("chat").with_digest(&"1".repeat(64)), None);
        assert_ne!(a.hash, b.hash);
        assert_eq!(a.hash, plan(&model("chat"), None).hash);
    }

    #[test]
    fn hcl_strings_are_escaped() {
        assert_eq!(hcl_string("a\"b\\c${x}%{y}\n"), r#""a\"b\\c$${x}%%{y}\n""#);
    }

    #[test]
    fn encryption_points_the_runtime_at_the_mounted_key() {
        let p = plan(&model("chat").with_key("model-key", "k"), None);
        assert!(
            p.hcl
                .contains("model_key_source = { file = \"/run/a3s-power/keys/model.key\" }")
        );
        assert_eq!(p.key_secret, Some(("model-key".into(), "k".into())));
        assert!(p.hcl.contains("in_memory_decrypt = true\n"), "{}", p.hcl);
        // The digest is the plaintext's: it pins the model identity, never the fetched
        // ciphertext.
        assert!(p.hcl.contains(&format!("\"tiny\" = \"sha256:{DIGEST}\"")));
        let pull = p.pull_command.expect("pull");
        assert!(!pull.contains(&DIGEST.to_string()), "{pull:?}");
        assert!(!pull.contains(&"--config".to_string()), "{pull:?}");

        let pvc = plan(
            &model("chat")
                .with_key("model-key", "k")
                .with_pvc("models", "tiny/m.gguf.enc"),
            None,
        );
        assert!(
            pvc.hcl
                .contains("\"tiny\" = { path = \"/models/tiny/m.gguf.enc\" }"),
            "{}",
            pvc.hcl
        );
    }
}
