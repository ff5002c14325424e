//! Encoding frames, and finding frames in a byte stream.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message as _;

use super::{Body, Frame};
use crate::error::WireError;

/// The protocol version this crate speaks, sent in the login request.
pub const PROTOCOL_VERSION: u32 = 2;

/// Bytes of the length prefix on byte streams.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// Encodes `frame` into its own buffer (one allocation of the exact size).
pub fn encode_frame(frame: &Frame) -> Bytes {
    let mut buf = BytesMut::with_capacity(frame.encoded_len());
    // Cannot fail: the buffer has the capacity it needs.
    frame.encode_raw(&mut buf);
    buf.freeze()
}

/// Appends a length prefix and `frame` (an encoded frame) to `out`, for byte streams.
pub fn write_length_prefixed(frame: &[u8], out: &mut BytesMut) {
    out.reserve(LENGTH_PREFIX_LEN + frame.len());
    put_length_prefix(frame.len(), out);
    out.put_slice(frame);
}

/// Appends the length prefix of a frame of `len` bytes to `out` (the one
/// rule of byte streams, for a frame encoded straight after it).
pub(crate) fn put_length_prefix(len: usize, out: &mut BytesMut) {
    // Frames are capped well below 4 GiB by the frame size limit.
    out.put_u32(len as u32);
}

/// A frame as received: its body is present by type (a frame without a body
/// this version knows is a decode error).
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedFrame {
    /// The request id (0 for pushes and link messages).
    pub request_id: u64,
    /// The body.
    pub body: Body,
}

impl From<DecodedFrame> for Frame {
    fn from(f: DecodedFrame) -> Frame {
        Frame {
            request_id: f.request_id,
            body: Some(f.body),
        }
    }
}

/// Decodes one whole frame (without length prefix): checks its size, decodes
/// it, and checks that it has a body this version knows. `bytes` fields of
/// the result share `bytes`' buffer.
pub fn decode_frame(bytes: Bytes, max_frame_size: usize) -> Result<DecodedFrame, WireError> {
    if bytes.is_empty() {
        return Err(WireError::EmptyFrame);
    }
    if bytes.len() > max_frame_size {
        return Err(WireError::FrameTooLarge {
            len: bytes.len(),
            max: max_frame_size,
        });
    }
    let frame = Frame::decode(bytes)?;
    match frame.body {
        Some(body) => Ok(DecodedFrame {
            request_id: frame.request_id,
            body,
        }),
        None => Err(WireError::MissingBody),
    }
}

/// Spare room a growing buffer gets beyond the bytes that arrived: small,
/// so that a peer announcing a large frame and sending part of it holds
/// about what it sent (see [`FrameDecoder::extend`]).
const GROW_CHUNK: usize = 4 * 1024;

