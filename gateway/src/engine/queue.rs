//! The bounded outbound queue of one connection.
//!
//! Producers (broadcasts, acks, heartbeats) push complete Engine.IO frames
//! with `try`-semantics: a full queue is reported to the caller, which treats
//! the connection as a slow consumer. The single consumer (the WebSocket
//! writer or a polling GET) takes everything queued at once. The lock is per
//! connection and held only to move frames in or out, never across an await,
//! so producers never wait for a slow socket. The frame store is allocated on
//! first use and shrunk once drained, so an idle connection holds no buffer.

use std::collections::VecDeque;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// One Engine.IO packet ready for the wire: text (`"42[...]"`, `"2"`) or a
/// binary message. Cloning shares the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(Utf8Bytes),
    Binary(Bytes),
}

impl Frame {
    pub fn text(s: impl Into<String>) -> Self {
        Frame::Text(Utf8Bytes::from(s.into()))
    }

    pub const fn text_static(s: &'static str) -> Self {
        Frame::Text(Utf8Bytes::from_static(s))
    }

    pub fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a push failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("outbound queue full")]
    Full,
    #[error("connection closed")]
    Closed,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Frame>,
    closed: bool,
}

/// Bounded multi-producer, single-consumer frame queue.
pub struct OutboundQueue {
    state: Mutex<State>,
    notify: Notify,
    capacity: usize,
}

/// Capacity kept by an idle queue after a drain; more is released.
const IDLE_KEEP: usize = 8;

impl OutboundQueue {
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            capacity,
        }
    }

    /// Queues `frames` as one unit (a packet and its attachments stay
    /// together), or none of them.
    pub fn push_all(&self, frames: &[Frame]) -> Result<(), PushError> {
        {
            let mut st = self.state.lock();
            if st.closed {
                return Err(PushError::Closed);
            }
            if st.frames.len() + frames.len() > self.capacity {
                return Err(PushError::Full);
            }
            st.frames.extend(frames.iter().cloned());
        }
        self.notify.notify_one();
        Ok(())
    }

    pub fn push(&self, frame: Frame) -> Result<(), PushError> {
        self.push_all(std::slice::from_ref(&frame))
    }

    /// Queues a control frame (ping, noop, close) regardless of capacity:
    /// there is at most a handful of them per connection at a time.
    pub fn push_control(&self, frame: Frame) {
        {
            let mut st = self.state.lock();
            if st.closed {
                return;
            }
            st.frames.push_back(frame);
        }
        self.notify.notify_one();
    }

    /// Moves every queued frame into `out` (which should be empty).
    pub fn drain_into(&self, out: &mut VecDeque<Frame>) {
        let mut st = self.state.lock();
        if st.frames.is_empty() {
            return;
        }
        if out.is_empty() && out.capacity() <= st.frames.capacity() {
            std::mem::swap(out, &mut st.frames);
        } else {
            out.extend(st.frames.drain(..));
        }
        if st.frames.capacity() > IDLE_KEEP {
            st.frames.shrink_to(IDLE_KEEP);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.state.lock().frames.is_empty()
    }

    pub fn len(&self) -> usize {
        self.state.lock().frames.len()
    }

    /// Refuses further pushes and wakes the consumer. Frames already queued
    /// stay drainable (a close packet may be among them).
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.notify.notify_one();
    }

    /// Resolves once something was pushed since the last call (a permit is
    /// kept when nobody waits, so no wake-up is lost).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    /// Wakes the consumer without pushing (for example when the transport
    /// changes under a pending poll).
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_all_or_nothing() {
        let q = OutboundQueue::new(3);
        q.push(Frame::text("a")).unwrap();
        let pair = [Frame::text("b"), Frame::Binary(Bytes::from_static(b"x"))];
        q.push_all(&pair).unwrap();
        assert_eq!(q.push(Frame::text("c")), Err(PushError::Full));
        assert_eq!(q.len(), 3);
        let mut out = VecDeque::new();
        q.drain_into(&mut out);
        assert_eq!(out.len(), 3);
        assert!(q.is_empty());
        q.push_all(&pair).unwrap();
        assert_eq!(q.push_all(&pair), Err(PushError::Full));
        q.close();
        assert_eq!(q.push(Frame::text("d")), Err(PushError::Closed));
        out.clear();
        q.drain_into(&mut out);
        assert_eq!(out.len(), 2, "frames queued before close stay drainable");
    }

    #[test]
    fn control_frames_bypass_capacity() {
        let q = OutboundQueue::new(1);
        q.push(Frame::text("a")).unwrap();
        q.push_control(Frame::text_static("2"));
        assert_eq!(q.len(), 2);
    }

    #[tokio::test]
    async fn a_push_before_waiting_is_not_lost() {
        let q = OutboundQueue::new(4);
        q.push(Frame::text("a")).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), q.notified())
            .await
            .unwrap();
    }
}
