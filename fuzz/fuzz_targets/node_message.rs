//! Arbitrary bytes into the node link's message decoder as one frame (the
//! input's first byte is a read size): never a panic, and what decodes
//! re-encodes to one length-prefixed frame that a stream decoder, fed in
//! reads of that size, hands back whole, and that decodes to the same
//! message. (The stream decoder itself on arbitrary bytes is frame_codec's
//! job.) Seeds (fuzz/seeds/node_message) are one message of each kind, kept
//! current by tests/node_codec.rs.
#![no_main]

use bytes::Bytes;
use hummer_channel::server::{decode_node_message, encode_node_message, MAX_NODE_FRAME};
use hummer_channel::wire::FrameDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, frame)) = data.split_first() else {
        return;
    };
    let Ok(message) = decode_node_message(Bytes::copy_from_slice(frame)) else {
        return;
    };
    let mut decoder = FrameDecoder::new(MAX_NODE_FRAME);
    let mut frames = Vec::new();
    for piece in encode_node_message(&message).chunks(usize::from(chunk).max(1)) {
        decoder.extend(piece);
        while let Some(f) = decoder.next_frame().unwrap() {
            frames.push(f);
        }
    }
    assert!(decoder.finish().is_ok());
    assert_eq!(frames.len(), 1);
    let again = decode_node_message(frames.remove(0)).unwrap();
    assert_eq!(format!("{again:?}"), format!("{message:?}"));
});
