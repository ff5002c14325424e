//! Encoding frames, and finding frames in a byte stream.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message as _;

use super::Frame;
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
    // Frames are capped well below 4 GiB by the frame size limit.
    out.put_u32(frame.len() as u32);
    out.put_slice(frame);
}

/// Decodes one whole frame (without length prefix). A frame with no known body
/// is an error; `bytes` fields of the result share `bytes`' buffer.
pub fn decode_frame(bytes: Bytes, max_frame_size: usize) -> Result<Frame, WireError> {
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
    if frame.body.is_none() {
        return Err(WireError::MissingBody);
    }
    Ok(frame)
}

/// Finds length-prefixed frames in a byte stream: feed it what the socket
/// gave, in any pieces, and take whole frames out.
///
/// The announced length is checked against the maximum before any space is
/// reserved for it, so a hostile peer cannot make it allocate more than
/// `max_frame_size` plus one read. After an error the stream cannot be
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

    /// Appends bytes read from the stream.
    pub fn extend(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// The buffer to read into directly (for `read_buf`-style zero-copy reads).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes buffered and not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
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
            // Reserve only what the (checked) frame still needs.
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(LENGTH_PREFIX_LEN);
        Ok(Some(self.buf.split_to(len).freeze()))
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
        let Some(Body::SendToUser(req)) = decode_frame(bytes.clone(), 1024).unwrap().body else {
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
                        Some(Body::Ping(p)) => got.push(p.nonce),
                        other => prop_assert!(false, "unexpected {:?}", other),
                    }
                }
            }
            prop_assert_eq!(got, nonces);
            prop_assert!(d.finish().is_ok());
        }
    }
}
