//! Byte searches eight bytes at a time (plain Rust, no `unsafe`): the scans that
//! dominate reading a large workflow file, where most bytes are string text.
//!
//! The trick: a byte of `v` is zero exactly when `zero(v)` has its bit 7 set, except
//! that bytes *above* a true zero can be flagged falsely (the subtraction borrows
//! upwards). Only the lowest flag is used, and it is always exact.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

fn zero(v: u64) -> u64 {
    v.wrapping_sub(ONES) & !v & HIGH
}

fn word(chunk: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(chunk);
    u64::from_le_bytes(w)
}

/// The first position whose byte matches, with `hits` flagging a word's matches.
fn search(hay: &[u8], hits: impl Fn(u64) -> u64, one: impl Fn(u8) -> bool) -> Option<usize> {
    let mut chunks = hay.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let h = hits(word(chunk));
        if h != 0 {
            return Some(at + (h.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| one(b))
        .map(|n| at + n)
}

/// The first `cc` (a pair of the byte `c`) in `hay`.
pub(crate) fn find_pair(hay: &[u8], c: u8) -> Option<usize> {
    let wc = ONES * u64::from(c);
    let mut from = 0;
    while let Some(i) = hay
        .get(from..)
        .and_then(|rest| search(rest, |x| zero(x ^ wc), |b| b == c))
    {
        let at = from + i;
        if hay.get(at + 1) == Some(&c) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// The first `a` or `b` in `hay`.
pub(crate) fn find2(hay: &[u8], a: u8, b: u8) -> Option<usize> {
    let (wa, wb) = (ONES * u64::from(a), ONES * u64::from(b));
    search(hay, |x| zero(x ^ wa) | zero(x ^ wb), |c| c == a || c == b)
}

/// The first byte that ends a plain run of JSON string text: a quote, a backslash
/// or a control character (below 0x20).
pub(crate) fn json_string_stop(hay: &[u8]) -> Option<usize> {
    let (quote, backslash) = (ONES * u64::from(b'"'), ONES * u64::from(b'\\'));
    search(
        hay,
        // `x - 0x20…` borrows into bit 7 exactly for bytes below 0x20 (bytes with
        // bit 7 set are excluded by `!x`).
        |x| zero(x ^ quote) | zero(x ^ backslash) | (x.wrapping_sub(ONES * 0x20) & !x & HIGH),
        |c| c == b'"' || c == b'\\' || c < 0x20,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn naive_stop(b: &[u8]) -> Option<usize> {
        b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20)
    }

    fn naive2(b: &[u8], x: u8, y: u8) -> Option<usize> {
        b.iter().position(|&c| c == x || c == y)
    }

    fn naive_pair(b: &[u8], c: u8) -> Option<usize> {
        b.windows(2).position(|w| w[0] == c && w[1] == c)
    }

    /// Every byte value at every position of short and word-crossing texts, over
    /// fillers with and without the high bit (UTF-8) and near the thresholds.
    #[test]
    fn every_byte_at_every_position() {
        for filler in [b'a', 0x1f, 0x20, 0x21, 0x7f, 0x80, 0xe2, 0xff, b'{', b'['] {
            for len in 0..20 {
                for at in 0..len {
                    for stop in 0..=255u8 {
                        let mut text = vec![filler; len];
                        text[at] = stop;
                        assert_eq!(json_string_stop(&text), naive_stop(&text), "{text:?}");
                        assert_eq!(find2(&text, b'{', b'\\'), naive2(&text, b'{', b'\\'));
                        assert_eq!(find2(&text, 0, 0xff), naive2(&text, 0, 0xff));
                        assert_eq!(find_pair(&text, b'}'), naive_pair(&text, b'}'));
                        // Two stops in a row, at every position.
                        if at + 1 < len {
                            text[at + 1] = stop;
                            assert_eq!(find_pair(&text, stop), naive_pair(&text, stop));
                            assert_eq!(find_pair(&text, b'?'), naive_pair(&text, b'?'));
                        }
                    }
                }
            }
        }
    }

    /// Random texts with several hits each (a fixed-seed LCG: the same run every time).
    #[test]
    fn random_texts() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut text = Vec::new();
            for _ in 0..(seed % 40) {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let b = (seed >> 56) as u8;
                // Mostly letters, sometimes anything.
                text.push(if b.is_multiple_of(4) {
                    b
                } else {
                    b'a' + b % 26
                });
            }
            assert_eq!(json_string_stop(&text), naive_stop(&text), "{text:?}");
            assert_eq!(find2(&text, b'{', b'\\'), naive2(&text, b'{', b'\\'));
            for c in [b'a', b'z', 0, 0xff] {
                assert_eq!(find_pair(&text, c), naive_pair(&text, c), "{text:?}");
            }
        }
    }
}
