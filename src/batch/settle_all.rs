//! [`settle_all`]: a batch without a layer.

use tower::Service;

use super::future::SettleAll;
use super::layer::Config;

/// Sends every request through `service`, at most
/// [`DEFAULT_MAX_IN_FLIGHT`](super::DEFAULT_MAX_IN_FLIGHT) at a time, and
/// resolves to one result per request in input order: the batch of
/// [`Batch`](super::Batch) without a layer.
///
/// For other limits use [`BatchLayer::settle_all`](super::BatchLayer::settle_all)
/// on a built layer. The service is cloned only when its `poll_ready` fails
/// (the failed instance is discarded, as tower asks).
///
/// ```
/// use palisade::batch::{settle_all, ItemError};
/// use tower::service_fn;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let halve = service_fn(|n: u32| async move {
///     if n % 2 == 0 { Ok(n / 2) } else { Err(format!("{n} is odd")) }
/// });
/// let settled = settle_all(halve, [4, 7, 10]).await;
/// assert_eq!((settled.fulfilled(), settled.rejected()), (2, 1));
/// assert_eq!(settled[0], Ok(2));
/// assert_eq!(settled[1], Err(ItemError::Service("7 is odd".to_string())));
/// # }
/// ```
pub fn settle_all<S, I>(service: S, requests: I) -> SettleAll<S, I::IntoIter>
where
    I: IntoIterator,
    S: Service<I::Item> + Clone,
{
    SettleAll::new(service, requests.into_iter(), Config::default())
}
