//! `Coalesce`: the write side of a client connection, gathering what HTTP/2 flushes in quick
//! succession into one `write` to the socket.
//!
//! hyper's HTTP/2 client sends a unary gRPC request in up to three flushes: the stream's
//! HEADERS once the connection task opens it, then the DATA frame once the request's body task
//! is woken with send capacity, then an empty DATA frame that ends the stream. Each flush was
//! one `writev`, one TCP segment and, on the member, one more wake-up of its connection task
//! (seen with `strace`: three `writev`s per AppendEntries, two per client write). Here a flush
//! with bytes waiting is put off while they keep coming, at most `PUT_OFFS_MAX` times: the
//! connection task yields, the body task it woke adds its frames, and one write sends them all.
//!
//! Invariants:
//! - every byte accepted by `poll_write` reaches the inner IO, in order, before `poll_flush` or
//!   `poll_shutdown` returns `Ready(Ok)`;
//! - a flush is put off only with bytes waiting, only if more came since it was last put off,
//!   and at most `PUT_OFFS_MAX` times in a row; each time the task is woken at once, so a
//!   flush waits for at most that many passes of its task through the scheduler;
//! - at most `HELD_BYTES_MAX` bytes are held; a larger write goes to the inner IO as it comes,
//!   after what was held.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most times in a row a flush is put off: HEADERS, then DATA, then the end of the stream.
const PUT_OFFS_MAX: u8 = 2;
/// Most bytes held for the next write; past it they are written at once.
pub const HELD_BYTES_MAX: usize = 64 * 1024;

/// An IO whose writes are gathered into one write per flush.
pub struct Coalesce<T> {
    inner: T,
    held: Vec<u8>,
    /// How many bytes at the front of `held` have been written already.
    written: usize,
    /// How often the current flush was put off.
    put_offs: u8,
    /// How many bytes were held when it was last put off: a flush is put off again only if
    /// more came since.
    held_when_put_off: usize,
}

impl<T> Coalesce<T> {
    pub fn new(inner: T) -> Coalesce<T> {
        Coalesce {
            inner,
            held: Vec::new(),
            written: 0,
            put_offs: 0,
            held_when_put_off: 0,
        }
    }

