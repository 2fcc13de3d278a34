//! Rate limiting: what each algorithm admits, tick by tick, and a client
//! that waits instead of being refused.

use std::convert::Infallible;
use std::time::Duration;

use palisade::{BoxError, RateLimitLayer, RateLimited};
use tokio::time::{Instant, sleep};
use tower::{Layer, Service, ServiceExt, service_fn};

fn upstream() -> impl Service<u32, Response = u32, Error = Infallible, Future: Send> + Clone + Send
{
    service_fn(|n: u32| async move { Ok::<_, Infallible>(n) })
}

/// One line per tick: `+` admitted, `-` refused (with the first refusal's
/// retry_after).
async fn ticks<S>(svc: &mut S, per_tick: u32, ticks: u32, tick: Duration)
where
    S: Service<u32, Response = u32, Error = BoxError>,
{
    for t in 0..ticks {
        let mut marks = String::new();
        let mut first_retry = None;
        for i in 0..per_tick {
            match svc.ready().await.unwrap().call(i).await {
                Ok(_) => marks.push('+'),
                Err(e) => {
                    marks.push('-');
                    if let Some(l) = e.downcast_ref::<RateLimited>() {
                        first_retry.get_or_insert(l.retry_after);
                    }
                }
            }
        }
        let retry = first_retry
            .map(|d| format!("  retry_after {:?}", d))
            .unwrap_or_default();
        println!("  t={:>4}ms  {marks}{retry}", t * tick.as_millis() as u32);
        sleep(tick).await;
    }
}

pub(crate) async fn run() {
    println!("== rate_limit: 6 requests every 100 ms against 10 per second");
    let buckets = [
        (
            "token bucket, burst 3",
            RateLimitLayer::token_bucket(10, Duration::from_secs(1)).burst(3),
        ),
        (
            "sliding window counter, 10 per 1 s",
            RateLimitLayer::sliding_window(10, Duration::from_secs(1)),
        ),
        (
            "sliding log (exact), 10 per 1 s",
            RateLimitLayer::sliding_log(10, Duration::from_secs(1)),
        ),
    ];
    for (name, builder) in buckets {
        // Built here, so each limiter's clock starts at its own t=0.
        let layer = builder.build().expect("valid limiter");
        println!(" {name}:");
        let mut svc = layer.layer(upstream());
        ticks(&mut svc, 6, 5, Duration::from_millis(100)).await;
        let h = layer.handle();
        println!("  admitted {}, refused {}", h.admitted(), h.rejected());
    }

    println!(" wait mode (4 per second, wait up to 600 ms): 6 clients call at once");
    let layer = RateLimitLayer::token_bucket(4, Duration::from_secs(1))
        .wait(Duration::from_millis(600))
        .build()
        .expect("valid limiter");
    let start = Instant::now();
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let mut svc = layer.layer(upstream());
            tokio::spawn(async move {
                let r = svc.ready().await.unwrap().call(i).await;
                (i, r.map_err(|e| e.to_string()), start.elapsed())
            })
        })
        .collect();
    for call in calls {
        let (i, r, at) = call.await.expect("task");
        match r {
            Ok(_) => println!("  client {i} sent at {:>4}ms", at.as_millis()),
            Err(e) => println!("  client {i} refused at {:>4}ms: {e}", at.as_millis()),
        }
    }

    println!(" keyed (2 per second per client, at most 1000 clients):");
    let layer = RateLimitLayer::token_bucket(2, Duration::from_secs(1))
        .burst(2)
        .keyed(|req: &(&'static str, u32)| req.0)
        .max_keys(1000)
        .build()
        .expect("valid limiter");
    let mut svc = layer.layer(service_fn(|req: (&'static str, u32)| async move {
        Ok::<_, Infallible>(req.1)
    }));
    for client in ["alice", "alice", "alice", "bob", "bob"] {
        let r = svc.ready().await.unwrap().call((client, 0)).await;
        println!(
            "  {client:<5} {}",
            if r.is_ok() { "admitted" } else { "refused" }
        );
    }
    println!("  keys held: {}", layer.handle().keys());
    println!();
}
