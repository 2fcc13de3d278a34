//! [`KeyedCircuitBreakerHandle`]: read and control one key's breaker, list
//! the breakers that are not closed.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use super::handle::CircuitBreakerHandle;
use super::registry::Registry;
use super::state::State;

/// A handle on every breaker of a keyed layer, from
/// [`KeyedCircuitBreakerLayer::handle`](super::KeyedCircuitBreakerLayer::handle);
/// cheap to clone.
///
/// ```
/// use palisade::CircuitBreakerLayer;
/// use palisade::circuit_breaker::State;
/// use tower::{Service, ServiceExt, Layer, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), palisade::BoxError> {
/// let layer = CircuitBreakerLayer::consecutive_failures(1)
///     .keyed(|host: &&'static str| host.to_string())
///     .build()?;
/// let handle = layer.handle();
/// let mut svc = layer.layer(service_fn(|host: &'static str| async move {
///     if host == "b" { Err("down") } else { Ok(host) }
/// }));
/// for host in ["a", "b", "c"] {
///     let _ = svc.ready().await?.call(host).await;
/// }
/// assert_eq!(handle.breaker("a").unwrap().state(), State::Closed);
/// assert_eq!(handle.breaker("b").unwrap().state(), State::Open);
/// let open: Vec<String> = handle.not_closed().into_iter().map(|b| b.key).collect();
/// assert_eq!(open, ["\"b\""]); // the key's `Debug` text
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct KeyedCircuitBreakerHandle {
    registry: Arc<Registry>,
}

/// One key's breaker, as listed by
/// [`KeyedCircuitBreakerHandle::not_closed`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct KeyedBreaker {
    /// The key's `Debug` text (at most 256 bytes).
    pub key: String,
    /// Its state when listed.
    pub state: State,
    /// A handle on it: counts, force open, reset.
    pub handle: CircuitBreakerHandle,
}

impl KeyedCircuitBreakerHandle {
    pub(crate) fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }

    /// The breaker of `key`, if the layer holds one: its state and counts,
    /// and its controls. `key` is hashed as the extractor's key is, so pass
    /// the same type (or one that hashes alike: `&str` for `String`).
    ///
    /// Forcing a key's breaker open or disabling it also keeps it from
    /// eviction until it is [`reset`](CircuitBreakerHandle::reset).
    pub fn breaker<K: Hash + ?Sized>(&self, key: &K) -> Option<CircuitBreakerHandle> {
        self.registry.get(key).map(CircuitBreakerHandle::new)
    }

    /// Every breaker that is open, half-open or forced open (or disabled):
    /// any not closed. Locks the map's shards one at a time.
    pub fn not_closed(&self) -> Vec<KeyedBreaker> {
        let mut found = Vec::new();
        self.registry.each(|key, core| {
            let state = core.state();
            if state != State::Closed {
                found.push(KeyedBreaker {
                    key: key.to_owned(),
                    state,
                    handle: CircuitBreakerHandle::new(core.clone()),
                });
            }
        });
        found
    }

    /// Keys held now (at most `max_keys`).
    pub fn keys(&self) -> usize {
        self.registry.len()
    }

    /// Calls let through without a breaker because their key was new and
    /// the layer already held `max_keys` breakers it could not evict.
    pub fn unguarded_calls(&self) -> u64 {
        self.registry.unguarded()
    }
}

impl fmt::Debug for KeyedCircuitBreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerHandle")
            .field("keys", &self.keys())
            .field("unguarded_calls", &self.unguarded_calls())
            .finish()
    }
}
