//! Raw deflate of kept bytes: the views of other replicas' stacks and the
//! watch caches' objects, which are read far less often than they are held.
//!
//! One compressor and one decompressor a thread, reused: each new one
//! allocates a few hundred kB, and one per Stack event fragmented the heap
//! (benches/shards, 2,000 stacks: 200 MiB a replica instead of 90).

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

thread_local! {
    static DEFLATE: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
    static INFLATE: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// `bytes`, deflated; empty only if the compressor fails.
pub fn deflate(bytes: &[u8]) -> Box<[u8]> {
    DEFLATE
        .with_borrow_mut(|deflate| {
            deflate.reset();
            let mut out = Vec::with_capacity(bytes.len() / 2 + 64);
            loop {
                let read = usize::try_from(deflate.total_in()).unwrap_or(usize::MAX);
                let input = bytes.get(read..).unwrap_or_default();
                match deflate.compress_vec(input, &mut out, FlushCompress::Finish) {
                    Ok(Status::StreamEnd) => return out,
                    Ok(_) if out.len() == out.capacity() => out.reserve(out.capacity()),
                    _ => return Vec::new(),
                }
            }
        })
        .into_boxed_slice()
}

/// The bytes [`deflate`] was given; `None` for bytes it did not write.
pub fn inflate(bytes: &[u8]) -> Option<Vec<u8>> {
    INFLATE.with_borrow_mut(|inflate| {
        inflate.reset(false);
        let mut out = Vec::with_capacity(bytes.len() * 4);
        loop {
            let read = usize::try_from(inflate.total_in()).unwrap_or(usize::MAX);
            let input = bytes.get(read..).unwrap_or_default();
            match inflate.decompress_vec(input, &mut out, FlushDecompress::Finish) {
                Ok(Status::StreamEnd) => return Some(out),
                Ok(_) if out.len() == out.capacity() => out.reserve(out.capacity()),
                _ => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_it_did_not_write() {
        let text = br#"{"spec":{"replicas":1,"template":{"spec":{"containers":[]}}}}"#.repeat(20);
        let kept = deflate(&text);
        assert!(kept.len() < text.len() / 4, "{} bytes", kept.len());
        assert_eq!(inflate(&kept).as_deref(), Some(&text[..]));
        assert_eq!(inflate(&deflate(b"")).as_deref(), Some(&b""[..]));
        assert_eq!(inflate(b"not deflate at all"), None);
    }
}
