//! Encode + decode of a frame holding a 100-byte channel message, against raw
//! prost encode + decode of the same `ChannelMessagePush`.
//!
//! `cargo bench --bench codec`; the last lines print the ratio.

mod common;

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, Criterion, Throughput};
use hummer_channel::wire::{decode_frame, encode_frame, Body, ChannelMessagePush, Frame};
use prost::Message as _;

fn push() -> ChannelMessagePush {
    ChannelMessagePush {
        channel: 7,
        from_uid: 123_456,
        message: Some(common::message_100()),
        timestamp_ms: 1_700_000_000_123,
        seq: 4242,
    }
}

fn codec(c: &mut Criterion) {
    let frame = Frame {
        request_id: 0,
        body: Some(Body::ChannelMessage(push())),
    };
    let raw = push();
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function("frame_encode_decode", |b| {
        b.iter(|| {
            let bytes = encode_frame(black_box(&frame));
            black_box(decode_frame(bytes, 64 * 1024).unwrap())
        })
    });
    // The same work done directly with prost: an exact-size buffer, then a
    // zero-copy decode from `Bytes`.
    g.bench_function("raw_prost_encode_decode", |b| {
        b.iter(|| {
            let m = black_box(&raw);
            let mut buf = BytesMut::with_capacity(m.encoded_len());
            m.encode_raw(&mut buf);
            let bytes: Bytes = buf.freeze();
            black_box(ChannelMessagePush::decode(bytes).unwrap())
        })
    });
    // The envelope alone: prost encode + decode of the whole `Frame`, without
    // the codec's checks (separates the codec's own cost from the envelope's).
    g.bench_function("raw_prost_frame_encode_decode", |b| {
        b.iter(|| {
            let f = black_box(&frame);
            let mut buf = BytesMut::with_capacity(f.encoded_len());
            f.encode_raw(&mut buf);
            black_box(Frame::decode(buf.freeze()).unwrap())
        })
    });
    g.bench_function("raw_prost_encode", |b| {
        b.iter(|| {
            let m = black_box(&raw);
            let mut buf = BytesMut::with_capacity(m.encoded_len());
            m.encode_raw(&mut buf);
            black_box(buf.freeze())
        })
    });
    let raw_encoded = {
        let mut buf = BytesMut::with_capacity(raw.encoded_len());
        raw.encode_raw(&mut buf);
        buf.freeze()
    };
    g.bench_function("raw_prost_decode", |b| {
        b.iter(|| black_box(ChannelMessagePush::decode(black_box(raw_encoded.clone())).unwrap()))
    });
    // A prototype, not the crate's codec: what a hand-written envelope fast
    // path for push frames (request_id 0, one length-delimited body field)
    // would cost, decoding the push straight from the frame's bytes.
    let frame_bytes = encode_frame(&frame);
    g.bench_function("prototype_fast_path_decode", |b| {
        b.iter(|| black_box(fast_decode(black_box(frame_bytes.clone())).unwrap()))
    });
    g.bench_function("frame_encode", |b| {
        b.iter(|| black_box(encode_frame(black_box(&frame))))
    });
    let encoded = encode_frame(&frame);
    g.bench_function("frame_decode", |b| {
        b.iter(|| black_box(decode_frame(black_box(encoded.clone()), 64 * 1024).unwrap()))
    });
    g.finish();
}

/// The prototype fast path: `[tag of field 61, wire type 2][varint length][push]`.
fn fast_decode(mut bytes: Bytes) -> Option<Frame> {
    use bytes::Buf as _;
    if bytes.len() < 3 || bytes[..2] != [0xea, 0x03] {
        return None;
    }
    bytes.advance(2);
    let len = prost::encoding::decode_varint(&mut bytes).ok()? as usize;
    if len != bytes.len() {
        return None;
    }
    let push = ChannelMessagePush::decode(bytes).ok()?;
    Some(Frame {
        request_id: 0,
        body: Some(Body::ChannelMessage(push)),
    })
}

criterion_group!(benches, codec);

fn main() {
    common::mark_start();
    benches();
    Criterion::default().configure_from_args().final_summary();
    let m = |id: &str| common::criterion_median_ns(&format!("codec/{id}"));
    if let (Some(f), Some(r)) = (m("frame_encode_decode"), m("raw_prost_encode_decode")) {
        println!(
            "SUMMARY codec: frame encode+decode {f:.1} ns, raw prost of the push {r:.1} ns: \
             codec speed / raw prost speed = {:.2}x (target >= 0.90x)",
            r / f
        );
        if let Some(e) = m("raw_prost_frame_encode_decode") {
            println!(
                "SUMMARY codec: raw prost of the whole Frame {e:.1} ns: the envelope costs {:.2}x, \
                 the codec's own checks {:.2}x",
                r / e,
                e / f
            );
        }
    }
    for id in [
        "prototype_fast_path_decode",
        "frame_encode",
        "frame_decode",
        "raw_prost_encode",
        "raw_prost_decode",
    ] {
        if let Some(ns) = m(id) {
            println!("SUMMARY codec: {id} {ns:.1} ns");
        }
    }
}
