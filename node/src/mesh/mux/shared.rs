//! The connection's lock, for tasks. A stream's reader or writer that finds the connection
//! busy (another task is sealing, opening or moving bytes under the lock) must not put its
//! runtime worker to sleep on a futex: with both peers of a transfer on two cores, the profile
//! of a blob fetch showed workers switched out on this lock 43% of the time they switched, and
//! the cores a quarter idle. [`Shared::poll_lock`] returns `Pending` instead and the task is
//! woken when the holder lets go, so its worker runs other tasks meanwhile.

use std::{
    ops::{Deref, DerefMut},
    sync::{Mutex, MutexGuard, PoisonError, TryLockError},
    task::{Context, Poll, Waker},
};

/// A value behind a lock that tasks wait for without blocking their thread.
pub(super) struct Shared<T> {
    value: Mutex<T>,
    /// Tasks waiting for the lock, woken (all of them) when it is released.
    waiting: Mutex<Vec<Waker>>,
}

/// The lock held; dropping it wakes the tasks that found it taken.
pub(super) struct Guard<'a, T> {
    guard: Option<MutexGuard<'a, T>>,
    waiting: &'a Mutex<Vec<Waker>>,
}

impl<T> Shared<T> {
    pub(super) fn new(value: T) -> Self {
        Self {
            value: Mutex::new(value),
            waiting: Mutex::new(Vec::new()),
        }
    }

    fn guard<'a>(&'a self, guard: MutexGuard<'a, T>) -> Guard<'a, T> {
        Guard {
            guard: Some(guard),
            waiting: &self.waiting,
        }
    }

    fn try_lock(&self) -> Option<Guard<'_, T>> {
        match self.value.try_lock() {
            Ok(g) => Some(self.guard(g)),
            // A panic under the lock leaves the state as consistent as any error would.
            Err(TryLockError::Poisoned(p)) => Some(self.guard(p.into_inner())),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// The lock, or `Pending` with the task registered to be woken when it is released.
    pub(super) fn poll_lock(&self, cx: &mut Context<'_>) -> Poll<Guard<'_, T>> {
        if let Some(g) = self.try_lock() {
            return Poll::Ready(g);
        }
        {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
                waiting.push(cx.waker().clone());
            }
        }
        // Released between the first try and the registration: nobody would wake us. (Got it
        // now, the registration stays and costs one spurious wake-up at the next release.)
        self.try_lock().map_or(Poll::Pending, Poll::Ready)
    }

    /// The lock, blocking the thread (for `Drop`, which cannot wait as a task).
    pub(super) fn lock(&self) -> Guard<'_, T> {
        self.guard(self.value.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.guard.as_deref().expect("held until dropped")
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_deref_mut().expect("held until dropped")
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        // Released first, then the waiters woken: one that registers after we took the list
        // finds the lock free on its second try.
        drop(self.guard.take());
        let woken =
            std::mem::take(&mut *self.waiting.lock().unwrap_or_else(PoisonError::into_inner));
        for w in woken {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        task::Wake,
    };

    use super::*;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_task_that_finds_the_lock_taken_waits_and_is_woken_on_release() {
        let shared = Shared::new(1u32);
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut held = match shared.poll_lock(&mut cx) {
            Poll::Ready(g) => g,
            Poll::Pending => panic!("free lock"),
        };
        *held += 1;
        assert!(shared.poll_lock(&mut cx).is_pending());
        assert!(shared.poll_lock(&mut cx).is_pending(), "registered once");
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        drop(held);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken once on release");
        match shared.poll_lock(&mut cx) {
            Poll::Ready(g) => assert_eq!(*g, 2),
            Poll::Pending => panic!("released"),
        }
        assert_eq!(*shared.lock(), 2);
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "nobody waiting, nobody woken"
        );
    }

    #[test]
    fn contending_threads_all_get_the_lock() {
        let shared = Arc::new(Shared::new(0u64));
        let (done, finished) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let shared = shared.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                for _ in 0..10_000 {
                    let mut g = futures::executor::block_on(futures::future::poll_fn(|cx| {
                        shared.poll_lock(cx)
                    }));
                    *g += 1;
                }
                let _ = done.send(());
            });
        }
        for _ in 0..4 {
            // A lost wake-up leaves a thread parked for good: fail instead of hanging.
            finished
                .recv_timeout(std::time::Duration::from_secs(20))
                .expect("a thread waited for a release it was never told of");
        }
        assert_eq!(*shared.lock(), 40_000);
    }
}
