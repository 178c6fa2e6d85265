//! Engine throughput without HTTP: K concurrent greedy sequences (distinct chat prompts,
//! fixed 64 output tokens, EOS ignored) on the default model, driven through the real
//! scheduler, paged KV cache and batched forward. Wall time includes the prefill of all
//! prompts. Prints generated tokens/s per K and the speed-up over K = 1 measured in the same
//! run: the K values run in rounds (1, 8, 32, 64, then again), and each figure is the median
//! over the rounds, so a burst of load on a shared host moves one sample, not the ratio.
//!
//! Run: `cargo bench --bench engine` (needs `scripts/fetch-model`); `ENGINE_ROUNDS=5` for
//! more rounds (default 3), `ENGINE_KS=1,32` for other concurrencies,
//! `ENGINE_MAX_BATCHED_TOKENS=2048` for another step token budget (default: the server's).
//! `ENGINE_GUIDED=1` also runs every K constrained by a JSON schema (an unbounded array of
//! `{name, age}` objects, so the grammar never completes within the 64 tokens), interleaved
//! with the plain runs, and prints the constrained throughput next to the plain one.

use std::sync::Arc;
use std::time::Instant;

use ponder::engine::core::{EngineCore, Submission};
use ponder::engine::{cpu_core, EngineConfig, GenerateRequest, RequestStream};
use ponder::model::template::ChatMessage;
use ponder::model::{load_model, loader::default_model_path, LoadedModel};
use ponder::sample::RawSamplingParams;

const OUT_TOKENS: u32 = 64;

