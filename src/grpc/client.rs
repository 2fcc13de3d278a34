//! The client side's errors as the [`Status`] a caller should see:
//! [`ClientStatusLayer`] and [`client_status`].
//!
//! A tonic client's generated code turns its service's error into a
//! `Status` with `Status::from_error`, which knows tonic's own errors (a
//! connection refused is `UNAVAILABLE`) but not palisade's: an open breaker
//! would reach the caller as `UNKNOWN "circuit open..."`. Worse, an error
//! from `poll_ready` becomes `UNKNOWN "Service was not ready: ..."` and
//! loses its source. This layer, outermost in the client stack, answers
//! both with the right `Status` and never fails `poll_ready`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tonic::Status;
use tower::{Layer, Service};

use super::{Found, find};
use crate::BoxError;

/// The [`Status`] a client's caller should see for an error of its stack.
///
/// - A palisade rejection (found first in the `source()` chain, from the
///   outside in) becomes the same status the server side answers
///   ([`status_from_error`](super::status_from_error)): an open breaker
///   `UNAVAILABLE`, a rate limit `RESOURCE_EXHAUSTED`, both with
///   `grpc-retry-pushback-ms`; the error is the status's `source()`, so
///   `classify::local_rejection` still finds the rejection.
/// - Anything else goes through tonic's own `Status::from_error`: a
///   `Status` passes through unchanged (source included), a transport
///   error keeps the code and message tonic gives it (a refused connection
///   is `UNAVAILABLE "tcp connect error"`), and other errors are `UNKNOWN`
///   with their text. On the client side the text stays with the caller,
///   so unlike the server side's mapping it is not withheld.
///
/// ```
/// use palisade::BoxError;
/// use palisade::circuit_breaker::CircuitOpen;
/// use palisade::grpc::client_status;
/// use std::time::Duration;
/// use tonic::Code;
///
/// let open: BoxError = Box::new(CircuitOpen { retry_after: Duration::from_millis(250) });
/// let status = client_status(open);
/// assert_eq!(status.code(), Code::Unavailable);
/// assert_eq!(status.metadata().get("grpc-retry-pushback-ms").unwrap(), "250");
/// assert!(std::error::Error::source(&status).unwrap().is::<CircuitOpen>());
///
/// let refused: BoxError = Box::new(tonic::ConnectError("connection refused".into()));
/// assert_eq!(client_status(refused).code(), Code::Unavailable);
/// ```
pub fn client_status(error: BoxError) -> Status {
    let rejected = match find(&*error) {
        Some(Found::Rejection(rejection)) => Some(rejection.status(None)),
        _ => None,
    };
    match rejected {
        Some(mut status) => {
            status.set_source(Arc::from(error));
            status
        }
        None => Status::from_error(error),
    }
}

/// Maps every error of the client stack it wraps to a [`Status`] with
/// [`client_status`]: outermost in a tonic client's stack, so what the
/// generated client returns is that status.
///
/// An error from the inner `poll_ready` (a channel whose connection is
/// gone) does not fail this service's `poll_ready`, which tonic's generated
/// code would turn into `UNKNOWN "Service was not ready"`: the service
/// reports ready and answers the next `call` with the error's status,
/// without polling the inner service again until then.
///
/// ```no_run
/// use palisade::grpc::ClientStatusLayer;
/// use tonic::transport::Endpoint;
/// use tonic_health::pb::health_client::HealthClient;
/// use tower::ServiceBuilder;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let channel = Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
/// let stack = ServiceBuilder::new()
///     .layer(ClientStatusLayer::new())
///     // .layer(BufferBodyLayer::new()).layer(retry).layer(breaker)
///     .service(channel);
/// let mut client = HealthClient::new(stack);
/// # let _ = &mut client;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientStatusLayer {
    _priv: (),
}

impl ClientStatusLayer {
    /// The layer.
    pub const fn new() -> Self {
        Self { _priv: () }
    }
}

impl<S> Layer<S> for ClientStatusLayer {
    type Service = ClientStatus<S>;

    fn layer(&self, inner: S) -> ClientStatus<S> {
        ClientStatus {
            inner,
            failed_ready: None,
        }
    }
}

/// The service of [`ClientStatusLayer`].
#[derive(Debug)]
pub struct ClientStatus<S> {
    inner: S,
    // An error from the inner `poll_ready`, answered by the next `call`.
    failed_ready: Option<Status>,
}

impl<S> ClientStatus<S> {
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

impl<S: Clone> Clone for ClientStatus<S> {
    /// A clone starts afresh: a pending readiness error belongs to the
    /// instance that was polled.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            failed_ready: None,
        }
    }
}

impl<S, Req> Service<Req> for ClientStatus<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Status;
    type Future = ClientStatusFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        if self.failed_ready.is_some() {
            return Poll::Ready(Ok(()));
        }
        match ready!(self.inner.poll_ready(cx)) {
            Ok(()) => {}
            Err(error) => self.failed_ready = Some(client_status(error.into())),
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let state = match self.failed_ready.take() {
            Some(status) => State::Failed {
                status: Some(status),
            },
            None => State::Called {
                future: self.inner.call(request),
            },
        };
        ClientStatusFuture { state }
    }
}

pin_project! {
    /// The future of [`ClientStatus`].
    #[derive(Debug)]
    pub struct ClientStatusFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[derive(Debug)]
    #[project = Projected]
    enum State<F> {
        Called {
            #[pin]
            future: F,
        },
        Failed {
            status: Option<Status>,
        },
    }
}

impl<F, T, E> Future for ClientStatusFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            Projected::Called { future } => {
                Poll::Ready(ready!(future.poll(cx)).map_err(|e| client_status(e.into())))
            }
            Projected::Failed { status } => Poll::Ready(Err(status
                .take()
                .expect("ClientStatusFuture polled after completion"))),
        }
    }
}
