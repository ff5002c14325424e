//! Counting deliveries in a byte stream with the least parsing each protocol
//! allows, the same for the three of them:
//!
//! - hummer: frames found by their 4-byte length prefix; a delivery is a
//!   push, known by its first two bytes (the body's field tag);
//! - NATS: `MSG` lines found by their header, the payload skipped by the
//!   length at the end of it;
//! - Redis: `message` arrays known by their fixed start, the channel and the
//!   payload skipped by their RESP lengths.
//!
//! Nothing is copied out or decoded for a delivery. Anything else (replies,
//! notices, errors, pings) is handed to [`control`], which looks closer;
//! the replies a publisher gets for every message (hummer `SendReply`, Redis
//! `:N`) are recognised there without decoding too.

use std::io::{self, Read, Write};

use hummer_channel::wire::{decode_frame, Body};

use crate::{Conn, Kind, MAX_FRAME};

/// Bytes asked for per read: the same for every protocol.
pub const READ_SIZE: usize = 64 * 1024;

/// What an item that is not a delivery asks of its reader.
pub enum Control {
    Nothing,
    /// The reply to one message sent (hummer `SendReply`, Redis `:N`).
    Reply,
    /// NATS: the server pinged, answer `PONG`.
    Pong,
    Error(String),
}

/// Counts the whole items at the front of `b`: returns the bytes they take
/// and how many of them are deliveries. Every other item goes to `control`
/// and its answer to `on`.
pub fn count(kind: Kind, b: &[u8], on: &mut impl FnMut(Control)) -> io::Result<(usize, u64)> {
    match kind {
        Kind::Hummer { .. } => count_hummer(b, on),
        Kind::Nats => count_nats(b, on),
        Kind::Redis => count_redis(b, on),
    }
}

fn count_hummer(b: &[u8], on: &mut impl FnMut(Control)) -> io::Result<(usize, u64)> {
    let (mut at, mut n) = (0, 0);
    while let Some(prefix) = b.get(at..at + 4) {
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(io::Error::other(format!("bad frame length {len}")));
        }
        let Some(f) = b.get(at + 4..at + 4 + len) else {
            break;
        };
        if is_push(f) {
            n += 1;
        } else {
            on(control(Kind::Hummer { reliable: false }, f));
        }
        at += 4 + len;
    }
    Ok((at, n))
}

/// A push has request_id 0 (absent), so its first bytes are the body's tag:
/// field 61 (channel message) or 60 (user message), wire type 2.
pub fn is_push(f: &[u8]) -> bool {
    f.len() > 2 && f[1] == 0x03 && (f[0] == 0xea || f[0] == 0xe2)
}

/// A reply has its request id (field 1, a varint) first; a `SendReply` is
/// field 43 (tag bytes 0xda 0x02) after it.
fn is_send_reply(f: &[u8]) -> bool {
    if f.first() != Some(&0x08) {
        return false;
    }
    let Some(end) = f[1..].iter().position(|b| b & 0x80 == 0) else {
        return false;
    };
    f.get(end + 2..end + 4) == Some(&[0xda, 0x02][..])
}

fn count_nats(b: &[u8], on: &mut impl FnMut(Control)) -> io::Result<(usize, u64)> {
    let (mut at, mut n) = (0, 0);
    while at < b.len() {
        let rest = &b[at..];
        let Some(nl) = rest.iter().position(|&c| c == b'\n') else {
            break;
        };
        if rest.starts_with(b"MSG ") {
            // MSG <subject> <sid> [reply-to] <#bytes>\r\n<payload>\r\n: the
            // length is the last field of the header.
            let header = &rest[..nl.saturating_sub(1)];
            let digits = header
                .iter()
                .rposition(|&c| c == b' ')
                .map_or(&[][..], |sp| &header[sp + 1..]);
            let end = nl + 1 + decimal(digits)? + 2;
            if rest.len() < end {
                break;
            }
            n += 1;
            at += end;
        } else {
            on(control(Kind::Nats, &rest[..nl + 1]));
            at += nl + 1;
        }
    }
    Ok((at, n))
}

