//! `crds/credstashsync.yaml` must be exactly what `kubestash crd` prints.

use std::path::Path;

const REGENERATE: &str = "cargo run -- crd > crds/credstashsync.yaml";

#[test]
fn crd_file_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/credstashsync.yaml");
    let generated = kubestash::crd::crd_yaml().expect("the CRD serializes to YAML");
    if std::env::var_os("KUBESTASH_UPDATE_CRD").is_some() {
        std::fs::write(&path, &generated).expect("write crds/credstashsync.yaml");
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; generate it with `{REGENERATE}`",
            path.display()
        )
    });
    assert!(
        on_disk == generated,
        "crds/credstashsync.yaml is stale: the CredstashSync types changed.\n\
         Regenerate it with `{REGENERATE}` (or KUBESTASH_UPDATE_CRD=1 cargo test --test crd_up_to_date) \
         and commit the result.\nFirst difference at line {}.",
        first_difference(&on_disk, &generated)
    );
}

/// 1-based line number of the first differing line.
fn first_difference(a: &str, b: &str) -> usize {
    a.lines()
        .zip(b.lines())
        .position(|(x, y)| x != y)
        .unwrap_or_else(|| a.lines().count().min(b.lines().count()))
        + 1
}
