//! Arbitrary bytes as a compose file: load, then render. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    stackd_fuzz::load_and_render(data);
});
