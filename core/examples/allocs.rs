//! Heap allocations and time of parse + validate + plan of a generated workflow
//! (the one `cargo bench -p ax-core --bench core` reads), next to reading the same
//! text alone: `cargo run --release -p ax-core --example allocs [STEPS] [wide]`.
//!
//! Counting goes through a global allocator that tallies calls while switched on;
//! timings (min of 50) run with it switched off.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

#[path = "../benches/support/workload.rs"]
mod workload;

struct Counting;
static ON: AtomicBool = AtomicBool::new(false);
static CALLS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    CALLS.fetch_add(1, Relaxed);
    BYTES.fetch_add(by, Relaxed);
    let live = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(live, Relaxed);
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if ON.load(Relaxed) {
            grew(l.size());
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if ON.load(Relaxed) {
            LIVE.fetch_sub(l.size().min(LIVE.load(Relaxed)), Relaxed);
        }
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if ON.load(Relaxed) {
            grew(n);
            LIVE.fetch_sub(l.size().min(LIVE.load(Relaxed)), Relaxed);
        }
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Allocation calls, bytes requested and peak live bytes of `f`.
fn count<T>(f: impl FnOnce() -> T) -> (usize, usize, usize) {
    for c in [&CALLS, &BYTES, &LIVE, &PEAK] {
        c.store(0, Relaxed);
    }
    ON.store(true, Relaxed);
    drop(std::hint::black_box(f()));
    ON.store(false, Relaxed);
    (CALLS.load(Relaxed), BYTES.load(Relaxed), PEAK.load(Relaxed))
}

fn min_of<T>(runs: usize, f: impl Fn() -> T) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            drop(std::hint::black_box(f()));
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let chain = args.next().as_deref() != Some("wide");
    let json = workload::workflow_json(n, chain);
    let opts = ax_core::Options::for_file("w.json");
    let limits = ax_core::parse::Limits::default();
    let analyze = || {
        let a = ax_core::analyze(&json, &opts);
        assert!(a.plan.is_some(), "the generated workflow is valid");
        a
    };
    let parse = || ax_core::parse::parse(&json, Some(ax_core::parse::Format::Json), &limits);
    let serde = || serde_json::from_str::<ax_core::Workflow>(&json).map_err(|e| e.to_string());
    println!(
        "{n} steps ({}), JSON {} bytes",
        if chain { "chain" } else { "wide" },
        json.len()
    );
    println!("| | allocations | per step | bytes | peak live | min of 50 |");
    println!("|---|---:|---:|---:|---:|---:|");
    let row = |what: &str, (calls, bytes, peak): (usize, usize, usize), t: Duration| {
        println!(
            "| {what} | {calls} | {:.1} | {bytes} | {peak} | {t:.2?} |",
            calls as f64 / n as f64
        )
    };
    row(
        "parse + validate + plan",
        count(analyze),
        min_of(50, analyze),
    );
    row("spanned parse alone", count(parse), min_of(50, parse));
    row("serde_json → Workflow", count(serde), min_of(50, serde));
}
