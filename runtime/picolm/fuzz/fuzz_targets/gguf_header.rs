//! The GGUF reader and everything that interprets its metadata (model configuration,
//! tokenizer, chat template) on arbitrary bytes: errors are fine, panics, hangs and huge
//! allocations are bugs.
//!
//!     cd runtime/picolm/fuzz && cargo +nightly fuzz run gguf_header corpus/gguf_header -- -max_total_time=60
#![no_main]

use libfuzzer_sys::fuzz_target;
use picolm::gguf::GgufHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = GgufHeader::parse(data) {
        let _ = picolm::model::Config::from_metadata(&h.metadata);
        if let Ok(t) = picolm::tokenizer::Tokenizer::from_metadata(&h.metadata) {
            let _ = t.encode("Hello, world! <s> 你好 🦀", true, true);
        }
        let _ = picolm::chat::ChatTemplate::from_metadata(&h.metadata);
    }
});
