//! What a sync tells the world: the CredstashSync's status and its events.
//! Pure: built from a [`SyncOutcome`], never from secret values.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::crd::{
    cap_plan, condition_type, event_reason, reason, set_condition, to_time, ConditionStatus,
    CredstashSyncStatus,
};
use crate::mapping::SecretRef;
use crate::sync::{SyncOutcome, SyncResult};

/// At most this many names are listed in one event or condition message.
const MAX_LISTED: usize = 10;
/// events.k8s.io/v1 refuses an Event whose note is longer than this many
/// bytes (kube-apiserver's `NoteLengthLimit`).
pub const NOTE_LIMIT: usize = 1024;
/// A listed item longer than this many bytes (a long AWS error) is cut, so
/// that a note shows several items rather than one.
const MAX_ITEM_BYTES: usize = 240;
/// Between the items of [`listed`].
const SEPARATOR: &str = ", ";
/// Ends an item or a note that was cut.
const ELLIPSIS: &str = "…";
/// Room [`fit_note`] keeps for its ending (`… and 12345 more`).
const FIT_RESERVE: usize = 32;

/// The status after a full sync, merged over `previous` (conditions keep
/// their transition times; the stream state is kept).
pub fn status_after_sync(
    previous: &CredstashSyncStatus,
    outcome: &SyncOutcome,
    generation: Option<i64>,
    resync_handled: Option<&str>,
    now: DateTime<Utc>,
) -> CredstashSyncStatus {
    let mut status = previous.clone();
    status.observed_generation = generation;
    status.last_sync_time = Some(to_time(now));
    if outcome.result() == SyncResult::Success {
        status.last_successful_sync_time = Some(to_time(now));
    }
    if let Some(handled) = resync_handled {
        status.last_resync_request = Some(handled.to_owned());
    }
    if outcome.table_error.is_none() && outcome.cluster_error.is_none() {
        status.secrets = Some(outcome.secrets.clone());
        status.keys = Some(outcome.keys.clone());
    }
    status.plan = outcome.dry_run.then(|| cap_plan(outcome.plan.clone()));
    let (ready, why, message) = sync_condition(outcome);
    for type_ in [condition_type::READY, condition_type::SYNCED] {
        set_condition(
            &mut status.conditions,
            type_,
            ready,
            why,
            &message,
            generation,
            now,
        );
    }
    set_dry_run_condition(&mut status, outcome.dry_run, generation, now);
    status
}

