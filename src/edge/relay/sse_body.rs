//! One SSE response body and its queue: the chunks written to the stream
//! and not yet taken by the client, in a [`herald_core::outbox::Outbox`]
//! bounded in bytes. The body hands chunks to the runtime as it pulls them,
//! so the outbox holds exactly what the client has not taken.

use herald_core::outbox::{Outbox, Pushed};
use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// SSE text shared by every stream it was written to.
#[derive(Clone)]
pub(super) struct Chunk(Rc<[u8]>);

impl Chunk {
    pub fn new(text: &str) -> Self {
        Chunk(Rc::from(text.as_bytes()))
    }
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Chunk> for Vec<u8> {
    /// The copy into the JS body happens as the client reads, one chunk at
    /// a time.
    fn from(c: Chunk) -> Vec<u8> {
        c.0.to_vec()
    }
}

/// One stream's queue and the waker of the response body reading it.
#[derive(Default)]
pub(super) struct StreamOut {
    outbox: RefCell<Outbox<Chunk>>,
    waker: RefCell<Option<Waker>>,
}

impl StreamOut {
    pub fn push(&self, chunk: Chunk, bound: usize) -> Pushed {
        let pushed = self.outbox.borrow_mut().push(chunk, bound);
        self.wake();
        pushed
    }

    /// Ends the stream once the client has taken what is queued.
    pub fn close(&self) {
        self.outbox.borrow_mut().close();
        self.wake();
    }

    pub fn unsent(&self) -> usize {
        self.outbox.borrow().unsent()
    }

    pub fn is_closed(&self) -> bool {
        self.outbox.borrow().is_closed()
    }

    fn wake(&self) {
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// The response body: takes chunks as the runtime pulls them.
pub(super) struct Body(pub Rc<StreamOut>);

impl futures::Stream for Body {
    type Item = std::result::Result<Chunk, worker::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let out = &self.0;
        if let Some(chunk) = out.outbox.borrow_mut().pop() {
            return Poll::Ready(Some(Ok(chunk)));
        }
        if out.outbox.borrow().finished() {
            return Poll::Ready(None);
        }
        *out.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Body {
    /// The client went away (or the stream ended): the next write finds the
    /// outbox closed and forgets the stream.
    fn drop(&mut self) {
        self.0.outbox.borrow_mut().close();
    }
}
