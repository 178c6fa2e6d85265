//! `ponder-load`: a bounded load test of a running ponder server on loopback.
//!
//! ```text
//! calibrate  closed loop, --calibrate-concurrency clients, --calibrate s -> capacity (req/s)
//! steady     open loop, Poisson arrivals at --rate (default: --rate-fraction x capacity)
//! burst      open loop at --burst-factor x the steady rate for --burst-duration s
//! drain      wait for every request, then /metrics: running = waiting = 0, KV usage = 0
//! ```
//!
//! Every request must end as `ok` (200 and a complete body) or `refused` (429/503 with a
//! `Retry-After`); anything else (connection error, timeout, other status, a stream cut
//! before `data: [DONE]`) is `lost`. The run fails when a request is lost, when the KV cache
//! usage does not return to 0, or when the server's RSS (from `/proc/<pid>/status`) after
//! the run exceeds its warm RSS (after calibration; without one, at the end of the steady
//! phase) by more than the tolerance.
//! Bounded: at most --max-requests requests, each at most --timeout s.

mod http;
mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use stats::{Class, Outcome, Phase, Summary};
use tokio::task::JoinSet;

#[derive(Parser, Debug)]
#[command(
    name = "ponder-load",
    about = "Bounded loopback load test of a ponder server",
    // scripts/load-test passes its form's defaults first; a flag given again overrides them.
    args_override_self = true
)]
struct Args {
    /// Server base URL; loopback addresses only (http://127.0.0.1:8000).
    #[arg(long)]
    url: String,
    /// The server's process id, for its RSS (/proc/<pid>/status); no memory check without it.
    #[arg(long)]
    pid: Option<u32>,
    /// Seconds of closed-loop load to measure capacity (0: skip; then --rate is required).
    #[arg(long, default_value_t = 20.0)]
    calibrate: f64,
    /// Concurrent clients during calibration (use the server's --max-num-seqs).
    #[arg(long, default_value_t = 32)]
    calibrate_concurrency: usize,
    /// Steady arrival rate in requests/s (default: --rate-fraction x measured capacity).
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, default_value_t = 0.8)]
    rate_fraction: f64,
    /// Seconds of steady load.
    #[arg(long, default_value_t = 300.0)]
    duration: f64,
    /// Burst arrival rate as a multiple of the steady rate.
    #[arg(long, default_value_t = 3.0)]
    burst_factor: f64,
    /// Seconds of burst load.
    #[arg(long, default_value_t = 30.0)]
    burst_duration: f64,
    /// Hard bound on requests sent over the whole run.
    #[arg(long, default_value_t = 20_000)]
    max_requests: usize,
    /// Output tokens per request (EOS ignored, so every ok request produces exactly this many).
    #[arg(long, default_value_t = 32)]
    max_tokens: u32,
    /// Seconds after which a request without a complete response counts as lost.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Seconds to wait after the last response for running = waiting = 0 and KV usage = 0.
    #[arg(long, default_value_t = 30.0)]
    drain_timeout: f64,
    /// Allowed RSS growth after the run over the baseline (warm) RSS, in percent.
    #[arg(long, default_value_t = 10.0)]
    rss_tolerance_pct: f64,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Seeds the arrival times and the sampling seeds.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

const TOPICS: &[&str] = &[
    "rivers",
    "bread",
    "volcanoes",
    "chess",
    "owls",
    "glass",
    "trains",
    "tea",
    "comets",
    "bees",
    "maps",
    "salt",
    "bridges",
    "clocks",
    "whales",
    "paper",
];

/// Request `i`: a chat completion with a distinct prompt; 3 of 4 stream (with usage).
fn body(i: usize, max_tokens: u32, seed: u64) -> (bool, Vec<u8>) {
    let stream = i % 4 != 3;
    let topic = TOPICS[i % TOPICS.len()];
    let b = json!({
        "messages": [{"role": "user", "content":
            format!("Request {i}. Write a few sentences about {topic} for a curious child.")}],
        "max_tokens": max_tokens, "ignore_eos": true, "temperature": 0.8,
        "seed": seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
        "stream": stream, "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
    });
    (stream, b.to_string().into_bytes())
}

/// Reads SSE events as body bytes arrive: first text time, [DONE], usage, in-stream errors.
struct SseState {
    buf: Vec<u8>,
    start: Instant,
    ttft: Option<f64>,
    done: bool,
    tokens: u64,
    error: Option<String>,
}

