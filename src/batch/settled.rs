//! [`Settled`]: a batch's answer, one `Result` per request in input order.

use std::ops::Index;

/// The settled results of a batch, like JavaScript's `Promise.allSettled`:
/// one `Result` per request, in the order the requests were given, whether
/// each call succeeded or not.
///
/// Counts are kept as the results arrive, so [`fulfilled`](Self::fulfilled)
/// and [`rejected`](Self::rejected) cost nothing.
///
/// ```
/// use palisade::batch::Settled;
///
/// let settled = Settled::from_results(vec![Ok(1), Err("boom"), Ok(3)]);
/// assert_eq!((settled.fulfilled(), settled.rejected()), (2, 1));
/// assert_eq!(settled[1], Err("boom"));
///
/// let (oks, errs) = settled.into_parts();
/// assert_eq!(oks, vec![(0, 1), (2, 3)]);   // (input index, response)
/// assert_eq!(errs, vec![(1, "boom")]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled<T, E> {
    results: Vec<Result<T, E>>,
    rejected: usize,
}

impl<T, E> Settled<T, E> {
    /// Wraps results given in input order, counting the rejected ones.
    pub fn from_results(results: Vec<Result<T, E>>) -> Self {
        let rejected = results.iter().filter(|r| r.is_err()).count();
        Self { results, rejected }
    }

    /// Results whose rejected count the batch future already kept.
    pub(crate) fn with_counts(results: Vec<Result<T, E>>, rejected: usize) -> Self {
        debug_assert_eq!(rejected, results.iter().filter(|r| r.is_err()).count());
        Self { results, rejected }
    }

    /// How many requests the batch held.
    pub fn len(&self) -> usize {
        self.results.len()
    }

    /// Whether the batch was empty.
    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }

    /// How many items succeeded.
    pub fn fulfilled(&self) -> usize {
        self.results.len() - self.rejected
    }

    /// How many items failed (any reason: the call, `poll_ready`, a timeout).
    pub fn rejected(&self) -> usize {
        self.rejected
    }

    /// Whether every item succeeded (true for an empty batch).
    pub fn all_fulfilled(&self) -> bool {
        self.rejected == 0
    }

    /// The results in input order.
    pub fn as_slice(&self) -> &[Result<T, E>] {
        &self.results
    }

    /// Iterates over the results in input order.
    pub fn iter(&self) -> std::slice::Iter<'_, Result<T, E>> {
        self.results.iter()
    }

    /// The successful responses with their input index.
    pub fn iter_fulfilled(&self) -> impl Iterator<Item = (usize, &T)> + '_ {
        self.results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().ok().map(|t| (i, t)))
    }

    /// The errors with their input index.
    pub fn iter_rejected(&self) -> impl Iterator<Item = (usize, &E)> + '_ {
        self.results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e)))
    }

    /// Splits into successes and failures, each tagged with its input index
    /// and in input order.
    // The pair of tagged lists is the point; an alias would hide it.
    #[allow(clippy::type_complexity)]
    pub fn into_parts(self) -> (Vec<(usize, T)>, Vec<(usize, E)>) {
        let mut fulfilled = Vec::with_capacity(self.fulfilled());
        let mut rejected = Vec::with_capacity(self.rejected);
        for (i, result) in self.results.into_iter().enumerate() {
            match result {
                Ok(t) => fulfilled.push((i, t)),
                Err(e) => rejected.push((i, e)),
            }
        }
        (fulfilled, rejected)
    }

    /// The results in input order.
    pub fn into_results(self) -> Vec<Result<T, E>> {
        self.results
    }
}

impl<T, E> Index<usize> for Settled<T, E> {
    type Output = Result<T, E>;

    fn index(&self, index: usize) -> &Self::Output {
        &self.results[index]
    }
}

impl<T, E> IntoIterator for Settled<T, E> {
    type Item = Result<T, E>;
    type IntoIter = std::vec::IntoIter<Result<T, E>>;

    fn into_iter(self) -> Self::IntoIter {
        self.results.into_iter()
    }
}

impl<'a, T, E> IntoIterator for &'a Settled<T, E> {
    type Item = &'a Result<T, E>;
    type IntoIter = std::slice::Iter<'a, Result<T, E>>;

    fn into_iter(self) -> Self::IntoIter {
        self.results.iter()
    }
}

impl<T, E> From<Settled<T, E>> for Vec<Result<T, E>> {
    fn from(settled: Settled<T, E>) -> Self {
        settled.results
    }
}

impl<T, E> FromIterator<Result<T, E>> for Settled<T, E> {
    fn from_iter<I: IntoIterator<Item = Result<T, E>>>(iter: I) -> Self {
        Self::from_results(iter.into_iter().collect())
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn counts_and_parts_agree() {
        let settled: Settled<u32, &str> = [Err("a"), Ok(1), Ok(2), Err("b")].into_iter().collect();
        assert_eq!(
            (settled.len(), settled.fulfilled(), settled.rejected()),
            (4, 2, 2)
        );
        assert!(!settled.all_fulfilled());
        assert_eq!(
            settled.iter_fulfilled().collect::<Vec<_>>(),
            vec![(1, &1), (2, &2)]
        );
        assert_eq!(
            settled.iter_rejected().map(|(i, _)| i).collect::<Vec<_>>(),
            vec![0, 3]
        );
        let (oks, errs) = settled.clone().into_parts();
        assert_eq!(oks, vec![(1, 1), (2, 2)]);
        assert_eq!(errs, vec![(0, "a"), (3, "b")]);
        assert_eq!(Vec::from(settled).len(), 4);
    }

    #[test]
    fn empty_is_all_fulfilled() {
        let settled = Settled::<(), ()>::from_results(Vec::new());
        assert!(settled.is_empty() && settled.all_fulfilled());
        assert_eq!(settled.into_parts(), (vec![], vec![]));
    }
}
