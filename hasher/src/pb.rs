//! Minimal protobuf writing and reading: unsigned varints and length-delimited fields,
//! all that dag-pb and UnixFS need. Field keys are `(field_number << 3) | wire_type`.

/// Wire type of varint fields.
pub const WIRE_VARINT: u64 = 0;
/// Wire type of length-delimited fields (bytes, strings, embedded messages).
pub const WIRE_LEN: u64 = 2;

/// Append `v` as an unsigned LEB128 varint (protobuf and multiformats use the same).
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Number of bytes [`put_varint`] writes for `v`.
pub fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Append a field key.
pub fn put_key(out: &mut Vec<u8>, field: u64, wire: u64) {
    put_varint(out, (field << 3) | wire);
}

/// Append a varint field.
pub fn put_uint_field(out: &mut Vec<u8>, field: u64, v: u64) {
    put_key(out, field, WIRE_VARINT);
    put_varint(out, v);
}

/// Append a length-delimited field.
pub fn put_bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_key(out, field, WIRE_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Encoded size of a length-delimited field with a one-byte key and `len` payload bytes.
pub fn bytes_field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Reads an unsigned varint at `*pos` and advances past it. `None` when the buffer ends
/// inside it or it does not fit 64 bits (at most 10 bytes, the 10th holding one bit).
pub fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        if shift == 63 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// The value of one field read by [`fields`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// A varint field.
    Varint(u64),
    /// A length-delimited field.
    Bytes(&'a [u8]),
}

/// The fields of one message in their order, as `(field number, value)`. An error when
/// the message is truncated or uses a wire type other than varint or length-delimited
/// (dag-pb and UnixFS use no other).
pub fn fields(msg: &[u8]) -> Result<Vec<(u64, Value<'_>)>, &'static str> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < msg.len() {
        let key = read_varint(msg, &mut pos).ok_or("truncated field key")?;
        let value = match key & 7 {
            WIRE_VARINT => Value::Varint(read_varint(msg, &mut pos).ok_or("truncated varint")?),
            WIRE_LEN => {
                let len = read_varint(msg, &mut pos).ok_or("truncated length")?;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| pos.checked_add(l))
                    .filter(|&e| e <= msg.len())
                    .ok_or("truncated length-delimited field")?;
                let v = &msg[pos..end];
                pos = end;
                Value::Bytes(v)
            }
            _ => return Err("unexpected protobuf wire type"),
        };
        out.push((key >> 3, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_their_length() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
        }
        let mut out = Vec::new();
        put_varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
    }

    #[test]
    fn varints_and_fields_read_back_and_truncation_is_an_error() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut pos = 0;
            assert_eq!(read_varint(&out, &mut pos), Some(v));
            assert_eq!(pos, out.len());
            let mut pos = 0;
            assert_eq!(read_varint(&out[..out.len() - 1], &mut pos), None);
        }
        // 11 bytes, or a 10th byte above 1: does not fit 64 bits.
        assert_eq!(read_varint(&[0xff; 11], &mut 0), None);
        assert_eq!(
            read_varint(
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                &mut 0
            ),
            None
        );
        let mut msg = Vec::new();
        put_uint_field(&mut msg, 1, 2);
        put_bytes_field(&mut msg, 2, b"abc");
        assert_eq!(
            fields(&msg).unwrap(),
            vec![(1, Value::Varint(2)), (2, Value::Bytes(b"abc"))]
        );
        assert!(fields(&msg[..msg.len() - 1]).is_err());
        assert!(fields(&[0x0d, 0, 0, 0, 0]).is_err(), "wire type 5");
    }
}
