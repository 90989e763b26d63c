//! Locks for the proxy's own short critical sections (metric maps, the script cache, reply
//! FIFOs). A panic while one is held is already a bug reported by the panic itself; poisoning
//! would turn it into a second failure on every later `lock()` of a shared map, so these
//! mutexes do not poison. `clippy.toml` disallows `std::sync::Mutex` so new code uses this one.

#![allow(clippy::disallowed_types)]

use std::sync::PoisonError;

/// A mutex whose `lock` never fails: a panic while it was held leaves the data as it was.
#[derive(Debug, Default)]
pub struct Mutex<T: ?Sized>(std::sync::Mutex<T>);

/// The guard of a [`Mutex`].
pub type MutexGuard<'a, T> = std::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    /// A new unlocked mutex holding `value`.
    pub const fn new(value: T) -> Self {
        Self(std::sync::Mutex::new(value))
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Locks, waiting for the holder; never fails (see the module doc).
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_while_locked_does_not_poison() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock();
            panic!("while locked");
        })
        .join();
        *m.lock() += 1;
        assert_eq!(*m.lock(), 2);
    }
}
