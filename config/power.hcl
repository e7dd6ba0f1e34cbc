# a3s-power serve: a development configuration.
# Check it with `a3s-power serve --config config/power.hcl --check`.
# Every key can be overridden by A3S_POWER_<KEY> (e.g. A3S_POWER_PORT=8080).

host = "127.0.0.1"
port = 11434
# Models, manifests, partial downloads and pull status live under data_dir/models.
data_dir = "/var/lib/a3s-power"

max_loaded_models = 2
keep_alive = "5m"      # "0" = unload after each request, "-1" = never
num_parallel = 4       # sequences decoded together per model
max_queue = 64         # requests waiting for a slot before 429
ctx_size = 2048        # tokens per sequence (0 = the model's, at most 4096)

# Limits on /v1/*: beyond them, 429 with an OpenAI-style error.
rate_limit_rps = 20
max_concurrent_requests = 32
max_body_bytes = 4194304
max_tokens_limit = 4096

redact_logs = true
audit_log = "/var/lib/a3s-power/audit.jsonl"
shutdown_timeout = "20s"

# Bearer API keys, stored as SHA-256 hex digests: printf %s "$KEY" | sha256sum
api_keys = [
  "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
]

# Registered at start, served in place (no copy).
model "qwen2.5-0.5b" {
  path = "/var/lib/a3s-power/files/qwen2.5-0.5b-instruct-q4_k_m.gguf"
}
