//! Keyed circuit breakers: one breaker per key behind one layer, through
//! the mock on paused time (and one stress test on real threads).

mod support;

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use palisade::circuit_breaker::{CircuitOpen, ConfigError, State};
use palisade::{BoxError, CircuitBreakerLayer};
use support::{Mock, Reply, Step};
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt};

type Host = &'static str;
type Res = Result<Reply<Host>, BoxError>;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn is_open(res: &Res) -> bool {
    matches!(res, Err(e) if e.is::<CircuitOpen>())
}

async fn call<S>(svc: &mut S, host: Host) -> Res
where
    S: Service<Host, Response = Reply<Host>, Error = BoxError>,
{
    svc.ready().await?.call(host).await
}

#[tokio::test(start_paused = true)]
async fn three_hosts_one_fails_only_its_breaker_opens() {
    let b_down = Arc::new(AtomicBool::new(true));
    let down = b_down.clone();
    let mock = Mock::<Host>::new().outcome_fn(move |_, host| {
        if *host == "b.example" && down.load(SeqCst) {
            Step::err()
        } else {
            Step::ok()
        }
    });
    let upstream = mock.handle();
    let layer = CircuitBreakerLayer::consecutive_failures(3)
        .open_for(secs(10))
        .keyed(|host: &Host| *host)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(mock);

    let hosts = ["a.example", "b.example", "c.example"];
    let (mut ok, mut failed, mut open) = (0, 0, 0);
    for _ in 0..20 {
        for host in hosts {
            let res = call(&mut svc, host).await;
            match &res {
                Ok(reply) => {
                    assert_ne!(reply.request, "b.example");
                    ok += 1;
                }
                Err(_) if is_open(&res) => {
                    open += 1;
                }
                Err(_) => failed += 1,
            }
        }
    }
    // a and c: every call went through; b: three failures, then rejected.
    assert_eq!((ok, failed, open), (40, 3, 17));
    assert_eq!(upstream.calls(), 43);
    let state = |host: Host| handle.breaker(&host).unwrap().state();
    assert_eq!(state("a.example"), State::Closed);
    assert_eq!(state("b.example"), State::Open);
    assert_eq!(state("c.example"), State::Closed);
    let not_closed = handle.not_closed();
    assert_eq!(not_closed.len(), 1);
    assert_eq!(not_closed[0].key, "\"b.example\"");
    assert_eq!(not_closed[0].state, State::Open);
    assert_eq!(
        handle.breaker(&"b.example").unwrap().counts().rejections,
        17
    );

    // The rejection says when b's probe goes; after it, b recovers.
    advance(secs(4)).await;
    let res = call(&mut svc, "b.example").await;
    let wait = res
        .unwrap_err()
        .downcast::<CircuitOpen>()
        .unwrap()
        .retry_after;
    assert_eq!(wait, secs(6));
    advance(secs(6)).await;
    b_down.store(false, SeqCst);
    assert!(call(&mut svc, "b.example").await.is_ok()); // the probe
    assert_eq!(state("b.example"), State::Closed);
    assert!(handle.not_closed().is_empty());
    assert_eq!(handle.keys(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_key_forced_open_through_the_handle_rejects_only_that_key() {
    let layer = CircuitBreakerLayer::consecutive_failures(3)
        .keyed(|host: &Host| *host)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Mock::<Host>::new());
    assert!(handle.breaker(&"a").is_none()); // not made before its first call
    call(&mut svc, "a").await.unwrap();
    call(&mut svc, "b").await.unwrap();
    handle.breaker(&"a").unwrap().force_open();
    assert!(is_open(&call(&mut svc, "a").await));
    assert!(call(&mut svc, "b").await.is_ok());
    assert_eq!(handle.not_closed()[0].state, State::ForcedOpen);
    handle.breaker(&"a").unwrap().reset();
    assert!(call(&mut svc, "a").await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn eviction_never_drops_an_open_breaker() {
    // One shard holding one key: every new key competes with the held one.
    let mock = Mock::<Host>::new().outcome_fn(|_, host| {
        if *host == "down" {
            Step::err()
        } else {
            Step::ok()
        }
    });
    let upstream = mock.handle();
    let layer = CircuitBreakerLayer::consecutive_failures(1)
        .open_for(secs(60))
        .keyed(|host: &Host| *host)
        .max_keys(1)
        .idle_after(secs(1))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(mock);

    assert!(call(&mut svc, "down").await.is_err());
    assert_eq!(handle.breaker(&"down").unwrap().state(), State::Open);

    // Idle for 30 s (well past idle_after) but still open: kept, and the
    // new key is let through unguarded rather than evicting it.
    advance(secs(30)).await;
    let before = upstream.calls();
    assert!(call(&mut svc, "new").await.is_ok());
    assert_eq!(upstream.calls(), before + 1);
    assert_eq!(handle.unguarded_calls(), 1);
    assert!(handle.breaker(&"new").is_none());
    assert!(is_open(&call(&mut svc, "down").await));
    assert_eq!(handle.keys(), 1);

    // A new key's call just before the deadline still finds it held.
    advance(secs(30) - Duration::from_millis(1)).await;
    assert!(call(&mut svc, "new").await.is_ok());
    assert_eq!(handle.unguarded_calls(), 2);
    assert_eq!(handle.breaker(&"down").unwrap().state(), State::Open);

    // At its deadline (and idle): evicted for the new key.
    advance(Duration::from_millis(1)).await;
    assert!(call(&mut svc, "new").await.is_ok());
    assert_eq!(handle.unguarded_calls(), 2);
    assert!(handle.breaker(&"down").is_none());
    assert_eq!(handle.breaker(&"new").unwrap().state(), State::Closed);
    assert_eq!(handle.keys(), 1);
}

#[tokio::test(start_paused = true)]
async fn closed_breakers_are_evicted_only_once_idle() {
    let layer = CircuitBreakerLayer::consecutive_failures(3)
        .keyed(|host: &Host| *host)
        .max_keys(1)
        .idle_after(secs(10))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Mock::<Host>::new());
    call(&mut svc, "a").await.unwrap();
    advance(secs(9)).await;
    call(&mut svc, "a").await.unwrap(); // a use: idle from here
    advance(secs(9)).await;
    call(&mut svc, "b").await.unwrap();
    assert_eq!(handle.unguarded_calls(), 1);
    assert!(handle.breaker(&"a").is_some());
    advance(secs(1)).await;
    call(&mut svc, "b").await.unwrap();
    assert!(handle.breaker(&"a").is_none());
    assert!(handle.breaker(&"b").is_some());
    assert_eq!(handle.unguarded_calls(), 1);
}

/// Half-open with no probe in flight (one of two probes done) decides
/// nothing until the next call: once idle it may be evicted like a closed
/// breaker (a fresh one admits the same calls), making room for a new key.
#[tokio::test(start_paused = true)]
async fn a_half_open_breaker_with_no_probe_in_flight_is_evicted_once_idle() {
    let mock = Mock::<Host>::new().outcome_fn(|n, host| match (*host, n) {
        ("a", 0) => Step::err(),
        _ => Step::ok(),
    });
    let layer = CircuitBreakerLayer::consecutive_failures(1)
        .open_for(secs(1))
        .half_open_probes(2)
        .keyed(|host: &Host| *host)
        .max_keys(1)
        .idle_after(secs(10))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(mock);
    assert!(call(&mut svc, "a").await.is_err());
    advance(secs(1)).await;
    call(&mut svc, "a").await.unwrap(); // one probe of two: still half-open
    let a = handle.breaker(&"a").unwrap();
    assert_eq!(a.state(), State::HalfOpen);
    assert_eq!(a.counts().probes_in_flight, 0);
    // Not idle yet: kept, and "b" goes unguarded.
    call(&mut svc, "b").await.unwrap();
    assert_eq!(handle.unguarded_calls(), 1);
    // Idle: evicted for "b".
    advance(secs(11)).await;
    call(&mut svc, "b").await.unwrap();
    assert_eq!(handle.unguarded_calls(), 1);
    assert!(handle.breaker(&"a").is_none());
    assert!(handle.breaker(&"b").is_some());
}

#[tokio::test(start_paused = true)]
async fn a_breaker_with_a_probe_in_flight_is_never_evicted() {
    let fail_a = Arc::new(AtomicBool::new(true));
    let fail = fail_a.clone();
    let mock = Mock::<Host>::new().outcome_fn(move |_, host| match *host {
        "a" if fail.load(SeqCst) => Step::err(),
        "a" => Step::ok().after(secs(100)),
        _ => Step::ok(),
    });
    let layer = CircuitBreakerLayer::consecutive_failures(1)
        .open_for(secs(1))
        .keyed(|host: &Host| *host)
        .max_keys(1)
        .idle_after(secs(1))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(mock);
    assert!(call(&mut svc, "a").await.is_err());
    advance(secs(2)).await;
    fail_a.store(false, SeqCst);
    // The probe: called, then held in flight for 100 s.
    let probe = svc.ready().await.unwrap().call("a");
    let probe = tokio::spawn(probe);
    tokio::task::yield_now().await;
    assert_eq!(handle.breaker(&"a").unwrap().counts().probes_in_flight, 1);
    advance(secs(50)).await;
    call(&mut svc, "b").await.unwrap();
    assert_eq!(handle.unguarded_calls(), 1);
    assert_eq!(handle.breaker(&"a").unwrap().state(), State::HalfOpen);
    assert!(is_open(&call(&mut svc, "a").await)); // the cap holds
    // The probe succeeds: closed, and (idle since) evictable again.
    assert!(probe.await.unwrap().is_ok());
    assert_eq!(handle.breaker(&"a").unwrap().state(), State::Closed);
    advance(secs(2)).await;
    call(&mut svc, "b").await.unwrap();
    assert!(handle.breaker(&"a").is_none());
}

#[test]
fn bad_keyed_configuration_is_an_error() {
    let key = |h: &Host| *h;
    let err = |r: Result<_, ConfigError>| r.err();
    assert_eq!(
        err(CircuitBreakerLayer::consecutive_failures(1)
            .keyed(key)
            .max_keys(0)
            .build()),
        Some(ConfigError::ZeroMaxKeys)
    );
    assert_eq!(
        err(CircuitBreakerLayer::consecutive_failures(1)
            .keyed(key)
            .idle_after(Duration::ZERO)
            .build()),
        Some(ConfigError::ZeroIdleAfter)
    );
    assert!(matches!(
        err(CircuitBreakerLayer::failure_rate(f64::NAN).keyed(key).build()),
        Some(ConfigError::FailureRate(r)) if r.is_nan()
    ));
    assert!(matches!(
        err(CircuitBreakerLayer::failure_rate(2.0).keyed(key).build()),
        Some(ConfigError::FailureRate(r)) if r == 2.0
    ));
    assert!(matches!(
        err(CircuitBreakerLayer::consecutive_failures(0)
            .keyed(key)
            .build()),
        Some(ConfigError::ZeroConsecutiveFailures)
    ));
}

/// Many threads, each with its own clones, call the same keys of a
/// half-open breaker at once and hold their response futures: exactly
/// `probes` calls per key reach the upstream in each round, whatever the
/// interleaving, and dropping the futures gives the slots back.
#[test]
fn probes_are_capped_per_key_across_clones_and_threads() {
    use std::future::Future;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU64;

    const KEYS: usize = 4;
    const PROBES: u32 = 2;
    const THREADS: usize = 4;
    const CLONES: usize = 8;
    const ROUNDS: usize = 50;

    let admitted: Arc<[AtomicU64; KEYS]> = Arc::new(Default::default());
    let seen = admitted.clone();
    let upstream = tower::service_fn(move |key: usize| {
        seen[key].fetch_add(1, SeqCst);
        async move { Err::<(), _>("down") }
    });
    let layer = CircuitBreakerLayer::consecutive_failures(1)
        .open_for(Duration::from_nanos(1))
        .half_open_probes(PROBES)
        .keyed(|k: &usize| *k)
        .build()
        .unwrap();
    let svc = layer.layer(upstream);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    // Trip every key (its first call fails).
    for key in 0..KEYS {
        let mut s = svc.clone();
        assert!(s.poll_ready(&mut cx).is_ready());
        let mut trip = std::pin::pin!(s.call(key));
        assert!(trip.as_mut().poll(&mut cx).is_ready());
    }
    assert_eq!(layer.handle().not_closed().len(), KEYS);
    for c in admitted.iter() {
        c.store(0, SeqCst);
    }

    let barrier = Arc::new(Barrier::new(THREADS));
    let held = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (svc, barrier, held) = (svc.clone(), barrier.clone(), held.clone());
            let admitted = admitted.clone();
            scope.spawn(move || {
                let waker = std::task::Waker::noop();
                let mut cx = std::task::Context::from_waker(waker);
                let mut clones: Vec<_> = (0..CLONES).map(|_| svc.clone()).collect();
                for _round in 0..ROUNDS {
                    barrier.wait(); // everyone calls at once
                    let mut futures = Vec::new();
                    for (i, s) in clones.iter_mut().enumerate() {
                        assert!(s.poll_ready(&mut cx).is_ready());
                        futures.push(s.call((i + t) % KEYS));
                    }
                    barrier.wait(); // every call made; none ended
                    if t == 0 {
                        let mut rounds = held.lock().unwrap();
                        rounds.push(
                            admitted
                                .iter()
                                .map(|c| c.swap(0, SeqCst))
                                .collect::<Vec<_>>(),
                        );
                    }
                    barrier.wait();
                    drop(futures); // slots given back, nothing recorded
                }
            });
        }
    });
    let rounds = held.lock().unwrap();
    assert_eq!(rounds.len(), ROUNDS);
    for per_key in rounds.iter() {
        assert_eq!(per_key, &vec![u64::from(PROBES); KEYS], "{rounds:?}");
    }
}

