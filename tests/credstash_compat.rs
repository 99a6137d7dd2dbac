//! kubestash reads exactly what the real credstash CLI reads, from a table
//! written by credstash itself (and by the legacy writers it must still open),
//! and isolates the items it cannot open.

mod support;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use support::{run_all_ok, run_ok, Moto};

const TABLE: &str = "credential-store";
const CONTEXT_TABLE: &str = "context-store";
const DIGESTS: [&str; 6] = ["SHA", "SHA224", "SHA256", "SHA384", "SHA512", "MD5"];

/// A moto server holding both tables, and what credstash's own `getall`
/// printed for the good items (captured before the bad ones were added).
struct Seeded {
    moto: Moto,
    credstash_getall: BTreeMap<String, String>,
    credstash_getall_context: BTreeMap<String, String>,
    _files: tempfile::TempDir,
}

fn seeded() -> &'static Seeded {
    static SEEDED: OnceLock<Seeded> = OnceLock::new();
    SEEDED.get_or_init(seed)
}

fn seed() -> Seeded {
    let moto = Moto::start();
    moto.fixture(&["init", TABLE, CONTEXT_TABLE]);
    let files = tempfile::tempdir().unwrap();
    let big = "0123456789abcdef".repeat(200 * 1024 / 16);
    let big_file = support::temp_file(files.path(), "big", big.as_bytes());
    let big_arg = format!("@{}", big_file.display());
    let one_kib = "k".repeat(1024);

    let mut puts: Vec<_> = DIGESTS
        .iter()
        .map(|d| {
            moto.credstash(&[
                "-t",
                TABLE,
                "put",
                "-d",
                d,
                &format!("test/digests/{d}"),
                &format!("sealed with {d}"),
            ])
        })
        .collect();
    for (name, value) in [
        ("test/unicode/KEY", "pässwörd ✓ 🔑 ключ"),
        ("test/empty/KEY", ""),
        ("test/one-kib/KEY", one_kib.as_str()),
        ("test/big/KEY", big_arg.as_str()),
        (
            "other-app-name",
            "not a kubestash name, still a credstash secret",
        ),
    ] {
        puts.push(moto.credstash(&["-t", TABLE, "put", name, value]));
    }
    puts.push(moto.credstash(&[
        "-t",
        CONTEXT_TABLE,
        "put",
        "test/context/KEY",
        "sealed with a context",
        "app=kubestash",
        "env=test",
    ]));
    run_all_ok(puts);
    for version in 1..=12 {
        run_ok(&mut moto.credstash(&[
            "-t",
            TABLE,
            "put",
            "-a",
            "test/versions/KEY",
            &format!("value {version}"),
        ]));
    }
    moto.fixture(&["legacy", TABLE]);

    let credstash_getall =
        json_map(&run_ok(&mut moto.credstash(&["-t", TABLE, "getall", "-f", "json"])).stdout);
    let credstash_getall_context = json_map(
        &run_ok(&mut moto.credstash(&[
            "-t",
            CONTEXT_TABLE,
            "getall",
            "-f",
            "json",
            "app=kubestash",
            "env=test",
        ]))
        .stdout,
    );
    moto.fixture(&["bad", TABLE]);
    Seeded {
        moto,
        credstash_getall,
        credstash_getall_context,
        _files: files,
    }
}

fn json_map(bytes: &[u8]) -> BTreeMap<String, String> {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "not a JSON object of strings ({e}): {}",
            String::from_utf8_lossy(bytes)
        )
    })
}

