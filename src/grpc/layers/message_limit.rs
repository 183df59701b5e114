//! [`MessageLimitLayer`]: a request message larger than `[server] max_message_bytes` is
//! refused with `RESOURCE_EXHAUSTED` naming the limit, as gRPC specifies, from the 5-byte
//! frame header that announces its length: nothing of it is buffered. This applies to every
//! message of a client stream too. The limit is read from the configuration in force when
//! the call starts.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use http_body::Frame;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::live::LiveConfig;

/// Wraps every request body in a `Limited` reader.
#[derive(Debug, Clone)]
pub struct MessageLimitLayer {
    live: Arc<LiveConfig>,
}

impl MessageLimitLayer {
    /// Limit from the live configuration.
    pub fn new(live: Arc<LiveConfig>) -> MessageLimitLayer {
        MessageLimitLayer { live }
    }
}

impl<S> Layer<S> for MessageLimitLayer {
    type Service = MessageLimit<S>;

    fn layer(&self, inner: S) -> MessageLimit<S> {
        MessageLimit {
            inner,
            live: Arc::clone(&self.live),
        }
    }
}

/// The service [`MessageLimitLayer`] produces.
#[derive(Debug, Clone)]
pub struct MessageLimit<S> {
    inner: S,
    live: Arc<LiveConfig>,
}

impl<S> Service<Request<Body>> for MessageLimit<S>
where
    S: Service<Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> S::Future {
        let limit = self.live.snapshot().config.server.max_message_bytes;
        self.inner
            .call(req.map(|body| Body::new(Limited::new(body, limit))))
    }
}

/// A gRPC request body that fails with `RESOURCE_EXHAUSTED` when a frame header announces
/// a message over the limit. Data passes through unchanged.
struct Limited {
    body: Body,
    limit: usize,
    /// Header bytes of the next message seen so far.
    header: [u8; 5],
    header_len: usize,
    /// Payload bytes of the current message still to come.
    payload_left: u64,
    /// The refusal, sent after the messages before the oversized one have been passed on.
    refused: Option<tonic::Status>,
}

impl Limited {
    /// Reads `body` with `limit` bytes per message.
    fn new(body: Body, limit: usize) -> Limited {
        Limited {
            body,
            limit,
            header: [0; 5],
            header_len: 0,
            payload_left: 0,
            refused: None,
        }
    }

    /// Follows the framing through one chunk. When a header announces a message over the
    /// limit: where in the chunk that message starts (0 if its header began in an earlier
    /// chunk) and its length.
    fn scan(&mut self, chunk: &[u8]) -> Option<(usize, u64)> {
        let mut at = 0;
        while at < chunk.len() {
            if self.payload_left > 0 {
                let n = (chunk.len() - at)
                    .min(usize::try_from(self.payload_left).unwrap_or(usize::MAX));
                at += n;
                self.payload_left -= n as u64;
                continue;
            }
            let header_start = at.saturating_sub(self.header_len);
            let n = (chunk.len() - at).min(5 - self.header_len);
            self.header[self.header_len..self.header_len + n].copy_from_slice(&chunk[at..at + n]);
            self.header_len += n;
            at += n;
            if self.header_len == 5 {
                self.header_len = 0;
                let len = u64::from(u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]));
                if len > self.limit as u64 {
                    return Some((header_start, len));
                }
                self.payload_left = len;
            }
        }
        None
    }
}

impl http_body::Body for Limited {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        if let Some(status) = self.refused.take() {
            return Poll::Ready(Some(Err(status)));
        }
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
            && let Some((start, len)) = self.scan(data)
        {
            let status = crate::grpc::status::message_too_large(len, self.limit);
            if start == 0 {
                return Poll::Ready(Some(Err(status)));
            }
            // Messages before the oversized one still reach the handler (a stream answers
            // them), then the refusal.
            let before = data.slice(..start);
            self.refused = Some(status);
            return Poll::Ready(Some(Ok(Frame::data(before))));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: u32) -> Vec<u8> {
        let mut v = vec![0u8];
        v.extend_from_slice(&len.to_be_bytes());
        v.extend(std::iter::repeat_n(7u8, len as usize));
        v
    }

    #[test]
    fn follows_frames_split_anywhere() {
        let mut bytes = frame(10);
        bytes.extend(frame(3));
        bytes.extend(frame(100));
        for split in 1..bytes.len() {
            let mut l = Limited::new(Body::empty(), 50);
            let (a, b) = bytes.split_at(split);
            // The oversized message's header starts at byte 23 (two frames of 5+10, 5+3).
            let found = l
                .scan(a)
                .or_else(|| l.scan(b).map(|(at, len)| (at + split, len)));
            let (start, len) = found.unwrap_or_else(|| panic!("split at {split}"));
            assert_eq!(len, 100, "split at {split}");
            let straddles = split > 23 && split < 28;
            assert_eq!(
                start,
                if straddles { split } else { 23 },
                "split at {split}"
            );
        }
        let mut l = Limited::new(Body::empty(), 100);
        assert_eq!(l.scan(&bytes), None);
    }
}
