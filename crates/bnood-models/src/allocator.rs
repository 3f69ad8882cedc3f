//! The process's memory allocator, tuned for the CPU backends' allocation pattern.
//!
//! burn's CPU backends allocate a fresh buffer for nearly every tensor operation and free it
//! soon after; the VAE's scoring pass allocates and frees hundreds of megabytes per batch.
//! glibc's `malloc` serves a large block (above its `mmap` threshold, 128 KiB at first) with a
//! fresh `mmap` and unmaps it on `free`, and returns freed memory at the top of its heap to
//! the system once more than 128 KiB lie there. The next buffer of that size then
//! page-faults on every 4 KiB page: the kernel zeroes each page, and with two threads each
//! fault of a shared mapping also interrupts the other core to flush its TLB.
//! `perf record` of one VAE training step (flex, 2 threads) put 32 % of its time in page
//! faults and another 5 % in `munmap` (docs/performance.md).
//!
//! [`keep_freed_memory`] tells glibc to serve every block from its heaps and keep freed
//! memory for reuse, in the threads' arenas too (per-thread arenas stay: limiting glibc to
//! one arena cost RealNVP's two-thread scoring 10 %). Without the top pad, a RealNVP
//! training step on flex spent 12 % of its time zeroing fresh pages: its tape (the s/t
//! networks' activations, hundreds of megabytes) filled the worker threads' heaps, which
//! glibc unmapped when the backward pass emptied them. Peak resident memory is unchanged
//! (it is reached anyway); memory is not handed back to the system before the process
//! ends. Measured on the criterion benches (flex, 2 threads, before the VAE's fused
//! likelihood): VAE scoring +33–50 %, a VAE training step +59 %; RealNVP's scoring and
//! training within noise. The top pad (added later): RealNVP training +11–20 %, running
//! scoring +7–8 %.

/// Tells the C allocator to keep freed memory for reuse (glibc on Linux: no block gets its
/// own `mmap`, the heap's top is never trimmed, and the threads' heaps are not unmapped
/// when they empty).
///
/// Call it first thing in `main`, before any thread is started: glibc's `mallopt` may only
/// be called while the process has one thread. Returns `true` if the setting was applied;
/// `false`, changing nothing, when the process already runs other threads or does not use
/// glibc; `false` also when glibc refused a value (the values set before it stay).
pub fn keep_freed_memory() -> bool {
    imp::keep_freed_memory()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod imp {
    /// Threads of this process, from `/proc/self/task` (one entry per thread).
    fn thread_count() -> Option<usize> {
        Some(std::fs::read_dir("/proc/self/task").ok()?.count())
    }

    pub(super) fn keep_freed_memory() -> bool {
        if thread_count() != Some(1) {
            return false;
        }
        let settings = [
            // No block is large enough to get its own mapping.
            (libc::M_MMAP_THRESHOLD, i32::MAX),
            // Never return the heap's top to the system.
            (libc::M_TRIM_THRESHOLD, i32::MAX),
            // A thread's arena is a chain of heaps of at most 64 MiB, and glibc unmaps a
            // heap of the chain once it is empty unless the top pad is at least that size,
            // whatever the trim threshold (`heap_trim` in glibc's arena.c). The pad also
            // makes the main heap grow in 64 MiB steps of address space (pages are still
            // only taken when touched).
            (libc::M_TOP_PAD, 64 << 20),
        ];
        settings.into_iter().all(|(param, value)| {
            // SAFETY: `mallopt` takes two integers and touches only the allocator's own
            // parameters. Its one precondition (glibc manual: MT-Unsafe, "const:mallopt")
            // is that no other thread runs malloc meanwhile; the process has one thread
            // (checked above), and only this thread could start another.
            unsafe { libc::mallopt(param, value) == 1 }
        })
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub(super) fn keep_freed_memory() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keep_freed_memory_refuses_once_other_threads_run() {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || stopped.recv());
        assert!(!super::keep_freed_memory());
        stop.send(()).expect("the other thread waits");
        other
            .join()
            .expect("the other thread ends")
            .expect("it got the message");
    }
}