    /// The wrapped IO.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Writes every held byte.
    fn poll_drain(&mut self, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.written < self.held.len() {
            let written = std::task::ready!(
                Pin::new(&mut self.inner).poll_write(context, &self.held[self.written..])
            )?;
            if written == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.written += written;
        }
        self.held.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Holds `length` more bytes if they fit, after writing what is held if they do not.
    /// `Ready(false)`: too large to hold at all; write them through.
    fn poll_room(
        &mut self,
        context: &mut Context<'_>,
        length: usize,
    ) -> Poll<std::io::Result<bool>> {
        if self.held.len() + length > HELD_BYTES_MAX {
            std::task::ready!(self.poll_drain(context))?;
        }
        Poll::Ready(Ok(length <= HELD_BYTES_MAX))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(context, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if !std::task::ready!(self.poll_room(context, data.len()))? {
            return Pin::new(&mut self.inner).poll_write(context, data);
        }
        self.held.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let length = buffers.iter().map(|buffer| buffer.len()).sum();
        if !std::task::ready!(self.poll_room(context, length))? {
            return Pin::new(&mut self.inner).poll_write_vectored(context, buffers);
        }
        for buffer in buffers {
            self.held.extend_from_slice(buffer);
        }
        Poll::Ready(Ok(length))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.written < self.held.len()
            && self.put_offs < PUT_OFFS_MAX
            && self.held.len() != self.held_when_put_off
        {
            // Let the tasks this one just woke (a request's body) add their frames first.
            self.put_offs += 1;
            self.held_when_put_off = self.held.len();
            context.waker().wake_by_ref();
            return Poll::Pending;
        }
        std::task::ready!(self.poll_drain(context))?;
        self.put_offs = 0;
        self.held_when_put_off = 0;
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_drain(context))?;
        Pin::new(&mut self.inner).poll_shutdown(context)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    use proptest::prelude::*;

    use super::*;

    /// An inner IO that records each write and accepts at most `chunk` bytes per call.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        chunk: usize,
        flushes: usize,
        shut: bool,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _context: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let length = data.len().min(self.chunk.max(1));
            self.writes.push(data[..length].to_vec());
            Poll::Ready(Ok(length))
        }

        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            self.shut = true;
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn coalescing(chunk: usize) -> (Coalesce<Recorder>, Arc<Wakes>, Waker) {
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let recorder = Recorder {
            chunk,
            ..Recorder::default()
        };
        (Coalesce::new(recorder), wakes, waker)
    }

    /// Writes all of `data`, as a caller does: a write through may take part of it.
    fn write(io: &mut Coalesce<Recorder>, waker: &Waker, data: &[u8]) {
        let mut context = Context::from_waker(waker);
        let mut offset = 0;
        while offset < data.len() {
            match Pin::new(&mut *io).poll_write(&mut context, &data[offset..]) {
                Poll::Ready(Ok(length)) if length > 0 => offset += length,
                other => panic!("write returned {other:?}"),
            }
        }
    }

    fn flush(io: &mut Coalesce<Recorder>, waker: &Waker) -> Poll<std::io::Result<()>> {
        Pin::new(io).poll_flush(&mut Context::from_waker(waker))
    }

    fn written(io: &Coalesce<Recorder>) -> Vec<u8> {
        io.get_ref().writes.concat()
    }

    #[test]
    fn frames_flushed_one_by_one_leave_in_one_write() {
        let (mut io, wakes, waker) = coalescing(usize::MAX);
        write(&mut io, &waker, b"HEADERS");
        assert!(flush(&mut io, &waker).is_pending());
        write(&mut io, &waker, b"DATA");
        assert!(flush(&mut io, &waker).is_pending());
        write(&mut io, &waker, b"END");
        assert!(matches!(flush(&mut io, &waker), Poll::Ready(Ok(()))));
        assert_eq!(io.get_ref().writes, vec![b"HEADERSDATAEND".to_vec()]);
        assert_eq!(io.get_ref().flushes, 1);
        // Each put-off woke the task at once: nobody waits for an outside event.
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_flush_is_put_off_only_while_bytes_keep_coming() {
        let (mut io, _, waker) = coalescing(usize::MAX);
        assert!(matches!(flush(&mut io, &waker), Poll::Ready(Ok(()))));
        write(&mut io, &waker, b"PING");
        assert!(flush(&mut io, &waker).is_pending());
        assert!(matches!(flush(&mut io, &waker), Poll::Ready(Ok(()))));
        assert_eq!(written(&io), b"PING");
        // The next flush starts afresh.
        write(&mut io, &waker, b"PONG");
        assert!(flush(&mut io, &waker).is_pending());
        assert!(matches!(flush(&mut io, &waker), Poll::Ready(Ok(()))));
        assert_eq!(
            io.get_ref().writes,
            vec![b"PING".to_vec(), b"PONG".to_vec()]
        );
    }

    #[test]
    fn a_large_write_goes_through_after_what_was_held() {
        let (mut io, _, waker) = coalescing(usize::MAX);
        write(&mut io, &waker, b"HEADERS");
        let large = vec![7u8; HELD_BYTES_MAX + 1];
        write(&mut io, &waker, &large);
        assert_eq!(io.get_ref().writes.len(), 2);
        assert_eq!(written(&io)[..7], *b"HEADERS");
        assert_eq!(written(&io)[7..], large[..]);
        assert!(matches!(flush(&mut io, &waker), Poll::Ready(Ok(()))));
    }

    #[test]
    fn shutdown_writes_what_is_held_first() {
        let (mut io, _, waker) = coalescing(3);
        write(&mut io, &waker, b"GOAWAY");
        let shut = Pin::new(&mut io).poll_shutdown(&mut Context::from_waker(&waker));
        assert!(matches!(shut, Poll::Ready(Ok(()))));
        assert_eq!(written(&io), b"GOAWAY");
        assert!(io.get_ref().shut);
    }

    proptest! {
        /// Whatever the sizes of the writes, of the inner IO's partial writes and the moments
        /// of the flushes, the inner IO receives every byte in order once a flush completes.
        #[test]
        fn every_byte_arrives_in_order(
            writes in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..3000), any::<bool>()), 0..40),
            chunk in 1usize..5000,
            large in proptest::option::of(HELD_BYTES_MAX - 10..HELD_BYTES_MAX + 10),
        ) {
            let (mut io, _, waker) = coalescing(chunk);
            let mut expected = Vec::new();
            for (data, flush_after) in &writes {
                write(&mut io, &waker, data);
                expected.extend_from_slice(data);
                if *flush_after {
                    let mut passes = 0;
                    while flush(&mut io, &waker).is_pending() {
                        passes += 1;
                        prop_assert!(passes <= usize::from(PUT_OFFS_MAX));
                    }
                    prop_assert_eq!(written(&io), expected.clone());
                }
            }
            if let Some(length) = large {
                let data = vec![1u8; length];
                write(&mut io, &waker, &data);
                expected.extend_from_slice(&data);
            }
            while flush(&mut io, &waker).is_pending() {}
            prop_assert_eq!(written(&io), expected);
        }
    }
}