/// The start of every pub/sub message of RESP2: an array of three bulk
/// strings, the first one `message`.
const RESP_MESSAGE: &[u8] = b"*3\r\n$7\r\nmessage\r\n";

fn count_redis(b: &[u8], on: &mut impl FnMut(Control)) -> io::Result<(usize, u64)> {
    let (mut at, mut n) = (0, 0);
    while at < b.len() {
        let rest = &b[at..];
        let end = if rest.starts_with(RESP_MESSAGE) {
            // The channel, then the payload.
            let Some(channel_end) = skip_bulk(rest, RESP_MESSAGE.len())? else {
                break;
            };
            let Some(end) = skip_bulk(rest, channel_end)? else {
                break;
            };
            n += 1;
            end
        } else {
            let Some(end) = skip_resp(rest, 0)? else {
                break;
            };
            on(control(Kind::Redis, &rest[..end]));
            end
        };
        at += end;
    }
    Ok((at, n))
}

/// Where the bulk string `$<len>\r\n<len bytes>\r\n` starting at `b[pos]`
/// ends, its length read in the same pass as its digits; `None` if
/// incomplete.
fn skip_bulk(b: &[u8], pos: usize) -> io::Result<Option<usize>> {
    let bad = || io::Error::other("bad RESP bulk string");
    match b.get(pos) {
        None => return Ok(None),
        Some(b'$') => {}
        Some(_) => return Err(bad()),
    }
    let (mut len, mut i) = (0usize, pos + 1);
    loop {
        match b.get(i) {
            None => return Ok(None),
            Some(b'\r') if i > pos + 1 => break,
            Some(&d) if d.is_ascii_digit() && i - pos <= 18 => {
                len = len * 10 + usize::from(d - b'0');
            }
            Some(_) => return Err(bad()),
        }
        i += 1;
    }
    let end = i + 2 + len + 2;
    Ok((end <= b.len()).then_some(end))
}

/// Where the RESP value starting at `b[pos]` ends; `None` if incomplete.
fn skip_resp(b: &[u8], pos: usize) -> io::Result<Option<usize>> {
    let Some(&t) = b.get(pos) else {
        return Ok(None);
    };
    let Some(eol) = b[pos..].iter().position(|&c| c == b'\n').map(|e| pos + e) else {
        return Ok(None);
    };
    if eol < pos + 2 {
        return Err(io::Error::other("bad RESP line"));
    }
    let line_end = eol + 1;
    Ok(match t {
        b'+' | b'-' | b':' => Some(line_end),
        b'$' if b[pos + 1] == b'-' => Some(line_end), // a null bulk string
        b'$' => Some(line_end + decimal(&b[pos + 1..eol - 1])? + 2).filter(|&end| end <= b.len()),
        b'*' => {
            let mut p = line_end;
            for _ in 0..decimal(&b[pos + 1..eol - 1])? {
                match skip_resp(b, p)? {
                    Some(next) => p = next,
                    None => return Ok(None),
                }
            }
            Some(p)
        }
        _ => return Err(io::Error::other("bad RESP type")),
    })
}

/// A non-negative decimal number, as in NATS and RESP lengths.
fn decimal(digits: &[u8]) -> io::Result<usize> {
    if digits.is_empty() || digits.len() > 18 {
        return Err(io::Error::other("bad length"));
    }
    digits.iter().try_fold(0usize, |n, &d| {
        if d.is_ascii_digit() {
            Ok(n * 10 + usize::from(d - b'0'))
        } else {
            Err(io::Error::other("bad length"))
        }
    })
}

