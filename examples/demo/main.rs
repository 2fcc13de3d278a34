//! `cargo run --example demo`: each of palisade's layers doing its job
//! against an in-process upstream, in a few seconds and with no setup.
//!
//! Time is tokio's paused clock, so the timelines are exact and the demo
//! runs at full speed whatever durations it shows.

mod backoff;
mod batch;
mod breaker;
mod rate_limit;
mod retry;
mod stack;

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    println!("palisade demo: every layer against an in-process upstream (tokio time, paused)\n");
    breaker::run().await;
    backoff::run();
    retry::run().await;
    rate_limit::run().await;
    batch::run().await;
    stack::run().await;
}
