//! Wakers for a socket that several tasks wait on at once.

use std::{
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll, Wake, Waker},
};

/// Wakes every task that registered, once.
#[derive(Default)]
struct Notifier(Mutex<Vec<Waker>>);

impl Notifier {
    fn register(&self, w: &Waker) {
        let mut ws = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !ws.iter().any(|x| x.will_wake(w)) {
            ws.push(w.clone());
        }
    }
}

impl Wake for Notifier {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let ws = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        for w in ws {
            w.wake();
        }
    }
}

/// The socket's side of [`Notifier`]: the waker to poll it with.
pub(super) struct Waiters {
    notifier: Arc<Notifier>,
    pub(super) waker: Waker,
}

impl Waiters {
    pub(super) fn new() -> Self {
        let notifier = Arc::new(Notifier::default());
        Self {
            waker: Waker::from(notifier.clone()),
            notifier,
        }
    }

    /// Registers `w` to be woken with the next wake-up.
    pub(super) fn register(&self, w: &Waker) {
        self.notifier.register(w);
    }

    /// Polls the socket with the shared waker. After a `Pending` the caller is registered and
    /// the socket polled once more, so readiness between the two polls is not lost.
    pub(super) fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let mut ncx = Context::from_waker(&self.waker);
        match op(&mut ncx) {
            Poll::Pending => {
                self.notifier.register(cx.waker());
                op(&mut ncx)
            }
            r => r,
        }
    }
}
