//! Classifiers reading gRPC codes: [`GrpcErrorsAsFailures`] (response
//! heads) and [`StatusErrorsAsFailures`] (`Status` errors), over a
//! [`GrpcCodes`] set.

use http::{HeaderMap, HeaderName, Response, StatusCode};
use tonic::{Code, Status};

use crate::classify::{Classify, Outcome};

/// A set of gRPC codes, one bit per code (like tower-http's
/// `GrpcCodeBitmask`): the codes a classifier counts as failures.
///
/// ```
/// use palisade::grpc::GrpcCodes;
/// use tonic::Code;
///
/// let codes = GrpcCodes::server_errors().with(Code::ResourceExhausted);
/// assert!(codes.contains(Code::Unavailable));
/// assert!(codes.contains(Code::ResourceExhausted));
/// assert!(!codes.contains(Code::NotFound));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GrpcCodes(u32);

impl GrpcCodes {
    /// No code.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Every code but `OK` (tower-http's default).
    pub const fn all_errors() -> Self {
        // Codes 1..=16.
        Self(0x1_fffe)
    }

    /// The server's own failures: `UNKNOWN`, `DEADLINE_EXCEEDED`,
    /// `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS` (the default).
    pub const fn server_errors() -> Self {
        Self::empty()
            .with(Code::Unknown)
            .with(Code::DeadlineExceeded)
            .with(Code::Internal)
            .with(Code::Unavailable)
            .with(Code::DataLoss)
    }

    /// This set and `code`.
    pub const fn with(self, code: Code) -> Self {
        Self(self.0 | bit(code))
    }

    /// This set without `code`.
    pub const fn without(self, code: Code) -> Self {
        Self(self.0 & !bit(code))
    }

    /// Whether `code` is in the set.
    pub const fn contains(self, code: Code) -> bool {
        self.0 & bit(code) != 0
    }
}

impl Default for GrpcCodes {
    /// [`GrpcCodes::server_errors`].
    fn default() -> Self {
        Self::server_errors()
    }
}

const fn bit(code: Code) -> u32 {
    // `Code` is a fieldless enum numbered 0..=16; the mask keeps a shift
    // in range should a later tonic add codes.
    1 << ((code as u32) & 31)
}

/// Classifies `Result<http::Response<B>, E>` by the gRPC status in the
/// response *headers* (trailers-only responses); see the
/// [module docs](super) for what it can and cannot see.
///
/// - `Err(_)` (a transport error) is a failure.
/// - A `grpc-status` header: `OK` is a success, a code in the failure set
///   (default [`GrpcCodes::server_errors`]) a failure, any other code
///   ignored. A malformed header (not a number in `0..=16`, not ASCII,
///   padded) reads as `UNKNOWN`, as tonic's client reads it, and so counts
///   as a failure by default: a server that sends garbage is not healthy.
/// - No `grpc-status` header and HTTP status 200: a success (the status, if
///   any, comes in the trailers, which a response classifier cannot see).
/// - No `grpc-status` header and another HTTP status (a proxy's error page):
///   the code gRPC clients derive from it (gRPC's
///   "HTTP to gRPC Status Code Mapping": 502, 503, 504 and 429 are
///   `UNAVAILABLE`, 401 `UNAUTHENTICATED`, 403 `PERMISSION_DENIED`, 404
///   `UNIMPLEMENTED`, 400 `INTERNAL`, anything else `UNKNOWN`).
///
/// ```
/// use palisade::classify::{Classify, Outcome};
/// use palisade::grpc::GrpcErrorsAsFailures;
///
/// let res = |code: &'static str| {
///     http::Response::builder().header("grpc-status", code).body(()).unwrap()
/// };
/// let c = GrpcErrorsAsFailures::new();
/// assert_eq!(c.classify(&Ok::<_, ()>(res("0"))), Outcome::Success);
/// assert_eq!(c.classify(&Ok::<_, ()>(res("14"))), Outcome::Failure); // UNAVAILABLE
/// assert_eq!(c.classify(&Ok::<_, ()>(res("5"))), Outcome::Ignored); // NOT_FOUND
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrpcErrorsAsFailures {
    failures: GrpcCodes,
}

impl GrpcErrorsAsFailures {
    /// Counts [`GrpcCodes::server_errors`] as failures.
    pub const fn new() -> Self {
        Self::with_failures(GrpcCodes::server_errors())
    }

