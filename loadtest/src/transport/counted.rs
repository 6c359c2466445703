//! A stream that counts what the client read from TCP: the bytes on the
//! wire, after any compression and with every framing byte, which is what
//! the compression benchmark compares ("wire bytes per delivery").

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the connections of one shard received on the wire; read by the
/// coordinator while the run goes on.
#[derive(Debug, Default)]
pub struct WireStats {
    /// Bytes read from TCP (HTTP heads, WebSocket frames, polling bodies).
    pub bytes_read: AtomicU64,
    /// WebSocket messages that arrived compressed (permessage-deflate).
    pub compressed_messages: AtomicU64,
}

impl WireStats {
    pub fn add_read(&self, n: usize) {
        self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn add_compressed(&self) {
        self.compressed_messages.fetch_add(1, Ordering::Relaxed);
    }
}

/// A stream whose reads are added to a [`WireStats`].
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    stats: Arc<WireStats>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, stats: Arc<WireStats>) -> Self {
        Self { inner, stats }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn stats(&self) -> &WireStats {
        &self.stats
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        self.stats.add_read(buf.filled().len() - before);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counts_the_bytes_read_not_written() {
        let (a, mut b) = tokio::io::duplex(64);
        let stats = Arc::new(WireStats::default());
        let mut counted = Counted::new(a, stats.clone());
        counted.write_all(b"ignored").await.unwrap();
        b.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 16];
        let n = counted.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(stats.bytes_read.load(Ordering::Relaxed), 5);
    }
}
