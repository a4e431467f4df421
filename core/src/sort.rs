//! Sorting (and building sorted maps) through one shared routine.
//!
//! Every `sort_by`/`sort_by_key` with another element type or comparator, and every
//! `collect()` into a `BTreeMap` or `BTreeSet` (which sorts), compiles its own copy
//! of the standard library's sort: 2–4 KB of wasm each, about 100 KB in the browser
//! page. On wasm32 these helpers sort a permutation of indices with a single
//! non-generic routine, then apply it, and build maps by insertion; elsewhere they
//! are the standard library's. The results are the same on every target: the sorts
//! are stable, and maps keep the last value of a repeated key.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// Sort stably by a comparison (like `slice::sort_by`).
pub fn sort_by<T>(v: &mut [T], cmp: impl FnMut(&T, &T) -> Ordering) {
    #[cfg(not(target_arch = "wasm32"))]
    v.sort_by(cmp);
    #[cfg(target_arch = "wasm32")]
    {
        if v.len() < 2 {
            return;
        }
        let mut cmp = cmp;
        let mut order: Vec<usize> = (0..v.len()).collect();
        let items: &[T] = v;
        sort_indices(&mut order, &mut |a, b| cmp(&items[a], &items[b]));
        permute(v, order);
    }
}

/// Sort stably by a key (like `slice::sort_by_key`).
pub fn sort_by_key<T, K: Ord>(v: &mut [T], mut key: impl FnMut(&T) -> K) {
    sort_by(v, |a, b| key(a).cmp(&key(b)));
}

/// Sort stably in ascending order (like `slice::sort`).
pub fn sort<T: Ord>(v: &mut [T]) {
    sort_by(v, T::cmp);
}

/// Sort where equal elements cannot be told apart (or keys are unique), so that
/// stability does not matter (like `slice::sort_unstable`).
pub fn sort_unstable<T: Ord>(v: &mut [T]) {
    #[cfg(not(target_arch = "wasm32"))]
    v.sort_unstable();
    #[cfg(target_arch = "wasm32")]
    sort(v);
}

/// Sort by a key that is unique (like `slice::sort_unstable_by_key`).
pub fn sort_unstable_by_key<T, K: Ord>(v: &mut [T], key: impl FnMut(&T) -> K) {
    #[cfg(not(target_arch = "wasm32"))]
    v.sort_unstable_by_key(key);
    #[cfg(target_arch = "wasm32")]
    sort_by_key(v, key);
}

/// `iter.collect::<BTreeMap<_, _>>()`.
pub fn btree_map<K: Ord, V>(iter: impl IntoIterator<Item = (K, V)>) -> BTreeMap<K, V> {
    #[cfg(not(target_arch = "wasm32"))]
    return iter.into_iter().collect();
    #[cfg(target_arch = "wasm32")]
    {
        let mut m = BTreeMap::new();
        m.extend(iter);
        m
    }
}

/// `iter.collect::<BTreeSet<_>>()`.
pub fn btree_set<T: Ord>(iter: impl IntoIterator<Item = T>) -> BTreeSet<T> {
    #[cfg(not(target_arch = "wasm32"))]
    return iter.into_iter().collect();
    #[cfg(target_arch = "wasm32")]
    {
        let mut s = BTreeSet::new();
        s.extend(iter);
        s
    }
}

/// An ordered set of `Copy` values in a `Vec`, ascending from `head` (what was taken
/// off the front is dropped in bulk later): what the executor used `BTreeSet<usize>`
/// and `BTreeSet<(u64, usize)>` for (same order and results) without two more
/// `BTreeMap` instantiations in the wasm. Its uses insert mostly in increasing order
/// and take the smallest: both O(1) (amortized).
#[derive(Debug, Clone, Default)]
pub struct VecSet<T> {
    v: Vec<T>,
    head: usize,
}

impl<T: Ord + Copy> VecSet<T> {
    pub fn new() -> Self {
        VecSet {
            v: Vec::new(),
            head: 0,
        }
    }

    fn items(&self) -> &[T] {
        &self.v[self.head..]
    }

    /// Drop what was taken off the front.
    fn compact(&mut self) {
        let n = self.len();
        self.v.copy_within(self.head.., 0);
        self.v.truncate(n);
        self.head = 0;
    }

    /// The position in `items()`.
    fn find(&self, x: &T) -> Result<usize, usize> {
        let items = self.items();
        // The common case first: a new largest.
        match items.last() {
            None => Err(0),
            Some(last) if last < x => Err(items.len()),
            _ => items.binary_search(x),
        }
    }

