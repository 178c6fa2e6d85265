use super::*;
use crate::engine::ActBits;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeConfig,
}

fn parse(args: &[&str]) -> ServeConfig {
    let mut v = vec!["ponder"];
    v.extend_from_slice(args);
    Cli::try_parse_from(v).unwrap().serve
}

#[test]
fn byte_sizes() {
    let ok = [
        ("1048576", 1 << 20),
        ("1GiB", 1 << 30),
        ("512MiB", 512 << 20),
        ("512mib", 512 << 20),
        ("2GB", 2_000_000_000),
        ("1.5GiB", 3 << 29),
        ("64k", 64 << 10),
        ("10 B", 10),
    ];
    for (s, want) in ok {
        assert_eq!(s.parse::<ByteSize>(), Ok(ByteSize(want)), "{s}");
    }
    assert_eq!(
        "12XB".parse::<ByteSize>(),
        Err("invalid size `12XB` (examples: 1048576, 512MiB, 1GiB, 2GB)".to_string())
    );
    assert!("GiB".parse::<ByteSize>().is_err());
}

#[test]
fn durations() {
    assert_eq!(
        "30".parse::<Seconds>(),
        Ok(Seconds(Duration::from_secs(30)))
    );
    assert_eq!(
        "30s".parse::<Seconds>(),
        Ok(Seconds(Duration::from_secs(30)))
    );
    assert_eq!(
        "500ms".parse::<Seconds>(),
        Ok(Seconds(Duration::from_millis(500)))
    );
    assert_eq!(
        "2m".parse::<Seconds>(),
        Ok(Seconds(Duration::from_secs(120)))
    );
    assert!("2h".parse::<Seconds>().is_err());
}

#[test]
fn defaults_are_valid() {
    let c = parse(&[]);
    assert_eq!(c.host, "127.0.0.1");
    assert_eq!(c.port, 8000);
    assert_eq!(c.device, Device::Auto);
    assert_eq!(c.max_body_bytes, ByteSize(4 << 20));
    assert_eq!(c.kv_cache_memory, ByteSize(512 << 20));
    assert_eq!(c.block_size, 16);
    assert_eq!(c.shutdown_timeout, Seconds(Duration::from_secs(30)));
    assert_eq!(c.validate(), Ok(()));
    assert_eq!(
        c.http_limits(),
        HttpLimits {
            max_body_bytes: 4 << 20,
            max_tokens_limit: 4096,
            max_n: 16
        }
    );
}

#[test]
fn flags_parse_and_validate_with_messages() {
    let c = parse(&[
        "--kv-cache-memory",
        "1GiB",
        "--device",
        "cpu",
        "--port",
        "9000",
    ]);
    assert_eq!(c.kv_cache_memory, ByteSize(1 << 30));
    let e = c.engine_config().unwrap();
    assert_eq!(e.kv_cache_bytes, 1 << 30);
    assert_eq!(
        (
            e.block_size,
            e.sched.max_num_seqs,
            e.sched.max_num_batched_tokens
        ),
        (16, 64, 512)
    );
    // The 429 bound lives in the engine handle; the scheduler must never refuse.
    assert_eq!(e.sched.max_waiting, usize::MAX / 2);
    assert_eq!(c.max_waiting, 256);
    assert_eq!(parse(&["--max-num-seqs", "4"]).http_limits().max_n, 4);
    assert_eq!(c.device, Device::Cpu);
    assert_eq!(c.port, 9000);
    let cases: [(&[&str], &str); 4] = [
        (
            &["--block-size", "24"],
            "`--block-size` must be a power of two in [1, 256], given 24",
        ),
        (
            &["--max-num-seqs", "0"],
            "`--max-num-seqs` must be >= 1, given 0",
        ),
        (
            &["--max-num-seqs", "8", "--max-num-batched-tokens", "4"],
            "`--max-num-batched-tokens` must be >= --max-num-seqs (8), given 4",
        ),
        (
            &["--max-body-bytes", "10"],
            "`--max-body-bytes` must be in [1KiB, 1GiB], given 10 bytes",
        ),
    ];
    for (args, msg) in cases {
        assert_eq!(parse(args).validate().unwrap_err().to_string(), msg);
    }
    let mut v = vec!["ponder", "--device", "tpu"];
    assert!(Cli::try_parse_from(&v).is_err());
    v.truncate(1);
    v.extend(["--kv-cache-memory", "lots"]);
    let e = Cli::try_parse_from(&v)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("invalid size `lots`"), "{e}");
}

#[test]
fn activation_bits_flag() {
    assert_eq!(
        parse(&[]).engine_config().unwrap().activation_bits,
        ActivationBits::Auto
    );
    let c = parse(&["--activation-bits", "8"]);
    assert_eq!(
        c.engine_config().unwrap().activation_bits,
        ActivationBits::Fixed(ActBits::Eight)
    );
    assert_eq!(
        parse(&["--activation-bits", "12"]).activation_bits,
        ActivationBits::Fixed(ActBits::Twelve)
    );
    assert_eq!(
        parse(&["--activation-bits", "auto"]).activation_bits,
        ActivationBits::Auto
    );
    let e = Cli::try_parse_from(["ponder", "--activation-bits", "4"])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("unsupported activation bits `4` (supported: auto, 8, 12)"),
        "{e}"
    );
}