/// Finds length-prefixed frames in a byte stream: feed it what the socket
/// gave, in any pieces, and take whole frames out.
///
/// The announced length is checked against the maximum (and against 0) as
/// soon as the 4 prefix bytes are in, and no space is ever reserved for it:
/// the buffer grows with the bytes that arrive (what arrived, plus at most a
/// quarter of it or 4 KiB), so a peer that announces 64 KiB and sends 10 bytes
/// holds a few KiB, not 64. After an error the stream cannot be
/// resynchronised: the decoder keeps returning the error and the link should
/// be closed.
///
/// ```
/// use bytes::BytesMut;
/// use hummer_channel::wire::{encode_frame, write_length_prefixed, Body, Frame, FrameDecoder, Ping};
///
/// let frame = encode_frame(&Frame { request_id: 0, body: Some(Body::Ping(Ping { nonce: 7 })) });
/// let mut stream = BytesMut::new();
/// write_length_prefixed(&frame, &mut stream);
/// write_length_prefixed(&frame, &mut stream);
///
/// let mut decoder = FrameDecoder::new(64 * 1024);
/// decoder.extend(&stream[..3]); // a partial read
/// assert_eq!(decoder.next_frame().unwrap(), None);
/// decoder.extend(&stream[3..]); // the rest, and a second frame
/// assert_eq!(decoder.next_frame().unwrap(), Some(frame.clone()));
/// assert_eq!(decoder.next_frame().unwrap(), Some(frame));
/// assert_eq!(decoder.next_frame().unwrap(), None);
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_frame_size: usize,
    failed: Option<WireError>,
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `max_frame_size`.
    pub fn new(max_frame_size: usize) -> Self {
        FrameDecoder {
            buf: BytesMut::new(),
            max_frame_size,
            failed: None,
        }
    }

    /// Changes the largest frame accepted from now on (a server holds a
    /// connection to a small bound until it has logged in). It applies to
    /// every frame whose length prefix is checked after this call, the
    /// partial frame being buffered included.
    pub fn set_max_frame_size(&mut self, max_frame_size: usize) {
        self.max_frame_size = max_frame_size;
    }

    /// The largest frame accepted.
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Appends bytes read from the stream.
    ///
    /// When the buffer is full it is replaced by one sized for what it holds
    /// plus `data`, plus a quarter of that (at least 4 KiB): growth is
    /// geometric, so a frame arriving in small reads is copied a bounded
    /// number of times, yet a buffer never holds much more than what
    /// arrived. It is never sized from an announced length, and never beyond
    /// the end of the partial frame it holds.
    pub fn extend(&mut self, data: &[u8]) {
        if self.failed.is_some() || data.is_empty() {
            return;
        }
        let needed = self.buf.len().saturating_add(data.len());
        if needed > self.buf.capacity() {
            let mut target = needed.saturating_add(GROW_CHUNK.max(needed / 4));
            // No room past the frame being completed: what follows it is
            // another frame, which gets its own room when it arrives.
            if let Some(end) = self.frame_end().filter(|&end| end >= needed) {
                target = target.min(end);
            }
            // A fresh exact-size buffer rather than `reserve`: `BytesMut`
            // doubles, and may keep its first large capacity for good.
            let mut grown = BytesMut::with_capacity(target);
            grown.extend_from_slice(&self.buf);
            self.buf = grown;
        }
        self.buf.extend_from_slice(data);
    }

    /// Where the first buffered frame ends (prefix included), when its
    /// prefix is in and its length is acceptable.
    fn frame_end(&self) -> Option<usize> {
        let prefix: [u8; LENGTH_PREFIX_LEN] = self.buf.get(..LENGTH_PREFIX_LEN)?.try_into().ok()?;
        let len = u32::from_be_bytes(prefix) as usize;
        (len != 0 && len <= self.max_frame_size).then_some(LENGTH_PREFIX_LEN + len)
    }

    /// The buffer to read into directly (for `read_buf`-style zero-copy reads).
    /// Space reserved through it is the caller's choice: reserve what a read
    /// may bring, not an announced length.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes buffered and not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Bytes of memory the buffer holds (at least [`FrameDecoder::buffered`]).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.buf.len() < LENGTH_PREFIX_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        let err = if len == 0 {
            Some(WireError::EmptyFrame)
        } else if len > self.max_frame_size {
            Some(WireError::FrameTooLarge {
                len,
                max: self.max_frame_size,
            })
        } else {
            None
        };
        if let Some(e) = err {
            self.buf = BytesMut::new();
            self.failed = Some(e.clone());
            return Err(e);
        }
        let total = LENGTH_PREFIX_LEN + len;
        if self.buf.len() < total {
            // Nothing is reserved for the rest: `extend` grows the buffer
            // as the bytes arrive.
            return Ok(None);
        }
        self.buf.advance(LENGTH_PREFIX_LEN);
        let frame = self.buf.split_to(len).freeze();
        if self.buf.is_empty() {
            // Let go of the allocation the frame came from (the frame keeps
            // it alive as long as it needs it): an idle link holds nothing,
            // and the next read gets a buffer sized for itself.
            self.buf = BytesMut::new();
        }
        Ok(Some(frame))
    }

    /// Call at end of stream: an error if a partial frame is left.
    pub fn finish(&self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::Truncated {
                buffered: self.buf.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Body, ChatMessage, Ping, SendToUserRequest};
    use proptest::prelude::*;

    fn ping(n: u64) -> Bytes {
        encode_frame(&Frame {
            request_id: 0,
            body: Some(Body::Ping(Ping { nonce: n })),
        })
    }

    #[test]
    fn oversize_length_is_refused_before_allocating() {
        let mut d = FrameDecoder::new(1024);
        d.extend(&(1u32 << 30).to_be_bytes());
        assert_eq!(
            d.next_frame(),
            Err(WireError::FrameTooLarge {
                len: 1 << 30,
                max: 1024
            })
        );
        assert!(d.buffer_mut().capacity() < 1024);
        // Poisoned: later bytes do not resynchronise.
        d.extend(&[0, 0, 0, 1, 0]);
        assert!(d.next_frame().is_err());
    }

    #[test]
    fn a_partial_frame_holds_what_arrived_not_what_it_announced() {
        let mut d = FrameDecoder::new(64 * 1024);
        d.extend(&(64u32 * 1024).to_be_bytes());
        d.extend(&[7u8; 10]);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.buffered(), 14);
        assert!(d.capacity() <= 14 + GROW_CHUNK, "{}", d.capacity());
        // Half of it, in 4 KiB reads: the buffer follows what arrived.
        let mut arrived = 14;
        while arrived < 4 + 32 * 1024 {
            d.extend(&[7u8; 4096]);
            arrived += 4096;
            assert_eq!(d.next_frame(), Ok(None));
            let cap = d.capacity();
            assert!(
                cap >= arrived && cap <= arrived + (arrived / 4).max(GROW_CHUNK),
                "{cap} for {arrived}"
            );
        }
        // The rest: the frame comes out whole, and the buffer never passed
        // the frame's own size.
        let rest = 4 + 64 * 1024 - arrived;
        d.extend(&vec![7u8; rest]);
        assert!(d.capacity() <= 4 + 64 * 1024);
        assert_eq!(d.next_frame().unwrap().map(|f| f.len()), Some(64 * 1024));
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.capacity(), 0, "an empty decoder keeps no buffer");
    }

    #[test]
    fn the_limit_can_change_between_frames() {
        let mut stream = BytesMut::new();
        write_length_prefixed(&ping(1), &mut stream);
        write_length_prefixed(&[9u8; 100], &mut stream);
        let mut d = FrameDecoder::new(16);
        d.extend(&stream);
        assert_eq!(d.next_frame(), Ok(Some(ping(1))));
        // Raised before the next prefix is read: the 100-byte frame passes.
        d.set_max_frame_size(128);
        assert_eq!(d.max_frame_size(), 128);
        assert_eq!(d.next_frame().unwrap().map(|f| f.len()), Some(100));
        // Lowered under a buffered partial frame: refused at once.
        let mut d = FrameDecoder::new(128);
        d.extend(&[0, 0, 0, 100, 1, 2]);
        assert_eq!(d.next_frame(), Ok(None));
        d.set_max_frame_size(16);
        assert_eq!(
            d.next_frame(),
            Err(WireError::FrameTooLarge { len: 100, max: 16 })
        );
    }

    #[test]
    fn zero_length_and_truncation_are_errors() {
        let mut d = FrameDecoder::new(1024);
        d.extend(&[0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(WireError::EmptyFrame));
        let mut d = FrameDecoder::new(1024);
        d.extend(&[0, 0, 0, 9, 1]);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.finish(), Err(WireError::Truncated { buffered: 5 }));
    }

    #[test]
    fn decode_rejects_garbage_and_bodiless_frames() {
        assert_eq!(decode_frame(Bytes::new(), 1024), Err(WireError::EmptyFrame));
        assert!(matches!(
            decode_frame(Bytes::from_static(&[0xff, 0xff, 0xff]), 1024),
            Err(WireError::Malformed(_))
        ));
        // request_id only, no body.
        assert_eq!(
            decode_frame(Bytes::from_static(&[0x08, 0x05]), 1024),
            Err(WireError::MissingBody)
        );
        // An unknown field number (999) only: skipped by prost, so no body.
        assert_eq!(
            decode_frame(Bytes::from_static(&[0xb8, 0x3e, 0x01]), 1024),
            Err(WireError::MissingBody)
        );
        let big = ping(1);
        assert!(matches!(
            decode_frame(big.clone(), big.len() - 1),
            Err(WireError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn message_content_shares_the_input_buffer() {
        let frame = Frame {
            request_id: 3,
            body: Some(Body::SendToUser(SendToUserRequest {
                receiver: 9,
                message: Some(ChatMessage {
                    r#type: "t".into(),
                    content: Bytes::from(vec![7u8; 100]),
                    app_extras: Default::default(),
                }),
                unreliable: false,
                message_id: 1,
            })),
        };
        let bytes = encode_frame(&frame);
        let range = bytes.as_ptr_range();
        let Body::SendToUser(req) = decode_frame(bytes.clone(), 1024).unwrap().body else {
            panic!("wrong body")
        };
        let content = req.message.unwrap().content;
        assert!(range.contains(&content.as_ptr()), "content was copied");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let mut d = FrameDecoder::new(256);
            for c in &chunks {
                d.extend(c);
                while let Ok(Some(f)) = d.next_frame() {
                    prop_assert!(f.len() <= 256);
                    let _ = decode_frame(f, 256);
                }
                prop_assert!(d.buffered() <= 256 + 4 + 64);
            }
        }

        #[test]
        fn frames_survive_any_split(nonces in prop::collection::vec(any::<u64>(), 1..8), cut in any::<prop::sample::Index>()) {
            let mut stream = BytesMut::new();
            for &n in &nonces { write_length_prefixed(&ping(n), &mut stream); }
            let cut = cut.index(stream.len() + 1);
            let mut d = FrameDecoder::new(1024);
            let mut got = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                d.extend(part);
                while let Some(f) = d.next_frame().unwrap() {
                    match decode_frame(f, 1024).unwrap().body {
                        Body::Ping(p) => got.push(p.nonce),
                        other => prop_assert!(false, "unexpected {:?}", other),
                    }
                }
            }
            prop_assert_eq!(got, nonces);
            prop_assert!(d.finish().is_ok());
        }
    }
}
