//! Arbitrary bytes, in arbitrary pieces, into the stream decoder and the
//! frame decoder: never a panic, never more buffered than one frame + one read.
#![no_main]

use bytes::Bytes;
use hummer_channel::wire::{decode_frame, encode_frame, FrameDecoder};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 4096;

fuzz_target!(|input: (Vec<u8>, Vec<u8>)| {
    let (stream, cuts) = input;
    let mut decoder = FrameDecoder::new(MAX);
    let mut rest = &stream[..];
    let mut cuts = cuts.into_iter();
    while !rest.is_empty() {
        let n = (cuts.next().unwrap_or(255) as usize).min(rest.len()).max(1);
        decoder.extend(&rest[..n]);
        rest = &rest[n..];
        while let Ok(Some(frame)) = decoder.next_frame() {
            assert!(frame.len() <= MAX);
            if let Ok(decoded) = decode_frame(frame, MAX) {
                // What decodes re-encodes and decodes to the same frame.
                let again = decode_frame(encode_frame(&decoded), usize::MAX).unwrap();
                assert_eq!(again, decoded);
            }
        }
        assert!(decoder.buffered() <= MAX + 4 + 255);
    }
    let _ = decode_frame(Bytes::from(stream), MAX);
});
