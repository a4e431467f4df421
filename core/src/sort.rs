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
}
