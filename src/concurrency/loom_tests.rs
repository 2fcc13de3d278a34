//! Loom models of admission: every interleaving of a few threads taking
//! and giving back places on the one atomic word.
//!
//! Run with `RUSTFLAGS="--cfg palisade_loom" CARGO_TARGET_DIR=target/loom cargo test
//! --release --lib loom`.

use loom::sync::atomic::AtomicUsize;
use loom::thread;

use crate::sync::{Arc, Ordering::SeqCst};

use super::algorithm::Algorithm;
use super::limiter::{Admission, Limiter, Settings};

fn limiter(limit: u32) -> Arc<Limiter> {
    Arc::new(Limiter::new(
        Algorithm::Fixed,
        limit,
        Settings {
            min_limit: limit,
            max_limit: limit,
            min_window: 1_000_000,
            max_window: 1_000_000,
            min_samples: 1,
            name: None,
            observe: super::events::Observe::none(),
        },
    ))
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

/// Three threads race for two places, each giving its place back once:
/// never more than two hold one at a time, and the word ends empty.
#[test]
fn loom_admission_never_exceeds_the_limit_and_releases_exactly() {
    model(|| {
        let limiter = limiter(2);
        let holding = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let (limiter, holding) = (limiter.clone(), holding.clone());
                thread::spawn(move || {
                    if let Admission::Admitted { .. } = limiter.try_acquire() {
                        let now = holding.fetch_add(1, SeqCst) + 1;
                        assert!(now <= 2, "{now} holding places under a limit of 2");
                        holding.fetch_sub(1, SeqCst);
                        limiter.release();
                        true
                    } else {
                        false
                    }
                })
            })
            .collect();
        let admitted = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|a| *a)
            .count();
        assert!(
            admitted >= 2,
            "two places, three takers: at least two served"
        );
        assert_eq!(limiter.in_flight(), 0);
    });
}
