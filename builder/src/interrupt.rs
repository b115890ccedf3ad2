//! Ctrl-C and SIGTERM: undo what is in flight (kill containers, unmount snapshots, remove
//! bundles) before exiting, so an interrupted build leaves nothing mounted or running.
//!
//! Code that creates something to undo registers a cleanup and keeps the [`Guard`]; dropping
//! the guard (the normal path, after the thing was undone in order) unregisters it. On a
//! signal, the cleanups still registered run newest first, then the process exits with 130.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};

type Cleanup = Box<dyn FnOnce() + Send>;

static CLEANUPS: Mutex<BTreeMap<u64, Cleanup>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();

/// Unregisters its cleanup when dropped.
#[must_use = "dropping the guard unregisters the cleanup at once"]
pub struct Guard(u64);

impl Drop for Guard {
    fn drop(&mut self) {
        lock().remove(&self.0);
    }
}

/// Registers `cleanup` to run if the process is interrupted while the guard lives.
pub fn register(cleanup: impl FnOnce() + Send + 'static) -> Guard {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    lock().insert(id, Box::new(cleanup));
    Guard(id)
}

/// Starts the thread that waits for SIGINT/SIGTERM (once per process).
pub fn install() {
    INSTALL.call_once(|| {
        let signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ]);
        let Ok(mut signals) = signals else {
            return;
        };
        std::thread::spawn(move || {
            if let Some(signal) = signals.forever().next() {
                eprintln!("rbuild: interrupted (signal {signal}); cleaning up");
                run_cleanups();
                std::process::exit(130);
            }
        });
    });
}

/// Runs every registered cleanup, newest first.
fn run_cleanups() {
    let cleanups = std::mem::take(&mut *lock());
    for (_, cleanup) in cleanups.into_iter().rev() {
        cleanup();
    }
}

fn lock() -> std::sync::MutexGuard<'static, BTreeMap<u64, Cleanup>> {
    // A cleanup that panicked cannot leave the map half-changed: it was removed first.
    CLEANUPS.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn cleanups_run_newest_first_and_guards_unregister() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let ran = Arc::new(AtomicUsize::new(0));
        let (o1, o2, r) = (order.clone(), order.clone(), ran.clone());
        let _first = register(move || o1.lock().unwrap().push(1));
        let _second = register(move || o2.lock().unwrap().push(2));
        let dropped = register(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        drop(dropped);
        run_cleanups();
        assert_eq!(*order.lock().unwrap(), vec![2, 1]);
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }
}
