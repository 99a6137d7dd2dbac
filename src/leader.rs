//! Leader election on a `coordination.k8s.io/v1` Lease, with
//! kube-lease-manager doing the Lease protocol (server-side apply to take a
//! free Lease, so two candidates cannot both win; renewals; release).
//!
//! Two things are added around it:
//! - **a renew deadline**: the crate keeps a leader that cannot renew
//!   believing it leads until the Lease has expired, when another replica
//!   may already lead. [`RenewalClock`] records, in the local monotonic
//!   clock, when each successful Lease write was *sent*; the Lease is valid
//!   until at least that instant plus the lease duration, so stopping at
//!   that instant plus the (shorter) renew deadline is always in time.
//! - **fast take-over**: a waiting candidate of the crate sleeps until the
//!   holder's Lease would expire. [`campaign`] also watches the Lease and
//!   looks again as soon as the holder releases it (a graceful hand-over).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use http::Request;
use k8s_openapi::api::coordination::v1::Lease;
use kube::client::Body;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseParams};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::kube_client::{observed_client, RequestObserver};
use crate::metrics::Metrics;

/// How this replica takes part in the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity in the Lease's `holderIdentity`.
    pub identity: String,
    /// Timing, checked by [`Timing::new`].
    pub timing: Timing,
}

/// The controller-runtime timing of an election, in whole seconds (what a
/// Lease stores).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    lease_duration: Duration,
    renew_deadline: Duration,
    retry_period: Duration,
}

/// Timing that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    #[error("--leader-elect-{0} must be a whole number of seconds, at least 1s")]
    NotWholeSeconds(&'static str),
    #[error("--leader-elect-renew-deadline must be shorter than --leader-elect-lease-duration")]
    RenewDeadlineTooLong,
    #[error("--leader-elect-retry-period must be shorter than --leader-elect-renew-deadline")]
    RetryPeriodTooLong,
}

