//! The copy to and from memory the peer can write (`shmpipe::shared`) against the
//! `ptr::copy_nonoverlapping` it replaced, at 64 B, 256 B, 1 KiB and 64 KiB, both directions, in the
//! same run: `from_shared/<size>` copies ring-like memory (8-aligned, as payloads are) into a
//! private buffer, `to_shared/<size>` the other way. Besides the primitive
//! (`copy_from_shared`, `copy_to_shared`) and the old copy, the two strategies it chooses
//! between are measured on their own (`words`: Relaxed atomic word loop; `rep_movsb`: the
//! x86-64 string copy), which is how `REP_MOVSB_FROM` was chosen. The buffers stay in the
//! cache: this is the cost of the instructions, not of memory. The length is opaque to the
//! compiler (`black_box`), as at the ring's call sites.
//!
//! `cargo bench --bench copy` (about 4 min on 2 vCPUs); results in docs/BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use shmpipe::shared::{self, strategies};

/// Sizes measured.
const SIZES: [usize; 4] = [64, 256, 1024, 64 * 1024];

/// An 8-aligned buffer of `len` bytes, like a ring payload.
fn aligned(len: usize) -> Vec<u64> {
    vec![0x5a5a_5a5a_5a5a_5a5a; len.div_ceil(8)]
}

fn copies(c: &mut Criterion) {
    for (dir, to_shared) in [("from_shared", false), ("to_shared", true)] {
        let mut g = c.benchmark_group(dir);
        g.warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_millis(1500))
            .sample_size(30);
        for len in SIZES {
            g.throughput(Throughput::Bytes(len as u64));
            let mut ring = aligned(len);
            let mut private = vec![0xa5u8; len];
            let ring_ptr = ring.as_mut_ptr().cast::<u8>();
            let private_ptr = private.as_mut_ptr();
            let (src, dst) = if to_shared {
                (private_ptr.cast_const(), ring_ptr)
            } else {
                (ring_ptr.cast_const(), private_ptr)
            };
            g.bench_function(BenchmarkId::new("copy_nonoverlapping", len), |b| {
                // SAFETY: two distinct live buffers of `len` bytes.
                b.iter(|| unsafe {
                    std::ptr::copy_nonoverlapping(black_box(src), black_box(dst), black_box(len))
                })
            });
            // One closure per direction, so no branch is measured with the copy.
            if to_shared {
                g.bench_function(BenchmarkId::new("shared", len), |b| {
                    // SAFETY: two distinct live buffers of `len` bytes; no reference into the
                    // "ring" one is held while the copy runs.
                    b.iter(|| unsafe {
                        shared::copy_to_shared(
                            std::slice::from_raw_parts(black_box(src), black_box(len)),
                            black_box(dst),
                        )
                    })
                });
                g.bench_function(BenchmarkId::new("words", len), |b| {
                    // SAFETY: as above.
                    b.iter(|| unsafe {
                        strategies::words_to_shared(black_box(src), black_box(dst), black_box(len))
                    })
                });
            } else {
                g.bench_function(BenchmarkId::new("shared", len), |b| {
                    // SAFETY: as above.
                    b.iter(|| unsafe {
                        shared::copy_from_shared(
                            black_box(src),
                            std::slice::from_raw_parts_mut(black_box(dst), black_box(len)),
                        )
                    })
                });
                g.bench_function(BenchmarkId::new("words", len), |b| {
                    // SAFETY: as above.
                    b.iter(|| unsafe {
                        strategies::words_from_shared(
                            black_box(src),
                            black_box(dst),
                            black_box(len),
                        )
                    })
                });
            }
            #[cfg(target_arch = "x86_64")]
            g.bench_function(BenchmarkId::new("sse_loop", len), |b| {
                // SAFETY: as above; every size measured is at least 16.
                b.iter(|| unsafe {
                    strategies::sse_loop(black_box(src), black_box(dst), black_box(len))
                })
            });
            #[cfg(target_arch = "x86_64")]
            g.bench_function(BenchmarkId::new("rep_movsb", len), |b| {
                // SAFETY: as above.
                b.iter(|| unsafe {
                    strategies::rep_movsb(black_box(src), black_box(dst), black_box(len))
                })
            });
            drop((ring, private));
        }
        g.finish();
    }
}

/// The group: `criterion_group!` makes a public function without docs, so it lives in a private
/// module.
mod group {
    criterion::criterion_group!(benches, super::copies);
}
criterion_main!(group::benches);
