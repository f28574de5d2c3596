//! The `kv` example's RESP2 parser and reply encoders
//! (examples/proto/resp.rs): arrays of bulk strings, inline commands,
//! pipelining, every command split at every byte, malformed and oversized
//! input.

#[path = "../examples/proto/resp.rs"]
#[allow(dead_code)]
mod resp;

use resp::{parse, parse_int, reply, Args, ProtocolError, MAX_INLINE};

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
fn empty_and_null_arrays_are_no_command() {
    assert_eq!(ok(b"*0\r\n"), (4, vec![]));
    assert_eq!(ok(b"*-1\r\n"), (5, vec![]));
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
    (b":5\r\n", ProtocolError::UnexpectedType(b':')),
    (b"$3\r\nGET\r\n", ProtocolError::UnexpectedType(b'$')),
    (b"+PING\r\n", ProtocolError::UnexpectedType(b'+')),
    (b"-ERR\r\n", ProtocolError::UnexpectedType(b'-')),
    (b"*-2\r\n", ProtocolError::BadArrayLength),
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
    (b"*1\rX", ProtocolError::MissingCrlf),
    (b"*1\r\n$3\rX", ProtocolError::MissingCrlf),
    (b"*1\r\n$3\r\nabcXY", ProtocolError::MissingCrlf),
    (b"*1\r\n$3\r\nabc\rX", ProtocolError::MissingCrlf),
    (b"*1\r\n$3\r\nabc\n", ProtocolError::MissingCrlf),
    (b"SET \"a b\r\n", ProtocolError::UnbalancedQuotes),
    (b"SET \"a\"b\r\n", ProtocolError::UnbalancedQuotes),
    (b"SET 'a\r\n", ProtocolError::UnbalancedQuotes),
    (b"SET \"a\\\"\r\n", ProtocolError::UnbalancedQuotes),
];

#[test]
fn malformed_input() {
    for (input, expected) in MALFORMED {
        assert_eq!(err(input), *expected, "{:?}", String::from_utf8_lossy(input));
        assert!(!expected.to_string().is_empty());
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
    assert_eq!(err(b"*1048577\r\n"), ProtocolError::BadArrayLength);
    assert_eq!(err(b"*99999999999999999999\r\n"), ProtocolError::BadArrayLength);
    assert_eq!(err(b"*1\r\n$536870913\r\n"), ProtocolError::BadBulkLength);
    assert_eq!(
        err(b"*1\r\n$9223372036854775808\r\n"),
        ProtocolError::BadBulkLength
    );
    // At the limits: fine, just incomplete.
    let mut args = Args::default();
    assert_eq!(parse(b"*1048576\r\n$1\r\na\r\n", &mut args), Ok(None));
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
    // An inline line that never ends.
    let mut line = vec![b'a'; MAX_INLINE - 1];
    assert_eq!(parse(&line, &mut args), Ok(None));
    line.push(b'a');
    assert_eq!(err(&line), ProtocolError::InlineTooLong);
    line.truncate(MAX_INLINE - 1);
    line.push(b'\n');
    assert_eq!(ok(&line).0, MAX_INLINE, "a line of exactly the limit fits");
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
    ] {
        assert_eq!(parse_int(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
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
