//! Ctrl-C and SIGTERM: stop what runs, undo what is in flight, exit 130.
//!
//! Code that starts a process registers a *stop* (kill the container); code that creates
//! something to undo registers an *undo* (unmount, remove a bundle). Each keeps the [`Guard`];
//! dropping it (the normal path, once the thing was undone in order) unregisters it.
//!
//! On the first signal the stops run at once, so a RUN ends and the build unwinds through its
//! ordinary error paths, which undo everything in order; `main` then sees [`interrupted`] and
//! exits 130. Undo cleanups run from the signal thread only if the build has not unwound
//! within a grace period, or at a second signal — never while the build still uses them.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

type Cleanup = Box<dyn FnOnce() + Send>;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Stop,
    Undo,
}

static CLEANUPS: Mutex<BTreeMap<(Kind, u64), Cleanup>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static CANCELLED: AtomicBool = AtomicBool::new(false);

/// How long the build gets to unwind by itself after the first signal.
const GRACE: Duration = Duration::from_secs(20);

/// Unregisters its cleanup when dropped.
#[must_use = "dropping the guard unregisters the cleanup at once"]
pub struct Guard((Kind, u64));

impl Drop for Guard {
    fn drop(&mut self) {
        lock().remove(&self.0);
    }
}

/// Registers an undo (unmount, remove) to run if the build cannot unwind by itself.
pub fn register(cleanup: impl FnOnce() + Send + 'static) -> Guard {
    add(Kind::Undo, Box::new(cleanup))
}

/// Registers a stop (kill a running container), run as soon as a signal arrives — or at
/// once, on another thread, if one already did (the signal came while it was being started).
pub fn register_stop(stop: impl FnOnce() + Send + 'static) -> Guard {
    let guard = add(Kind::Stop, Box::new(stop));
    if stopping() {
        let late = lock().remove(&guard.0);
        if let Some(stop) = late {
            std::thread::spawn(stop);
        }
    }
    guard
}

fn add(kind: Kind, cleanup: Cleanup) -> Guard {
    let key = (kind, NEXT.fetch_add(1, Ordering::Relaxed));
    lock().insert(key, cleanup);
    Guard(key)
}

/// Whether a SIGINT/SIGTERM arrived: `main` exits 130 then, whatever the build returned.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Whether work in flight should stop: a signal arrived, or a failed step cancelled the rest.
pub fn stopping() -> bool {
    interrupted() || CANCELLED.load(Ordering::SeqCst)
}

/// A step failed: stop the others as a signal would (running containers are killed and the
/// steps unwind), but the build's exit code stays the failure's.
pub fn cancel() {
    CANCELLED.store(true, Ordering::SeqCst);
    run(Some(Kind::Stop));
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
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for signal in signals.forever() {
                    if tx.send(signal).is_err() {
                        return;
                    }
                }
            });
            let Ok(signal) = rx.recv() else { return };
            INTERRUPTED.store(true, Ordering::SeqCst);
            // A closed stderr must not stop the cleanup (eprintln! would panic).
            let _ = writeln!(
                std::io::stderr(),
                "rbuild: interrupted (signal {signal}); stopping"
            );
            run(Some(Kind::Stop));
            // A second signal, or a build that does not unwind in time: undo it all here.
            let _ = rx.recv_timeout(GRACE);
            run(None);
            std::process::exit(130);
        });
    });
}

/// Runs the registered cleanups of `kind` (all if `None`), stops first, newest first.
fn run(kind: Option<Kind>) {
    let chosen: Vec<Cleanup> = {
        let mut map = lock();
        let keys: Vec<(Kind, u64)> = map
            .keys()
            .filter(|(k, _)| kind.is_none_or(|want| *k == want))
            .copied()
            .collect();
        keys.into_iter()
            .rev()
            .filter_map(|k| map.remove(&k))
            .collect()
    };
    for cleanup in chosen {
        cleanup();
    }
}

fn lock() -> std::sync::MutexGuard<'static, BTreeMap<(Kind, u64), Cleanup>> {
    // A cleanup that panicked cannot leave the map half-changed: it was removed first.
    CLEANUPS.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn stops_run_alone_first_and_guards_unregister() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let ran = Arc::new(AtomicUsize::new(0));
        let (o1, o2, o3, r) = (order.clone(), order.clone(), order.clone(), ran.clone());
        let _undo = register(move || o1.lock().unwrap().push("undo"));
        let _stop_a = register_stop(move || o2.lock().unwrap().push("stop a"));
        let _stop_b = register_stop(move || o3.lock().unwrap().push("stop b"));
        let dropped = register(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        drop(dropped);
        run(Some(Kind::Stop));
        assert_eq!(*order.lock().unwrap(), vec!["stop b", "stop a"]);
        run(None);
        assert_eq!(*order.lock().unwrap(), vec!["stop b", "stop a", "undo"]);
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }
}
