//! The `kv` example's RESP parser, fed arbitrary bytes split at arbitrary
//! points the way a connection delivers them (the unconsumed tail offered
//! again with more bytes after it), must never panic and must find exactly
//! the commands, and the error, that one-piece input gives.
//!
//! Input: the first byte seeds the piece sizes; the rest is the stream.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../examples/proto/resp.rs"]
#[allow(dead_code)]
mod resp;

use resp::{parse, Args, Parser, ProtocolError};

/// What a stream parses into: its commands, then how it ends (an error, or
/// this many bytes of an unfinished command).
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    commands: Vec<Vec<Vec<u8>>>,
    end: Result<usize, ProtocolError>,
}

/// The whole stream in one buffer, parsed by the parser that remembers nothing.
fn one_piece(input: &[u8]) -> Parsed {
    let mut args = Args::default();
    let mut commands = Vec::new();
    let mut pos = 0;
    loop {
        match parse(&input[pos..], &mut args) {
            Ok(Some(n)) => {
                assert!(n > 0 && pos + n <= input.len());
                pos += n;
                commands.push(args.iter().map(<[u8]>::to_vec).collect());
            }
            Ok(None) => return Parsed { commands, end: Ok(input.len() - pos) },
            Err(e) => return Parsed { commands, end: Err(e) },
        }
    }
}

/// The stream delivered in pieces to one resumable parser, as a
/// connection's handler sees it.
fn in_pieces(input: &[u8], mut seed: u32) -> Parsed {
    let mut parser = Parser::default();
    let mut args = Args::default();
    let mut commands = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut fed = 0;
    while fed < input.len() {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let piece = 1 + (seed >> 16) as usize % 7;
        let piece = piece.min(input.len() - fed);
        pending.extend_from_slice(&input[fed..fed + piece]);
        fed += piece;
        let mut used = 0;
        loop {
            match parser.parse(&pending[used..], &mut args) {
                Ok(Some(n)) => {
                    used += n;
                    commands.push(args.iter().map(<[u8]>::to_vec).collect());
                }
                Ok(None) => break,
                Err(e) => return Parsed { commands, end: Err(e) },
            }
        }
        pending.drain(..used);
    }
    Parsed { commands, end: Ok(pending.len()) }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    assert_eq!(in_pieces(input, u32::from(seed)), one_piece(input));
});