/// A closer look at an item that is not a delivery (rare, except the
/// per-message replies, which are recognised without decoding).
fn control(kind: Kind, item: &[u8]) -> Control {
    match kind {
        Kind::Hummer { .. } => {
            if is_send_reply(item) {
                return Control::Reply;
            }
            match decode_frame(bytes::Bytes::copy_from_slice(item), MAX_FRAME).map(|f| f.body) {
                Ok(Body::Error(e)) => Control::Error(format!("{} {}", e.code, e.message)),
                Ok(Body::Close(c)) => Control::Error(format!("close {} {}", c.code, c.reason)),
                Ok(_) => Control::Nothing,
                Err(e) => Control::Error(format!("undecodable frame: {e}")),
            }
        }
        Kind::Nats if item.starts_with(b"PING") => Control::Pong,
        Kind::Nats if item.starts_with(b"-ERR") => {
            Control::Error(String::from_utf8_lossy(item).trim_end().to_owned())
        }
        Kind::Redis if item.starts_with(b"-") => {
            Control::Error(String::from_utf8_lossy(item).trim_end().to_owned())
        }
        // PUBLISH's reply: the number of subscribers reached.
        Kind::Redis if item.starts_with(b":") => Control::Reply,
        _ => Control::Nothing, // NATS INFO, PONG, +OK; Redis :N, confirmations
    }
}

/// A read buffer for counting readers. One per thread: what a read leaves
/// of a partial item is kept in the connection's own buffer (`Conn::buf`),
/// so a thread can serve many connections.
pub struct Counter {
    buf: Vec<u8>,
    /// Replies to sent messages read so far (a publisher's).
    pub replies: u64,
}

impl Counter {
    pub fn new() -> Counter {
        Counter {
            buf: vec![0; READ_SIZE],
            replies: 0,
        }
    }

    /// Reads once from `c` (bounded by its read timeout) and counts the
    /// deliveries now whole: `Ok(None)` on a timeout. Replies to sent
    /// messages are counted in `replies`, error replies go to `on_error`;
    /// a NATS PING is answered.
    pub fn read(
        &mut self,
        c: &mut Conn,
        on_error: &mut impl FnMut(String),
    ) -> io::Result<Option<u64>> {
        // The partial item left by the last read goes first.
        let kept = c.buf.len();
        if self.buf.len() < kept + READ_SIZE {
            self.buf.resize(kept + READ_SIZE, 0);
        }
        self.buf[..kept].copy_from_slice(&c.buf);
        let n = match c.s.read(&mut self.buf[kept..kept + READ_SIZE]) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed")),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let end = kept + n;
        let mut pong = false;
        let replies = &mut self.replies;
        let (used, got) = count(c.kind, &self.buf[..end], &mut |ctl| match ctl {
            Control::Nothing => {}
            Control::Reply => *replies += 1,
            Control::Pong => pong = true,
            Control::Error(e) => on_error(e),
        })?;
        c.buf.clear();
        c.buf.extend_from_slice(&self.buf[used..end]);
        if pong {
            c.s.write_all(b"PONG\r\n")?;
        }
        Ok(Some(got))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_all(kind: Kind, b: &[u8]) -> (usize, u64, usize) {
        let mut others = 0;
        let (used, n) = count(kind, b, &mut |_| others += 1).unwrap();
        (used, n, others)
    }

    #[test]
    fn nats_messages_and_partials() {
        let s = b"INFO {}\r\nMSG a 1 3\r\nabc\r\nMSG a 1 r 2\r\nxy\r\nPING\r\nMSG a 1 5\r\nab";
        let (used, n, others) = count_all(Kind::Nats, s);
        assert_eq!((n, others), (2, 2));
        assert_eq!(&s[used..], b"MSG a 1 5\r\nab");
    }

    #[test]
    fn redis_messages_and_partials() {
        let s = b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$3\r\nabc\r\n:5\r\n*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$3\r\nab";
        let (used, n, others) = count_all(Kind::Redis, s);
        assert_eq!((n, others), (1, 2));
        assert_eq!(&s[used..], b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$3\r\nab");
    }

    #[test]
    fn hummer_pushes_and_replies() {
        let mut s = Vec::new();
        for f in [&[0xea, 0x03, 0x00][..], &[0x08, 0x05, 0xda, 0x02, 0x00]] {
            s.extend_from_slice(&(f.len() as u32).to_be_bytes());
            s.extend_from_slice(f);
        }
        s.extend_from_slice(&[0, 0, 0, 9, 0xe2]);
        let (used, n, others) = count_all(Kind::Hummer { reliable: false }, &s);
        assert_eq!((n, others), (1, 1));
        assert_eq!(used, s.len() - 5);
    }
}
