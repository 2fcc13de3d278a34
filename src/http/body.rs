//! Request bodies kept in memory so a retry can send them again:
//! [`BufferBodyLayer`] (its docs say how and why) and [`CloneBuffered`].

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::Request;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use tower::{Layer, Service};

use crate::retry::CloneRequest;

/// The default [`BufferBodyLayer::limit`]: 64 KiB (see the
/// [`BufferBodyLayer`] for why).
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// A body type [`BufferBodyLayer`] can rebuild: from bytes it buffered,
/// and from bytes it read before giving up followed by the rest.
///
/// Implemented for `tonic::body::Body` (feature `tonic`),
/// `axum::body::Body` (feature `axum`) and `http_body_util::Full<Bytes>`;
/// implement it for a body type of your own.
pub trait ReplayBody: Body<Data = Bytes> + Unpin + Sized {
    /// A body of exactly `bytes`, in one data frame.
    fn from_bytes(bytes: Bytes) -> Self;

    /// A body that yields `replay`'s frames read so far, then the rest of
    /// the original body.
    fn from_replay(replay: Replay<Self>) -> Self;
}

impl ReplayBody for Full<Bytes> {
    fn from_bytes(bytes: Bytes) -> Self {
        Full::new(bytes)
    }

    /// A `Full` is one frame, always ready, with an exact size hint, so the
    /// layer either buffers it whole or never reads it; should a replay
    /// come anyway, its data is gathered into one `Full` (it is in memory
    /// already). Trailers, which a `Full` cannot carry, are dropped.
    fn from_replay(mut replay: Replay<Self>) -> Self {
        let mut data = BytesMut::new();
        let mut cx = Context::from_waker(Waker::noop());
        // `Full` never returns `Pending` nor an error (its error type is
        // `Infallible`): this loop ends at the body's end.
        while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut replay).poll_frame(&mut cx) {
            if let Ok(chunk) = frame.into_data() {
                data.extend_from_slice(&chunk);
            }
        }
        Full::new(data.freeze())
    }
}

#[cfg(feature = "tonic")]
impl ReplayBody for tonic::body::Body {
    fn from_bytes(bytes: Bytes) -> Self {
        tonic::body::Body::new(Full::new(bytes))
    }

    fn from_replay(replay: Replay<Self>) -> Self {
        tonic::body::Body::new(replay)
    }
}

#[cfg(feature = "axum")]
impl ReplayBody for axum_core::body::Body {
    fn from_bytes(bytes: Bytes) -> Self {
        axum_core::body::Body::from(bytes)
    }

    fn from_replay(replay: Replay<Self>) -> Self {
        axum_core::body::Body::new(replay)
    }
}

/// The bytes of a request body [`BufferBodyLayer`] buffered, in the
/// request's extensions: what [`CloneBuffered`] rebuilds the body from.
#[derive(Debug, Clone)]
pub struct BufferedBody(Bytes);

impl BufferedBody {
    /// The body's bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
}

/// A body partly read: the frames read so far, then the rest of the
/// original body (or the error it failed with). Made by
/// [`BufferBodyLayer`] for a body it gave up buffering; turned back into
/// the original type by [`ReplayBody::from_replay`].
pub struct Replay<B: Body> {
    read: VecDeque<Frame<Bytes>>,
    read_len: u64,
    error: Option<B::Error>,
    rest: Option<B>,
}

impl<B: Body> fmt::Debug for Replay<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replay")
            .field("frames_read", &self.read.len())
            .field("bytes_read", &self.read_len)
            .field("failed", &self.error.is_some())
            .field("rest", &self.rest.is_some())
            .finish()
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Replay<B>
where
    B::Error: Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some(frame) = this.read.pop_front() {
            if let Some(data) = frame.data_ref() {
                this.read_len -= data.len() as u64;
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(error) = this.error.take() {
            return Poll::Ready(Some(Err(error)));
        }
        match &mut this.rest {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty()
            && self.error.is_none()
            && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let rest = match &self.rest {
            Some(rest) => rest.size_hint(),
            None => SizeHint::with_exact(0),
        };
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(self.read_len));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(self.read_len));
        }
        hint
    }
}

