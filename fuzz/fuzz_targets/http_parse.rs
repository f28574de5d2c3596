//! The HTTP request-head parser and body skipper of the `http` example
//! (examples/proto/http_parse.rs), on arbitrary bytes.
//!
//! Besides "no panic": a parsed head lies inside the input and parses the
//! same from exactly its own bytes; every shorter prefix of it is reported
//! incomplete (never an error, never a different request), which is what
//! the server relies on when a head arrives in pieces; and a chunked body
//! skipped in two pieces ends where it ends in one.
#![no_main]

#[path = "../../examples/proto/http_parse.rs"]
#[allow(dead_code)]
mod http_parse;

use http_parse::{parse, Chunked};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks a split point (as a fraction of the rest).
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    let whole = parse(data);
    if let Ok(Some(req)) = &whole {
        assert!(req.head_len > 0 && req.head_len <= data.len());
        assert_eq!(parse(&data[..req.head_len]).as_ref(), Ok(&Some(req.clone())));
        let k = req.head_len * usize::from(pick) / 256;
        assert_eq!(parse(&data[..k]), Ok(None), "prefix of {k} bytes");
    }
    if let Err(e) = whole {
        // An error is final: more bytes cannot make it a request.
        let mut more = data.to_vec();
        more.extend_from_slice(b"\r\n\r\n");
        assert!(parse(&more).is_err(), "{e:?} became a request");
    }

    let mut one = Chunked::default();
    let in_one = one.skip(data);
    let split = data.len() * usize::from(pick) / 256;
    let mut two = Chunked::default();
    let in_two = match two.skip(&data[..split]) {
        Ok((n, true)) => Ok((n, true)),
        Ok((n, false)) => {
            // The unconsumed part comes again, with the rest, as the net
            // layer would offer it.
            two.skip(&data[n..]).map(|(m, done)| (n + m, done))
        }
        Err(e) => Err(e),
    };
    match (in_one, in_two) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("one piece: {a:?}, two pieces: {b:?}"),
    }
});
