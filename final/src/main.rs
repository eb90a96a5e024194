//! `final`: the order system, every observability layer, wired for
//! production. Everything is in the library, [`orders_final`]; the binary
//! only adds what only a binary can: the global allocator.

use std::process::ExitCode;

/// jemalloc instead of the system allocator: it can record, for a sample of
/// the allocations, the stack that made them, and that is what a heap
/// profile is. With `unprefixed_malloc_on_supported_platforms` it also
/// serves C's `malloc`, so SQLite's memory is in the profile too.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings. It reads them when it starts, before `main`, so they
/// cannot be set by code: they are a symbol, `malloc_conf`, that jemalloc
/// looks up in the binary. `prof:true` turns the sampler on (without it
/// `jemalloc_pprof::PROF_CTL` is `None`), `prof_active:true` starts it at
/// once, and `lg_prof_sample:19` records one allocation per 2^19 bytes (512
/// KiB) allocated, on average: a stack trace for every allocation would
/// make every allocation slow.
///
/// jemalloc declares it as C's `const char *malloc_conf`: one pointer to a
/// NUL-terminated string. A `&u8` to the first byte is exactly that; a
/// `&[u8]`, as often shown, is a pointer *and* a length, and works only
/// because the pointer happens to come first.
// SAFETY: `export_name` is unsafe because two items exporting one name, or
// an item of another type than the one the C side reads, are undefined
// behaviour. Nothing else in the binary defines `malloc_conf`, and this is a
// pointer to NUL-terminated bytes, which is what jemalloc reads.
#[allow(unsafe_code)]
#[unsafe(export_name = "malloc_conf")]
pub static MALLOC_CONF: &u8 = &b"prof:true,prof_active:true,lg_prof_sample:19\0"[0];

fn main() -> ExitCode {
    orders_final::main()
}
