//! The request parsers on arbitrary bytes: `parse_chat` and `parse_completion` must return
//! `Ok` or a `ValidateError` (never panic, overflow or hang) and a rejection must name a
//! parameter or the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ponder::api::request::{parse_chat, parse_completion};

fuzz_target!(|data: &[u8]| {
    for parse in [parse_chat, parse_completion] {
        if let Err(e) = parse(data) {
            assert!(!e.to_string().is_empty());
        }
    }
});
