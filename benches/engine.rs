//! Engine throughput without HTTP: K concurrent greedy sequences (distinct chat prompts,
//! fixed 64 output tokens, EOS ignored) on the default model, driven through the real
//! scheduler, paged KV cache and batched forward. Prints generated tokens/s per K and the
//! speed-up over K = 1 measured in the same run.
//!
//! Run: `cargo bench --bench engine` (needs `scripts/fetch-model`).

use std::sync::Arc;
use std::time::Instant;

use ponder::engine::core::{EngineCore, Submission};
use ponder::engine::{cpu_core, EngineConfig, GenerateRequest, RequestStream};
use ponder::model::template::ChatMessage;
use ponder::model::{load_model, loader::default_model_path, LoadedModel};
use ponder::sample::RawSamplingParams;

const OUT_TOKENS: u32 = 64;

fn run(m: &Arc<LoadedModel>, k: usize) -> (f64, usize) {
    let cfg = EngineConfig {
        kv_cache_bytes: 1 << 30,
        ..Default::default()
    };
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
        core.add(Submission {
            req: GenerateRequest::new(ids, 1, params.clone()),
            tx,
            cancelled,
        });
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

fn main() {
    let path = default_model_path().expect("default model (run scripts/fetch-model)");
    let m = Arc::new(load_model(&path).expect("load"));
    run(&m, 2); // warm-up
    println!("| concurrent seqs | generated tokens | wall s | steps | tokens/s | speed-up vs 1 |");
    println!("|---|---|---|---|---|---|");
    let mut base = 0.0;
    for k in [1usize, 8, 32, 64] {
        let (dt, steps) = run(&m, k);
        let toks = k * OUT_TOKENS as usize;
        let tps = toks as f64 / dt;
        if k == 1 {
            base = tps;
        }
        println!(
            "| {k} | {toks} | {dt:.2} | {steps} | {tps:.1} | {:.2}x |",
            tps / base
        );
    }
}
