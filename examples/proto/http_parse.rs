//! An incremental HTTP/1.x request parser, for the `http` example and its tests.
//!
//! "Incremental" here means: hand it whatever bytes have arrived, and it says
//! either "not yet" (`Ok(None)`: call again with more), "here is a request
//! head of `head_len` bytes", or "this is not HTTP" (an [`Error`] that maps to
//! a status code). It keeps no state between calls, so a request split across
//! any number of reads parses the same as one that arrived whole. Re-scanning
//! a partial head is cheap because a head is capped at [`MAX_HEAD`] bytes.
//!
//! It borrows from the input and allocates nothing. What it checks, so the
//! server never acts on something it misread:
//! - request line `METHOD SP target SP HTTP/1.x` (exactly one space apart),
//!   checked as soon as its line is complete;
//! - header names are tokens directly followed by `:`; values hold no control
//!   bytes; obsolete line folding is refused;
//! - `Content-Length` is decimal digits that fit in a u64, and agrees with any
//!   repetition of itself; it may not be combined with `Transfer-Encoding`;
//! - `Transfer-Encoding` must end in `chunked` (else the body has no length);
//! - HTTP/1.1 requests carry exactly one `Host`.
//!
//! Lines may end in CRLF or a bare LF (RFC 9112 allows recipients to accept
//! the latter), and empty lines before a request line are skipped.

/// The largest request head (request line + headers + the blank line) we accept.
pub const MAX_HEAD: usize = 8 * 1024;

/// How the request's body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// No body.
    Empty,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// A chunked body follows the head; see [`Chunked`].
    Chunked,
}

/// A parsed request head, borrowing from the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a [u8],
    pub target: &'a [u8],
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    pub body: Body,
    /// Bytes of input the head took (the body, if any, follows).
    pub head_len: usize,
}

/// Why the input is not an acceptable request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Malformed: answer 400. The text says what was wrong.
    BadRequest(&'static str),
    /// No complete head within [`MAX_HEAD`] bytes: answer 431.
    HeadTooLarge,
    /// Well-formed, but not HTTP/1.0 or HTTP/1.1: answer 505.
    VersionNotSupported,
}

impl Error {
    /// The status line's code and reason phrase.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            Error::BadRequest(_) => (400, "Bad Request"),
            Error::HeadTooLarge => (431, "Request Header Fields Too Large"),
            Error::VersionNotSupported => (505, "HTTP Version Not Supported"),
        }
    }

    /// A short explanation, for the response body and the log.
    pub fn detail(&self) -> &'static str {
        match self {
            Error::BadRequest(why) => why,
            Error::HeadTooLarge => "request head over 8 KiB",
            Error::VersionNotSupported => "only HTTP/1.0 and HTTP/1.1 are served",
        }
    }
}

/// Parse one request head from the start of `buf`.
///
/// `Ok(None)`: the head is not complete yet; call again with more bytes.
pub fn parse(buf: &[u8]) -> Result<Option<Request<'_>>, Error> {
    // Skip empty lines before the request line (some clients send a stray
    // CRLF after a body).
    let mut pos = 0;
    while pos < buf.len() && (buf[pos] == b'\r' || buf[pos] == b'\n') {
        if buf[pos] == b'\r' && buf.get(pos + 1).is_some_and(|&b| b != b'\n') {
            return Err(Error::BadRequest("stray CR before the request line"));
        }
        pos += 1;
        if pos > MAX_HEAD {
            return Err(Error::HeadTooLarge);
        }
    }
    let start = pos;
    let Some((line, next)) = next_line(buf, pos, start)? else {
        return Ok(None);
    };
    let (method, target, minor) = request_line(line)?;
    pos = next;

    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut hosts = 0;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    loop {
        let Some((line, next)) = next_line(buf, pos, start)? else {
            return Ok(None);
        };
        pos = next;
        if line.is_empty() {
            break;
        }
        let (name, value) = header_line(line)?;
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_decimal(value).ok_or(Error::BadRequest("bad Content-Length"))?;
            if content_length.is_some_and(|m| m != n) {
                return Err(Error::BadRequest("conflicting Content-Length headers"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // The codings apply in order; only a final `chunked` tells where
            // the body ends. A later header line extends the list.
            transfer_encoding = true;
            let last = value.rsplit(|&b| b == b',').next().map(trim).unwrap_or_default();
            chunked = last.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in value.split(|&b| b == b',').map(trim) {
                conn_close |= option.eq_ignore_ascii_case(b"close");
                conn_keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }

    let body = match (transfer_encoding, content_length) {
        (true, Some(_)) => return Err(Error::BadRequest("both Transfer-Encoding and Content-Length")),
        (true, None) if minor == 0 => return Err(Error::BadRequest("Transfer-Encoding in HTTP/1.0")),
        (true, None) if !chunked => {
            return Err(Error::BadRequest("Transfer-Encoding does not end in chunked"))
        }
        (true, None) => Body::Chunked,
        (false, Some(0)) | (false, None) => Body::Empty,
        (false, Some(n)) => Body::Length(n),
    };
    if minor == 1 && hosts != 1 {
        return Err(Error::BadRequest("HTTP/1.1 needs exactly one Host header"));
    }
    let keep_alive = if minor == 1 {
        !conn_close
    } else {
        conn_keep_alive && !conn_close
    };
    Ok(Some(Request {
        method,
        target,
        minor,
        keep_alive,
        body,
        head_len: pos,
    }))
}

/// The line starting at `pos`, without its CRLF or LF, and where the next
/// begins. `None` if its end has not arrived; an error if the head that began
/// at `start` has outgrown [`MAX_HEAD`].
fn next_line(buf: &[u8], pos: usize, start: usize) -> Result<Option<(&[u8], usize)>, Error> {
    let limit = buf.len().min(start + MAX_HEAD);
    match buf[pos..limit].iter().position(|&b| b == b'\n') {
        Some(i) => {
            let line = &buf[pos..pos + i];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            Ok(Some((line, pos + i + 1)))
        }
        None if buf.len() - start >= MAX_HEAD => Err(Error::HeadTooLarge),
        None => Ok(None),
    }
}

fn request_line(line: &[u8]) -> Result<(&[u8], &[u8], u8), Error> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::BadRequest(
            "request line is not METHOD SP target SP version",
        ));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(Error::BadRequest("bad method"));
    }
    if target.is_empty() || !target.iter().all(|&b| b.is_ascii_graphic()) {
        return Err(Error::BadRequest("bad request target"));
    }
    match version {
        b"HTTP/1.1" => Ok((method, target, 1)),
        b"HTTP/1.0" => Ok((method, target, 0)),
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Err(Error::VersionNotSupported)
        }
        _ => Err(Error::BadRequest("bad HTTP version")),
    }
}

