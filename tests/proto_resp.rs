//! The `kv` example's RESP2 parser and reply encoders
//! (examples/proto/resp.rs): arrays of bulk strings, inline commands,
//! pipelining, every command split at every byte, malformed and oversized
//! input, and the error texts, which are redis-server 7's.

#[path = "../examples/proto/resp.rs"]
#[allow(dead_code)]
mod resp;

use resp::{parse, parse_int, reply, Args, Parser, ProtocolError, MAX_INLINE};

/// Parse one command; returns (bytes consumed, arguments).
fn ok(input: &[u8]) -> (usize, Vec<Vec<u8>>) {
    let mut args = Args::default();
    match parse(input, &mut args) {
        Ok(Some(n)) => (n, args.iter().map(<[u8]>::to_vec).collect()),
        other => panic!(
            "{:?}: expected a command, got {other:?}",
            String::from_utf8_lossy(input)
        ),
    }
}

fn err(input: &[u8]) -> ProtocolError {
    match parse(input, &mut Args::default()) {
        Err(e) => e,
        other => panic!(
            "{:?}: expected an error, got {other:?}",
            String::from_utf8_lossy(input)
        ),
    }
}

fn words(ws: &[&str]) -> Vec<Vec<u8>> {
    ws.iter().map(|w| w.as_bytes().to_vec()).collect()
}