    /// Counts the codes in `failures` as failures.
    pub const fn with_failures(failures: GrpcCodes) -> Self {
        Self { failures }
    }

    /// The codes counted as failures.
    pub const fn failures(&self) -> GrpcCodes {
        self.failures
    }
}

impl<B, E: 'static> Classify<Response<B>, E> for GrpcErrorsAsFailures {
    #[inline]
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        match result {
            // palisade's own answer to a rejection further down.
            Ok(response) if crate::classify::is_local_response(response) => Outcome::Ignored,
            Ok(response) => match response_code(response.status(), response.headers()) {
                None | Some(Code::Ok) => Outcome::Success,
                Some(code) => by_code(self.failures, code),
            },
            Err(e) => crate::classify::error_outcome(e),
        }
    }
}

/// Classifies `Result<T, tonic::Status>`: `Ok` is a success, an `Err`
/// whose code is in the failure set (default [`GrpcCodes::server_errors`])
/// a failure, any other `Err` ignored.
///
/// ```
/// use palisade::classify::{Classify, Outcome};
/// use palisade::grpc::StatusErrorsAsFailures;
/// use tonic::Status;
///
/// let c = StatusErrorsAsFailures::new();
/// assert_eq!(c.classify(&Ok::<(), Status>(())), Outcome::Success);
/// assert_eq!(c.classify(&Err::<(), _>(Status::internal("boom"))), Outcome::Failure);
/// assert_eq!(c.classify(&Err::<(), _>(Status::not_found("no"))), Outcome::Ignored);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusErrorsAsFailures {
    failures: GrpcCodes,
}

impl StatusErrorsAsFailures {
    /// Counts [`GrpcCodes::server_errors`] as failures.
    pub const fn new() -> Self {
        Self::with_failures(GrpcCodes::server_errors())
    }

    /// Counts the codes in `failures` as failures.
    pub const fn with_failures(failures: GrpcCodes) -> Self {
        Self { failures }
    }

    /// The codes counted as failures.
    pub const fn failures(&self) -> GrpcCodes {
        self.failures
    }
}

impl<T> Classify<T, Status> for StatusErrorsAsFailures {
    #[inline]
    fn classify(&self, result: &Result<T, Status>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(status) if crate::classify::is_local(status) => Outcome::Ignored,
            Err(status) => by_code(self.failures, status.code()),
        }
    }
}

fn by_code(failures: GrpcCodes, code: Code) -> Outcome {
    if failures.contains(code) {
        Outcome::Failure
    } else {
        Outcome::Ignored
    }
}

/// The gRPC code a client reads from a response's head, if the head has
/// one: the `grpc-status` header, or for a non-200 response without it,
/// the code mapped from the HTTP status.
pub(crate) fn response_code(status: StatusCode, headers: &HeaderMap) -> Option<Code> {
    const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
    if let Some(value) = headers.get(GRPC_STATUS) {
        // `Code::from_bytes` reads exactly "0".."16"; anything else is
        // `Unknown`, without allocating or panicking.
        return Some(Code::from_bytes(value.as_bytes()));
    }
    match status.as_u16() {
        200 => None,
        400 => Some(Code::Internal),
        401 => Some(Code::Unauthenticated),
        403 => Some(Code::PermissionDenied),
        404 => Some(Code::Unimplemented),
        429 | 502 | 503 | 504 => Some(Code::Unavailable),
        _ => Some(Code::Unknown),
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn code_bits_cover_every_code() {
        let every = (0..=16)
            .map(Code::from)
            .fold(GrpcCodes::empty(), GrpcCodes::with);
        assert_eq!(every, GrpcCodes::all_errors().with(Code::Ok));
        assert!(!GrpcCodes::all_errors().contains(Code::Ok));
        assert!(
            !GrpcCodes::server_errors()
                .without(Code::Internal)
                .contains(Code::Internal)
        );
    }

    #[test]
    fn head_without_grpc_status_maps_http_status() {
        let none = HeaderMap::new();
        assert_eq!(response_code(StatusCode::OK, &none), None);
        assert_eq!(
            response_code(StatusCode::SERVICE_UNAVAILABLE, &none),
            Some(Code::Unavailable)
        );
        assert_eq!(
            response_code(StatusCode::NOT_FOUND, &none),
            Some(Code::Unimplemented)
        );
        assert_eq!(
            response_code(StatusCode::IM_A_TEAPOT, &none),
            Some(Code::Unknown)
        );
    }
}