/// Keeps small request bodies in memory so a retry can send them again.
///
/// An `http::Request<B>` is not `Clone`, so a [`RetryLayer`] over an HTTP or
/// gRPC client cannot copy it and sends each request once. Two pieces fix
/// that:
///
/// - This layer, placed *above* the retry layer, reads each
///   request's body into one [`Bytes`] when it is small (at most
///   [`limit`](BufferBodyLayer::limit), default [`DEFAULT_BODY_LIMIT`], 64
///   KiB) and entirely available at once, hands the request on with a body
///   rebuilt from those bytes, and records them in the request's extensions
///   ([`BufferedBody`]).
/// - [`CloneBuffered`], given to
///   [`RetryLayerBuilder::clone_request`](crate::retry::RetryLayerBuilder::clone_request),
///   copies such a request: method, URI, version, headers and extensions,
///   and a new body of the same bytes (a reference count, not a copy). A
///   request without buffered bytes is not copied, so it is sent once and
///   counted by the retry layer as not clonable.
///
/// **Why 64 KiB.** A unary gRPC call or a small JSON request fits with room
/// to spare, and a retrying client holding one such body per request in
/// flight stays cheap. Uploads are larger and better not held in memory
/// (nor sent twice); raise the limit with [`BufferBodyLayer::with_limit`] if
/// your requests are bigger.
///
/// **What is not buffered** (sent once, as it came, never a panic): a body
/// whose size hint already exceeds the limit (it is not read at all), one
/// that grows past the limit while read, one that is not all available at
/// once (a streaming body still being produced: the layer never waits for a
/// body, so a bidirectional stream cannot deadlock on it), one with
/// trailers, and one that fails while read (the error is delivered to the
/// transport as it would have been). The bytes already read are sent first,
/// then the rest of the body. The first time this happens the layer logs a
/// `WARN` (once per layer, not per request); every time it adds to
/// [`BufferBodyLayer::unbuffered`].
///
/// The body types this works for implement [`ReplayBody`]: `tonic`'s
/// `Body` (feature `tonic`), `axum::body::Body` (feature `axum`) and
/// http-body-util's `Full<Bytes>`.
///
/// **Cost.** Reading a ready body happens in `call`, without a timer or a
/// task; a one-chunk body (tonic's unary message, `Full`) is kept without
/// copying. The marker in the extensions and the rebuilt body are an
/// allocation or two per request: small beside what the transport does
/// with the request, and the price of being able to retry it.
///
/// [`RetryLayer`]: crate::RetryLayer
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Full};
/// use palisade::RetryLayer;
/// use palisade::http::{BufferBodyLayer, CloneBuffered};
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), palisade::BoxError> {
/// let calls = Arc::new(AtomicU32::new(0));
/// let seen = calls.clone();
/// // Fails the first call, then answers with the request's body.
/// let upstream = service_fn(move |req: http::Request<Full<Bytes>>| {
///     let n = seen.fetch_add(1, Ordering::SeqCst);
///     async move {
///         if n == 0 {
///             return Err(palisade::BoxError::from("connection reset"));
///         }
///         Ok(req.into_body())
///     }
/// });
/// let client = ServiceBuilder::new()
///     .layer(BufferBodyLayer::new())
///     .layer(RetryLayer::exponential(Duration::from_millis(10))
///         .clone_request(CloneBuffered)
///         .build()?)
///     .service(upstream);
///
/// let body = client.oneshot(http::Request::new(Full::from("hello"))).await?;
/// assert_eq!(calls.load(Ordering::SeqCst), 2);
/// assert_eq!(body.collect().await?.to_bytes(), "hello"); // the retry's body
/// # Ok(()) }
/// ```
///
/// Cloning the layer shares its warn-once flag and its count.
#[derive(Debug, Clone)]
pub struct BufferBodyLayer {
    limit: usize,
    state: Arc<BodyState>,
}

#[derive(Debug, Default)]
struct BodyState {
    warned: AtomicBool,
    unbuffered: AtomicU64,
}

impl BufferBodyLayer {
    /// Buffers bodies of up to [`DEFAULT_BODY_LIMIT`] (64 KiB).
    pub fn new() -> Self {
        Self::with_limit(DEFAULT_BODY_LIMIT)
    }

    /// Buffers bodies of up to `limit` bytes (`0`: only empty bodies).
    pub fn with_limit(limit: usize) -> Self {
        Self {
            limit,
            state: Arc::default(),
        }
    }

    /// The largest body buffered, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Requests sent without buffering (and so not retryable) by every
    /// service this layer produced.
    pub fn unbuffered(&self) -> u64 {
        self.state.unbuffered.load(Relaxed)
    }
}

impl Default for BufferBodyLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for BufferBodyLayer {
    type Service = BufferBody<S>;

    fn layer(&self, inner: S) -> BufferBody<S> {
        BufferBody {
            inner,
            limit: self.limit,
            state: self.state.clone(),
        }
    }
}

/// The service of [`BufferBodyLayer`].
#[derive(Debug, Clone)]
pub struct BufferBody<S> {
    inner: S,
    limit: usize,
    state: Arc<BodyState>,
}

impl<S> BufferBody<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for BufferBody<S>
where
    S: Service<Request<B>>,
    B: ReplayBody,
    B::Error: Unpin,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> S::Future {
        // Reading the body needs no readiness: `self.inner` is the instance
        // the caller made ready, and it makes the call.
        let (mut parts, body) = request.into_parts();
        let body = match read_ready(body, self.limit) {
            Read::Whole(bytes) => {
                parts.extensions.insert(BufferedBody(bytes.clone()));
                B::from_bytes(bytes)
            }
            Read::Untouched(body, why) => {
                self.gave_up(why);
                body
            }
            Read::Partly(replay, why) => {
                self.gave_up(why);
                B::from_replay(replay)
            }
        };
        self.inner.call(Request::from_parts(parts, body))
    }
}

