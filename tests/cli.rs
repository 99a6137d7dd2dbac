//! The `kubestash` binary's offline subcommands.

use std::process::Command;

fn kubestash(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kubestash"))
        .args(args)
        .output()
        .expect("run kubestash")
}

#[test]
fn crd_subcommand_prints_the_checked_in_crd() {
    let output = kubestash(&["crd"]);
    assert!(output.status.success());
    let on_disk = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/credstashsync.yaml"
    ))
    .unwrap();
    assert!(output.stdout == on_disk, "crds/credstashsync.yaml differs from `kubestash crd`: run `cargo run -- crd > crds/credstashsync.yaml`");
}

#[test]
fn a_malformed_encryption_context_is_a_usage_error() {
    let output = kubestash(&["getall", "--encryption-context", "novalue"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("expected KEY=VALUE"));
}
