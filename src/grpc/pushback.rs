//! [`GrpcRetryPushback`]: gRPC server pushback read for the retry layer.

use std::time::Duration;

use http::Response;

use super::RETRY_PUSHBACK_MS;
use crate::retry::RetryAfter;

/// Reads gRPC server pushback (`grpc-retry-pushback-ms`, proposal A6) from
/// the headers of an `Ok(http::Response)` (a trailers-only answer), for
/// [`RetryLayerBuilder::retry_after`](crate::retry::RetryLayerBuilder::retry_after).
///
/// A non-negative integer is a delay in milliseconds. As A6 says, a negative
/// or unparseable value asks the client not to retry: it reads as
/// `Duration::MAX`, above any [`max_retry_after`] cap, so the retry layer
/// returns the result instead. No header, or an `Err`, is no hint.
///
/// [`max_retry_after`]: crate::retry::RetryLayerBuilder::max_retry_after
///
/// ```
/// use palisade::retry::RetryAfter;
/// use palisade::grpc::GrpcRetryPushback;
/// use std::time::Duration;
///
/// let res = http::Response::builder()
///     .header("grpc-status", "8")
///     .header("grpc-retry-pushback-ms", "250")
///     .body(())
///     .unwrap();
/// assert_eq!(
///     GrpcRetryPushback.retry_after(&Ok::<_, ()>(res)),
///     Some(Duration::from_millis(250)),
/// );
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrpcRetryPushback;

impl<B, E> RetryAfter<Response<B>, E> for GrpcRetryPushback {
    fn retry_after(&self, result: &Result<Response<B>, E>) -> Option<Duration> {
        let value = result.as_ref().ok()?.headers().get(RETRY_PUSHBACK_MS)?;
        Some(parse_pushback(value.as_bytes()))
    }

    /// A pushback is waited exactly, not lengthened by the backoff (A6).
    fn exact(&self) -> bool {
        true
    }
}

/// A6 pushback: digits are milliseconds (saturating); anything else,
/// a minus sign included, is "do not retry".
fn parse_pushback(bytes: &[u8]) -> Duration {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return Duration::MAX;
    }
    let ms = bytes.iter().fold(0_u64, |acc, d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    Duration::from_millis(ms)
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn pushback_parsing_follows_a6() {
        assert_eq!(parse_pushback(b"0"), Duration::ZERO);
        assert_eq!(parse_pushback(b"1500"), Duration::from_millis(1500));
        assert_eq!(parse_pushback(b"-1"), Duration::MAX);
        assert_eq!(parse_pushback(b""), Duration::MAX);
        assert_eq!(parse_pushback(b"12ms"), Duration::MAX);
        assert_eq!(
            parse_pushback(b"99999999999999999999999999"),
            Duration::from_millis(u64::MAX)
        );
    }
}
