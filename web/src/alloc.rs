//! The page's allocator (wasm32): blocks of power-of-two sizes, each size with its
//! own free list, carved from memory the module grows; no splitting or merging. It
//! is about 1 KB of wasm where the standard library's dlmalloc is 7 KB. Blocks are
//! aligned to their size (up to a 64 KiB page), so any block of a size serves any
//! request of that size; the padding before an aligned block goes to the free
//! lists too. A block is at most twice the size asked for, and freed memory is kept
//! for later allocations of the same size (dlmalloc does not give memory back
//! either: a wasm memory cannot shrink).

use std::alloc::{GlobalAlloc, Layout};
use std::arch::wasm32::{memory_grow, memory_size};
use std::cell::UnsafeCell;

const PAGE: u64 = 65536;
/// The smallest block: 2^3 bytes (room for the free list's link).
const MIN: u32 = 3;
/// Size classes up to 2^31 bytes.
const CLASSES: usize = 32;

struct State {
    /// Per size class, the first free block (its first word links to the next; 0 ends).
    free: [usize; CLASSES],
    /// Not yet handed out: `next..end`.
    next: u64,
    end: u64,
}

pub struct PageAlloc(UnsafeCell<State>);

// The page runs on one thread.
unsafe impl Sync for PageAlloc {}

#[global_allocator]
static ALLOC: PageAlloc = PageAlloc(UnsafeCell::new(State {
    free: [0; CLASSES],
    next: 0,
    end: 0,
}));

/// The size class: blocks of 2^class bytes.
fn class(size: usize, align: usize) -> usize {
    let s = size.max(align).max(1 << MIN);
    (usize::BITS - (s - 1).leading_zeros()) as usize
}

impl State {
    fn push(&mut self, c: usize, at: usize) {
        // Safety: `at` is a block of 2^c ≥ 8 bytes, aligned, that nothing else uses.
        unsafe { *(at as *mut usize) = self.free[c] };
        self.free[c] = at;
    }

    /// A fresh block of 2^c bytes, or 0.
    fn carve(&mut self, c: usize) -> usize {
        let size = 1u64 << c;
        let align = size.min(PAGE);
        loop {
            if self.end == 0 {
                self.end = memory_size(0) as u64 * PAGE;
                self.next = self.end;
            }
            let start = (self.next + align - 1) & !(align - 1);
            if start + size <= self.end {
                // The padding, as the largest aligned blocks that fit.
                while self.next < start {
                    let b = (self.next.trailing_zeros() as u64)
                        .min(63 - (start - self.next).leading_zeros() as u64);
                    self.push(b as usize, self.next as usize);
                    self.next += 1 << b;
                }
                self.next = start + size;
                return start as usize;
            }
            let pages = (start + size - self.end).div_ceil(PAGE);
            let prev = memory_grow(0, pages as usize);
            if prev == usize::MAX {
                return 0;
            }
            if prev as u64 * PAGE != self.end {
                // Someone else grew the memory: start over at the new part.
                self.next = prev as u64 * PAGE;
            }
            self.end = (prev as u64 + pages) * PAGE;
        }
    }
}

unsafe impl GlobalAlloc for PageAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let c = class(l.size(), l.align());
        if c >= CLASSES {
            return std::ptr::null_mut();
        }
        // Safety: one thread, and no call re-enters the allocator.
        let st = unsafe { &mut *self.0.get() };
        let head = st.free[c];
        if head != 0 {
            st.free[c] = unsafe { *(head as *const usize) };
            return head as *mut u8;
        }
        st.carve(c) as *mut u8
    }

    unsafe fn dealloc(&self, ptr: *mut u8, l: Layout) {
        let st = unsafe { &mut *self.0.get() };
        st.push(class(l.size(), l.align()), ptr as usize);
    }

    unsafe fn realloc(&self, ptr: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        if class(new_size, l.align()) == class(l.size(), l.align()) {
            return ptr;
        }
        // Safety: as `GlobalAlloc::realloc` requires of the caller.
        unsafe {
            let new = self.alloc(Layout::from_size_align_unchecked(new_size, l.align()));
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, l.size().min(new_size));
                self.dealloc(ptr, l);
            }
            new
        }
    }
}
