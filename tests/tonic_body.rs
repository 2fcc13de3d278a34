//! Retrying requests with bodies: `BufferBodyLayer` above `RetryLayer`
//! with `CloneBuffered`, driven through the shared mock for tonic's,
//! axum's and http-body-util's body types. (`tests/tonic_stack.rs` does
//! the same over a real tonic channel.)
#![cfg(all(feature = "tonic", feature = "axum"))]

mod support;

use std::convert::Infallible;

use bytes::Bytes;
use http::{Method, Request, Version};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use palisade::RetryLayer;
use palisade::http::{
    BufferBodyLayer, BufferedBody, CloneBuffered, DEFAULT_BODY_LIMIT, ReplayBody,
};
use support::{Mock, Step, ms};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

/// An extension a caller attached; retries must carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TraceId(u64);

fn request<B>(body: B) -> Request<B> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("http://upstream.test/pkg.Service/Method")
        .version(Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("x-tenant", "acme")
        .body(body)
        .unwrap();
    req.extensions_mut().insert(TraceId(42));
    req
}

type Frames = Vec<Result<Frame<Bytes>, Infallible>>;

/// A body of several chunks without a size hint, all ready at once (as a
/// tonic unary message or an in-memory stream is).
fn chunks(
    parts: &[&'static str],
) -> StreamBody<futures::stream::Iter<<Frames as IntoIterator>::IntoIter>> {
    let frames: Vec<_> = parts
        .iter()
        .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
        .collect();
    StreamBody::new(futures::stream::iter(frames))
}

async fn bytes_of<B: http_body::Body>(body: B) -> Bytes
where
    B::Error: std::fmt::Debug,
{
    body.collect().await.unwrap().to_bytes()
}

/// Sends `req` through `BufferBodyLayer -> RetryLayer(CloneBuffered)` to a
/// mock that fails `failures` times, then answers with the request it got.
async fn send<B>(
    req: Request<B>,
    failures: usize,
    buffer: BufferBodyLayer,
) -> (
    Result<Request<B>, support::MockError>,
    support::MockHandle<Request<B>>,
    palisade::retry::RetryHandle,
)
where
    B: ReplayBody + Send + 'static,
    B::Error: Unpin,
{
    let mock = Mock::new().script(std::iter::repeat_n(Step::err(), failures));
    let handle = mock.handle();
    let retry = RetryLayer::exponential(ms(10))
        .max_attempts(3)
        .clone_request(CloneBuffered)
        .build()
        .unwrap();
    let retries = retry.handle();
    let mut svc = ServiceBuilder::new()
        .layer(buffer)
        .layer(retry)
        .service(mock);
    let result = svc.ready().await.unwrap().call(req).await;
    (result.map(|reply| reply.request), handle, retries)
}

fn assert_same_head<A, B>(sent: &Request<A>, original: &Request<B>) {
    assert_eq!(sent.method(), original.method());
    assert_eq!(sent.uri(), original.uri());
    assert_eq!(sent.version(), original.version());
    assert_eq!(sent.headers(), original.headers());
    assert_eq!(sent.extensions().get::<TraceId>(), Some(&TraceId(42)));
}

#[tokio::test(start_paused = true)]
async fn a_full_body_is_resent_whole_with_the_requests_head() {
    let head = request(());
    let (got, mock, retries) = send(
        request(Full::new(Bytes::from_static(b"payload"))),
        2,
        BufferBodyLayer::new(),
    )
    .await;
    let got = got.unwrap();
    assert_eq!(mock.calls(), 3);
    assert_eq!(retries.retries(), 2);
    assert_same_head(&got, &head);
    assert_eq!(
        got.extensions().get::<BufferedBody>().unwrap().bytes(),
        "payload"
    );
    assert_eq!(bytes_of(got.into_body()).await, "payload");
}

#[tokio::test(start_paused = true)]
async fn a_tonic_body_without_a_size_hint_is_buffered_and_resent() {
    let head = request(());
    let body = tonic::body::Body::new(chunks(&["\0\0\0\0\x03", "abc"]).map_err(|e| match e {}));
    assert!(http_body::Body::size_hint(&body).exact().is_none());
    let (got, mock, retries) = send(request(body), 1, BufferBodyLayer::new()).await;
    let got = got.unwrap();
    assert_eq!(mock.calls(), 2);
    assert_eq!(retries.retries(), 1);
    assert_same_head(&got, &head);
    assert_eq!(bytes_of(got.into_body()).await, "\0\0\0\0\x03abc");
}

#[tokio::test(start_paused = true)]
async fn an_axum_body_is_buffered_and_resent() {
    let (got, mock, _) = send(
        request(axum::body::Body::from("{\"name\":\"x\"}")),
        1,
        BufferBodyLayer::new(),
    )
    .await;
    assert_eq!(mock.calls(), 2);
    assert_eq!(bytes_of(got.unwrap().into_body()).await, "{\"name\":\"x\"}");
}

#[tokio::test(start_paused = true)]
async fn an_empty_body_is_retryable() {
    let (got, mock, _) = send(
        request(tonic::body::Body::empty()),
        1,
        BufferBodyLayer::with_limit(0),
    )
    .await;
    assert_eq!(mock.calls(), 2);
    assert!(bytes_of(got.unwrap().into_body()).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_limit_is_sent_once_whole_and_counted() {
    assert_eq!(DEFAULT_BODY_LIMIT, 64 * 1024);
    let buffer = BufferBodyLayer::with_limit(4);
    // Known too large from its size hint: never read.
    let (got, mock, retries) = send(
        request(Full::new(Bytes::from_static(b"0123456789"))),
        1,
        buffer.clone(),
    )
    .await;
    assert!(got.is_err(), "the one failure is returned");
    assert_eq!(mock.calls(), 1);
    assert_eq!(retries.not_clonable(), 1);
    assert_eq!(buffer.unbuffered(), 1);

    // Found too large while read: what was read goes first, then the rest.
    let body = tonic::body::Body::new(chunks(&["012", "345", "6789"]).map_err(|e| match e {}));
    let (got, mock, retries) = send(request(body), 0, buffer.clone()).await;
    let got = got.unwrap();
    assert_eq!(mock.calls(), 1);
    assert_eq!(
        retries.not_clonable(),
        0,
        "it succeeded: no retry was needed"
    );
    assert!(got.extensions().get::<BufferedBody>().is_none());
    assert_eq!(bytes_of(got.into_body()).await, "0123456789");
    assert_eq!(buffer.unbuffered(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_streaming_body_is_not_waited_for_and_arrives_whole() {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Frame<Bytes>, Infallible>>();
    tx.send(Ok(Frame::data(Bytes::from_static(b"first "))))
        .unwrap();
    let stream = Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|frame| (frame, rx))
    }));
    let buffer = BufferBodyLayer::new();
    // The upstream fails: with a body still streaming, it is not retried.
    let (got, mock, retries) = send(
        request(axum::body::Body::new(StreamBody::new(stream))),
        1,
        buffer.clone(),
    )
    .await;
    assert!(got.is_err());
    assert_eq!(mock.calls(), 1);
    assert_eq!(retries.not_clonable(), 1);
    assert_eq!(buffer.unbuffered(), 1);

    // A stream that succeeds gets the rest of its body after the call.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Frame<Bytes>, Infallible>>();
    tx.send(Ok(Frame::data(Bytes::from_static(b"first "))))
        .unwrap();
    let stream = Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|frame| (frame, rx))
    }));
    let (got, _, _) = send(
        request(axum::body::Body::new(StreamBody::new(stream))),
        0,
        buffer,
    )
    .await;
    tx.send(Ok(Frame::data(Bytes::from_static(b"second"))))
        .unwrap();
    drop(tx);
    assert_eq!(bytes_of(got.unwrap().into_body()).await, "first second");
}

#[tokio::test(start_paused = true)]
async fn a_clone_of_the_service_starts_not_ready() {
    // The mock panics on `call` without a ready `poll_ready` on the same
    // instance: the buffering service calls the instance it was asked to
    // make ready, and clones of it hold no readiness.
    let mock: Mock<Request<Full<Bytes>>> = Mock::new();
    let handle = mock.handle();
    let mut svc = BufferBodyLayer::new().layer(mock);
    svc.ready().await.unwrap();
    let fresh = svc.clone();
    svc.call(request(Full::from("a"))).await.unwrap();
    fresh.oneshot(request(Full::from("b"))).await.unwrap();
    assert_eq!(handle.calls(), 2);
}
