//! `Retry-After` (RFC 9110 §10.2.3), feature `http`: delta-seconds or an
//! HTTP date, in any of the three date formats a recipient must accept.
//!
//! Hand-written rather than a dependency: the grammar is small and fixed.
//! Every input, however hostile, yields `Some` or `None`, never a panic; an
//! absurdly large number of seconds saturates (and so exceeds any cap,
//! meaning "do not retry").

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
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
    let at = http_date(value)?;
    let now = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let at = Duration::from_secs(u64::try_from(at).unwrap_or(0));
    Some(at.saturating_sub(now))
}

/// Seconds since the Unix epoch of an HTTP date, in any of its three forms.
fn http_date(s: &[u8]) -> Option<i64> {
    imf_fixdate(s).or_else(|| rfc850(s)).or_else(|| asctime(s))
}

const DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
const LONG_DAYS: [&[u8]; 7] = [
    b"Monday",
    b"Tuesday",
    b"Wednesday",
    b"Thursday",
    b"Friday",
    b"Saturday",
    b"Sunday",
];
const MONTHS: [&[u8]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// `Sun, 06 Nov 1994 08:49:37 GMT`
fn imf_fixdate(s: &[u8]) -> Option<i64> {
    if s.len() != 29 || &s[3..5] != b", " || &s[25..] != b" GMT" {
        return None;
    }
    DAYS.contains(&&s[..3]).then_some(())?;
    let day = digits(&s[5..7])?;
    expect(s, 7, b' ')?;
    let month = month(&s[8..11])?;
    expect(s, 11, b' ')?;
    let year = digits(&s[12..16])?;
    expect(s, 16, b' ')?;
    let time = time(&s[17..25])?;
    civil(i64::from(year), month, day, time)
}

/// `Sunday, 06-Nov-94 08:49:37 GMT` (obsolete RFC 850 form)
fn rfc850(s: &[u8]) -> Option<i64> {
    let comma = s.iter().position(|&b| b == b',')?;
    LONG_DAYS.contains(&&s[..comma]).then_some(())?;
    let rest = &s[comma..];
    if rest.len() != 24 || &rest[..2] != b", " || &rest[20..] != b" GMT" {
        return None;
    }
    let day = digits(&rest[2..4])?;
    expect(rest, 4, b'-')?;
    let month = month(&rest[5..8])?;
    expect(rest, 8, b'-')?;
    let yy = digits(&rest[9..11])?;
    expect(rest, 11, b' ')?;
    let time = time(&rest[12..20])?;
    // Two-digit years: 70..=99 are 19xx, the rest 20xx (as RFC 6265 does).
    let year = if yy >= 70 { 1900 + yy } else { 2000 + yy };
    civil(i64::from(year), month, day, time)
}

/// `Sun Nov  6 08:49:37 1994` (ANSI C's asctime form)
fn asctime(s: &[u8]) -> Option<i64> {
    if s.len() != 24 {
        return None;
    }
    DAYS.contains(&&s[..3]).then_some(())?;
    expect(s, 3, b' ')?;
    let month = month(&s[4..7])?;
    expect(s, 7, b' ')?;
    let day = match s[8] {
        b' ' => digits(&s[9..10])?,
        _ => digits(&s[8..10])?,
    };
    expect(s, 10, b' ')?;
    let time = time(&s[11..19])?;
    expect(s, 19, b' ')?;
    let year = digits(&s[20..24])?;
    civil(i64::from(year), month, day, time)
}

fn expect(s: &[u8], at: usize, byte: u8) -> Option<()> {
    (s.get(at) == Some(&byte)).then_some(())
}

/// A fixed-width run of ASCII digits.
fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // At most 4 digits are ever passed: no overflow.
    Some(s.iter().fold(0, |acc, d| acc * 10 + u32::from(d - b'0')))
}

fn month(s: &[u8]) -> Option<u32> {
    let index = MONTHS.iter().position(|m| *m == s)?;
    u32::try_from(index + 1).ok()
}

/// `hh:mm:ss` as seconds in the day; a leap second (`:60`) is accepted.
fn time(s: &[u8]) -> Option<u32> {
    if s.len() != 8 || s[2] != b':' || s[5] != b':' {
        return None;
    }
    let (h, m, sec) = (digits(&s[0..2])?, digits(&s[3..5])?, digits(&s[6..8])?);
    (h < 24 && m < 60 && sec <= 60).then_some(h * 3600 + m * 60 + sec)
}

/// Seconds since the epoch of a civil date and a time of day, or `None` for
/// a day that does not exist (Feb 30).
fn civil(year: i64, month: u32, day: u32, time: u32) -> Option<i64> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if day == 0 || day > days_in_month {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + i64::from(time))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

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
    fn epoch_arithmetic() {
        assert_eq!(http_date(b"Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            http_date(b"Tue, 29 Feb 2000 12:00:00 GMT"),
            Some(951_825_600)
        );
        assert_eq!(
            http_date(b"Fri, 31 Dec 9999 23:59:59 GMT"),
            Some(253_402_300_799)
        );
        assert_eq!(http_date(b"Mon, 29 Feb 1900 00:00:00 GMT"), None);
        assert_eq!(http_date(b"Mon, 31 Apr 2024 00:00:00 GMT"), None);
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