/// The status of a CredstashSync whose spec does not validate.
pub fn status_invalid_spec(
    previous: &CredstashSyncStatus,
    problem: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> CredstashSyncStatus {
    let mut status = previous.clone();
    status.observed_generation = generation;
    let message = format!("{problem}; nothing is synced until the spec is fixed");
    set_condition(
        &mut status.conditions,
        condition_type::READY,
        ConditionStatus::False,
        reason::INVALID_SPEC,
        &message,
        generation,
        now,
    );
    status
}

/// The status after a sync that ran past `syncTimeout` and was cancelled.
pub fn status_timed_out(
    previous: &CredstashSyncStatus,
    timeout: Duration,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> CredstashSyncStatus {
    let mut status = previous.clone();
    status.last_sync_time = Some(to_time(now));
    let message = format!(
        "the sync did not finish within syncTimeout ({}s) and was cancelled; it is retried with backoff. Check AWS throttling and network reachability of DynamoDB and KMS",
        timeout.as_secs()
    );
    for type_ in [condition_type::READY, condition_type::SYNCED] {
        set_condition(
            &mut status.conditions,
            type_,
            ConditionStatus::False,
            reason::SYNC_TIMEOUT,
            &message,
            generation,
            now,
        );
    }
    status
}

fn set_dry_run_condition(
    status: &mut CredstashSyncStatus,
    dry_run: bool,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let (state, why, message) = if dry_run {
        (ConditionStatus::True, reason::DRY_RUN, "dry run: nothing is written; the plan is in status.plan. Set spec.dryRun: false to write Secrets")
    } else {
        (
            ConditionStatus::False,
            reason::DRY_RUN_DISABLED,
            "Secrets are written",
        )
    };
    set_condition(
        &mut status.conditions,
        condition_type::DRY_RUN,
        state,
        why,
        message,
        generation,
        now,
    );
}

fn sync_condition(outcome: &SyncOutcome) -> (ConditionStatus, &'static str, String) {
    match outcome.result() {
        SyncResult::Success => (ConditionStatus::True, reason::SYNCED, outcome.summary()),
        SyncResult::Failure if outcome.table_error.is_none() => (
            ConditionStatus::False,
            reason::SYNC_FAILED,
            format!(
                "{}; nothing was written. Check that the API server is reachable and the operator's RBAC allows reading Secrets",
                outcome.cluster_error.as_deref().unwrap_or("the cluster could not be read")
            ),
        ),
        SyncResult::Failure => (
            ConditionStatus::False,
            reason::SYNC_FAILED,
            format!(
                "{}; no Secret was changed from this read. Check the table name and region, and the operator's IAM permissions",
                outcome.table_error.as_deref().unwrap_or("the table could not be read")
            ),
        ),
        _ => (ConditionStatus::False, partial_failure_reason(outcome), partial_failure_message(outcome)),
    }
}

/// `TypeMismatch` or `InvalidSecret` when that is the only trouble of a
/// partly failed sync, else `PartialFailure`.
fn partial_failure_reason(outcome: &SyncOutcome) -> &'static str {
    let others = !outcome.key_failures.is_empty()
        || !outcome.conflicts.is_empty()
        || !outcome.write_failures.is_empty();
    match (
        others,
        outcome.invalid_secrets.is_empty(),
        outcome.type_mismatches.is_empty(),
    ) {
        (false, true, false) => reason::TYPE_MISMATCH,
        (false, false, true) => reason::INVALID_SECRET,
        _ => reason::PARTIAL_FAILURE,
    }
}

fn partial_failure_message(outcome: &SyncOutcome) -> String {
    let mut parts = vec![outcome.summary()];
    if !outcome.key_failures.is_empty() {
        parts.push(format!(
            "failed keys keep their last good value: {}",
            listed(&outcome.key_failures)
        ));
    }
    if !outcome.conflicts.is_empty() {
        parts.push(format!(
            "conflicts (not written): {}",
            listed(&outcome.conflicts)
        ));
    }
    if !outcome.write_failures.is_empty() {
        parts.push(format!(
            "write failures: {}",
            listed(&outcome.write_failures)
        ));
    }
    if !outcome.invalid_secrets.is_empty() {
        parts.push(format!(
            "invalid for their type (not written): {}",
            listed(&outcome.invalid_secrets)
        ));
    }
    if !outcome.type_mismatches.is_empty() {
        parts.push(format!(
            "type mismatches (left alone): {}",
            listed(&outcome.type_mismatches)
        ));
    }
    parts.join(". ")
}

/// Joins at most [`MAX_LISTED`] items, then says how many more there are.
pub fn listed(items: &[String]) -> String {
    let mut text = items
        .iter()
        .take(MAX_LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join(SEPARATOR);
    if items.len() > MAX_LISTED {
        text.push_str(&more(items.len() - MAX_LISTED));
    }
    text
}

fn more(count: usize) -> String {
    format!(" and {count} more")
}

/// `prefix` then as many of `items` (at most [`MAX_LISTED`], each cut to
/// [`MAX_ITEM_BYTES`]) as fit in [`NOTE_LIMIT`] bytes, then how many more
/// there are: an event note the API accepts, with an exact count.
fn note_listing(prefix: &str, items: &[String]) -> String {
    let mut text = prefix.to_owned();
    let mut shown = 0;
    for item in items.iter().take(MAX_LISTED) {
        let item = cut_item(item);
        let separator = if shown == 0 { "" } else { SEPARATOR };
        let left = items.len() - shown - 1;
        let reserve = if left > 0 { more(left).len() } else { 0 };
        if text.len() + separator.len() + item.len() + reserve > NOTE_LIMIT {
            break;
        }
        text.push_str(separator);
        text.push_str(item.as_ref());
        shown += 1;
    }
    if shown < items.len() {
        text.push_str(&more(items.len() - shown));
    }
    fit_note(&text)
}

fn cut_item(item: &str) -> std::borrow::Cow<'_, str> {
    if item.len() <= MAX_ITEM_BYTES {
        return item.into();
    }
    let end = char_boundary_at_most(item, MAX_ITEM_BYTES - ELLIPSIS.len());
    format!("{}{ELLIPSIS}", &item[..end]).into()
}

/// `note` cut to at most [`NOTE_LIMIT`] bytes, as events.k8s.io/v1 requires
/// (longer notes make the API refuse the whole event). A note within the
/// limit is returned unchanged. A longer one is cut on a character boundary,
/// at the last list separator (`, ` as [`listed`] joins) when there is one
/// in the second half of the limit, and says how many items were left out
/// (`… and 7 more`, adding a count [`listed`] already gave). The count is of
/// separators: an item whose own text holds `, ` counts as several. Without
/// a separator to cut at, it says how many bytes were cut.
pub fn fit_note(note: &str) -> String {
    if note.len() <= NOTE_LIMIT {
        return note.to_owned();
    }
    let (body, already_left_out) = split_more(note);
    let head = char_boundary_at_most(body, NOTE_LIMIT - FIT_RESERVE);
    match body[..head].rfind(SEPARATOR) {
        Some(at) if at >= NOTE_LIMIT / 2 => {
            let dropped = body[at + SEPARATOR.len()..].matches(SEPARATOR).count() + 1;
            format!(
                "{}{ELLIPSIS}{}",
                &body[..at],
                more(dropped + already_left_out)
            )
        }
        _ => format!(
            "{}{ELLIPSIS} ({} more bytes)",
            &body[..head],
            note.len() - head
        ),
    }
}

/// The largest character boundary of `text` at or before byte `index`
/// (`str::floor_char_boundary`, newer than the crate's MSRV).
fn char_boundary_at_most(text: &str, index: usize) -> usize {
    (0..=index.min(text.len()))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

/// Splits a trailing ` and N more` (as [`listed`] writes it) off `note`.
fn split_more(note: &str) -> (&str, usize) {
    note.rsplit_once(" and ")
        .and_then(|(body, tail)| {
            let count = tail.strip_suffix(" more")?.parse().ok()?;
            Some((body, count))
        })
        .unwrap_or((note, 0))
}

/// Severity of a [`Notice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Normal,
    Warning,
}

/// A Kubernetes Event to publish on the CredstashSync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub severity: Severity,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

impl Notice {
    /// A `Normal` event.
    pub fn normal(reason: &'static str, action: &'static str, note: String) -> Self {
        Self {
            severity: Severity::Normal,
            reason,
            action,
            note,
        }
    }

    /// A `Warning` event.
    pub fn warning(reason: &'static str, action: &'static str, note: String) -> Self {
        Self {
            severity: Severity::Warning,
            reason,
            action,
            note,
        }
    }
}

/// The events of a finished full sync: creates, updates, failures,
/// conflicts, and the plan in dry run.
pub fn sync_notices(outcome: &SyncOutcome) -> Vec<Notice> {
    let mut notices = Vec::new();
    if let Some(error) = &outcome.table_error {
        notices.push(Notice::warning(
            event_reason::SYNC_FAILED,
            "ReadTable",
            fit_note(error),
        ));
        return notices;
    }
    if let Some(error) = &outcome.cluster_error {
        notices.push(Notice::warning(
            event_reason::SYNC_FAILED,
            "ReadSecrets",
            error.clone(),
        ));
        return notices;
    }
    if outcome.dry_run {
        let note = fit_note(&format!("dry run, nothing written: {}", outcome.summary()));
        notices.push(Notice::normal(event_reason::DRY_RUN_PLAN, "Plan", note));
    } else {
        if !outcome.created.is_empty() {
            notices.push(Notice::normal(
                event_reason::CREATED,
                "Sync",
                note_listing("created Secrets ", &outcome.created),
            ));
        }
        if !outcome.updated.is_empty() {
            notices.push(Notice::normal(
                event_reason::UPDATED,
                "Sync",
                note_listing("updated Secrets ", &outcome.updated),
            ));
        }
    }
    if !outcome.key_failures.is_empty() {
        let note = note_listing("keys keep their last good value: ", &outcome.key_failures);
        notices.push(Notice::warning(event_reason::DECRYPT_FAILED, "Sync", note));
    }
    if !outcome.conflicts.is_empty() {
        notices.push(Notice::warning(
            event_reason::KEY_CONFLICT,
            "Sync",
            note_listing("not written: ", &outcome.conflicts),
        ));
    }
    if !outcome.write_failures.is_empty() {
        notices.push(Notice::warning(
            event_reason::UPDATE_FAILED,
            "Sync",
            note_listing("", &outcome.write_failures),
        ));
    }
    if !outcome.skipped.is_empty() {
        notices.push(Notice::warning(
            event_reason::SECRET_SKIPPED,
            "Sync",
            note_listing("", &outcome.skipped),
        ));
    }
    if !outcome.invalid_names.is_empty() {
        notices.push(Notice::warning(
            event_reason::INVALID_NAME,
            "Sync",
            note_listing("", &outcome.invalid_names),
        ));
    }
    if !outcome.invalid_secrets.is_empty() {
        notices.push(Notice::warning(
            reason::INVALID_SECRET,
            "Sync",
            note_listing("not written: ", &outcome.invalid_secrets),
        ));
    }
    if !outcome.type_mismatches.is_empty() {
        notices.push(Notice::warning(
            reason::TYPE_MISMATCH,
            "Sync",
            note_listing("left alone: ", &outcome.type_mismatches),
        ));
    }
    notices
}

/// The event for a managed Secret put back after somebody else changed or
/// deleted keys the operator owns (key names only).
pub fn repaired_notice(secret: &SecretRef, keys: &[String]) -> Notice {
    let changed = format!("Secret {secret} was changed outside kubestash: put back");
    let note = if keys.is_empty() {
        format!("{changed} its labels and annotations")
    } else {
        note_listing(&format!("{changed} keys "), keys)
    };
    Notice::normal(event_reason::REPAIRED, "Repair", note)
}

/// The event for a manual resync deferred by `minResyncInterval`.
pub fn deferred_notice(until: DateTime<Utc>) -> Notice {
    Notice::normal(
        reason::RESYNC_DEFERRED,
        "Resync",
        format!(
            "manual resync requested sooner than minResyncInterval; it will run at {}",
            until.to_rfc3339()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{find_condition, KeyCounts, SecretCounts};
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap()
    }

    fn clean() -> SyncOutcome {
        SyncOutcome {
            secrets: SecretCounts {
                created: 1,
                updated: 1,
                unchanged: 3,
                skipped: 0,
                managed: 5,
            },
            keys: KeyCounts {
                total: 12,
                ..Default::default()
            },
            created: vec!["a/one".into()],
            updated: vec!["b/two".into()],
            ..Default::default()
        }
    }

    #[test]
    fn a_clean_sync_is_ready_and_counts_as_successful() {
        let status = status_after_sync(&Default::default(), &clean(), Some(4), Some("123"), now());
        let ready = find_condition(&status.conditions, condition_type::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", reason::SYNCED)
        );
        assert!(
            ready.message.contains("12 keys in 5 Secrets"),
            "{}",
            ready.message
        );
        assert_eq!(status.observed_generation, Some(4));
        assert_eq!(status.last_resync_request.as_deref(), Some("123"));
        assert!(status.last_successful_sync_time.is_some());
        assert_eq!(status.plan, None);
        let dry = find_condition(&status.conditions, condition_type::DRY_RUN).unwrap();
        assert_eq!(dry.status, "False");
    }

    #[test]
    fn failed_keys_make_a_partial_failure_that_names_them() {
        let outcome = SyncOutcome {
            key_failures: vec!["ns/s/K: integrity check failed".into()],
            ..clean()
        };
        assert_eq!(outcome.result(), SyncResult::PartialFailure);
        let status = status_after_sync(&Default::default(), &outcome, Some(1), None, now());
        let ready = find_condition(&status.conditions, condition_type::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reason::PARTIAL_FAILURE)
        );
        assert!(ready.message.contains("ns/s/K: integrity check failed"));
        assert!(status.last_successful_sync_time.is_none());
        assert!(sync_notices(&outcome)
            .iter()
            .any(|n| n.reason == "DecryptFailed" && n.severity == Severity::Warning));
    }

    #[test]
    fn typed_secret_trouble_has_its_own_reason_and_events() {
        let mismatch = "web/site-tls: type mismatch: the Secret is Opaque, secretTemplates want kubernetes.io/tls";
        let invalid = "web/half-tls: invalid kubernetes.io/tls Secret: tls.key missing";
        let ready_of = |outcome: &SyncOutcome| {
            let status = status_after_sync(&Default::default(), outcome, Some(1), None, now());
            find_condition(&status.conditions, condition_type::READY)
                .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
                .unwrap()
        };
        let only_mismatch = SyncOutcome {
            type_mismatches: vec![mismatch.into()],
            ..clean()
        };
        let (status, why, message) = ready_of(&only_mismatch);
        assert_eq!(
            (status.as_str(), why.as_str()),
            ("False", reason::TYPE_MISMATCH)
        );
        assert!(
            message.contains(&format!("type mismatches (left alone): {mismatch}")),
            "{message}"
        );
        let only_invalid = SyncOutcome {
            invalid_secrets: vec![invalid.into()],
            ..clean()
        };
        let (_, why, message) = ready_of(&only_invalid);
        assert_eq!(why, reason::INVALID_SECRET);
        assert!(
            message.contains(&format!("invalid for their type (not written): {invalid}")),
            "{message}"
        );
        let both = SyncOutcome {
            type_mismatches: vec![mismatch.into()],
            invalid_secrets: vec![invalid.into()],
            ..clean()
        };
        assert_eq!(ready_of(&both).1, reason::PARTIAL_FAILURE);
        let notices = sync_notices(&both);
        let warning = |why: &str| {
            notices
                .iter()
                .find(|n| n.reason == why && n.severity == Severity::Warning)
                .map(|n| n.note.clone())
        };
        assert_eq!(
            warning(reason::TYPE_MISMATCH),
            Some(format!("left alone: {mismatch}"))
        );
        assert_eq!(
            warning(reason::INVALID_SECRET),
            Some(format!("not written: {invalid}"))
        );
        assert!(warning(event_reason::SECRET_SKIPPED).is_none());
    }

    #[test]
    fn an_unreadable_table_keeps_the_previous_counts() {
        let previous = status_after_sync(&Default::default(), &clean(), Some(1), None, now());
        let outcome = SyncOutcome {
            table_error: Some("scanning table \"t\" failed: throttled".into()),
            ..Default::default()
        };
        let status = status_after_sync(&previous, &outcome, Some(1), None, now());
        assert_eq!(status.secrets, previous.secrets);
        let ready = find_condition(&status.conditions, condition_type::READY).unwrap();
        assert_eq!(ready.reason, reason::SYNC_FAILED);
        assert!(ready.message.contains("throttled"));
        assert_eq!(sync_notices(&outcome).len(), 1);
    }

    #[test]
    fn dry_run_shows_the_plan_and_says_would_be() {
        let outcome = SyncOutcome {
            dry_run: true,
            plan: vec!["create a/one (keys: A)".into()],
            ..clean()
        };
        let status = status_after_sync(&Default::default(), &outcome, Some(1), None, now());
        assert_eq!(
            status.plan,
            Some(vec!["create a/one (keys: A)".to_string()])
        );
        assert!(outcome.summary().contains("would be created"));
        let notices = sync_notices(&outcome);
        assert!(
            notices.iter().all(|n| n.reason != "Created"),
            "dry run creates nothing"
        );
        let dry = find_condition(&status.conditions, condition_type::DRY_RUN).unwrap();
        assert_eq!(
            (dry.status.as_str(), dry.reason.as_str()),
            ("True", reason::DRY_RUN)
        );
    }

    #[test]
    fn long_lists_are_capped() {
        let names: Vec<String> = (0..25).map(|i| format!("ns/s{i}")).collect();
        let text = listed(&names);
        assert!(
            text.ends_with("and 15 more") && text.contains("ns/s9") && !text.contains("ns/s10")
        );
    }

    /// A decrypt failure as the table reader reports it: a long AWS error,
    /// with multi-byte characters in the name.
    fn decrypt_failure(i: usize) -> String {
        format!(
            "ns/sécrét/KEY_{i:02}: KMS Decrypt failed: InvalidCiphertextException: An error occurred (InvalidCiphertextException) when calling the Decrypt operation: the encryption context does not match the one the data key was encrypted with ⚠ request id 1f7c2a4e-9b1d-4c3e-8f6a-{i:012}"
        )
    }

    #[test]
    fn notes_within_the_limit_are_unchanged() {
        let note = format!("{}é", "a".repeat(NOTE_LIMIT - 2));
        assert_eq!(note.len(), NOTE_LIMIT);
        assert_eq!(fit_note(&note), note);
    }

    #[test]
    fn a_long_list_is_cut_at_a_separator_and_counts_what_it_left_out() {
        let items: Vec<String> = (0..100).map(|i| format!("ns/ß{i:02}/KEY")).collect();
        let note = format!("prefix: {}", items.join(SEPARATOR));
        let fitted = fit_note(&note);
        assert!(fitted.len() <= NOTE_LIMIT, "{} bytes", fitted.len());
        let shown = fitted.matches("ns/ß").count();
        assert!(
            fitted.ends_with(&format!(
                "ns/ß{:02}/KEY… and {} more",
                shown - 1,
                100 - shown
            )),
            "{fitted}"
        );
    }

    #[test]
    fn fitting_adds_the_count_listed_already_gave() {
        let items: Vec<String> = (0..25)
            .map(|i| format!("item{i:02} {}", "x".repeat(120)))
            .collect();
        let note = listed(&items);
        assert!(note.ends_with(" and 15 more") && note.len() > NOTE_LIMIT);
        let fitted = fit_note(&note);
        let shown = fitted.matches("item").count();
        assert!(fitted.len() <= NOTE_LIMIT);
        assert!(
            fitted.ends_with(&format!("… and {} more", 25 - shown)),
            "{fitted}"
        );
    }

    #[test]
    fn text_without_separators_is_cut_on_a_character_boundary() {
        let note = "€".repeat(700);
        let fitted = fit_note(&note);
        assert!(fitted.len() <= NOTE_LIMIT, "{} bytes", fitted.len());
        let kept = fitted.matches('€').count();
        assert!(kept > 300, "{kept}");
        assert!(
            fitted.ends_with(&format!("… ({} more bytes)", (700 - kept) * 3)),
            "{fitted}"
        );
    }

    #[test]
    fn many_decrypt_failures_make_a_warning_the_api_accepts_with_an_exact_count() {
        let outcome = SyncOutcome {
            key_failures: (0..12).map(decrypt_failure).collect(),
            ..clean()
        };
        let notices = sync_notices(&outcome);
        let warning = notices
            .iter()
            .find(|n| n.reason == "DecryptFailed")
            .expect("a DecryptFailed warning");
        let note = &warning.note;
        assert!(note.len() <= NOTE_LIMIT, "{} bytes: {note}", note.len());
        assert_eq!(fit_note(note), *note, "builders' notes need no cutting");
        let shown = note.matches("ns/sécrét/KEY_").count();
        assert!(shown >= 3, "{note}");
        assert!(
            note.contains("ns/sécrét/KEY_00: KMS Decrypt failed"),
            "{note}"
        );
        assert!(
            note.ends_with(&format!(" and {} more", 12 - shown)),
            "{note}"
        );
    }

    #[test]
    fn every_notice_of_a_large_outcome_fits() {
        let long = |prefix: &str| -> Vec<String> {
            (0..30)
                .map(|i| format!("{prefix}-{i}: {}", "ü".repeat(150)))
                .collect()
        };
        let outcome = SyncOutcome {
            created: long("created"),
            updated: long("updated"),
            key_failures: long("failed"),
            conflicts: long("conflict"),
            write_failures: long("write"),
            skipped: long("skipped"),
            invalid_names: long("invalid"),
            ..clean()
        };
        let notices = sync_notices(&outcome);
        assert_eq!(notices.len(), 7);
        for notice in notices {
            assert!(
                notice.note.len() <= NOTE_LIMIT,
                "{}: {}",
                notice.reason,
                notice.note.len()
            );
            assert!(notice.note.ends_with(" more"), "{}", notice.note);
        }
        let keys: Vec<String> = (0..12)
            .map(|i| format!("K{i}_{}", "Ä".repeat(120)))
            .collect();
        let repaired = repaired_notice(&SecretRef::new("ns", "app"), &keys);
        assert!(repaired.note.len() <= NOTE_LIMIT, "{}", repaired.note.len());
        assert!(
            repaired
                .note
                .starts_with("Secret ns/app was changed outside kubestash: put back keys K0_"),
            "{}",
            repaired.note
        );
        let failed = SyncOutcome {
            table_error: Some("ü".repeat(2000)),
            ..Default::default()
        };
        assert!(sync_notices(&failed)[0].note.len() <= NOTE_LIMIT);
    }

    #[test]
    fn invalid_spec_and_timeout_say_what_to_do() {
        let status = status_invalid_spec(
            &Default::default(),
            "spec.waitTime: invalid duration",
            Some(2),
            now(),
        );
        let ready = find_condition(&status.conditions, condition_type::READY).unwrap();
        assert_eq!(ready.reason, reason::INVALID_SPEC);
        assert!(ready.message.contains("spec.waitTime"));
        let status = status_timed_out(
            &Default::default(),
            Duration::from_secs(300),
            Some(2),
            now(),
        );
        let synced = find_condition(&status.conditions, condition_type::SYNCED).unwrap();
        assert_eq!(synced.reason, reason::SYNC_TIMEOUT);
        assert!(synced.message.contains("300s"));
    }
}