#[cfg(feature = "http")]
#[tokio::test(start_paused = true)]
async fn authority_keys_by_uri_authority_or_host_header() {
    use palisade::circuit_breaker::Authority;
    use palisade::rate_limit::KeyExtractor;

    let req = |uri: &str, host: Option<&str>| {
        let mut b = http::Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(http::header::HOST, h);
        }
        b.body(()).unwrap()
    };
    let key = |r: &http::Request<()>| Authority.extract(r).map(|a| a.to_string());
    assert_eq!(
        key(&req("http://api.example:8080/x", None)).as_deref(),
        Some("api.example:8080")
    );
    assert_eq!(
        key(&req("/x", Some("api.example"))).as_deref(),
        Some("api.example")
    );
    assert_eq!(key(&req("/x", Some("bad host"))), None);
    assert_eq!(key(&req("/x", None)), None);

    // Hosts differing only in case share a breaker.
    let layer = CircuitBreakerLayer::consecutive_failures(1)
        .keyed(Authority)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(tower::service_fn(|r: http::Request<()>| async move {
        if r.uri().host() == Some("down.example") {
            Err::<(), BoxError>("down".into())
        } else {
            Ok(())
        }
    }));
    let down = req("http://down.example/", None);
    assert!(svc.ready().await.unwrap().call(down).await.is_err());
    let upper = req("http://DOWN.example/", None);
    let err = svc.ready().await.unwrap().call(upper).await.unwrap_err();
    assert!(err.is::<CircuitOpen>());
    let other = req("http://up.example/", None);
    assert!(svc.ready().await.unwrap().call(other).await.is_ok());
    assert_eq!(handle.keys(), 2);
}