impl<S> BufferBody<S> {
    fn gave_up(&self, why: &'static str) {
        self.state.unbuffered.fetch_add(1, Relaxed);
        if !self.state.warned.swap(true, Relaxed) {
            tracing::warn!(
                limit = self.limit,
                reason = why,
                "request body not buffered: this request and others like it are sent once, \
                 never retried (logged once per BufferBodyLayer)"
            );
        } else {
            tracing::debug!(
                limit = self.limit,
                reason = why,
                "request body not buffered"
            );
        }
    }
}

/// What reading a body without waiting gave.
enum Read<B: Body> {
    /// All of it, within the limit.
    Whole(Bytes),
    /// Not read at all: its size hint is over the limit.
    Untouched(B, &'static str),
    /// Read in part; the reason it was not all read.
    Partly(Replay<B>, &'static str),
}

/// Reads `body` as far as it is ready now, up to `limit` bytes.
fn read_ready<B: Body<Data = Bytes> + Unpin>(mut body: B, limit: usize) -> Read<B> {
    if body.is_end_stream() {
        return Read::Whole(Bytes::new());
    }
    let limit = limit as u64;
    if body.size_hint().lower() > limit {
        return Read::Untouched(body, "larger than the limit");
    }
    let mut chunks = Chunks::default();
    // A waker that does nothing: a body not ready now is not waited for
    // (`futures::FutureExt::now_or_never` polls the same way). The
    // transport polls it again with its own waker.
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        let why = match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(None) => return Read::Whole(chunks.concat()),
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    chunks.push(data);
                    if chunks.len <= limit {
                        continue;
                    }
                    "larger than the limit"
                }
                Err(trailers) => {
                    return Read::Partly(
                        chunks.replay(Some(trailers), None, Some(body)),
                        "trailers",
                    );
                }
            },
            Poll::Ready(Some(Err(error))) => {
                return Read::Partly(chunks.replay(None, Some(error), None), "body error");
            }
            Poll::Pending => "not all available at once (streaming)",
        };
        return Read::Partly(chunks.replay(None, None, Some(body)), why);
    }
}

/// Data chunks read so far; one chunk is kept as it is.
#[derive(Default)]
struct Chunks {
    first: Option<Bytes>,
    more: Vec<Bytes>,
    len: u64,
}

impl Chunks {
    fn push(&mut self, data: Bytes) {
        self.len = self.len.saturating_add(data.len() as u64);
        if self.first.is_none() {
            self.first = Some(data);
        } else {
            self.more.push(data);
        }
    }

    fn concat(self) -> Bytes {
        let Some(first) = self.first else {
            return Bytes::new();
        };
        if self.more.is_empty() {
            return first;
        }
        let mut all = BytesMut::with_capacity(usize::try_from(self.len).unwrap_or(0));
        all.extend_from_slice(&first);
        for chunk in &self.more {
            all.extend_from_slice(chunk);
        }
        all.freeze()
    }

