//! `Retry-After` (RFC 9110 §10.2.3), feature `http`: delta-seconds or an
//! HTTP date, in any of the three date formats a recipient must accept.
//!
//! Dates are parsed by `httpdate`, the crate hyper uses. Every input,
//! however hostile, yields `Some` or `None`, never a panic; an absurdly
//! large number of seconds saturates (and so exceeds any cap, meaning "do
//! not retry").

use std::time::{Duration, SystemTime};

use http::header::{HeaderValue, RETRY_AFTER};

use super::hooks::RetryAfter;

/// Reads the `Retry-After` header of an `Ok(http::Response)` as a server
/// hint; errors carry none. Give it to
/// [`RetryLayerBuilder::retry_after`](super::RetryLayerBuilder::retry_after).
/// An unparseable header is no hint. An HTTP date is measured against the
/// system's wall clock (`SystemTime`), as the server meant it, not tokio's.
///
/// ```
/// use palisade::RetryLayer;
/// use palisade::classify::ServerErrorsAsFailures;
/// use palisade::retry::HttpRetryAfter;
/// use std::time::Duration;
///
/// let layer = RetryLayer::exponential(Duration::from_millis(50))
///     .classifier(ServerErrorsAsFailures)
///     .retry_after(HttpRetryAfter)
///     .max_retry_after(Duration::from_secs(30))
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), palisade::retry::InvalidRetry>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpRetryAfter;

impl<B, E> RetryAfter<http::Response<B>, E> for HttpRetryAfter {
    fn retry_after(&self, result: &Result<http::Response<B>, E>) -> Option<Duration> {
        let value = result.as_ref().ok()?.headers().get(RETRY_AFTER)?;
        parse_retry_after(value, SystemTime::now())
    }
}

/// Parses a `Retry-After` value into a delay from `now`: delta-seconds
/// (`"120"`) or an HTTP date (`"Sun, 06 Nov 1994 08:49:37 GMT"`, or the
/// obsolete RFC 850 and asctime forms). A date in the past is a zero delay.
/// Anything else is `None`.
///
/// ```
/// use http::HeaderValue;
/// use palisade::retry::parse_retry_after;
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let now = UNIX_EPOCH + Duration::from_secs(784_111_717); // 1994-11-06 08:48:37 UTC
/// let parse = |v: &'static str| parse_retry_after(&HeaderValue::from_static(v), now);
/// assert_eq!(parse("120"), Some(Duration::from_secs(120)));
/// assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::from_secs(60)));
/// assert_eq!(parse("soon"), None);
/// ```
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    parse_bytes(value.as_bytes(), now)
}

pub(crate) fn parse_bytes(value: &[u8], now: SystemTime) -> Option<Duration> {
    let value = value.trim_ascii();
    if value.is_empty() {
        return None;
    }
    if value.iter().all(u8::is_ascii_digit) {
        // Saturate: 10^30 seconds is "longer than any cap", not an error.
        let secs = value.iter().fold(0u64, |acc, d| {
            acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
        });
        return Some(Duration::from_secs(secs));
    }
    let at = std::str::from_utf8(value).ok()?;
    let at = httpdate::parse_http_date(at).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const NOW: u64 = 784_111_717; // Sun, 06 Nov 1994 08:48:37 GMT

    fn parse(s: &str) -> Option<Duration> {
        parse_bytes(s.as_bytes(), UNIX_EPOCH + Duration::from_secs(NOW))
    }

    #[test]
    fn three_date_forms_agree() {
        let minute = Some(Duration::from_secs(60));
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT"), minute);
        assert_eq!(parse("Sunday, 06-Nov-94 08:49:37 GMT"), minute);
        assert_eq!(parse("Sun Nov  6 08:49:37 1994"), minute);
    }

    #[test]
    fn dates_are_checked_against_the_calendar() {
        let from_epoch = |s: &str| parse_bytes(s.as_bytes(), UNIX_EPOCH);
        assert_eq!(
            from_epoch("Tue, 29 Feb 2000 12:00:00 GMT"),
            Some(Duration::from_secs(951_825_600))
        );
        assert_eq!(
            from_epoch("Fri, 31 Dec 9999 23:59:59 GMT"),
            Some(Duration::from_secs(253_402_300_799))
        );
        assert_eq!(from_epoch("Mon, 29 Feb 1900 00:00:00 GMT"), None);
        assert_eq!(from_epoch("Wed, 31 Apr 2024 00:00:00 GMT"), None);
    }

    #[test]
    fn seconds_and_past_dates() {
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse("  42 "), Some(Duration::from_secs(42)));
        assert_eq!(parse("Thu, 01 Jan 1970 00:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(
            parse("99999999999999999999999999"),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn garbage_is_none() {
        for bad in [
            "",
            " ",
            "-1",
            "1.5",
            "+5",
            "0x10",
            "1 2",
            "soon",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sun, 06 Nov 1994 08:60:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 00 Nov 1994 08:49:37 GMT",
            "Xyz, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37",
            "Sun Nov 6 08:49:37 1994",
            "Sun,,06 Nov 1994 08:49:37 GMT",
            ",",
            "Sunday,",
            "\u{e9}\u{e9}\u{e9}, 06 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
            let _ = parse_bytes(&bytes, SystemTime::now());
        }

        #[test]
        fn never_panics_near_dates(
            prefix in "[A-Za-z]{0,9}",
            sep in "[ ,:-]{0,3}",
            rest in "[0-9A-Za-z :-]{0,28}",
        ) {
            let s = format!("{prefix}{sep}{rest}");
            let _ = parse_bytes(s.as_bytes(), SystemTime::now());
        }
    }
}
