/// The service's allocator. A feed allocates ~110 times (futures boxed by the store
/// interfaces, feature rows, response buffers, a Redis user's history), and glibc's malloc spent
/// ~6 % of a feed's instructions on it embedded and ~10 % on Redis, where a request of 1 KB or
/// more consolidates its fastbins first; mimalloc's thread-local free lists take a few
/// instructions a call. The library and its tests keep the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the `mi_option_t` enum of the mimalloc vendored by
/// libmimalloc-sys 0.1.49 (v3, `include/mimalloc.h`), which the bindings do not name: the
/// version is pinned in Cargo.toml.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> std::process::ExitCode {
    // Memory a thread frees is returned to the OS at once rather than a second later: mimalloc
    // purges only when the thread allocates or frees again, so the demo's seeding thread, once
    // idle, kept ~15 MB it had freed (an idle service: 80 MB against 65).
    // SAFETY: an option of the allocator in use, set before the service starts its threads.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    eaglerank::cli::main()
}