fn header_line(line: &[u8]) -> Result<(&[u8], &[u8]), Error> {
    if line[0] == b' ' || line[0] == b'\t' {
        return Err(Error::BadRequest("obsolete header line folding"));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(Error::BadRequest("header line without a colon"))?;
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(Error::BadRequest("bad header name"));
    }
    let value = trim(&line[colon + 1..]);
    // Visible ASCII, space, tab, and (obsolete but allowed) bytes >= 0x80.
    if !value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
    {
        return Err(Error::BadRequest("control byte in a header value"));
    }
    Ok((name, value))
}

/// The characters of an HTTP token (method, header name).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Strip optional whitespace (spaces and tabs) from both ends.
fn trim(s: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !is_ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Skips over a chunked request body as it arrives: `size[;ext] CRLF data
/// CRLF ... 0 CRLF [trailer lines] CRLF`. The server does not need the data,
/// so nothing is kept but the state between calls.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chunked {
    state: ChunkState,
    /// Bytes of trailer lines seen, capped like a head.
    trailer_len: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF that ends chunk data.
    DataEnd,
    /// After the last (zero-size) chunk: trailer lines until an empty one.
    Trailer,
    Done,
}

/// The longest chunk-size line (with extensions) we wait for.
const MAX_CHUNK_LINE: usize = 1024;

impl Chunked {
    /// Consume what of `buf` belongs to the body. Returns the bytes consumed
    /// and whether the body is complete; a partial line is left unconsumed,
    /// to be offered again with more bytes.
    pub fn skip(&mut self, buf: &[u8]) -> Result<(usize, bool), Error> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match self.state {
                ChunkState::Done => return Ok((pos, true)),
                ChunkState::Data(left) => {
                    let n = left.min(rest.len() as u64);
                    pos += n as usize;
                    self.state = if n == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n)
                    };
                    if n < left {
                        return Ok((pos, false));
                    }
                }
                ChunkState::DataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        pos += 2;
                        self.state = ChunkState::Size;
                    }
                    [b'\n', ..] => {
                        pos += 1;
                        self.state = ChunkState::Size;
                    }
                    [] | [b'\r'] => return Ok((pos, false)),
                    _ => return Err(Error::BadRequest("chunk data not followed by CRLF")),
                },
                ChunkState::Size => {
                    let Some(nl) = rest.iter().take(MAX_CHUNK_LINE).position(|&b| b == b'\n') else {
                        if rest.len() >= MAX_CHUNK_LINE {
                            return Err(Error::BadRequest("chunk-size line too long"));
                        }
                        return Ok((pos, false));
                    };
                    let line = &rest[..nl];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    let size_end = line.iter().position(|&b| b == b';').unwrap_or(line.len());
                    let size =
                        parse_hex(trim(&line[..size_end])).ok_or(Error::BadRequest("bad chunk size"))?;
                    pos += nl + 1;
                    self.state = if size == 0 {
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Trailer => {
                    let room = MAX_HEAD - self.trailer_len;
                    let Some(nl) = rest.iter().take(room).position(|&b| b == b'\n') else {
                        if rest.len() >= room {
                            return Err(Error::HeadTooLarge);
                        }
                        return Ok((pos, false));
                    };
                    let line = &rest[..nl];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if line.is_empty() {
                        self.state = ChunkState::Done;
                    } else {
                        header_line(line)?;
                        self.trailer_len += nl + 1;
                    }
                    pos += nl + 1;
                }
            }
        }
    }
}

fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        let d = (b as char).to_digit(16)?;
        Some(n << 4 | u64::from(d))
    })
}
