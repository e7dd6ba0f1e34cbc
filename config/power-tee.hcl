# a3s-power serve inside a confidential VM (AMD SEV-SNP / Intel TDX).
# Check it with `a3s-power serve --config config/power-tee.hcl --check`.
#
# tee_mode: every registered model is verified at start (SHA-256 against its manifest and its
# pin below, Ed25519 .sig against model_signing_key) and the server refuses to start on any
# mismatch; logs are redacted; /v1/attestation serves evidence that binds the model digest.

host = "0.0.0.0"
port = 11434
data_dir = "/var/lib/a3s-power"

tee_mode = true
redact_logs = true
suppress_token_metrics = true   # token counts rounded to 10
timing_padding = "250ms"        # responses take at least this long

max_loaded_models = 1
keep_alive = "-1"
layer_streaming = true          # weights paged one layer at a time: peak RSS ~ one layer + KV
num_parallel = 4
max_concurrent_requests = 16
rate_limit_rps = 10

# Pinned digests: a model whose SHA-256 differs is never served.
model_hashes = {
  "qwen2.5-0.5b" = "sha256:5f2b5a1c7e3d4b6a8f9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a6f7e8d9c0b1a"
}

# Publisher's Ed25519 public key (a3s-power keygen): every model needs a valid FILE.sig
# written by `a3s-power seal FILE --key <secret>`.
model_signing_key = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"

# Attested TLS: the certificate carries evidence binding its own key and the served model.
tls_port = 11443
ra_tls = true

audit_log = "/var/lib/a3s-power/audit.jsonl"
audit_key_source = { file = "/run/secrets/a3s-power-audit.key" }

api_keys = [
  "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
]

model "qwen2.5-0.5b" {
  path = "/var/lib/a3s-power/files/qwen2.5-0.5b-instruct-q4_k_m.gguf"
}
