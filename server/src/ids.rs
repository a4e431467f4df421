//! Identifiers: 26-character, time-ordered (ULID layout, Crockford base32), so
//! lists sort by creation and ids are safe in URLs and file names.

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A new id: 48 bits of milliseconds, 80 random bits.
pub fn new_id() -> String {
    let ms = crate::store::now_ms() as u128 & ((1u128 << 48) - 1);
    let mut rnd = [0u8; 10];
    if getrandom::fill(&mut rnd).is_err() {
        // No entropy source: fall back to a per-process counter mixed with time.
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let c = COUNTER.fetch_add(1, Ordering::Relaxed) ^ u64::from(std::process::id()) << 32;
        rnd[..8].copy_from_slice(&c.to_le_bytes());
    }
    let mut value: u128 = ms << 80;
    for (i, b) in rnd.iter().enumerate() {
        value |= u128::from(*b) << (8 * (9 - i));
    }
    let mut out = [0u8; 26];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 5 * (25 - i);
        *slot = ALPHABET[((value >> shift) & 31) as usize];
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A random seed for retry jitter.
pub fn new_seed() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b) & (i64::MAX as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_unique_sortable_and_url_safe() {
        let a = super::new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::new_id();
        assert_eq!(a.len(), 26);
        assert!(a < b, "{a} {b}");
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
    }
}