/// The stack over real sockets: three HTTP/1.1 servers on loopback ports
/// (three authorities), one answering 503, and a minimal HTTP client (one
/// connection per request) behind a breaker keyed by [`Authority`], with
/// `ServerErrorsAsFailures`. Only the failing server's breaker opens; the
/// other two serve every request.
#[cfg(feature = "http")]
#[tokio::test]
async fn over_real_sockets_only_the_failing_hosts_breaker_opens() {
    use palisade::circuit_breaker::Authority;
    use palisade::classify::ServerErrorsAsFailures;
    use std::sync::atomic::AtomicU32;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Serves `status` to every request, counting them.
    async fn server(status: u16) -> (String, Arc<AtomicU32>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let served = Arc::new(AtomicU32::new(0));
        let count = served.clone();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut read = 0;
                    while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf[read..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read += n,
                        }
                    }
                    count.fetch_add(1, SeqCst);
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = conn.write_all(reply.as_bytes()).await;
                });
            }
        });
        (authority, served)
    }

    /// One request over a new connection; the response's status.
    async fn send(req: http::Request<()>) -> Result<http::Response<()>, BoxError> {
        let authority = req.uri().authority().ok_or("no authority")?.to_string();
        let mut conn = TcpStream::connect(&authority).await?;
        let head = format!(
            "GET {} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n\r\n",
            req.uri().path()
        );
        conn.write_all(head.as_bytes()).await?;
        let mut reply = Vec::new();
        conn.read_to_end(&mut reply).await?;
        let line = std::str::from_utf8(&reply)?
            .lines()
            .next()
            .ok_or("empty reply")?;
        let status: u16 = line.split(' ').nth(1).ok_or("bad status line")?.parse()?;
        Ok(http::Response::builder().status(status).body(())?)
    }

    let (a, served_a) = server(200).await;
    let (b, served_b) = server(503).await;
    let (c, served_c) = server(200).await;
    let layer = CircuitBreakerLayer::consecutive_failures(3)
        .open_for(secs(30))
        .classifier(ServerErrorsAsFailures)
        .keyed(Authority)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut client = layer.layer(tower::service_fn(send));
    let mut rejected = 0;
    for _ in 0..10 {
        for authority in [&a, &b, &c] {
            let req = http::Request::get(format!("http://{authority}/"))
                .body(())
                .unwrap();
            match client.ready().await.unwrap().call(req).await {
                Ok(res) if authority == &b => assert_eq!(res.status(), 503),
                Ok(res) => assert_eq!(res.status(), 200),
                Err(e) => {
                    assert!(e.is::<CircuitOpen>(), "{e}");
                    assert_eq!(authority, &b);
                    rejected += 1;
                }
            }
        }
    }
    assert_eq!(rejected, 7);
    assert_eq!(
        (
            served_a.load(SeqCst),
            served_b.load(SeqCst),
            served_c.load(SeqCst)
        ),
        (10, 3, 10)
    );
    let open = handle.not_closed();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].key, format!("Some({b})")); // `Authority`'s `Debug`
    let key: http::uri::Authority = b.parse().unwrap();
    assert_eq!(handle.breaker(&Some(key)).unwrap().state(), State::Open);
}
