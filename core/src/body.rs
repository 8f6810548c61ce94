//! The bounded read of a request body from outside (the HTTP publish body):
//! a declared `Content-Length` over the limit is refused before any byte is
//! read, and a body without one (chunked) is collected chunk by chunk and
//! refused as soon as more than the limit has arrived, so a client cannot
//! make the Worker hold more than `HERALD_MAX_FRAME_BYTES` of it. The glue
//! (`src/edge/http.rs`, `read_body_bounded`) feeds the runtime's chunks in
//! and stops reading at the first refusal.

use crate::error::{ErrorCode, Rejection};

/// Refuses a declared `Content-Length` over `max` before anything is read.
/// A missing or unparsable header declares nothing: the streamed read
/// bounds such a body.
pub fn check_declared_length(content_length: Option<&str>, max: usize) -> Result<(), Rejection> {
    match content_length.and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(declared) if declared > max as u64 => Err(Rejection::new(
            ErrorCode::TooLarge,
            format!("body is {declared} bytes; the limit is {max}"),
        )),
        _ => Ok(()),
    }
}

/// A body collected up to `max` bytes.
#[derive(Debug)]
pub struct BoundedBody {
    max: usize,
    bytes: Vec<u8>,
}

impl BoundedBody {
    pub fn new(max: usize) -> Self {
        BoundedBody { max, bytes: Vec::new() }
    }

    /// Takes the next chunk of `len` bytes, copied in by `fill` into a slice
    /// of exactly `len` bytes, or refuses it (`too_large`) without calling
    /// `fill` when it would bring the body past `max`: the caller stops
    /// reading there, so nothing past the limit is ever held.
    pub fn push_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<(), Rejection> {
        let total = self.bytes.len().saturating_add(len);
        if total > self.max {
            return Err(Rejection::new(
                ErrorCode::TooLarge,
                format!("body is over {} bytes (the limit); reading stopped at {total}", self.max),
            ));
        }
        let start = self.bytes.len();
        self.bytes.resize(total, 0);
        if let Some(tail) = self.bytes.get_mut(start..) {
            fill(tail);
        }
        Ok(())
    }

    /// [`push_with`](Self::push_with) for a chunk already in memory.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), Rejection> {
        self.push_with(chunk.len(), |dst| dst.copy_from_slice(chunk))
    }

    /// Bytes taken so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The body as text. Invalid UTF-8 is replaced (U+FFFD), as a
    /// runtime's `text()` decodes it; the JSON parser then judges the text.
    pub fn into_text(self) -> String {
        match String::from_utf8(self.bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_length_over_the_limit_is_refused() {
        let r = check_declared_length(Some("1025"), 1024).unwrap_err();
        assert_eq!(r.code, ErrorCode::TooLarge);
        assert_eq!(r.code.http_status(), 413);
        assert!(r.message.contains("1025") && r.message.contains("1024"), "{}", r.message);
        // Larger than usize on any target: still a number, still refused.
        assert!(check_declared_length(Some("18446744073709551615"), 1024).is_err());
    }

    #[test]
    fn a_declared_length_within_the_limit_or_none_passes() {
        for v in [Some("1024"), Some("0"), Some(" 12 "), None, Some("lots"), Some("-1"), Some("")] {
            assert_eq!(check_declared_length(v, 1024), Ok(()), "{v:?}");
        }
    }

    #[test]
    fn chunks_up_to_the_limit_are_kept_in_order() {
        let mut b = BoundedBody::new(10);
        assert!(b.is_empty());
        b.push(b"abc").unwrap();
        b.push(b"").unwrap();
        b.push(b"defghij").unwrap();
        assert_eq!(b.len(), 10);
        assert_eq!(b.into_text(), "abcdefghij");
    }

    #[test]
    fn the_chunk_that_crosses_the_limit_is_refused_and_not_copied() {
        let mut b = BoundedBody::new(10);
        b.push(b"abcdefgh").unwrap();
        let mut copied = false;
        let r = b.push_with(3, |_| copied = true).unwrap_err();
        assert_eq!(r.code, ErrorCode::TooLarge);
        assert!(r.message.contains("10"), "{}", r.message);
        assert!(!copied, "a refused chunk must not be copied");
        assert_eq!(b.len(), 8, "nothing past the limit is held");
    }

    #[test]
    fn a_huge_chunk_is_refused_without_allocating() {
        let mut b = BoundedBody::new(10);
        b.push(b"a").unwrap();
        assert!(b.push_with(usize::MAX, |_| unreachable!()).is_err());
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn a_chunk_is_filled_into_a_slice_of_its_length() {
        let mut b = BoundedBody::new(16);
        b.push(b"{").unwrap();
        b.push_with(4, |dst| {
            assert_eq!(dst.len(), 4);
            dst.copy_from_slice(b"\"a\":");
        })
        .unwrap();
        b.push(b"1}").unwrap();
        assert_eq!(b.into_text(), r#"{"a":1}"#);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_refused() {
        let mut b = BoundedBody::new(16);
        b.push(b"a\xffb").unwrap();
        assert_eq!(b.into_text(), "a\u{fffd}b");
    }
}