impl SseState {
    fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        while let Some(p) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = self.buf.drain(..p + 2).collect();
            for line in String::from_utf8_lossy(&event).lines() {
                let Some(d) = line.strip_prefix("data: ") else {
                    continue;
                };
                if d == "[DONE]" {
                    self.done = true;
                    continue;
                }
                let Ok(v) = serde_json::from_str::<Value>(d) else {
                    self.error = Some(format!("unparsable event {d:?}"));
                    continue;
                };
                if v.get("error").is_some() {
                    self.error = Some(format!("in-stream error {v}"));
                }
                let text = &v["choices"][0]["delta"]["content"];
                if self.ttft.is_none() && text.as_str().is_some_and(|t| !t.is_empty()) {
                    self.ttft = Some(self.start.elapsed().as_secs_f64());
                }
                if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                    self.tokens = n;
                }
            }
        }
    }
}

struct Ctx {
    addr: SocketAddr,
    max_tokens: u32,
    timeout: Duration,
    seed: u64,
}

async fn one(ctx: Arc<Ctx>, i: usize, phase: Phase) -> Outcome {
    let (stream, b) = body(i, ctx.max_tokens, ctx.seed);
    let start = Instant::now();
    let mut sse = SseState {
        buf: Vec::new(),
        start,
        ttft: None,
        done: false,
        tokens: 0,
        error: None,
    };
    let mut whole = Vec::new();
    let res = tokio::time::timeout(
        ctx.timeout,
        http::request(ctx.addr, "POST", "/v1/chat/completions", &b, |d| {
            if stream {
                sse.feed(d)
            } else {
                whole.extend_from_slice(d)
            }
        }),
    )
    .await;
    let latency = start.elapsed().as_secs_f64();
    let mut o = Outcome {
        phase,
        status: 0,
        retry_after: None,
        complete: false,
        ttft: None,
        latency,
        output_tokens: 0,
        error: None,
    };
    let head = match res {
        Err(_) => {
            o.error = Some(format!("no complete response within {:?}", ctx.timeout));
            return o;
        }
        Ok(Err(e)) => {
            o.error = Some(format!("transport: {e}"));
            return o;
        }
        Ok(Ok(h)) => h,
    };
    o.status = head.status;
    o.retry_after = head.retry_after.as_deref().and_then(|v| v.parse().ok());
    if head.status != 200 {
        return o;
    }
    if stream {
        o.complete = sse.done;
        o.ttft = sse.ttft;
        o.output_tokens = sse.tokens;
        o.error = sse.error;
    } else {
        match serde_json::from_slice::<Value>(&whole) {
            Ok(v) if v["choices"][0]["message"]["content"].is_string() => {
                o.complete = true;
                o.ttft = Some(latency);
                o.output_tokens = v["usage"]["completion_tokens"].as_u64().unwrap_or(0);
            }
            _ => o.error = Some("non-stream body is not a chat completion".into()),
        }
    }
    if o.complete && o.output_tokens != u64::from(ctx.max_tokens) {
        o.error = Some(format!(
            "{} output tokens, expected {} (ignore_eos)",
            o.output_tokens, ctx.max_tokens
        ));
    }
    o
}

/// xorshift64*: arrival gaps without a rand dependency.
struct Rng(u64);
impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Exponential gap with mean 1/rate.
    fn gap(&mut self, rate: f64) -> f64 {
        -(1.0 - self.next_f64()).ln() / rate
    }
}

/// The server's resident set size in MiB (VmRSS), or None without a readable /proc entry.
fn rss_mib(pid: Option<u32>) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let l = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = l.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// A metric's value from the Prometheus text (first sample of `name`).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// (running, waiting, KV usage) from /metrics, and the cumulative preemptions.
async fn engine_state(addr: SocketAddr) -> anyhow::Result<((f64, f64, f64), f64)> {
    let (status, text) = http::get_text(addr, "/metrics").await?;
    anyhow::ensure!(status == 200, "/metrics answered {status}");
    let get = |n: &str| metric(&text, n).ok_or_else(|| anyhow::anyhow!("{n} not in /metrics"));
    Ok((
        (
            get("ponder_num_requests_running")?,
            get("ponder_num_requests_waiting")?,
            get("ponder_kv_cache_usage_perc")?,
        ),
        get("ponder_num_preemptions_total")?,
    ))
}

