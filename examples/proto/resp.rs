//! RESP2, the Redis protocol: parsing requests incrementally, and encoding replies.
//!
//! It reads requests as redis-server 7 does, quirks included, so that a
//! client sees the same answers from both: the same error texts, and the
//! same leniency (the byte after a length line's CR and the two bytes after
//! a bulk string's data are skipped unread, as Redis skips them).
//!
//! A request is either an array of bulk strings (what client libraries send):
//!
//! ```text
//! *2\r\n$3\r\nGET\r\n$3\r\nkey\r\n
//! ```
//!
//! or an *inline* command: any line that does not start with `*` is one
//! line of space-separated words (what telnet users and `redis-cli --pipe`
//! files send), where `"..."` and `'...'` quote words with spaces and
//! `"\n"`, `"\x41"`-style escapes:
//!
//! ```text
//! SET greeting "hello world"\r\n
//! ```
//!
//! A [`Parser`] answers "not yet" (`Ok(None)`) until a whole command is in
//! the buffer, and remembers how far it got: offered the same growing buffer
//! again, it goes on from the first element it has not seen, so a command
//! that arrives in a thousand pieces is examined once, not a thousand times
//! from its start (a 1,048,576-element array in 2 KiB pieces cost 10 times
//! the CPU of one piece when every read re-parsed it). [`parse`] is the
//! same with no memory, for one-off use. A protocol error is final: the
//! server replies [`ProtocolError::message`] and closes, since it can no
//! longer tell where the next command starts.

use std::fmt;
use std::io::Write;

/// The largest bulk string a request may carry (as in Redis).
pub const MAX_BULK: i64 = 512 * 1024 * 1024;
/// The most arguments one array request may have (Redis 7: `INT_MAX`).
pub const MAX_ARGS: i64 = i32::MAX as i64;
/// The longest inline command line: more than this with no newline is an
/// error (Redis's `PROTO_INLINE_MAX_SIZE`).
pub const MAX_INLINE: usize = 64 * 1024;

/// The longest length line we wait for: `*`/`$`, a sign, 19 digits, CR.
const MAX_LENGTH_LINE: usize = 22;
/// Buffers grown past this by one huge command are let go afterwards, so a
/// connection that once sent a million arguments does not keep their room.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Why the input is not RESP. [`ProtocolError::message`] is Redis's reply
/// for each, word for word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// An array count that is not an integer or is over [`MAX_ARGS`].
    BadArrayLength,
    /// A bulk length that is not an integer, is negative, or is over 512 MiB.
    BadBulkLength,
    /// An array element that does not start with `$`.
    ExpectedBulk(u8),
    /// More than [`MAX_INLINE`] bytes of an inline line and no newline.
    InlineTooLong,
    /// An inline line with an unterminated quote, or a closing quote
    /// followed by something other than a space.
    UnbalancedQuotes,
}

impl ProtocolError {
    /// The error line redis-server sends for it (without the `-` and the
    /// CRLF), byte for byte: `ExpectedBulk`'s byte is sent as it came.
    pub fn message(&self) -> Vec<u8> {
        let mut m = b"ERR Protocol error: ".to_vec();
        match self {
            ProtocolError::BadArrayLength => m.extend_from_slice(b"invalid multibulk length"),
            ProtocolError::BadBulkLength => m.extend_from_slice(b"invalid bulk length"),
            ProtocolError::ExpectedBulk(b) => {
                m.extend_from_slice(b"expected '$', got '");
                m.extend_from_slice(&[*b, b'\'']);
            }
            ProtocolError::InlineTooLong => m.extend_from_slice(b"too big inline request"),
            ProtocolError::UnbalancedQuotes => m.extend_from_slice(b"unbalanced quotes in request"),
        }
        m
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message().escape_ascii())
    }
}

