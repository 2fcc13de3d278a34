//! How a request's key becomes bytes of a Redis key: the same bytes on
//! every instance of the fleet.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;

/// A key that reads the same on every process, so that every instance of a
/// fleet counts it under the same Redis key.
///
/// The in-memory limiter hashes keys under a per-process random seed; that
/// hash differs between instances, so a shared limit needs the key's own
/// bytes instead. Implemented for strings, byte strings, integers, IP and
/// socket addresses, `()` (unkeyed), references and smart pointers to them,
/// `http::ClientKey` (feature `http`), and any `Display` type wrapped in
/// [`DisplayKey`].
///
/// Keys are binary-safe: any bytes, any length (a long key costs its length
/// on every call to Redis, so prefer short keys). Distinct keys always give
/// distinct bytes within one implementing type.
pub trait StoreKey {
    /// Appends the key's bytes to `out`.
    fn write_key(&self, out: &mut Vec<u8>);
}

/// Any `Display` type as a [`StoreKey`], through its `to_string` form.
/// Make sure that form is stable across processes and versions (it is for
/// the standard library's numbers and addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DisplayKey<T>(pub T);

impl<T: fmt::Display> StoreKey for DisplayKey<T> {
    fn write_key(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        // Writing to a Vec never fails.
        let _ = write!(out, "{}", self.0);
    }
}

impl StoreKey for () {
    fn write_key(&self, _: &mut Vec<u8>) {}
}

impl StoreKey for str {
    fn write_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

impl StoreKey for String {
    fn write_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

impl StoreKey for [u8] {
    fn write_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

impl StoreKey for Vec<u8> {
    fn write_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

impl<const N: usize> StoreKey for [u8; N] {
    fn write_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

impl<T: StoreKey + ?Sized> StoreKey for &T {
    fn write_key(&self, out: &mut Vec<u8>) {
        (**self).write_key(out);
    }
}

impl<T: StoreKey + ?Sized> StoreKey for Box<T> {
    fn write_key(&self, out: &mut Vec<u8>) {
        (**self).write_key(out);
    }
}

impl<T: StoreKey + ?Sized> StoreKey for Arc<T> {
    fn write_key(&self, out: &mut Vec<u8>) {
        (**self).write_key(out);
    }
}

impl<T: StoreKey + ?Sized> StoreKey for Rc<T> {
    fn write_key(&self, out: &mut Vec<u8>) {
        (**self).write_key(out);
    }
}

impl<T: StoreKey + ToOwned + ?Sized> StoreKey for Cow<'_, T> {
    fn write_key(&self, out: &mut Vec<u8>) {
        self.as_ref().write_key(out);
    }
}

macro_rules! display_keys {
    ($($t:ty),*) => {$(
        impl StoreKey for $t {
            fn write_key(&self, out: &mut Vec<u8>) {
                DisplayKey(self).write_key(out);
            }
        }
    )*};
}

display_keys!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, char, bool, IpAddr, Ipv4Addr,
    Ipv6Addr, SocketAddr
);

#[cfg(feature = "http")]
impl StoreKey for crate::http::ClientKey {
    /// `ip:<address>`, or `unknown` for requests with no trustworthy
    /// address (which share one limit, as in memory).
    fn write_key(&self, out: &mut Vec<u8>) {
        match self.ip() {
            Some(ip) => {
                out.extend_from_slice(b"ip:");
                ip.write_key(out);
            }
            None => out.extend_from_slice(b"unknown"),
        }
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    fn bytes<K: StoreKey + ?Sized>(k: &K) -> Vec<u8> {
        let mut out = Vec::new();
        k.write_key(&mut out);
        out
    }

    #[test]
    fn stable_forms() {
        assert_eq!(bytes("a{b}"), b"a{b}");
        assert_eq!(bytes(&42u64), b"42");
        assert_eq!(bytes(&IpAddr::from([10, 0, 0, 1])), b"10.0.0.1");
        assert_eq!(bytes(&[0u8, 255]), [0, 255]);
        assert_eq!(bytes(&()), b"");
        assert_eq!(bytes(&DisplayKey(1.5)), b"1.5");
    }
}
