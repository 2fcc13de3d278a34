//! palisade in front of a real axum server.
//!
//! ```text
//! cargo run --features axum,metrics --example axum_server                 # serve 127.0.0.1:3000 until Ctrl-C
//! cargo run --features axum,metrics --example axum_server -- --self-test  # serve 127.0.0.1:0, call it, exit
//! ```
//!
//! The stack, outermost first: `ErrorResponseLayer` (errors become 429 / 503
//! with `Retry-After`), a rate limiter keyed per client by
//! `ClientIp::peer()` (read from axum's `ConnectInfo`, which
//! `into_make_service_with_connect_info::<SocketAddr>()` stores), and a
//! circuit breaker that counts `5xx` answers as failures. `GET /` answers
//! `hello`; `GET /flaky` always fails with `500`.
//!
//! What the layers do is visible three ways: `GET /metrics` serves every
//! palisade metric in the Prometheus text format (through
//! `metrics-exporter-prometheus`, whose recorder is installed *before* the
//! layers are built: they register their metrics in `build()`); a hook
//! prints each breaker transition; and the limiter's answers carry the
//! `RateLimit-Policy` / `RateLimit` header fields.
//!
//! With `--self-test` the example sends requests to itself from 127.0.0.1,
//! 127.0.0.2 and 127.0.0.3 (three distinct peers on loopback) with a real
//! HTTP/1 client, prints what each got, checks it, fetches `/metrics` and
//! checks its palisade lines, and exits: non-zero if the server did not
//! answer as described.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use palisade::circuit_breaker::{CircuitBreakerHandle, State};
use palisade::classify::ServerErrorsAsFailures;
use palisade::http::{ClientIp, ErrorResponseLayer};
use palisade::rate_limit::RateLimitHandle;
use palisade::{BoxError, CircuitBreakerLayer, RateLimitLayer};
use tokio::net::{TcpListener, TcpSocket};
use tower::ServiceBuilder;

/// Each client: 5 at once, then 5 per minute (one every 12 s).
const BURST: u64 = 5;
/// How long the breaker stays open before a probe.
const OPEN_FOR: Duration = Duration::from_secs(1);

/// The router and handles on its limiter and breaker. The metrics
/// recorder behind `metrics` must be installed before this runs.
fn app(
    metrics: PrometheusHandle,
) -> Result<(Router, RateLimitHandle, CircuitBreakerHandle), BoxError> {
    let per_client = RateLimitLayer::token_bucket(BURST, Duration::from_secs(60))
        .burst(BURST)
        .keyed(ClientIp::peer())
        .name("per-client") // the `name` label of its metrics
        .headers("per-client") // RateLimit-Policy / RateLimit on every answer
        .build()?;
    let breaker = CircuitBreakerLayer::consecutive_failures(3)
        .open_for(OPEN_FOR)
        .classifier(ServerErrorsAsFailures)
        .name("handlers")
        .on_state_change(|e| println!("  [hook] breaker {}: {} -> {}", e.name, e.from, e.to))
        .build()?;
    let handles = (per_client.handle(), breaker.handle());
    let router = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route(
            "/flaky",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "the database is down\n") }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new()) // outermost: errors -> responses, `Infallible`
                .layer(per_client) // refuses a greedy client before anything counts it
                .layer(breaker), // next to the handlers whose 5xx it counts
        )
        // Merged after `.layer(..)`: the scrape is neither limited nor counted.
        .merge(Router::new().route(
            "/metrics",
            get(move || async move {
                metrics.run_upkeep();
                metrics.render()
            }),
        ));
    Ok((router, handles.0, handles.1))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let self_test = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--self-test") => true,
        Some(other) => return Err(format!("unknown argument {other:?}; try --self-test").into()),
    };
    // First the recorder (no HTTP listener of its own: `/metrics` renders
    // it), then the layers, which register their metrics when built.
    let metrics = PrometheusBuilder::new().install_recorder()?;
    let (router, limiter, breaker) = app(metrics)?;
    let listener = TcpListener::bind(if self_test {
        "127.0.0.1:0"
    } else {
        "127.0.0.1:3000"
    })
    .await?;
    let addr = listener.local_addr()?;
    // `ClientIp::peer()` reads the `ConnectInfo<SocketAddr>` this stores.
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    );

    if !self_test {
        println!("listening on http://{addr} (Ctrl-C to stop); try:");
        println!("  for i in $(seq 7); do curl -si http://{addr}/ | head -1; done");
        println!("  curl -si http://{addr}/flaky   # three of these open the breaker");
        server
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        return Ok(());
    }

    let server = tokio::spawn(async move { server.await });
    println!("serving on http://{addr}; calling it from three loopback peers\n");
    let result = self_test_against(addr, &limiter, &breaker).await;
    server.abort();
    result?;
    println!("\nself-test passed");
    Ok(())
}

