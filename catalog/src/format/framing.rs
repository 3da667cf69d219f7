//! The Confluent wire format: how a registry-aware producer frames a value.
//!
//! `[0x00][schema id: 4 bytes, big-endian][body]`. Protobuf bodies add the
//! message-index path after the id; that is the protobuf module's concern.
//! Parsing never panics and never reads past the slice: a frame that is not
//! one is a reason for `_error`, not a failure of the scan.

/// The first byte of every Confluent-framed value.
pub const MAGIC: u8 = 0;

/// Bytes before the body: the magic byte and the schema id.
pub const HEADER_LEN: usize = 5;

/// A value split into the registry id of its writer schema and its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The writer schema's id in the registry.
    pub schema_id: u32,
    /// What follows the header.
    pub body: &'a [u8],
}

/// Splits a Confluent-framed value, or says why it is not one.
pub fn parse(value: &[u8]) -> Result<Frame<'_>, String> {
    match value {
        [] => Err("empty value: no Confluent schema-registry header".into()),
        [magic, ..] if *magic != MAGIC => Err(format!(
            "not in the Confluent wire format: first byte is 0x{magic:02x}, expected 0x00"
        )),
        [_, id @ ..] if id.len() < 4 => Err(format!(
            "truncated Confluent header: {} of {HEADER_LEN} bytes",
            value.len()
        )),
        [_, a, b, c, d, body @ ..] => Ok(Frame {
            schema_id: u32::from_be_bytes([*a, *b, *c, *d]),
            body,
        }),
        _ => unreachable!("every length is matched above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_into_id_and_body() {
        assert_eq!(
            parse(&[0, 0, 0, 1, 2, 9, 9]),
            Ok(Frame {
                schema_id: 258,
                body: &[9, 9]
            })
        );
        assert_eq!(parse(&[0, 0, 0, 0, 7]).unwrap().body, &[] as &[u8]);
    }

    #[test]
    fn non_frames_say_why() {
        assert!(parse(&[]).unwrap_err().contains("empty"));
        assert!(parse(b"{\"a\":1}").unwrap_err().contains("0x7b"));
        assert!(parse(&[0, 1, 2]).unwrap_err().contains("3 of 5"));
    }

    #[test]
    fn every_short_input_is_handled() {
        // Exhaustive over the first bytes that matter: no panic, and a frame
        // exactly when the header is complete and starts with 0.
        for len in 0..8usize {
            for first in [0u8, 1, 0xff] {
                let mut value = vec![first; len];
                value.iter_mut().skip(1).for_each(|b| *b = 0xab);
                let parsed = parse(&value);
                assert_eq!(parsed.is_ok(), len >= HEADER_LEN && first == 0, "{value:?}");
            }
        }
    }
}
