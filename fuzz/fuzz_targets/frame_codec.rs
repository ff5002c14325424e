//! Arbitrary bytes into the stream decoder, in pieces whose sizes come from
//! the input's first byte, and every frame found into the frame decoder:
//! never a panic, never more buffered than one frame and one read, and what
//! decodes re-encodes to the same frame. Seeds (fuzz/seeds/frame_codec) are
//! real length-prefixed exchanges between a Session and the Server.
#![no_main]

use hummer_channel::wire::{decode_frame, encode_frame, Frame, FrameDecoder};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut decoder = FrameDecoder::new(MAX);
    for piece in stream.chunks(chunk) {
        decoder.extend(piece);
        while let Ok(Some(frame)) = decoder.next_frame() {
            assert!(frame.len() <= MAX);
            if let Ok(decoded) = decode_frame(frame, MAX) {
                let again =
                    decode_frame(encode_frame(&Frame::from(decoded.clone())), usize::MAX).unwrap();
                assert_eq!(again, decoded);
            }
        }
        assert!(decoder.buffered() <= MAX + 4 + chunk);
    }
});