/// A command's arguments, copied out of the input into one buffer that is
/// reused from command to command (no allocation per command once warm).
#[derive(Debug, Default)]
pub struct Args {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Args {
    /// How many arguments (the command name included).
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True for an empty request (an empty inline line, or `*0`, `*-1`).
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Argument `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.data[start..end])
    }

    /// All arguments, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// Heap bytes held by the argument buffers.
    pub fn capacity_bytes(&self) -> usize {
        self.data.capacity() + self.ends.capacity() * std::mem::size_of::<usize>()
    }

    /// Forget the arguments, letting go of buffers a huge command grew.
    pub fn clear(&mut self) {
        shrink_clear(&mut self.data);
        shrink_clear(&mut self.ends);
    }

    fn end_arg(&mut self) {
        self.ends.push(self.data.len());
    }
}

impl std::ops::Index<usize> for Args {
    type Output = [u8];
    fn index(&self, i: usize) -> &[u8] {
        self.get(i).expect("argument index out of range")
    }
}

/// Empty `v`, and let its allocation go if one huge command grew it.
fn shrink_clear<T>(v: &mut Vec<T>) {
    if v.capacity() * std::mem::size_of::<T>() > KEEP_CAPACITY {
        *v = Vec::new();
    } else {
        v.clear();
    }
}

/// Parse one command from the start of `buf` into `args`, remembering
/// nothing: see [`Parser`] for a command that arrives in pieces.
///
/// `Ok(Some(n))`: a command took `n` bytes and its arguments are in `args`
/// (none for an empty line or an empty array: nothing to run). `Ok(None)`:
/// the command is not complete yet; call again with more bytes.
pub fn parse(buf: &[u8], args: &mut Args) -> Result<Option<usize>, ProtocolError> {
    Parser::default().parse(buf, args)
}

/// A parser that remembers how far into a half-arrived command it got.
///
/// After `Ok(None)` the next call must be given the same bytes again with
/// more after them (what a connection's unconsumed input is); it goes on
/// where it stopped. After a whole command or an error it starts afresh.
#[derive(Debug, Default)]
pub struct Parser {
    /// The array's element count, once its line has been read.
    count: Option<usize>,
    /// Where the next element not yet seen starts.
    pos: usize,
    /// Where each bulk string seen so far lies in the input.
    spans: Vec<(usize, usize)>,
    /// An inline line: how many bytes are known to hold no newline.
    scanned: usize,
    /// Bytes examined so far (length lines and inline text; bulk data is
    /// skipped, then copied once): the measure of the parser's work.
    examined: u64,
}

impl Parser {
    /// Parse one command from the start of `buf` into `args`, as [`parse`]
    /// does, going on from where the previous `Ok(None)` stopped.
    pub fn parse(&mut self, buf: &[u8], args: &mut Args) -> Result<Option<usize>, ProtocolError> {
        args.clear();
        if buf.len() < self.pos || buf.len() < self.scanned {
            // Not the buffer it saw before, grown: start over.
            self.reset();
        }
        // As in Redis, whatever does not start with `*` is an inline line.
        let result = match buf.first() {
            None => Ok(None),
            Some(b'*') => self.parse_array(buf, args),
            Some(_) => self.parse_inline(buf, args),
        };
        if result != Ok(None) {
            self.reset();
        }
        result
    }

    /// Bytes examined since the parser was made.
    pub fn examined(&self) -> u64 {
        self.examined
    }

    /// Bytes of notes on a half-arrived command (where each element lies),
    /// whatever the buffer's spare capacity.
    pub fn notes_bytes(&self) -> usize {
        self.spans.len() * std::mem::size_of::<(usize, usize)>()
    }

    /// Heap bytes held for a half-arrived command.
    pub fn capacity_bytes(&self) -> usize {
        self.spans.capacity() * std::mem::size_of::<(usize, usize)>()
    }

    fn reset(&mut self) {
        self.count = None;
        self.pos = 0;
        self.scanned = 0;
        shrink_clear(&mut self.spans);
    }

    fn parse_array(&mut self, buf: &[u8], args: &mut Args) -> Result<Option<usize>, ProtocolError> {
        if self.count.is_none() {
            // Nearly every command arrives whole: take it in one pass. One
            // that does not is scanned again below, once, and from then on
            // resumed where it stopped.
            if let Some(end) = self.parse_whole(buf, args)? {
                return Ok(Some(end));
            }
            args.clear();
        }
        let count = match self.count {
            Some(count) => count,
            None => {
                let Some((count, pos)) = self.array_len(buf)? else {
                    return Ok(None);
                };
                self.pos = pos;
                *self.count.insert(count)
            }
        };
        // First find every bulk string (reading only the length lines), then
        // copy them out once the whole command is here.
        while self.spans.len() < count {
            let Some((start, end)) = self.bulk_at(buf, self.pos)? else {
                return Ok(None);
            };
            self.spans.push((start, end));
            self.pos = end + 2;
        }
        let total = self.spans.iter().map(|(start, end)| end - start).sum();
        args.data.reserve(total);
        args.ends.reserve(count);
        for &(start, end) in &self.spans {
            args.data.extend_from_slice(&buf[start..end]);
            args.end_arg();
        }
        Ok(Some(self.pos))
    }

    /// A command that is all in `buf`, copied out as its lengths are read;
    /// `Ok(None)` (and `args` half-filled) when it is not all there. The
    /// same checks in the same order as the resumable path, so the same
    /// answer.
    fn parse_whole(&mut self, buf: &[u8], args: &mut Args) -> Result<Option<usize>, ProtocolError> {
        let Some((count, mut pos)) = self.array_len(buf)? else {
            return Ok(None);
        };
        for _ in 0..count {
            let Some((start, end)) = self.bulk_at(buf, pos)? else {
                return Ok(None);
            };
            args.data.extend_from_slice(&buf[start..end]);
            args.end_arg();
            pos = end + 2;
        }
        Ok(Some(pos))
    }

    /// The array's element count, and where its first element starts.
    fn array_len(&mut self, buf: &[u8]) -> Result<Option<(usize, usize)>, ProtocolError> {
        let Some((count, pos)) = self.length_line(buf, 1, ProtocolError::BadArrayLength)? else {
            return Ok(None);
        };
        if count > MAX_ARGS {
            return Err(ProtocolError::BadArrayLength);
        }
        // Redis takes any count below 1 (`*0`, `*-1`, `*-5`) for an empty
        // request: no command, no reply.
        Ok(Some((count.max(0) as usize, pos)))
    }

    /// Where the data of the bulk string whose `$` is at `pos` lies, once
    /// it is all in `buf`.
    #[inline]
    fn bulk_at(&mut self, buf: &[u8], pos: usize) -> Result<Option<(usize, usize)>, ProtocolError> {
        match buf.get(pos) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(&b) => return Err(ProtocolError::ExpectedBulk(b)),
        }
        let Some((len, start)) = self.length_line(buf, pos + 1, ProtocolError::BadBulkLength)? else {
            return Ok(None);
        };
        if !(0..=MAX_BULK).contains(&len) {
            return Err(ProtocolError::BadBulkLength);
        }
        let end = start + len as usize;
        // The data's CRLF is skipped unread, as Redis does: a client that
        // sends `$4\r\nPINGxx` gets PONG from both.
        if buf.len() < end + 2 {
            return Ok(None);
        }
        Ok(Some((start, end)))
    }

    /// [`length_line`], counting the bytes it may look at.
    fn length_line(
        &mut self,
        buf: &[u8],
        pos: usize,
        bad: ProtocolError,
    ) -> Result<Option<(i64, usize)>, ProtocolError> {
        self.examined += (buf.len().min(pos + MAX_LENGTH_LINE + 1) - pos.min(buf.len())) as u64;
        length_line(buf, pos, bad)
    }

    fn parse_inline(&mut self, buf: &[u8], args: &mut Args) -> Result<Option<usize>, ProtocolError> {
        // A line of MAX_INLINE bytes and its newline fits; one byte more
        // with no newline is refused (Redis: `querylen > PROTO_INLINE_MAX_SIZE`).
        let window = &buf[..buf.len().min(MAX_INLINE + 1)];
        let from = self.scanned.min(window.len());
        self.examined += (window.len() - from) as u64;
        let Some(nl) = window[from..].iter().position(|&b| b == b'\n').map(|i| from + i) else {
            if window.len() > MAX_INLINE {
                return Err(ProtocolError::InlineTooLong);
            }
            self.scanned = window.len();
            return Ok(None);
        };
        let line = &buf[..nl];
        self.examined += line.len() as u64;
        split_inline(line.strip_suffix(b"\r").unwrap_or(line), args)?;
        Ok(Some(nl + 1))
    }
}

/// The integer between `buf[pos]` and the next CR, and where the line ends
/// (one byte after the CR, whatever that byte is: Redis does not look at it).
#[inline]
fn length_line(buf: &[u8], pos: usize, bad: ProtocolError) -> Result<Option<(i64, usize)>, ProtocolError> {
    // What nearly every length line is: up to 18 digits (no overflow
    // possible), no leading zero, a CR. Read in one pass; anything else
    // takes the general path, which gives the same answer for these.
    let window = &buf[pos.min(buf.len())..buf.len().min(pos + MAX_LENGTH_LINE)];
    let negative = window.first() == Some(&b'-');
    let first = usize::from(negative);
    let (mut i, mut n) = (first, 0i64);
    while i - first < 18 {
        match window
            .get(i)
            .and_then(|&b| b.checked_sub(b'0'))
            .filter(|&d| d <= 9)
        {
            Some(d) => n = n * 10 + i64::from(d),
            None => break,
        }
        i += 1;
    }
    // A 19th digit is not a CR: the general path takes it.
    let digits = i - first;
    let plain = digits > 0 && (window[first] != b'0' || (digits == 1 && !negative));
    if plain && window.get(i) == Some(&b'\r') {
        if buf.len() < pos + i + 2 {
            return Ok(None);
        }
        return Ok(Some((if negative { -n } else { n }, pos + i + 2)));
    }
    length_line_general(buf, pos, bad)
}

/// [`length_line`] for any input: stops at the first byte that cannot be
/// part of the number, then parses as Redis does.
#[inline(never)]
fn length_line_general(
    buf: &[u8],
    pos: usize,
    bad: ProtocolError,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let window = &buf[pos..buf.len().min(pos + MAX_LENGTH_LINE)];
    // Stop at the first byte that cannot be part of the number, so a line
    // ended by a bare LF (or any junk) is refused at once, not waited on:
    // Redis waits for a CR, then refuses the same line with the same error.
    let Some(i) = window.iter().position(|&b| !(b.is_ascii_digit() || b == b'-')) else {
        return if window.len() == MAX_LENGTH_LINE {
            Err(bad)
        } else {
            Ok(None)
        };
    };
    if window[i] != b'\r' {
        return Err(bad);
    }
    if buf.len() < pos + i + 2 {
        return Ok(None);
    }
    let n = parse_int(&window[..i]).ok_or(bad)?;
    Ok(Some((n, pos + i + 2)))
}

/// A decimal integer as Redis reads one (its `string2ll`): an optional
/// minus sign, then digits with no leading zero, and nothing else; `0` is
/// the one number that starts with `0`, and `-0` is refused.
pub fn parse_int(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    match digits {
        [b'0'] if !negative => return Some(0),
        [b'1'..=b'9', ..] if digits.len() <= 19 => {}
        _ => return None,
    }
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Accumulate negatively so that i64::MIN parses too.
    let n = digits
        .iter()
        .try_fold(0i64, |n, &d| n.checked_mul(10)?.checked_sub(i64::from(d - b'0')))?;
    if negative {
        Some(n)
    } else {
        n.checked_neg()
    }
}

/// C's `isspace`: the blanks between inline words.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// Split an inline line into words as Redis's `sdssplitargs` does: blanks
/// separate words; a quote may open anywhere in a word (`a"b c"` is the one
/// word `ab c`) and its closing quote must end the word.
fn split_inline(line: &[u8], args: &mut Args) -> Result<(), ProtocolError> {
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return Ok(());
        }
        // One word. Only these end it: a vertical tab or form feed is part
        // of a word, though it is skipped as a blank between words.
        loop {
            match line.get(i) {
                None | Some(b' ' | b'\t' | b'\n' | b'\r') => break,
                Some(&quote @ (b'"' | b'\'')) => {
                    i = unquote(line, i + 1, quote, &mut args.data)?;
                    break;
                }
                Some(&b) => {
                    args.data.push(b);
                    i += 1;
                }
            }
        }
        args.end_arg();
    }
}

/// Copy the quoted text from `line[i..]` to `out`, resolving escapes, up to
/// the closing `quote`; returns where the text after it starts.
fn unquote(line: &[u8], mut i: usize, quote: u8, out: &mut Vec<u8>) -> Result<usize, ProtocolError> {
    let hex = |i: usize| line.get(i).and_then(|&b| (b as char).to_digit(16));
    loop {
        let Some(&b) = line.get(i) else {
            return Err(ProtocolError::UnbalancedQuotes);
        };
        let next = line.get(i + 1).copied();
        // What `\xHH` stands for, if that is what starts here.
        let hex_byte = hex(i + 2).zip(hex(i + 3)).map(|(hi, lo)| (hi * 16 + lo) as u8);
        match (b, next, hex_byte) {
            _ if b == quote => {
                if next.is_some_and(|c| !is_space(c)) {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                return Ok(i + 1);
            }
            // Single quotes know one escape, \' ; double quotes more.
            (b'\\', Some(b'\''), _) if quote == b'\'' => {
                out.push(b'\'');
                i += 2;
            }
            (b'\\', Some(b'x'), Some(byte)) if quote == b'"' => {
                out.push(byte);
                i += 4;
            }
            (b'\\', Some(e), _) if quote == b'"' => {
                out.push(match e {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 0x08,
                    b'a' => 0x07,
                    other => other,
                });
                i += 2;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
}

/// Reply encoders: each appends one RESP2 value to `out`.
pub mod reply {
    use super::Write;

    /// `+s`: a status line such as `OK` or `PONG`.
    pub fn simple(out: &mut Vec<u8>, s: &str) {
        out.push(b'+');
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// `-msg`: an error; `msg` starts with its kind, e.g. `ERR syntax error`.
    pub fn error(out: &mut Vec<u8>, msg: &str) {
        error_bytes(out, msg.as_bytes());
    }

    /// An error whose text holds bytes from the client, which need not be
    /// UTF-8. Cleaned as Redis cleans such a message: CRs and LFs at its
    /// ends dropped, the ones inside made spaces (a CR or LF would end the
    /// line early, and a client would misread the rest).
    pub fn error_bytes(out: &mut Vec<u8>, msg: &[u8]) {
        let crlf = |b: &u8| *b == b'\r' || *b == b'\n';
        let start = msg.iter().position(|b| !crlf(b)).unwrap_or(msg.len());
        let end = msg.iter().rposition(|b| !crlf(b)).map_or(start, |i| i + 1);
        out.push(b'-');
        out.extend(msg[start..end].iter().map(|&b| if crlf(&b) { b' ' } else { b }));
        out.extend_from_slice(b"\r\n");
    }

    /// `:n`.
    pub fn int(out: &mut Vec<u8>, n: i64) {
        let _ = write!(out, ":{n}\r\n");
    }

    /// `$len` and the bytes.
    pub fn bulk(out: &mut Vec<u8>, b: &[u8]) {
        let _ = write!(out, "${}\r\n", b.len());
        out.extend_from_slice(b);
        out.extend_from_slice(b"\r\n");
    }

    /// `$-1`: the null bulk string ("no such key").
    pub fn null(out: &mut Vec<u8>) {
        out.extend_from_slice(b"$-1\r\n");
    }

    /// `*n`: an array header; the `n` elements follow.
    pub fn array(out: &mut Vec<u8>, n: usize) {
        let _ = write!(out, "*{n}\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::{length_line, length_line_general, ProtocolError};

    /// The one-pass path answers exactly as the general one, on every
    /// short line over the bytes that matter and on the numbers at the
    /// edges (18, 19, 20 digits; i64's ends), whole and cut short.
    #[test]
    fn fast_length_lines_agree_with_the_general_path() {
        let alphabet = b"0159-\rx";
        let mut lines: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..5 {
            let longer: Vec<Vec<u8>> = lines
                .iter()
                .flat_map(|l| alphabet.iter().map(move |&b| [l.as_slice(), &[b]].concat()))
                .collect();
            lines.extend(longer);
        }
        lines.sort();
        lines.dedup();
        for n in [
            "999999999999999999",
            "1000000000000000000",
            "9223372036854775807",
            "-9223372036854775808",
        ] {
            for tail in ["", "0", "00"] {
                lines.push(format!("{n}{tail}").into_bytes());
                lines.push(format!("{n}{tail}\r\n").into_bytes());
            }
        }
        for line in &lines {
            for pos in 0..=1 {
                let buf = [&b"$"[..pos], line.as_slice(), b"\n"].concat();
                for cut in pos..=buf.len() {
                    let bad = ProtocolError::BadBulkLength;
                    assert_eq!(
                        length_line(&buf[..cut], pos, bad),
                        length_line_general(&buf[..cut], pos, bad),
                        "{:?}",
                        String::from_utf8_lossy(&buf[..cut])
                    );
                }
            }
        }
    }
}