/// Sends the requests, prints and checks the answers.
async fn self_test_against(
    addr: SocketAddr,
    limiter: &RateLimitHandle,
    breaker: &CircuitBreakerHandle,
) -> Result<(), BoxError> {
    let [a, b, c] = [1, 2, 3].map(|last| Ipv4Addr::new(127, 0, 0, last));
    let mut checks = Checks::default();

    println!("three clients, one request each: each has its own limit");
    for peer in [a, b, c] {
        let reply = request(addr, peer, "/").await?;
        checks.expect(&reply, 200, None);
    }

    println!("\n127.0.0.2 keeps going: its burst of {BURST} is spent, then 429 with Retry-After");
    // Its first request above spent one token: BURST - 1 left.
    for i in 0..BURST + 1 {
        let reply = request(addr, b, "/").await?;
        if i + 1 < BURST {
            checks.expect(&reply, 200, None);
        } else {
            // About 12 s, rounded up: the exact figure depends on timing.
            checks.expect(&reply, 429, Some(ANY));
        }
    }
    println!("\n...while 127.0.0.3 is untouched by it");
    let reply = request(addr, c, "/").await?;
    checks.expect(&reply, 200, None);

    println!("\nthe handler fails three times: the breaker opens for everyone");
    for _ in 0..3 {
        let reply = request(addr, a, "/flaky").await?;
        checks.expect(&reply, 500, None);
    }
    let reply = request(addr, c, "/").await?;
    checks.expect(&reply, 503, Some("1"));
    checks.state(breaker, State::Open);

    println!("\n{OPEN_FOR:?} later a probe succeeds and closes it");
    tokio::time::sleep(OPEN_FOR + Duration::from_millis(50)).await;
    let reply = request(addr, c, "/").await?;
    checks.expect(&reply, 200, None);
    checks.state(breaker, State::Closed);

    println!(
        "\nlimiter: {} admitted, {} refused, {} client keys, {} requests without a known peer",
        limiter.admitted(),
        limiter.rejected(),
        limiter.keys(),
        limiter.unknown_key_requests(),
    );
    if limiter.keys() != 3 || limiter.unknown_key_requests() != 0 {
        checks
            .failed
            .push("expected 3 client keys and no unknown peer".into());
    }

    println!("\nGET /metrics (Prometheus text format), palisade's lines:");
    let reply = request(addr, Ipv4Addr::new(127, 0, 0, 4), "/metrics").await?;
    checks.expect(&reply, 200, None);
    let lines: Vec<&str> = reply
        .body
        .lines()
        .filter(|l| l.starts_with("palisade_"))
        .collect();
    for line in &lines {
        println!("  {line}");
    }
    let admitted = limiter.admitted().to_string();
    let refused = limiter.rejected().to_string();
    for (metric, value) in [
        (
            r#"palisade_ratelimit_admitted_total{name="per-client"}"#,
            admitted.as_str(),
        ),
        (
            r#"palisade_ratelimit_refused_total{name="per-client",reason="limited"}"#,
            refused.as_str(),
        ),
        (r#"palisade_ratelimit_keys{name="per-client"}"#, "3"),
        (
            r#"palisade_breaker_calls_total{name="handlers",outcome="failure"}"#,
            "3",
        ),
        (r#"palisade_breaker_rejections_total{name="handlers"}"#, "1"),
        (
            r#"palisade_breaker_transitions_total{name="handlers",to="open"}"#,
            "1",
        ),
        (
            r#"palisade_breaker_transitions_total{name="handlers",to="closed"}"#,
            "1",
        ),
        (r#"palisade_breaker_state{name="handlers"}"#, "0"),
    ] {
        let line = format!("{metric} {value}");
        if !lines.contains(&line.as_str()) {
            checks
                .failed
                .push(format!("/metrics lacks the line `{line}`"));
        }
    }
    checks.finish()
}

/// What one request got.
struct Reply {
    status: u16,
    retry_after: Option<String>,
    ratelimit: Option<String>,
    body: String,
}

/// `GET path` on a new HTTP/1 connection from `from`, bounded to 10 s.
async fn request(to: SocketAddr, from: Ipv4Addr, path: &str) -> Result<Reply, BoxError> {
    let reply = tokio::time::timeout(Duration::from_secs(10), async {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((from, 0)))?;
        let stream = socket.connect(to).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let conn = tokio::spawn(conn);
        let request = hyper::Request::get(path)
            .header("host", to.to_string())
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (status, retry_after, ratelimit) = (
            response.status().as_u16(),
            header("retry-after"),
            header("ratelimit"),
        );
        let body = response.into_body().collect().await?.to_bytes();
        let reply = Reply {
            status,
            retry_after,
            ratelimit,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        drop(sender);
        conn.await??;
        Ok::<_, BoxError>(reply)
    })
    .await??;
    let retry_after = reply
        .retry_after
        .as_deref()
        .map(|v| format!("Retry-After: {v}"))
        .unwrap_or_default();
    let ratelimit = reply
        .ratelimit
        .as_deref()
        .map(|v| format!("RateLimit: {v}"))
        .unwrap_or_default();
    println!(
        "  {from:<10} GET {path:<8} -> {} {retry_after} {ratelimit}",
        reply.status
    );
    Ok(reply)
}

/// Any `Retry-After` value, as long as there is one.
const ANY: &str = "any";

/// Expectations met or not, reported at the end.
#[derive(Default)]
struct Checks {
    failed: Vec<String>,
}

impl Checks {
    fn expect(&mut self, reply: &Reply, status: u16, retry_after: Option<&str>) {
        let retry_after_ok = match (reply.retry_after.as_deref(), retry_after) {
            (Some(got), Some(ANY)) => got.parse::<u64>().is_ok_and(|secs| secs >= 1),
            (got, expected) => got == expected,
        };
        if reply.status != status || !retry_after_ok {
            self.failed.push(format!(
                "expected {status} {retry_after:?}, got {} {:?}",
                reply.status, reply.retry_after
            ));
        }
    }

    fn state(&mut self, breaker: &CircuitBreakerHandle, state: State) {
        println!("  breaker: {:?}", breaker.state());
        if breaker.state() != state {
            self.failed.push(format!(
                "expected the breaker {state:?}, it is {:?}",
                breaker.state()
            ));
        }
    }

    fn finish(self) -> Result<(), BoxError> {
        if self.failed.is_empty() {
            Ok(())
        } else {
            Err(format!("self-test failed:\n  {}", self.failed.join("\n  ")).into())
        }
    }
}