#[test]
fn arrays_of_bulk_strings() {
    let input = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
    assert_eq!(ok(input), (input.len(), words(&["SET", "key", "value"])));
    // Binary-safe: CRLF and NUL inside a bulk string are data.
    let input = b"*2\r\n$4\r\nECHO\r\n$4\r\na\r\n\0\r\n";
    assert_eq!(ok(input).1, vec![b"ECHO".to_vec(), b"a\r\n\0".to_vec()]);
    // Empty bulk string.
    assert_eq!(
        ok(b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n").1,
        vec![b"GET".to_vec(), vec![]]
    );
}

#[test]
fn empty_and_negative_arrays_are_no_command() {
    assert_eq!(ok(b"*0\r\n"), (4, vec![]));
    assert_eq!(ok(b"*-1\r\n"), (5, vec![]));
    assert_eq!(ok(b"*-5\r\n"), (5, vec![]));
}

/// Redis skips the byte after a length line's CR and the two after a bulk
/// string's data without looking at them; so do we.
#[test]
fn line_ends_are_skipped_unread_as_redis_does() {
    for input in [&b"*1\rX$4\r\nPING\r\n"[..], b"*1\r\n$4\r\nPINGxx"] {
        assert_eq!(ok(input), (input.len(), words(&["PING"])));
    }
    // `b` and the CR after it are taken for the data's CRLF: an LF is left over.
    let input = b"*2\r\n$4\r\nECHO\r\n$1\r\nab\r\n";
    assert_eq!(ok(input), (input.len() - 1, words(&["ECHO", "a"])));
}

/// Whatever does not start with `*` is an inline line, even RESP's other types.
#[test]
fn other_first_bytes_are_inline() {
    assert_eq!(ok(b"$3\r\nGET\r\n"), (4, words(&["$3"])));
    assert_eq!(ok(b"+PING\r\n").1, words(&["+PING"]));
    assert_eq!(ok(b":5\n").1, words(&[":5"]));
}

#[test]
fn inline_commands() {
    assert_eq!(ok(b"PING\r\n"), (6, words(&["PING"])));
    assert_eq!(ok(b"PING\n"), (5, words(&["PING"])));
    assert_eq!(ok(b"  set\t a   b  \r\n").1, words(&["set", "a", "b"]));
    assert_eq!(ok(b"\r\n"), (2, vec![]), "an empty line is no command");
}

#[test]
fn inline_quotes_and_escapes() {
    assert_eq!(
        ok(b"SET \"hello world\" 'a b'\r\n").1,
        words(&["SET", "hello world", "a b"])
    );
    assert_eq!(
        ok(b"ECHO \"tab\\there\\n\\x41\\x4a\\\\\\\"q\"\r\n").1,
        words(&["ECHO", "tab\there\nAJ\\\"q"])
    );
    assert_eq!(ok(b"ECHO 'it\\'s \\n'\n").1, words(&["ECHO", "it's \\n"]));
    assert_eq!(ok(b"ECHO \"\"\n").1, words(&["ECHO", ""]));
    assert_eq!(ok(b"ECHO \"\\xZZ\"\n").1, words(&["ECHO", "xZZ"]));
    // A quote may open inside a word, as in Redis's sdssplitargs.
    assert_eq!(ok(b"SET k a\"b c\"\r\n").1, words(&["SET", "k", "ab c"]));
    assert_eq!(ok(b"ECHO x'y z'\n").1, words(&["ECHO", "xy z"]));
    // Vertical tab and form feed: blanks between words, part of a word.
    assert_eq!(ok(b"ECHO \x0bx\x0cy\r\n").1, words(&["ECHO", "x\x0cy"]));
    assert_eq!(ok(b"ECHO \"a\"\x0b\n").1, words(&["ECHO", "a"]));
}

#[test]
fn pipelined_commands_parse_one_after_another() {
    let stream = b"*1\r\n$4\r\nPING\r\nSET a 1\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n\r\n*0\r\nQUIT\r\n";
    let mut args = Args::default();
    let mut pos = 0;
    let mut seen = Vec::new();
    while pos < stream.len() {
        pos += parse(&stream[pos..], &mut args).unwrap().expect("complete");
        seen.push(
            args.iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    assert_eq!(seen, ["PING", "SET a 1", "GET a", "", "", "QUIT"]);
}

const VALID: &[&[u8]] = &[
    b"*1\r\n$4\r\nPING\r\n",
    b"*3\r\n$3\r\nSET\r\n$10\r\nkey:000001\r\n$3\r\nxxx\r\n",
    b"*2\r\n$4\r\nECHO\r\n$6\r\n\r\n\r\n\r\n\r\n",
    b"*0\r\n",
    b"*-1\r\n",
    b"SET k \"a b\"\r\n",
    b"PING\n",
    b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n",
];

#[test]
fn every_valid_command_split_at_every_byte() {
    let mut args = Args::default();
    for input in VALID {
        let (n, whole) = ok(input);
        for cut in 0..n {
            assert_eq!(
                parse(&input[..cut], &mut args),
                Ok(None),
                "{:?} cut at {cut} must be incomplete",
                String::from_utf8_lossy(input)
            );
        }
        for cut in n..=input.len() {
            assert_eq!(ok(&input[..cut]), (n, whole.clone()));
        }
    }
}

const MALFORMED: &[(&[u8], ProtocolError)] = &[
    (b"*1\r\n:5\r\n", ProtocolError::ExpectedBulk(b':')),
    (b"*2\r\n$3\r\nGET\r\n+OK\r\n", ProtocolError::ExpectedBulk(b'+')),
    (b"*1\r\n\r\n", ProtocolError::ExpectedBulk(b'\r')),
    (b"*-0\r\n", ProtocolError::BadArrayLength),
    (b"*00\r\n", ProtocolError::BadArrayLength),
    (b"*+1\r\n", ProtocolError::BadArrayLength),
    (b"*x\r\n", ProtocolError::BadArrayLength),
    (b"*\r\n", ProtocolError::BadArrayLength),
    (b"*1-\r\n", ProtocolError::BadArrayLength),
    (b"*1 \r\n", ProtocolError::BadArrayLength),
    (b"*1\n$4\r\nPING\r\n", ProtocolError::BadArrayLength),
    (b"*1\r\n$-1\r\n", ProtocolError::BadBulkLength),
    (b"*1\r\n$-2\r\n", ProtocolError::BadBulkLength),
    (b"*1\r\n$abc\r\n", ProtocolError::BadBulkLength),
    (b"*1\r\n$3x\r\nabc\r\n", ProtocolError::BadBulkLength),
    (b"*1\r\n$\r\n\r\n", ProtocolError::BadBulkLength),
    (b"SET \"a b\r\n", ProtocolError::UnbalancedQuotes),
    (b"SET \"a\"b\r\n", ProtocolError::UnbalancedQuotes),
    (b"SET 'a'b\r\n", ProtocolError::UnbalancedQuotes),
    (b"SET a\"b\r\n", ProtocolError::UnbalancedQuotes),
    (b"SET 'a\r\n", ProtocolError::UnbalancedQuotes),
    (b"SET \"a\\\"\r\n", ProtocolError::UnbalancedQuotes),
    (b"SET \"a\\\r\n", ProtocolError::UnbalancedQuotes),
];

/// The replies are redis-server 7's, byte for byte.
#[test]
fn error_messages_are_redis_texts() {
    let cases: [(ProtocolError, &[u8]); 6] = [
        (ProtocolError::BadArrayLength, b"invalid multibulk length"),
        (ProtocolError::BadBulkLength, b"invalid bulk length"),
        (ProtocolError::ExpectedBulk(b'x'), b"expected '$', got 'x'"),
        (ProtocolError::ExpectedBulk(0xff), b"expected '$', got '\xff'"),
        (ProtocolError::InlineTooLong, b"too big inline request"),
        (ProtocolError::UnbalancedQuotes, b"unbalanced quotes in request"),
    ];
    for (e, text) in cases {
        assert_eq!(e.message(), [b"ERR Protocol error: ", text].concat(), "{e}");
    }
    // A CR as the offending byte goes out as a space, as Redis sends it.
    let mut out = Vec::new();
    reply::error_bytes(&mut out, &ProtocolError::ExpectedBulk(b'\r').message());
    assert_eq!(out, b"-ERR Protocol error: expected '$', got ' '\r\n");
}

#[test]
fn malformed_input() {
    for (input, expected) in MALFORMED {
        assert_eq!(err(input), *expected, "{:?}", String::from_utf8_lossy(input));
        assert!(!expected.message().is_empty());
    }
}

/// An error is reported as soon as the offending byte is there, and no
/// prefix gets a different error.
#[test]
fn every_malformed_input_split_at_every_byte() {
    let mut args = Args::default();
    for (input, expected) in MALFORMED {
        for cut in 0..input.len() {
            let got = parse(&input[..cut], &mut args);
            assert!(
                got == Ok(None) || got == Err(*expected),
                "{:?} cut at {cut}: {got:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}

#[test]
fn oversized_input() {
    // Counts and lengths over the limits.
    assert_eq!(err(b"*2147483648\r\n"), ProtocolError::BadArrayLength);
    assert_eq!(err(b"*99999999999999999999\r\n"), ProtocolError::BadArrayLength);
    assert_eq!(err(b"*1\r\n$536870913\r\n"), ProtocolError::BadBulkLength);
    assert_eq!(
        err(b"*1\r\n$9223372036854775808\r\n"),
        ProtocolError::BadBulkLength
    );
    // At the limits: fine, just incomplete.
    let mut args = Args::default();
    assert_eq!(parse(b"*2147483647\r\n$1\r\na\r\n", &mut args), Ok(None));
    assert_eq!(parse(b"*1\r\n$536870912\r\nabc", &mut args), Ok(None));
    // A length line that never ends is refused once it cannot be a number.
    assert_eq!(
        err(&[b"*".as_slice(), &[b'1'; 30]].concat()),
        ProtocolError::BadArrayLength
    );
    assert_eq!(
        parse(&[b"*".as_slice(), &[b'1'; 15]].concat(), &mut args),
        Ok(None)
    );
    // An inline line that never ends: refused one byte past the limit.
    let mut line = vec![b'a'; MAX_INLINE];
    assert_eq!(parse(&line, &mut args), Ok(None));
    line.push(b'a');
    assert_eq!(err(&line), ProtocolError::InlineTooLong);
    line.truncate(MAX_INLINE);
    line.push(b'\n');
    assert_eq!(ok(&line).0, MAX_INLINE + 1, "a line of exactly the limit fits");
}

#[test]
fn integers() {
    assert_eq!(parse_int(b"0"), Some(0));
    assert_eq!(parse_int(b"-17"), Some(-17));
    assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
    assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
    for bad in [
        &b"9223372036854775808"[..],
        b"-9223372036854775809",
        b"",
        b"-",
        b"+1",
        b" 1",
        b"1x",
        b"--1",
        // Redis's string2ll refuses these; so must we (`SET n 007; INCR n`
        // is an error there, and was 8 here).
        b"007",
        b"00",
        b"-0",
        b"-01",
        b"01",
        b"1 ",
        b"99999999999999999999",
    ] {
        assert_eq!(parse_int(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
}

/// Feed `input` to one parser in pieces of `piece` bytes, as a connection
/// does (the unconsumed part offered again with the new bytes after it);
/// returns the command's length and the bytes the parser examined.
fn parse_in_pieces(parser: &mut Parser, input: &[u8], piece: usize) -> usize {
    let mut args = Args::default();
    let mut have = 0;
    loop {
        have = (have + piece).min(input.len());
        match parser.parse(&input[..have], &mut args) {
            Ok(Some(n)) => return n,
            Ok(None) if have < input.len() => {}
            other => panic!("cut at {have}: {other:?}"),
        }
    }
}

/// The elements of a huge array.
const HUGE: usize = 1024 * 1024;

/// An array of a million elements, each one byte.
fn huge_array() -> Vec<u8> {
    let n = HUGE;
    let mut input = format!("*{n}\r\n").into_bytes();
    input.extend_from_slice(&b"$1\r\nx\r\n".repeat(n));
    input
}

/// A 1,048,576-element array in 2 KiB pieces: the parser's work stays that
/// of one piece plus a length line per piece. A parser that started over
/// at each piece (as this one did) examined the array's length lines again
/// every time: thousands of times more, which the check below also shows.
#[test]
fn an_array_arriving_in_pieces_is_examined_once() {
    let input = huge_array();
    let mut whole = Parser::default();
    assert_eq!(parse_in_pieces(&mut whole, &input, input.len()), input.len());
    let mut pieces = Parser::default();
    assert_eq!(parse_in_pieces(&mut pieces, &input, 2048), input.len());
    let calls = input.len().div_ceil(2048) as u64;
    assert!(
        pieces.examined() <= whole.examined() + 2 * 23 * calls,
        "in pieces: {} bytes examined, in one: {}",
        pieces.examined(),
        whole.examined()
    );
    // Without memory (a fresh parser per call) the same costs far more.
    let mut forgetful = 0;
    let mut have = 0;
    for _ in 0..64 {
        have += 2048;
        let mut p = Parser::default();
        assert_eq!(p.parse(&input[..have], &mut Args::default()), Ok(None));
        forgetful += p.examined();
    }
    assert!(forgetful > 20 * (have as u64 / 7) * 5, "{forgetful}");
}

/// The same for an inline line arriving a byte at a time.
#[test]
fn an_inline_line_arriving_in_pieces_is_examined_once() {
    let mut line = vec![b'a'; MAX_INLINE - 2];
    line.push(b'\n');
    let mut p = Parser::default();
    assert_eq!(parse_in_pieces(&mut p, &line, 1), line.len());
    assert!(p.examined() <= 2 * line.len() as u64, "{}", p.examined());
}

/// Any split of a stream of commands into pieces, fed to one parser, finds
/// the commands the whole stream gives.
#[test]
fn a_parser_fed_in_pieces_finds_what_one_piece_gives() {
    let stream: Vec<u8> = [VALID.concat(), b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n".to_vec()].concat();
    let whole = {
        let mut args = Args::default();
        let mut pos = 0;
        let mut seen = Vec::new();
        while let Ok(Some(n)) = parse(&stream[pos..], &mut args) {
            pos += n;
            seen.push(args.iter().map(<[u8]>::to_vec).collect::<Vec<_>>());
        }
        assert_eq!(pos, stream.len());
        seen
    };
    for piece in 1..=17 {
        let mut parser = Parser::default();
        let mut args = Args::default();
        let (mut pending, mut seen) = (Vec::new(), Vec::new());
        for chunk in stream.chunks(piece) {
            pending.extend_from_slice(chunk);
            let mut used = 0;
            while let Some(n) = parser.parse(&pending[used..], &mut args).unwrap() {
                used += n;
                seen.push(args.iter().map(<[u8]>::to_vec).collect::<Vec<_>>());
            }
            pending.drain(..used);
        }
        assert!(pending.is_empty());
        assert_eq!(seen, whole, "pieces of {piece}");
    }
}

/// After a command of a million arguments, the buffers it grew are let go.
#[test]
fn buffers_shrink_back_after_a_huge_command() {
    let (n, input) = (HUGE, huge_array());
    let mut parser = Parser::default();
    let mut args = Args::default();
    assert_eq!(parser.parse(&input[..input.len() - 1], &mut args), Ok(None));
    assert!(parser.capacity_bytes() > 1024 * 1024);
    assert_eq!(parser.parse(&input, &mut args), Ok(Some(input.len())));
    assert_eq!(args.len(), n);
    assert_eq!(parser.capacity_bytes(), 0, "the parser let its spans go");
    assert!(args.capacity_bytes() > 1024 * 1024);
    args.clear();
    assert_eq!(args.capacity_bytes(), 0, "the arguments let their buffers go");
    // A small command keeps its buffers for the next one.
    assert_eq!(parser.parse(b"*1\r\n$4\r\nPING\r\n", &mut args), Ok(Some(14)));
    args.clear();
    assert!(args.capacity_bytes() > 0);
}

#[test]
fn replies() {
    let mut out = Vec::new();
    reply::simple(&mut out, "OK");
    reply::error(&mut out, "ERR bad\r\nthing");
    reply::int(&mut out, -42);
    reply::bulk(&mut out, b"a\r\nb");
    reply::null(&mut out);
    reply::array(&mut out, 2);
    reply::bulk(&mut out, b"");
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "+OK\r\n-ERR bad  thing\r\n:-42\r\n$4\r\na\r\nb\r\n$-1\r\n*2\r\n$0\r\n\r\n"
    );
}

mod properties {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// Bytes drawn mostly from what RESP and inline commands are made of,
    /// so that the interesting paths are hit often.
    fn resp_ish() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(&b"*"[..]),
            Just(&b"$"[..]),
            Just(&b"\r\n"[..]),
            Just(&b"\n"[..]),
            Just(&b"\r"[..]),
            Just(&b"-"[..]),
            Just(&b"1"[..]),
            Just(&b"2"[..]),
            Just(&b"0"[..]),
            Just(&b" "[..]),
            Just(&b"\""[..]),
            Just(&b"'"[..]),
            Just(&b"\\"[..]),
            Just(&b"x4"[..]),
            Just(&b"GET"[..]),
            Just(&b":"[..]),
        ];
        vec(piece, 0..40).prop_map(|ps| ps.concat())
    }

    /// The prefix rule, for any input: each prefix is either incomplete or
    /// gets exactly what the whole input gets (same command, same error).
    fn check_prefixes(input: &[u8]) -> Result<(), TestCaseError> {
        let mut args = Args::default();
        let whole = parse(input, &mut args);
        let whole_args: Vec<Vec<u8>> = args.iter().map(<[u8]>::to_vec).collect();
        if let Ok(Some(n)) = whole {
            prop_assert!(n > 0 && n <= input.len());
        }
        for cut in 0..input.len() {
            let got = parse(&input[..cut], &mut args);
            if got != Ok(None) {
                prop_assert_eq!(got, whole, "cut at {}", cut);
                let got_args: Vec<Vec<u8>> = args.iter().map(<[u8]>::to_vec).collect();
                prop_assert_eq!(&got_args, &whole_args);
            }
        }
        // One remembering parser offered the growing input gets the same.
        let mut parser = Parser::default();
        for cut in 0..=input.len() {
            let got = parser.parse(&input[..cut], &mut args);
            if got != Ok(None) || cut == input.len() {
                prop_assert_eq!(got, whole, "resumed, cut at {}", cut);
                let got_args: Vec<Vec<u8>> = args.iter().map(<[u8]>::to_vec).collect();
                prop_assert_eq!(&got_args, &whole_args);
                break;
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn any_input_obeys_the_prefix_rule(input in resp_ish()) {
            check_prefixes(&input)?;
        }

        #[test]
        fn random_bytes_never_panic(input in vec(any::<u8>(), 0..200)) {
            check_prefixes(&input)?;
        }

        #[test]
        fn encoded_commands_round_trip(args in vec(vec(any::<u8>(), 0..30), 1..6)) {
            let mut encoded = format!("*{}\r\n", args.len()).into_bytes();
            for a in &args {
                encoded.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                encoded.extend_from_slice(a);
                encoded.extend_from_slice(b"\r\n");
            }
            let (n, got) = ok(&encoded);
            prop_assert_eq!(n, encoded.len());
            prop_assert_eq!(got, args);
            check_prefixes(&encoded)?;
        }
    }
}
