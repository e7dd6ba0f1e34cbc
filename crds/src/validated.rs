//! String newtypes whose shape the API server checks: hex digests and measurements of an exact
//! length, and Kubernetes-style durations. Each carries a `maxLength` (so the CEL cost estimate
//! is bounded) and a CEL rule whose message says what the field must look like; the API server
//! prefixes the message with the field path.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

macro_rules! validated_string {
    ($(#[$doc:meta])* $name:ident, max = $max:expr, rule = $rule:expr, message = $msg:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The CEL rule the API server applies.
            pub const RULE: &'static str = $rule;
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_string())
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "maxLength": $max,
                    "x-kubernetes-validations": [{ "rule": $rule, "message": $msg }],
                })
            }
        }
    };
}

validated_string!(
    /// SHA-256 of the plaintext GGUF file: 64 lowercase hex characters.
    ModelDigest,
    max = 64,
    rule = "self.matches('^[0-9a-f]{64}$')",
    message = "must be a SHA-256 digest: 64 lowercase hex characters"
);

validated_string!(
    /// A launch measurement (SEV-SNP MEASUREMENT, TDX MRTD/RTMR, simulated): SHA-384, 96 hex
    /// characters.
    Measurement,
    max = 96,
    rule = "self.matches('^[0-9a-fA-F]{96}$')",
    message = "must be a SHA-384 measurement: exactly 96 hex characters"
);

validated_string!(
    /// An AMD CHIP_ID: 64 bytes, 128 hex characters.
    ChipId,
    max = 128,
    rule = "self.matches('^[0-9a-fA-F]{128}$')",
    message = "must be a CHIP_ID: exactly 128 hex characters"
);

validated_string!(
    /// A duration such as `90s`, `5m`, `1h30m` or `500ms`.
    GoDuration,
    max = 32,
    rule = "self.matches('^([0-9]+(ms|s|m|h))+$')",
    message = "must be a duration such as 90s, 5m or 1h30m"
);

validated_string!(
    /// An Ed25519 public key: 32 bytes, 64 hex characters.
    Ed25519PublicKey,
    max = 64,
    rule = "self.matches('^[0-9a-fA-F]{64}$')",
    message = "must be an Ed25519 public key: exactly 64 hex characters"
);

validated_string!(
    /// An Ed25519 signature: 64 bytes, 128 hex characters.
    Ed25519Signature,
    max = 128,
    rule = "self.matches('^[0-9a-fA-F]{128}$')",
    message = "must be an Ed25519 signature: exactly 128 hex characters"
);