impl Timing {
    /// Checks retry period < renew deadline < lease duration, whole seconds.
    pub fn new(
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> Result<Self, TimingError> {
        for (flag, value) in [
            ("lease-duration", lease_duration),
            ("renew-deadline", renew_deadline),
            ("retry-period", retry_period),
        ] {
            if value.subsec_nanos() != 0 || value.is_zero() {
                return Err(TimingError::NotWholeSeconds(flag));
            }
        }
        if renew_deadline >= lease_duration {
            return Err(TimingError::RenewDeadlineTooLong);
        }
        if retry_period >= renew_deadline {
            return Err(TimingError::RetryPeriodTooLong);
        }
        Ok(Self {
            lease_duration,
            renew_deadline,
            retry_period,
        })
    }

    /// How long a Lease is valid after its last renewal.
    pub fn lease_duration(&self) -> Duration {
        self.lease_duration
    }

    /// How long the leader keeps leading without a successful renewal.
    pub fn renew_deadline(&self) -> Duration {
        self.renew_deadline
    }

    /// How often the leader renews, and a failed attempt is retried.
    pub fn retry_period(&self) -> Duration {
        self.retry_period
    }

    /// The crate's parameters: it renews `grace` seconds before expiry,
    /// so a grace of duration minus retry period renews every retry period.
    fn lease_params(&self, identity: &str) -> LeaseParams {
        let duration = self.lease_duration.as_secs();
        let grace = duration - self.retry_period.as_secs();
        LeaseParams::new(identity, duration, grace)
    }
}

impl Default for Timing {
    /// controller-runtime's defaults: 15 s, 10 s, 2 s.
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// `<pod name or hostname>_<random>`, as controller-runtime does: unique
/// even for two processes on one host.
pub fn identity(pod_name: Option<&str>) -> String {
    use std::hash::{BuildHasher, Hasher};
    let base = pod_name
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .or_else(hostname)
        .unwrap_or_else(|| "kubestash".to_owned());
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{base}_{:08x}", hasher.finish() as u32)
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

/// When this replica's latest successful Lease write was sent. Clones
/// share it.
#[derive(Debug, Clone, Default)]
pub struct RenewalClock {
    confirmed: Arc<Mutex<Option<Instant>>>,
}

impl RenewalClock {
    fn confirm(&self, sent_at: Instant) {
        let mut confirmed = self.confirmed.lock();
        *confirmed = Some(confirmed.map_or(sent_at, |known| known.max(sent_at)));
    }

    /// When the last successful Lease write was sent, if any.
    pub fn confirmed_at(&self) -> Option<Instant> {
        *self.confirmed.lock()
    }

    /// Resolves once no Lease write sent within `deadline` has succeeded.
    pub async fn expired(&self, deadline: Duration) {
        loop {
            let due = self.confirmed_at().unwrap_or_else(Instant::now) + deadline;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

/// A client for leader election alone: its successful Lease writes feed
/// `clock`.
pub async fn lease_client(
    metrics: Metrics,
    identity: &str,
    clock: RenewalClock,
) -> Result<Client, kube::Error> {
    observed_client(metrics, Some(identity), clock).await
}

/// Fed by the client that writes nothing but the Lease: each successful
/// PATCH confirms the hold as of its sending.
impl RequestObserver for RenewalClock {
    fn sent(&self, request: &Request<Body>) -> Box<dyn FnOnce(Option<http::StatusCode>) + Send> {
        let is_write = request.method() == http::Method::PATCH;
        let sent_at = Instant::now();
        let clock = self.clone();
        Box::new(move |status| {
            if is_write && status.is_some_and(|s| s.is_success()) {
                clock.confirm(sent_at);
            }
        })
    }
}

/// Why this replica stopped leading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Lost {
    #[error("another replica holds the Lease now")]
    TakenOver,
    #[error("the Lease could not be renewed within the renew deadline ({0:?})")]
    RenewDeadline(Duration),
}

async fn manager(
    client: &Client,
    config: &ElectionConfig,
) -> kube_lease_manager::Result<LeaseManager> {
    LeaseManagerBuilder::new(client.clone(), &config.name)
        .with_namespace(&config.namespace)
        .with_parameters(config.timing.lease_params(&config.identity))
        .build()
        .await
}

/// Waits until this replica holds the Lease (the client must be the one
/// feeding `clock`). Looks again at once when the holder releases the Lease.
pub async fn campaign(client: &Client, config: &ElectionConfig) -> LeaseManager {
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let mut released = watcher::watch_object(api, &config.name)
        .default_backoff()
        .filter_map(|event| futures::future::ready(event.ok()))
        .filter(|lease| futures::future::ready(is_free(lease.as_ref())))
        .boxed();
    let retry = config.timing.retry_period;
    loop {
        let candidate = match manager(client, config).await {
            Ok(candidate) => candidate,
            Err(err) => {
                tracing::warn!(error = %err, lease = %config.name, "cannot read the Lease; retrying");
                tokio::time::sleep(retry).await;
                continue;
            }
        };
        tokio::select! {
            changed = candidate.changed() => match changed {
                Ok(true) => return candidate,
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(error = %err, lease = %config.name, "campaigning for the Lease failed; retrying");
                    tokio::time::sleep(retry).await;
                }
            },
            Some(_) = released.next() => {
                tracing::debug!(lease = %config.name, "the Lease is free; trying to take it");
            }
        }
    }
}

/// Whether a Lease (`None`: deleted) has no holder.
fn is_free(lease: Option<&Lease>) -> bool {
    lease
        .and_then(|lease| lease.spec.as_ref())
        .and_then(|spec| spec.holder_identity.as_deref())
        .is_none_or(str::is_empty)
}

/// Keeps renewing the Lease; resolves when leadership ends and why. A
/// renewal that fails is retried every retry period until the renew
/// deadline (measured from the last successful renewal's sending) passes.
pub async fn hold(manager: &LeaseManager, clock: &RenewalClock, timing: &Timing) -> Lost {
    let deadline = timing.renew_deadline;
    let expired = clock.expired(deadline);
    tokio::pin!(expired);
    loop {
        tokio::select! {
            () = &mut expired => return Lost::RenewDeadline(deadline),
            changed = manager.changed() => match changed {
                Ok(true) => {}
                Ok(false) => return Lost::TakenOver,
                Err(err) => {
                    tracing::warn!(error = %err, "renewing the Lease failed; retrying");
                    tokio::select! {
                        () = &mut expired => return Lost::RenewDeadline(deadline),
                        () = tokio::time::sleep(timing.retry_period) => {}
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn timing_must_nest_retry_within_renew_within_lease() {
        assert_eq!(
            Timing::new(secs(15), secs(10), secs(2)),
            Ok(Timing::default())
        );
        assert_eq!(
            Timing::new(secs(10), secs(10), secs(2)),
            Err(TimingError::RenewDeadlineTooLong)
        );
        assert_eq!(
            Timing::new(secs(15), secs(10), secs(10)),
            Err(TimingError::RetryPeriodTooLong)
        );
        assert_eq!(
            Timing::new(secs(15), Duration::from_millis(2500), secs(1)),
            Err(TimingError::NotWholeSeconds("renew-deadline"))
        );
        assert_eq!(
            Timing::new(secs(15), secs(10), Duration::ZERO),
            Err(TimingError::NotWholeSeconds("retry-period"))
        );
    }

    #[test]
    fn identities_name_the_pod_and_differ_per_process_start() {
        let first = identity(Some("kubestash-7d9f-abcde"));
        let second = identity(Some("kubestash-7d9f-abcde"));
        assert!(first.starts_with("kubestash-7d9f-abcde_"), "{first}");
        assert_ne!(first, second);
        assert!(!identity(None).starts_with('_'));
        assert!(!identity(Some("")).starts_with('_'));
    }

    #[test]
    fn a_lease_without_holder_is_free() {
        let mut lease = Lease::default();
        assert!(is_free(None));
        assert!(is_free(Some(&lease)));
        lease.spec = Some(Default::default());
        assert!(is_free(Some(&lease)));
        lease.spec.as_mut().unwrap().holder_identity = Some("a_1".into());
        assert!(!is_free(Some(&lease)));
    }

    #[test]
    fn only_successful_lease_patches_confirm_the_hold() {
        use http::{Method, StatusCode};
        let clock = RenewalClock::default();
        let request = |method: Method| {
            Request::builder()
                .method(method)
                .uri("/apis/coordination.k8s.io/v1/namespaces/ops/leases/kubestash")
                .body(Body::empty())
                .unwrap()
        };
        clock.sent(&request(Method::GET))(Some(StatusCode::OK));
        clock.sent(&request(Method::PATCH))(Some(StatusCode::INTERNAL_SERVER_ERROR));
        clock.sent(&request(Method::PATCH))(Some(StatusCode::CONFLICT));
        clock.sent(&request(Method::PATCH))(None);
        assert_eq!(clock.confirmed_at(), None);
        let before = Instant::now();
        clock.sent(&request(Method::PATCH))(Some(StatusCode::OK));
        assert!(clock.confirmed_at().is_some_and(|at| at >= before));
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_expires_a_deadline_after_the_last_confirmed_send() {
        let clock = RenewalClock::default();
        let start = Instant::now();
        clock.confirm(start);
        tokio::time::sleep(secs(4)).await;
        clock.confirm(start + secs(3));
        clock.confirm(start + secs(1));
        assert_eq!(clock.confirmed_at(), Some(start + secs(3)));
        clock.expired(secs(10)).await;
        assert_eq!(Instant::now(), start + secs(13));
    }
}