fn parse_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("--url must start with http://, given {url}"))?;
    let addr: SocketAddr = rest
        .trim_end_matches('/')
        .parse()
        .map_err(|e| anyhow::anyhow!("--url must be http://<ip>:<port>, given {url} ({e})"))?;
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "--url must be a loopback address (this tool never loads a remote host), given {url}"
    );
    Ok(addr)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(a: Args) -> anyhow::Result<bool> {
    let addr = parse_addr(&a.url)?;
    anyhow::ensure!(
        a.calibrate > 0.0 || a.rate.is_some(),
        "--rate is required when --calibrate is 0"
    );
    let (status, _) = http::get_text(addr, "/ready").await?;
    anyhow::ensure!(status == 200, "{}/ready answered {status}", a.url);
    let (before, preempt_before) = engine_state(addr).await?;
    let rss_start = rss_mib(a.pid);
    let ctx = Arc::new(Ctx {
        addr,
        max_tokens: a.max_tokens,
        timeout: Duration::from_secs_f64(a.timeout),
        seed: a.seed,
    });
    let run_start = Instant::now();
    let mut rng = Rng(a.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut windows = [0.0f64; 3];
    let mut sent = 0usize;
    let mut rss_peak = rss_start.unwrap_or(0.0);

    // Calibrate: closed loop.
    let mut capacity = None;
    if a.calibrate > 0.0 {
        eprintln!(
            "calibrate: {} clients, {:.0} s",
            a.calibrate_concurrency, a.calibrate
        );
        let deadline = Instant::now() + Duration::from_secs_f64(a.calibrate);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let budget = a.max_requests;
        let mut set = JoinSet::new();
        for _ in 0..a.calibrate_concurrency {
            let (ctx, next) = (ctx.clone(), next.clone());
            set.spawn(async move {
                let mut mine = Vec::new();
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= budget {
                        break;
                    }
                    mine.push(one(ctx.clone(), i, Phase::Calibrate).await);
                }
                mine
            });
        }
        let t0 = Instant::now();
        while let Some(r) = set.join_next().await {
            outcomes.extend(r?);
        }
        let elapsed = t0.elapsed().as_secs_f64();
        windows[0] = elapsed;
        sent = next.load(std::sync::atomic::Ordering::Relaxed).min(budget);
        let ok = outcomes.iter().filter(|o| o.class() == Class::Ok).count();
        capacity = Some(ok as f64 / elapsed);
        eprintln!(
            "calibrate: {ok} ok in {elapsed:.1} s -> capacity {:.2} req/s",
            ok as f64 / elapsed
        );
    }
    let rss_warm = rss_mib(a.pid);
    rss_peak = rss_peak.max(rss_warm.unwrap_or(0.0));
    let rate = a
        .rate
        .unwrap_or_else(|| capacity.unwrap_or(1.0) * a.rate_fraction);
    anyhow::ensure!(rate > 0.0, "steady rate must be > 0, got {rate}");

    // Steady, then burst: open loop with Poisson arrivals.
    let mut set: JoinSet<Outcome> = JoinSet::new();
    let mut rss_steady_end = None;
    for (phase, r, dur) in [
        (Phase::Steady, rate, a.duration),
        (Phase::Burst, rate * a.burst_factor, a.burst_duration),
    ] {
        eprintln!("{}: {r:.2} req/s for {dur:.0} s", phase.name());
        let t0 = Instant::now();
        let mut t = 0.0;
        let mut last_rss = Instant::now();
        loop {
            t += rng.gap(r);
            if t > dur || sent >= a.max_requests {
                break;
            }
            tokio::time::sleep_until((t0 + Duration::from_secs_f64(t)).into()).await;
            set.spawn(one(ctx.clone(), sent, phase));
            sent += 1;
            // Finished requests are collected as we go so the set stays small.
            while let Some(r) = set.try_join_next() {
                outcomes.push(r?);
            }
            if last_rss.elapsed() >= Duration::from_secs(1) {
                rss_peak = rss_peak.max(rss_mib(a.pid).unwrap_or(0.0));
                last_rss = Instant::now();
            }
        }
        windows[if phase == Phase::Steady { 1 } else { 2 }] = t0.elapsed().as_secs_f64();
        if phase == Phase::Steady {
            rss_steady_end = rss_mib(a.pid);
        }
    }
    while let Some(r) = set.join_next().await {
        outcomes.push(r?);
    }
    let load_s = run_start.elapsed().as_secs_f64();

    // Drain: the engine must be empty and the KV cache free.
    let t0 = Instant::now();
    let (mut after, mut preempt_after) = engine_state(addr).await?;
    while (after.0 != 0.0 || after.1 != 0.0 || after.2 != 0.0)
        && t0.elapsed().as_secs_f64() < a.drain_timeout
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        (after, preempt_after) = engine_state(addr).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_end = rss_mib(a.pid);

    // Report.
    let mut rows = Vec::new();
    for (k, p) in Phase::ALL.iter().enumerate() {
        let of: Vec<&Outcome> = outcomes.iter().filter(|o| o.phase == *p).collect();
        if !of.is_empty() {
            rows.push((p.name(), Summary::of(&of, windows[k])));
        }
    }
    let all: Vec<&Outcome> = outcomes.iter().collect();
    let total = Summary::of(&all, load_s);
    rows.push(("total", total.clone()));
    println!("{}", stats::table(&rows));
    let mut failures = Vec::new();
    if total.lost > 0 {
        failures.push(format!(
            "{} of {} requests lost",
            total.lost, total.requests
        ));
        for o in outcomes.iter().filter(|o| o.class() == Class::Lost).take(5) {
            eprintln!(
                "  lost: phase {} status {} after {:.1} s: {}",
                o.phase.name(),
                o.status,
                o.latency,
                o.error.as_deref().unwrap_or("-")
            );
        }
    }
    if total.requests != sent {
        failures.push(format!(
            "{sent} requests sent but {} outcomes recorded",
            total.requests
        ));
    }
    if after != (0.0, 0.0, 0.0) {
        failures.push(format!(
            "after {:.0} s of drain: running {}, waiting {}, kv_cache_usage_perc {}",
            a.drain_timeout, after.0, after.1, after.2
        ));
    }
    let mib = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.1} MiB"));
    // The baseline: warm RSS after calibration; without calibration, the end of the steady
    // phase (the first point where the server has seen load).
    let rss_base = if a.calibrate > 0.0 {
        rss_warm
    } else {
        rss_steady_end
    };
    let rss_limit = rss_base.map(|w| w * (1.0 + a.rss_tolerance_pct / 100.0));
    if let (Some(end), Some(limit)) = (rss_end, rss_limit) {
        if end > limit {
            failures.push(format!(
                "server RSS after the run {end:.1} MiB > baseline RSS {} + {}% = {limit:.1} MiB",
                mib(rss_base),
                a.rss_tolerance_pct
            ));
        }
    }
    println!(
        "steady rate {rate:.2} req/s (capacity {}), burst {:.2} req/s; {sent} requests in {load_s:.0} s",
        capacity.map_or("not measured".into(), |c| format!("{c:.2} req/s")),
        rate * a.burst_factor
    );
    println!(
        "server RSS: start {}, warm (after calibration) {}, end of steady {}, peak sampled {rss_peak:.1} MiB, after the run {} (limit {})",
        mib(rss_start),
        mib(rss_warm),
        mib(rss_steady_end),
        mib(rss_end),
        mib(rss_limit)
    );
    let preemptions = preempt_after - preempt_before;
    println!(
        "engine before: running {} waiting {} kv {}; after drain: running {} waiting {} kv {}; preemptions during the run: {preemptions}",
        before.0, before.1, before.2, after.0, after.1, after.2
    );
    if let Some(path) = &a.json {
        let phases: serde_json::Map<String, Value> = rows
            .iter()
            .map(|(n, s)| (n.to_string(), s.json()))
            .collect();
        let j = json!({
            "rate_rps": rate, "capacity_rps": capacity, "burst_rps": rate * a.burst_factor,
            "max_tokens": a.max_tokens, "phases": phases,
            "rss_mib": {"start": rss_start, "warm": rss_warm, "steady_end": rss_steady_end,
                        "peak": rss_peak, "end": rss_end, "limit": rss_limit},
            "engine_after": {"running": after.0, "waiting": after.1, "kv_cache_usage_perc": after.2},
            "preemptions": preemptions,
            "failures": failures,
        });
        std::fs::write(path, serde_json::to_string_pretty(&j)? + "\n")?;
    }
    for f in &failures {
        println!("FAIL {f}");
    }
    if failures.is_empty() {
        println!("PASS: no request lost, KV usage back to 0, memory flat");
    }
    Ok(failures.is_empty())
}