#[test]
fn getall_prints_exactly_what_credstash_prints_and_reports_each_bad_item() {
    let seeded = seeded();
    let output = seeded
        .moto
        .kubestash(&["getall", "--table", TABLE])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(json_map(&output.stdout), seeded.credstash_getall);

    assert!(
        stderr.contains("bad/tampered/KEY") && stderr.contains("integrity check failed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad/context/KEY") && stderr.contains("invalid ciphertext"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 2, "one line per bad item: {stderr}");
    assert!(
        !stderr.contains("tampered secret value") && !stderr.contains("wrong context secret value")
    );
}

#[test]
fn the_table_holds_every_case_credstash_must_open() {
    // Guards the fixture itself: the comparison above is only as strong as this.
    let expected = &seeded().credstash_getall;
    for digest in DIGESTS {
        assert_eq!(
            expected[&format!("test/digests/{digest}")],
            format!("sealed with {digest}")
        );
    }
    assert_eq!(expected["test/unicode/KEY"], "pässwörd ✓ 🔑 ключ");
    assert_eq!(expected["test/empty/KEY"], "");
    assert_eq!(expected["test/one-kib/KEY"].len(), 1024);
    assert_eq!(expected["test/big/KEY"].len(), 200 * 1024);
    assert_eq!(expected["test/versions/KEY"], "value 12");
    assert_eq!(expected["legacy/unpadded/KEY"], "unpadded 4 wins");
    for name in [
        "legacy/hmac-string/KEY",
        "legacy/no-digest/KEY",
        "legacy/wrapped-base64/KEY",
    ] {
        assert!(expected.contains_key(name), "{name}");
    }
}

#[test]
fn getall_with_an_encryption_context_matches_credstash() {
    let seeded = seeded();
    let args = [
        "getall",
        "--table",
        CONTEXT_TABLE,
        "--encryption-context",
        "app=kubestash",
        "--encryption-context",
        "env=test",
    ];
    let output = run_ok(&mut seeded.moto.kubestash(&args));
    assert_eq!(json_map(&output.stdout), seeded.credstash_getall_context);
    assert_eq!(
        seeded.credstash_getall_context["test/context/KEY"],
        "sealed with a context"
    );
}

#[test]
fn getall_without_the_context_reports_the_item_and_exits_2() {
    let seeded = seeded();
    let output = seeded
        .moto
        .kubestash(&["getall", "--table", CONTEXT_TABLE])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(json_map(&output.stdout), BTreeMap::new());
    assert!(String::from_utf8_lossy(&output.stderr).contains("test/context/KEY"));
}

#[test]
fn get_prints_the_latest_or_a_given_version() {
    let seeded = seeded();
    let latest =
        run_ok(
            &mut seeded
                .moto
                .kubestash(&["get", "test/versions/KEY", "--table", TABLE]),
        );
    assert_eq!(latest.stdout, b"value 12\n");
    let third = run_ok(&mut seeded.moto.kubestash(&[
        "get",
        "-n",
        "test/versions/KEY",
        "--table",
        TABLE,
        "--version",
        "3",
    ]));
    assert_eq!(third.stdout, b"value 3");
    let unicode =
        run_ok(
            &mut seeded
                .moto
                .kubestash(&["get", "-n", "test/unicode/KEY", "--table", TABLE]),
        );
    assert_eq!(
        String::from_utf8(unicode.stdout).unwrap(),
        "pässwörd ✓ 🔑 ключ"
    );
}

#[test]
fn get_of_a_missing_name_exits_1_and_a_bad_item_exits_2() {
    let seeded = seeded();
    let missing = seeded
        .moto
        .kubestash(&["get", "no/such/NAME", "--table", TABLE])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
    let tampered = seeded
        .moto
        .kubestash(&["get", "bad/tampered/KEY", "--table", TABLE])
        .output()
        .unwrap();
    assert_eq!(tampered.status.code(), Some(2));
    assert!(tampered.stdout.is_empty());
}

#[test]
fn list_shows_each_name_once_with_its_latest_version() {
    let seeded = seeded();
    let output = run_ok(&mut seeded.moto.kubestash(&["list", "--table", TABLE]));
    let text = String::from_utf8(output.stdout).unwrap();
    let listed: Vec<(&str, &str)> = text
        .lines()
        .map(|line| {
            line.split_once(" -- version ")
                .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        })
        .map(|(name, version)| (name.trim_end(), version))
        .collect();
    let version_of = |wanted: &str| {
        listed
            .iter()
            .filter(|(name, _)| *name == wanted)
            .map(|(_, v)| *v)
            .collect::<Vec<_>>()
    };
    assert_eq!(version_of("test/versions/KEY"), vec!["0000000000000000012"]);
    assert_eq!(version_of("legacy/unpadded/KEY"), vec!["4"]);
    assert_eq!(
        listed.len(),
        seeded.credstash_getall.len() + 2,
        "the good items and the two bad ones: {text}"
    );
}

#[test]
fn a_missing_table_exits_1_with_the_cause() {
    let seeded = seeded();
    let output = seeded
        .moto
        .kubestash(&["getall", "--table", "no-such-table"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no-such-table") && stderr.contains("ResourceNotFound"),
        "{stderr}"
    );
}

#[test]
fn reading_an_unchanged_table_again_costs_no_kms_call() {
    let seeded = seeded();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let reader = table_reader(seeded, Default::default()).await;
        let first = reader.read_all().await;
        assert!(first.complete);
        let after_first = reader.stats();
        assert!(after_first.kms_decrypt_calls >= seeded.credstash_getall.len() as u64);
        let second = reader.read_all().await;
        let after_second = reader.stats();
        assert_eq!(
            after_second.kms_decrypt_calls - after_first.kms_decrypt_calls,
            failed_count(&second)
        );
        assert_eq!(second.values().count(), seeded.credstash_getall.len());
    });
}

