//! Valid YAML trees of known compose keys, so inputs get past the parser into
//! normalisation and rendering. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stackd_fuzz::structured::Compose;

fuzz_target!(|compose: Compose| {
    stackd_fuzz::load_and_render(compose.to_yaml().as_bytes());
});