    fn replay<B: Body>(
        self,
        trailers: Option<Frame<Bytes>>,
        error: Option<B::Error>,
        rest: Option<B>,
    ) -> Replay<B> {
        let read = self
            .first
            .into_iter()
            .chain(self.more)
            .map(Frame::data)
            .chain(trailers)
            .collect();
        Replay {
            read,
            read_len: self.len,
            error,
            rest,
        }
    }
}

/// Copies a request whose body [`BufferBodyLayer`] buffered, for
/// [`RetryLayerBuilder::clone_request`](crate::retry::RetryLayerBuilder::clone_request):
/// method, URI, version, headers, extensions and a body of the same bytes.
/// A request without buffered bytes is not copied (`None`): it is sent
/// once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CloneBuffered;

impl<B: ReplayBody> CloneRequest<Request<B>> for CloneBuffered {
    fn clone_request(&self, request: &Request<B>) -> Option<Request<B>> {
        let bytes = request.extensions().get::<BufferedBody>()?.0.clone();
        let mut copy = Request::new(B::from_bytes(bytes));
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.version_mut() = request.version();
        *copy.headers_mut() = request.headers().clone();
        *copy.extensions_mut() = request.extensions().clone();
        Some(copy)
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    type Frames = Vec<Result<Frame<Bytes>, std::io::Error>>;

    fn stream(
        frames: Frames,
    ) -> StreamBody<futures_util::stream::Iter<<Frames as IntoIterator>::IntoIter>> {
        StreamBody::new(futures_util::stream::iter(frames))
    }

    fn data(s: &'static str) -> Result<Frame<Bytes>, std::io::Error> {
        Ok(Frame::data(Bytes::from_static(s.as_bytes())))
    }

    #[test]
    fn ready_chunks_within_the_limit_are_joined() {
        match read_ready(stream(vec![data("ab"), data("cd")]), 4) {
            Read::Whole(bytes) => assert_eq!(bytes, "abcd"),
            _ => panic!("expected the whole body"),
        }
        match read_ready(Full::new(Bytes::new()), 0) {
            Read::Whole(bytes) => assert!(bytes.is_empty()),
            _ => panic!("an empty body is buffered"),
        }
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_replayed_whole() {
        let Read::Partly(replay, why) =
            read_ready(stream(vec![data("ab"), data("cd"), data("ef")]), 3)
        else {
            panic!("expected a partial read")
        };
        assert_eq!(why, "larger than the limit");
        assert_eq!(replay.size_hint().lower(), 4);
        let all = replay.collect().await.unwrap().to_bytes();
        assert_eq!(all, "abcdef");
    }

    #[test]
    fn a_size_hint_over_the_limit_is_not_read() {
        let Read::Untouched(body, _) = read_ready(Full::new(Bytes::from_static(b"hello")), 4)
        else {
            panic!("expected the body untouched")
        };
        assert_eq!(body.size_hint().exact(), Some(5));
    }

    #[tokio::test]
    async fn errors_and_trailers_are_delivered_in_order() {
        let err = std::io::Error::other("boom");
        let Read::Partly(replay, why) = read_ready(stream(vec![data("ab"), Err(err)]), 10) else {
            panic!()
        };
        assert_eq!(why, "body error");
        let mut replay = replay;
        assert_eq!(
            replay.frame().await.unwrap().unwrap().into_data().unwrap(),
            "ab"
        );
        assert!(replay.frame().await.unwrap().is_err());
        assert!(replay.frame().await.is_none());

        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-t", "1".parse().unwrap());
        let Read::Partly(replay, why) =
            read_ready(stream(vec![data("ab"), Ok(Frame::trailers(trailers))]), 10)
        else {
            panic!()
        };
        assert_eq!(why, "trailers");
        let collected = replay.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-t"], "1");
        assert_eq!(collected.to_bytes(), "ab");
    }

    #[tokio::test]
    async fn a_pending_body_is_not_waited_for() {
        let (tx, rx) =
            tokio::sync::mpsc::unbounded_channel::<Result<Frame<Bytes>, std::io::Error>>();
        tx.send(data("ab")).unwrap();
        let frames = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|frame| (frame, rx))
        }));
        let Read::Partly(replay, why) = read_ready(StreamBody::new(frames), 10) else {
            panic!("expected a partial read")
        };
        assert_eq!(why, "not all available at once (streaming)");
        // The rest arrives later and follows what was read.
        tx.send(data("cd")).unwrap();
        drop(tx);
        assert_eq!(replay.collect().await.unwrap().to_bytes(), "abcd");
    }
}