/// A Scan split into pages of a few items (a name's 12 versions straddle
/// page boundaries), in one or four segments: the same values as credstash
/// and one Decrypt per name, as with whole pages.
#[test]
fn small_scan_pages_read_the_same_latest_values_with_one_decrypt_per_name() {
    let seeded = seeded();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let whole_pages = table_reader(seeded, Default::default()).await;
        let expected = whole_pages.read_all().await;
        let decrypts = whole_pages.stats().kms_decrypt_calls;
        for (segments, items, in_flight) in [(1, 1, 1), (1, 2, 1), (1, 5, 1), (4, 3, 1), (4, 7, 4)]
        {
            let options = kubestash::credstash::ReaderOptions {
                scan_segments: segments,
                scan_page_items: Some(items),
                scan_pages_in_flight: in_flight,
                ..Default::default()
            };
            let reader = table_reader(seeded, options).await;
            let read = reader.read_all().await;
            let case = format!("{segments} segments, {items} items a page, {in_flight} in flight");
            assert!(read.complete, "{case}");
            let values: BTreeMap<String, String> = read
                .values()
                .map(|(name, value)| {
                    (
                        name.to_owned(),
                        String::from_utf8_lossy(value.expose()).into_owned(),
                    )
                })
                .collect();
            assert_eq!(values, seeded.credstash_getall, "{case}");
            assert_eq!(
                read.failures().count(),
                expected.failures().count(),
                "{case}"
            );
            assert_eq!(reader.stats().kms_decrypt_calls, decrypts, "{case}");
        }
    });
}

/// A reader of the seeded table on moto.
async fn table_reader(
    seeded: &Seeded,
    options: kubestash::credstash::ReaderOptions,
) -> kubestash::credstash::TableReader {
    let location = kubestash::credstash::TableLocation {
        table: TABLE.into(),
        ..Default::default()
    };
    let config = seeded.moto.sdk_config().await;
    kubestash::credstash::connect_with(&config, &location, options)
}

/// Items whose KMS Decrypt fails are never cached, so they cost a call each read.
fn failed_count(read: &kubestash::credstash::TableRead) -> u64 {
    read.failures()
        .filter(|(_, e)| matches!(e, kubestash::credstash::ItemError::Kms(_)))
        .count() as u64
}