    /// True if `x` was not there yet.
    pub fn insert(&mut self, x: T) -> bool {
        match self.find(&x) {
            Ok(_) => false,
            Err(0) if self.head > 0 => {
                self.head -= 1;
                self.v[self.head] = x;
                true
            }
            Err(at) => {
                self.v.insert(self.head + at, x);
                true
            }
        }
    }

    pub fn remove(&mut self, x: &T) -> bool {
        match self.find(x) {
            Ok(at) => {
                self.v.remove(self.head + at);
                true
            }
            Err(_) => false,
        }
    }

    pub fn contains(&self, x: &T) -> bool {
        self.find(x).is_ok()
    }

    /// The smallest.
    pub fn first(&self) -> Option<&T> {
        self.v.get(self.head)
    }

    pub fn pop_first(&mut self) -> Option<T> {
        let x = *self.v.get(self.head)?;
        self.head += 1;
        if self.head * 2 >= self.v.len() {
            self.compact();
        }
        Some(x)
    }

    pub fn clear(&mut self) {
        self.v.clear();
        self.head = 0;
    }

    pub fn len(&self) -> usize {
        self.v.len() - self.head
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ascending.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.items().iter()
    }

    /// Ascending.
    pub fn into_ascending(mut self) -> std::vec::IntoIter<T> {
        self.compact();
        self.v.into_iter()
    }
}

impl<T: Ord + Copy> Extend<T> for VecSet<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        self.compact();
        self.v.extend(iter);
        sort_unstable(&mut self.v);
        self.v.dedup();
    }
}

impl<T: Ord + Copy> FromIterator<T> for VecSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut s = VecSet::new();
        s.extend(iter);
        s
    }
}

/// The one sort: indices by `cmp`, ties by position (so the order is stable and the
/// unstable sort's result unique).
#[cfg(target_arch = "wasm32")]
#[inline(never)]
fn sort_indices(order: &mut [usize], cmp: &mut dyn FnMut(usize, usize) -> Ordering) {
    order.sort_unstable_by(|&a, &b| cmp(a, b).then(a.cmp(&b)));
}

/// Move `v[order[i]]` to position `i`, following each cycle of the permutation.
#[cfg(target_arch = "wasm32")]
fn permute<T>(v: &mut [T], mut order: Vec<usize>) {
    const DONE: usize = usize::MAX;
    for start in 0..order.len() {
        let mut at = start;
        while order[at] != DONE {
            let from = order[at];
            order[at] = DONE;
            if from == start {
                break;
            }
            v.swap(at, from);
            at = from;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn sorts_are_stable() {
        let mut v: Vec<(u32, char)> = "dbcaebdacefa"
            .chars()
            .enumerate()
            .map(|(i, c)| ((i % 3) as u32, c))
            .collect();
        let mut expected = v.clone();
        expected.sort_by_key(|p| p.0);
        sort_by_key(&mut v, |p| p.0);
        assert_eq!(v, expected);
        sort_by(&mut v, |a, b| b.1.cmp(&a.1));
        expected.sort_by_key(|b| std::cmp::Reverse(b.1));
        assert_eq!(v, expected);
        let mut w = vec!["b", "a", "c", "a"];
        sort(&mut w);
        assert_eq!(w, ["a", "a", "b", "c"]);
        for n in 0..40u64 {
            let mut v: Vec<u64> = (0..n).map(|i| (i * 7919 + n) % 13).collect();
            let mut e = v.clone();
            e.sort();
            sort(&mut v);
            assert_eq!(v, e);
        }
    }

    #[test]
    fn maps_keep_the_last_value() {
        let m = btree_map([("b", 1), ("a", 2), ("b", 3)]);
        assert_eq!(m.into_iter().collect::<Vec<_>>(), [("a", 2), ("b", 3)]);
        let s = btree_set([3, 1, 3, 2]);
        assert_eq!(s.into_iter().collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn vec_set_is_an_ordered_set() {
        let mut v: VecSet<(u64, usize)> = VecSet::new();
        let mut b: BTreeSet<(u64, usize)> = BTreeSet::new();
        let mut x = 7u64;
        for round in 0..400u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let e = ((x >> 40) % 13, ((x >> 20) % 7) as usize);
            match round % 5 {
                0..=2 => assert_eq!(v.insert(e), b.insert(e)),
                3 => assert_eq!(v.remove(&e), b.remove(&e)),
                _ => assert_eq!(v.pop_first(), b.pop_first()),
            }
            assert_eq!(v.first(), b.first());
            assert_eq!(v.contains(&e), b.contains(&e));
            assert!(v.iter().eq(b.iter()));
        }
        let mut s: VecSet<usize> = [5, 1, 5, 3].into_iter().collect();
        s.extend([2, 1]);
        assert_eq!(s.len(), 4);
        assert_eq!(s.into_ascending().collect::<Vec<_>>(), [1, 2, 3, 5]);
    }
}
