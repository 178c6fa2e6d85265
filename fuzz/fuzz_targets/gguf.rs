//! The GGUF reader on arbitrary bytes: `GgufFile::parse`, then what the loader reads from a
//! parsed file (every tensor's bytes, the model config, the tokenizer). Each must return a
//! value or an error, never panic, overflow, read out of bounds or allocate without bound.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use ponder::model::gguf::GgufFile;
use ponder::model::tokenizer::Tokenizer;
use ponder::model::ModelConfig;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return; // an empty anonymous map cannot be created; empty files are a unit test
    }
    let mut m = memmap2::MmapMut::map_anon(data.len()).expect("anonymous map");
    m.copy_from_slice(data);
    let map = Arc::new(m.make_read_only().expect("read-only map"));
    let Ok(g) = GgufFile::parse(map) else {
        return;
    };
    for t in &g.tensors {
        assert_eq!(g.tensor_bytes(t).len(), t.len);
    }
    let _ = ModelConfig::from_gguf(&g);
    let _ = Tokenizer::from_gguf(&g);
});
