//! Arbitrary text through `${VAR}` interpolation and the dotenv parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stackd::render::compose::{dotenv, interpolate};
use stackd::render::files::RepoPath;

fn lookup(name: &str) -> Option<String> {
    match name {
        "SET" => Some("value".to_string()),
        "EMPTY" => Some(String::new()),
        "NESTED" => Some("${SET}".to_string()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match interpolate::substitute(text, &lookup) {
        Ok(done) => {
            // Text without `$` is never changed.
            if !text.contains('$') {
                assert_eq!(done.text, text);
                assert!(done.unset.is_empty());
            }
        }
        Err(error) => {
            let _ = (error.to_string(), error.label());
        }
    }
    let Ok(file) = RepoPath::new("app/.env") else {
        return;
    };
    match dotenv::parse(text, &file, &lookup) {
        Ok(entries) => {
            for (key, _) in &entries {
                assert!(
                    !key.is_empty(),
                    "dotenv produced an empty key from {text:?}"
                );
            }
        }
        Err(error) => {
            let _ = (error.to_string(), error.label());
        }
    }
});
