//! Reads a credstash table twice in one process and prints, as JSON, the wall
//! time and the DynamoDB and KMS calls of each read. Used by
//! `scripts/bench-read.py` to show that a warm read costs no KMS call.
//!
//! `cargo run --release --example read_twice -- TABLE`

use std::time::Instant;

use kubestash::credstash::{self, ReaderOptions, TableLocation};

#[tokio::main]
async fn main() {
    let Some(table) = std::env::args().nth(1) else {
        eprintln!("usage: read_twice TABLE");
        std::process::exit(2);
    };
    let location = TableLocation {
        table,
        ..Default::default()
    };
    let reader = credstash::connect(&location, ReaderOptions::default()).await;
    let mut reads = Vec::new();
    let mut before = reader.stats();
    for _ in 0..2 {
        let started = Instant::now();
        let read = reader.read_all().await;
        let seconds = started.elapsed().as_secs_f64();
        let after = reader.stats();
        reads.push(serde_json::json!({
            "seconds": seconds,
            "complete": read.complete,
            "values": read.values().count(),
            "failures": read.failures().count(),
            "dynamodb_calls": after.dynamodb_calls - before.dynamodb_calls,
            "kms_decrypt_calls": after.kms_decrypt_calls - before.kms_decrypt_calls,
            "kms_cache_hits": after.kms_cache_hits - before.kms_cache_hits,
        }));
        before = after;
    }
    println!("{}", serde_json::Value::Array(reads));
}
