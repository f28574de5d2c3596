//! The `http` example's request parser (examples/proto/http_parse.rs):
//! valid, pipelined and malformed requests, every request split at every
//! byte, oversized heads, and chunked bodies.

#[path = "../examples/proto/http_parse.rs"]
#[allow(dead_code)]
mod http_parse;

use http_parse::{parse, Body, Chunked, Error, Request, MAX_HEAD};

fn ok(input: &[u8]) -> Request<'_> {
    match parse(input) {
        Ok(Some(req)) => req,
        other => panic!(
            "{:?}: expected a request, got {other:?}",
            String::from_utf8_lossy(input)
        ),
    }
}

fn bad(input: &[u8]) -> Error {
    match parse(input) {
        Err(e) => e,
        other => panic!(
            "{:?}: expected an error, got {other:?}",
            String::from_utf8_lossy(input)
        ),
    }
}

#[test]
fn simple_get() {
    let input = b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n";
    let req = ok(input);
    assert_eq!(req.method, b"GET");
    assert_eq!(req.target, b"/plaintext");
    assert_eq!(req.minor, 1);
    assert!(req.keep_alive);
    assert_eq!(req.body, Body::Empty);
    assert_eq!(req.head_len, input.len());
}

#[test]
fn keep_alive_rules() {
    assert!(!ok(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
    assert!(!ok(b"GET / HTTP/1.1\r\nHost: a\r\nconnection: Upgrade, CLOSE\r\n\r\n").keep_alive);
    assert!(ok(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n").keep_alive);
    assert!(!ok(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
    assert!(ok(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    assert!(!ok(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
}

#[test]
fn bodies() {
    let req = ok(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(req.body, Body::Length(5));
    assert_eq!(req.head_len, 48, "the body is not part of the head");
    assert_eq!(
        ok(b"POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 0\r\n\r\n").body,
        Body::Empty
    );
    assert_eq!(
        ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n").body,
        Body::Length(7),
        "a repeated but equal Content-Length is fine"
    );
    assert_eq!(
        ok(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n").body,
        Body::Chunked
    );
}

#[test]
fn lenient_line_endings() {
    let req = ok(b"GET / HTTP/1.1\nHost: a\n\n");
    assert_eq!(req.head_len, 24);
    let req = ok(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(req.method, b"GET");
    assert_eq!(
        req.head_len, 31,
        "leading empty lines are consumed with the request"
    );
    let req = ok(b"GET / HTTP/1.1\r\nHost:a\r\nX-Empty:\r\nX-Tab:\tv \t\r\n\r\n");
    assert!(req.keep_alive);
}

#[test]
fn pipelined_requests_parse_one_after_another() {
    let mut stream = Vec::new();
    stream.extend_from_slice(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n");
    stream.extend_from_slice(b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
    stream.extend_from_slice(b"HEAD /3 HTTP/1.1\r\nHost: a\r\n\r\n");
    stream.extend_from_slice(b"GET /4 HTTP/1.0\r\n\r\n");
    let mut pos = 0;
    let mut seen = Vec::new();
    while pos < stream.len() {
        let req = ok(&stream[pos..]);
        seen.push((req.method.to_vec(), req.target.to_vec()));
        pos += req.head_len;
        if let Body::Length(n) = req.body {
            pos += n as usize;
        }
    }
    assert_eq!(pos, stream.len());
    let targets: Vec<_> = seen.iter().map(|(_, t)| t.as_slice()).collect();
    assert_eq!(targets, [&b"/1"[..], b"/2", b"/3", b"/4"]);
    assert_eq!(seen[2].0, b"HEAD");
}

const VALID: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /plaintext HTTP/1.1\r\nHost: localhost:8080\r\nAccept: text/plain,text/html;q=0.9\r\nConnection: keep-alive\r\n\r\n",
    b"POST /submit?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\nhello world",
    b"PUT /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET / HTTP/1.0\r\nUser-Agent: ab\r\n\r\n",
    b"\r\nOPTIONS * HTTP/1.1\nHost: a\n\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\n",
];

#[test]
fn every_valid_request_split_at_every_byte() {
    for input in VALID {
        let whole = ok(input);
        for cut in 0..whole.head_len {
            assert_eq!(
                parse(&input[..cut]),
                Ok(None),
                "{:?} cut at {cut} must be incomplete",
                String::from_utf8_lossy(input)
            );
        }
        for cut in whole.head_len..=input.len() {
            assert_eq!(
                ok(&input[..cut]),
                whole,
                "the head is complete from byte {}",
                whole.head_len
            );
        }
    }
}

/// Feed a request the way the net layer does: bytes arrive in pieces of
/// `step`, and an incomplete head is offered again with the next piece.
#[test]
fn growing_buffer_like_the_net_layer() {
    for input in VALID {
        let expected = ok(input).head_len;
        for step in 1..=7 {
            let mut buf = Vec::new();
            let mut got = None;
            for piece in input.chunks(step) {
                buf.extend_from_slice(piece);
                if let Some(req) = parse(&buf).unwrap() {
                    got = Some(req.head_len);
                    break;
                }
            }
            assert_eq!(got, Some(expected));
        }
    }
}

const MALFORMED: &[(&[u8], &str)] = &[
    (b"GET /\r\n\r\n", "missing version"),
    (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", "two spaces"),
    (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", "trailing space"),
    (b"GET / HTTP/1.1 x\r\nHost: a\r\n\r\n", "four parts"),
    (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", "bad method byte"),
    (b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", "control byte in target"),
    (b"GET / HTTX/1.1\r\nHost: a\r\n\r\n", "bad protocol name"),
    (b"GET / HTTP/1.1x\r\nHost: a\r\n\r\n", "bad version"),
    (b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", "stray CR"),
    (b"hello\r\n\r\n", "not HTTP"),
    (b"GET / HTTP/1.1\r\nHost a\r\n\r\n", "header without colon"),
    (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", "space before colon"),
    (b"GET / HTTP/1.1\r\n: a\r\nHost: a\r\n\r\n", "empty header name"),
    (
        b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        "obsolete folding",
    ),
    (
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
        "control byte in value",
    ),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", "DEL in value"),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
        "non-numeric length",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        "negative length",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
        "signed length",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n",
        "two lengths",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n",
        "empty length",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
        "length overflow",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "conflicting lengths",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "CL and TE",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        "TE without chunked",
    ),
    (
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "TE in HTTP/1.0",
    ),
    (b"GET / HTTP/1.1\r\n\r\n", "no Host"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "two Hosts"),
];

#[test]
fn malformed_requests_are_bad_requests() {
    for (input, why) in MALFORMED {
        assert!(matches!(bad(input), Error::BadRequest(_)), "{why}");
        assert_eq!(bad(input).status().0, 400, "{why}");
    }
}

#[test]
fn unsupported_versions_are_505() {
    assert_eq!(bad(b"GET / HTTP/2.0\r\n\r\n"), Error::VersionNotSupported);
    assert_eq!(bad(b"GET / HTTP/0.9\r\n\r\n").status().0, 505);
}

/// A malformed request is refused as soon as the bad line is complete, and
/// no prefix is refused for a different reason.
#[test]
fn every_malformed_request_split_at_every_byte() {
    for (input, why) in MALFORMED {
        let error = bad(input);
        for cut in 0..input.len() {
            let got = parse(&input[..cut]);
            assert!(
                got == Ok(None) || got == Err(error),
                "{why}: cut at {cut} gave {got:?}"
            );
        }
    }
    // The request line is judged before the head is complete.
    assert!(parse(b"BAD LINE\r\n").is_err());
}

#[test]
fn oversized_head_is_431() {
    // A head that never ends: incomplete up to the limit, then 431.
    let mut endless = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    while endless.len() < MAX_HEAD - 20 {
        endless.extend_from_slice(b"X-Filler: 0123456789\r\n");
    }
    assert_eq!(parse(&endless), Ok(None));
    endless.resize(MAX_HEAD + 10, b'a');
    assert_eq!(parse(&endless), Err(Error::HeadTooLarge));
    assert_eq!(
        Error::HeadTooLarge.status(),
        (431, "Request Header Fields Too Large")
    );

    // A complete head over the limit is refused too, and one under it is not.
    let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    big.resize(MAX_HEAD + 100, b'v');
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(parse(&big), Err(Error::HeadTooLarge));
    let mut fits = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    fits.resize(MAX_HEAD - 4, b'v');
    fits.extend_from_slice(b"\r\n\r\n");
    assert_eq!(ok(&fits).head_len, MAX_HEAD);

    // So is an endless run of empty lines or an endless request line.
    assert_eq!(parse(&vec![b'\n'; MAX_HEAD + 1]), Err(Error::HeadTooLarge));
    let mut long_line = b"GET /".to_vec();
    long_line.resize(MAX_HEAD, b'a');
    assert_eq!(parse(&long_line), Err(Error::HeadTooLarge));
}

/// Run a chunked body through the skipper in pieces of `step` bytes, keeping
/// unconsumed bytes the way the net layer does. Returns the bytes consumed.
fn skip_chunked(body: &[u8], step: usize) -> Result<Option<usize>, Error> {
    let mut skipper = Chunked::default();
    let mut pending = Vec::new();
    let mut consumed = 0;
    for piece in body.chunks(step) {
        pending.extend_from_slice(piece);
        let (n, done) = skipper.skip(&pending)?;
        consumed += n;
        pending.drain(..n);
        if done {
            return Ok(Some(consumed));
        }
    }
    Ok(None)
}

#[test]
fn chunked_bodies_are_skipped_in_any_split() {
    let bodies: &[&[u8]] = &[
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        b"A;name=value\r\n0123456789\r\n0\r\n\r\n",
        b"3\r\nabc\r\n0\r\nX-Trailer: yes\r\nX-Other: 1\r\n\r\n",
        b"1\nx\n0\n\n",
        b"0\r\n\r\n",
    ];
    for body in bodies {
        let mut with_next = body.to_vec();
        with_next.extend_from_slice(b"GET / HTTP/1.1\r\n");
        for step in 1..=body.len() {
            assert_eq!(
                skip_chunked(&with_next, step),
                Ok(Some(body.len())),
                "{:?} in pieces of {step}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(skip_chunked(&body[..body.len() - 1], 1), Ok(None));
    }
}

#[test]
fn malformed_chunked_bodies() {
    for body in [
        &b"zz\r\nhello\r\n0\r\n\r\n"[..],
        b"\r\n",
        b"5\r\nhelloXX0\r\n\r\n",
        b"11111111111111111\r\n",
        b"0\r\nbad trailer\r\n\r\n",
    ] {
        assert!(
            matches!(skip_chunked(body, 1), Err(Error::BadRequest(_))),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
    let endless_size = vec![b'1'; 2000];
    assert!(skip_chunked(&endless_size, 64).is_err());
    let mut endless_trailer = b"0\r\n".to_vec();
    endless_trailer.resize(MAX_HEAD + 10, b'x');
    assert_eq!(skip_chunked(&endless_trailer, 512), Err(Error::HeadTooLarge));
}

mod properties {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// Request-shaped input assembled from HTTP's building blocks.
    fn http_ish() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(&b"GET"[..]),
            Just(&b"POST"[..]),
            Just(&b" "[..]),
            Just(&b"/"[..]),
            Just(&b"HTTP/1.1"[..]),
            Just(&b"HTTP/1.0"[..]),
            Just(&b"\r\n"[..]),
            Just(&b"\n"[..]),
            Just(&b"\r"[..]),
            Just(&b"Host: a"[..]),
            Just(&b"Content-Length: 3"[..]),
            Just(&b"Transfer-Encoding: chunked"[..]),
            Just(&b"Connection: close"[..]),
            Just(&b":"[..]),
            Just(&b"x"[..]),
            Just(&b"\t"[..]),
        ];
        vec(piece, 0..30).prop_map(|ps| ps.concat())
    }

    /// Each prefix is either incomplete or gets what the whole input gets.
    fn check_prefixes(input: &[u8]) -> Result<(), TestCaseError> {
        let whole = parse(input);
        if let Ok(Some(req)) = &whole {
            prop_assert!(req.head_len > 0 && req.head_len <= input.len());
        }
        for cut in 0..input.len() {
            let got = parse(&input[..cut]);
            if got != Ok(None) {
                prop_assert_eq!(&got, &whole, "cut at {}", cut);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn any_input_obeys_the_prefix_rule(input in http_ish()) {
            check_prefixes(&input)?;
        }

        #[test]
        fn random_bytes_never_panic(input in vec(any::<u8>(), 0..200)) {
            check_prefixes(&input)?;
        }

        #[test]
        fn chunked_skipper_never_panics(input in vec(any::<u8>(), 0..200), step in 1usize..16) {
            let _ = skip_chunked(&input, step);
        }
    }
}
