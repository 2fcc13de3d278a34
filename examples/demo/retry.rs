//! Retry: a flaky upstream recovers behind jittered backoff and a budget.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::retry::RetryBudget;
use palisade::{Jitter, RetryLayer};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

pub(crate) async fn run() {
    println!("== retry: an upstream down for its first 300 ms; base 50 ms, full jitter, seed 7");
    let start = Instant::now();
    let log: Arc<Mutex<Vec<String>>> = Arc::default();

    // Fails every call until 300 ms have passed, then answers.
    let upstream = service_fn({
        let log = log.clone();
        move |request: u32| {
            let log = log.clone();
            async move {
                let at = start.elapsed().as_millis();
                let ok = at >= 300;
                log.lock().unwrap().push(format!(
                    "    t={at:>4}ms  request {request}: {}",
                    if ok { "200 OK" } else { "503 (down)" }
                ));
                if ok {
                    Ok(request)
                } else {
                    Err("upstream down")
                }
            }
        }
    });

    let layer = RetryLayer::exponential(Duration::from_millis(50))
        .max_attempts(6)
        .jitter(Jitter::Full)
        .budget(RetryBudget::ratio(0.2))
        .seed(7)
        .build()
        .expect("valid retry settings");
    println!(
        "  delays this seed draws: {:?}",
        layer
            .backoff()
            .schedule(7)
            .take(5)
            .map(|d| format!("{}ms", d.as_millis()))
            .collect::<Vec<_>>()
    );
    let mut client = layer.layer(upstream);

    for request in 1..=2 {
        let result = client.ready().await.unwrap().call(request).await;
        for line in log.lock().unwrap().drain(..) {
            println!("{line}");
        }
        println!("  request {request} -> {result:?}");
    }
    let handle = layer.handle();
    println!(
        "  retries sent: {}, refused by the budget: {}, budget left: {:?}\n",
        handle.retries(),
        handle.budget_denied(),
        handle.budget_available()
    );
}