fn run(m: &Arc<LoadedModel>, k: usize, guide: Option<&ponder::guided::Guide>) -> (f64, usize) {
    let mut cfg = EngineConfig {
        kv_cache_bytes: 1 << 30,
        ..Default::default()
    };
    if let Some(t) = std::env::var("ENGINE_MAX_BATCHED_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.sched.max_num_batched_tokens = t;
    }
    let mut core: EngineCore = cpu_core(m.clone(), &cfg).expect("engine");
    let params = RawSamplingParams {
        max_tokens: OUT_TOKENS,
        temperature: 0.0,
        ignore_eos: true,
        ..Default::default()
    }
    .validate()
    .expect("params");
    let mut streams = Vec::new();
    for i in 0..k {
        let q = format!("Write a short story about a robot named Unit {i} who learns to paint.");
        let r = m
            .template
            .render(&[ChatMessage::new("user", &q)], true)
            .expect("template");
        let ids = m.tokenizer.encode(&r, false).expect("encode");
        let (s, tx, cancelled) = RequestStream::channel();
        let mut req = GenerateRequest::new(ids, 1, params.clone());
        req.guide = guide.cloned();
        core.add(Submission { req, tx, cancelled });
        streams.push(s);
    }
    let t = Instant::now();
    let mut steps = 0;
    while core.has_work() {
        core.step();
        steps += 1;
        for s in &mut streams {
            while s.try_next().is_some() {}
        }
    }
    (t.elapsed().as_secs_f64(), steps)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let path = match std::env::var("PONDER_BENCH_MODEL") {
        Ok(p) => std::path::PathBuf::from(p),
        Err(_) => default_model_path().expect("default model (run scripts/fetch-model)"),
    };
    let m = Arc::new(load_model(&path).expect("load"));
    let env = |name: &str| std::env::var(name).ok();
    let rounds: usize = env("ENGINE_ROUNDS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let ks: Vec<usize> = env("ENGINE_KS")
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 8, 32, 64]);
    let guide = env("ENGINE_GUIDED").map(|_| {
        let doc: serde_json::Value = serde_json::from_str(&m.tokenizer.to_json()).expect("json");
        let vocab =
            ponder::guided::TokenBytes::from_tokenizer_json(&doc, m.model.cfg.vocab_size, |id| {
                m.tokenizer.decode(&[id], false)
            });
        let f =
            ponder::guided::GuideFactory::new(&vocab, m.tokenizer.clone(), &m.tokenizer.eos_ids)
                .expect("grammar engine");
        let schema = serde_json::json!({"type": "array", "items": {"type": "object",
            "properties": {"name": {"type": "string", "maxLength": 8},
                "age": {"type": "integer", "maximum": 120}}, "required": ["name", "age"]}});
        f.compile(
            &ponder::guided::Constraint::JsonSchema {
                schema,
                strict: false,
            },
            "bench",
        )
        .expect("schema")
    });
    run(&m, 2, None); // warm-up
    let g = guide.as_ref();
    if let Some(g) = g {
        // The grammar's own cost: mask + advance per token of a valid document, one thread.
        let text = (0..12)
            .map(|i| format!("{{\"name\": \"P{i}\", \"age\": {}}}", 20 + i))
            .collect::<Vec<_>>()
            .join(", ");
        let ids = m
            .tokenizer
            .encode(&format!("[{text}"), false)
            .expect("encode");
        let mut best = f64::MAX;
        for _ in 0..rounds {
            let mut st = g.clone();
            let t = Instant::now();
            for &id in &ids {
                let mask = st.mask().expect("mask");
                assert!(mask.is_allowed(id), "token {id} not allowed");
                st.advance(id).expect("advance");
            }
            best = best.min(t.elapsed().as_secs_f64() / ids.len() as f64);
        }
        println!(
            "grammar alone: {:.1} us per token (mask + advance, {} tokens, best of {rounds})",
            best * 1e6,
            ids.len()
        );
    }
    // walls[i][r]: wall seconds of ks[i] in round r; steps of the last round (guided: gwalls).
    let mut walls = vec![Vec::new(); ks.len()];
    let mut gwalls = vec![Vec::new(); ks.len()];
    let mut steps = vec![0; ks.len()];
    for _ in 0..rounds {
        for (i, &k) in ks.iter().enumerate() {
            let (dt, s) = run(&m, k, None);
            walls[i].push(dt);
            steps[i] = s;
            if g.is_some() {
                gwalls[i].push(run(&m, k, g).0);
            }
        }
    }
    println!("rounds: {rounds} (figures are medians; wall s of every round in brackets)");
    println!("| concurrent seqs | generated tokens | wall s | steps | tokens/s | speed-up vs 1 |");
    println!("|---|---|---|---|---|---|");
    let tps: Vec<f64> = ks
        .iter()
        .zip(&walls)
        .map(|(&k, w)| (k * OUT_TOKENS as usize) as f64 / median(w.clone()))
        .collect();
    let base = ks.iter().position(|&k| k == 1).map(|i| tps[i]);
    for (i, &k) in ks.iter().enumerate() {
        let all: Vec<String> = walls[i].iter().map(|w| format!("{w:.2}")).collect();
        let speedup = base.map_or("-".to_string(), |b| format!("{:.2}x", tps[i] / b));
        println!(
            "| {k} | {} | {:.2} [{}] | {} | {:.1} | {speedup} |",
            k * OUT_TOKENS as usize,
            median(walls[i].clone()),
            all.join(" "),
            steps[i],
            tps[i],
        );
    }
    if g.is_some() {
        println!("\nJSON-schema constrained, same rounds:");
        println!("| concurrent seqs | wall s | tokens/s | vs plain |");
        println!("|---|---|---|---|");
        for (i, &k) in ks.iter().enumerate() {
            let all: Vec<String> = gwalls[i].iter().map(|w| format!("{w:.2}")).collect();
            let t = (k * OUT_TOKENS as usize) as f64 / median(gwalls[i].clone());
            println!(
                "| {k} | {:.2} [{}] | {t:.1} | {:.3} |",
                median(gwalls[i].clone()),
                all.join(" "),
                t / tps[i]
            );
        }
    }
}
