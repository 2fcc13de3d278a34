//! `cargo run --example thundering_herd [-- --svg FILE]`: why retries need
//! jitter.
//!
//! `N` clients (10 to 200) race to update one row under optimistic
//! concurrency, each retrying through `RetryLayer` with one backoff strategy
//! (the model of the AWS "Exponential Backoff and Jitter" study: see
//! `thundering_herd/sim.rs`). Printed per strategy and `N`: the total
//! write attempts (work for the server) and the simulated time until every
//! client succeeded. Un-jittered backoff keeps the clients in lockstep, so
//! they collide round after round; jitter spreads them out.
//!
//! Paused tokio time and seeded randomness: deterministic, and done in
//! seconds. `--svg FILE` also writes both series as a chart.

#[path = "thundering_herd/sim.rs"]
mod sim;

use std::fmt::Write as _;

use sim::{Outcome, Strategy, simulate_mean};

const CLIENTS: [usize; 6] = [10, 25, 50, 100, 150, 200];
const SEED: u64 = 2015;
const RUNS: u64 = 3;

fn main() {
    let svg = parse_args();
    println!(
        "thundering herd: N clients, one row, optimistic concurrency; mean of {RUNS} seeded runs"
    );
    println!("(network 10 ms +- 2 ms per hop; backoff base 5 ms, cap 2 s; paused tokio time)\n");
    print!("{:<14}", "strategy");
    for n in CLIENTS {
        print!("{:>17}", format!("N={n}"));
    }
    println!("   (each cell: total calls / seconds to finish)");

    let mut results = Vec::new();
    for strategy in Strategy::ALL {
        let row: Vec<Outcome> = CLIENTS
            .iter()
            .map(|&n| simulate_mean(n, strategy, SEED, RUNS))
            .collect();
        print!("{:<14}", strategy.to_string());
        for o in &row {
            print!(
                "{:>17}",
                format!("{} / {:.2}", o.calls, o.time.as_secs_f64())
            );
        }
        println!();
        results.push((strategy, row));
    }

    let at = |s: Strategy| {
        let i = CLIENTS.iter().position(|&n| n == 100).unwrap();
        results.iter().find(|(k, _)| *k == s).unwrap().1[i]
    };
    let (expo, full) = (at(Strategy::Exponential), at(Strategy::FullJitter));
    println!(
        "\nAt N=100, full jitter needs {:.1}x fewer calls and finishes {:.1}x sooner than plain exponential backoff.",
        expo.calls as f64 / full.calls as f64,
        expo.time.as_secs_f64() / full.time.as_secs_f64(),
    );

    if let Some(path) = svg {
        std::fs::write(&path, chart(&results)).expect("write the SVG file");
        println!("chart written to {path}");
    }
}

fn parse_args() -> Option<String> {
    let mut args = std::env::args().skip(1);
    let mut svg = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--svg" => svg = Some(args.next().expect("--svg needs a file name")),
            other => {
                eprintln!("unknown argument {other:?}; usage: thundering_herd [--svg FILE]");
                std::process::exit(2);
            }
        }
    }
    svg
}

const COLOURS: [&str; 5] = ["#7f7f7f", "#d62728", "#ff7f0e", "#2ca02c", "#1f77b4"];

/// Two line charts side by side (calls, time), hand-written SVG.
fn chart(results: &[(Strategy, Vec<Outcome>)]) -> String {
    let (w, h) = (960.0, 420.0);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">Thundering herd: N clients racing for one row (palisade RetryLayer)</text>"#,
        w / 2.0
    );
    let calls = |o: &Outcome| o.calls as f64;
    let secs = |o: &Outcome| o.time.as_secs_f64();
    panel(&mut svg, results, 60.0, "total calls", &calls);
    panel(&mut svg, results, 540.0, "time to finish (s)", &secs);
    for (i, (strategy, _)) in results.iter().enumerate() {
        let x = 80.0 + 170.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="{}" width="14" height="4" fill="{}"/><text x="{}" y="{}">{strategy}</text>"#,
            h - 22.0,
            COLOURS[i % COLOURS.len()],
            x + 20.0,
            h - 17.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn panel(
    svg: &mut String,
    results: &[(Strategy, Vec<Outcome>)],
    left: f64,
    title: &str,
    value: &dyn Fn(&Outcome) -> f64,
) {
    let (top, width, height) = (50.0, 380.0, 300.0);
    let max_n = *CLIENTS.last().unwrap() as f64;
    let max_v = results
        .iter()
        .flat_map(|(_, row)| row.iter().map(value))
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.05;
    let x = |n: usize| left + width * n as f64 / max_n;
    let y = |v: f64| top + height - height * v / max_v;
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="13">{title}</text>"#,
        left + width / 2.0,
        top - 8.0
    );
    let _ = writeln!(
        svg,
        r##"<path d="M{left} {top} V{} H{}" fill="none" stroke="#333"/>"##,
        top + height,
        left + width
    );
    for n in CLIENTS {
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{n}</text>"#,
            x(n),
            top + height + 16.0
        );
    }
    for k in 0..=4 {
        let v = max_v * f64::from(k) / 4.0;
        let label = if max_v >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{yy}" y2="{yy}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{label}</text>"##,
            left + width,
            left - 6.0,
            y(v) + 4.0,
            yy = y(v)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">clients (N)</text>"#,
        left + width / 2.0,
        top + height + 32.0
    );
    for (i, (_, row)) in results.iter().enumerate() {
        let points: Vec<String> = CLIENTS
            .iter()
            .zip(row)
            .map(|(&n, o)| format!("{:.1},{:.1}", x(n), y(value(o))))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
            points.join(" "),
            COLOURS[i % COLOURS.len()]
        );
    }
}
