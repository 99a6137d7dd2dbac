//! Batching bursts: names collect until `wait_time` of quiet, with a cap on
//! the total delay so a steady trickle cannot starve the apply.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::events::{Changes, StreamEvent};

/// The longest a name waits under continuous load, whatever `wait_time`
/// (unless `wait_time` itself is longer).
pub const MAX_DELAY_CAP: Duration = Duration::from_secs(30);

/// The default maximum delay for `wait_time`: ten times it, at most
/// [`MAX_DELAY_CAP`], and never less than `wait_time`.
pub fn default_max_delay(wait_time: Duration) -> Duration {
    wait_time
        .saturating_mul(10)
        .min(MAX_DELAY_CAP)
        .max(wait_time)
}

/// A pure debounce state machine; time is passed in.
#[derive(Debug, Clone)]
pub struct Debouncer {
    wait_time: Duration,
    max_delay: Duration,
    pending: Option<Pending>,
}

#[derive(Debug, Clone)]
struct Pending {
    changes: Changes,
    first: Instant,
    last: Instant,
}

impl Debouncer {
    /// Flushes after `wait_time` of quiet (0: at once), or
    /// [`default_max_delay`] after the first pending record.
    pub fn new(wait_time: Duration) -> Self {
        Self::with_max_delay(wait_time, default_max_delay(wait_time))
    }

    /// Like [`Debouncer::new`] with an explicit cap on the delay.
    pub fn with_max_delay(wait_time: Duration, max_delay: Duration) -> Self {
        Self {
            wait_time,
            max_delay: max_delay.max(wait_time),
            pending: None,
        }
    }

    /// Adds a batch received at `now`.
    pub fn push(&mut self, changes: Changes, now: Instant) {
        match &mut self.pending {
            Some(pending) => {
                pending.changes.merge(changes);
                pending.last = now;
            }
            None => {
                self.pending = Some(Pending {
                    changes,
                    first: now,
                    last: now,
                })
            }
        }
    }

    /// When the pending batch is due; `None` when nothing is pending.
    pub fn deadline(&self) -> Option<Instant> {
        let pending = self.pending.as_ref()?;
        Some((pending.last + self.wait_time).min(pending.first + self.max_delay))
    }

    /// The pending batch if it is due at `now`.
    pub fn take_due(&mut self, now: Instant) -> Option<Changes> {
        if self.deadline()? <= now {
            return self.flush();
        }
        None
    }

    /// The pending batch, due or not.
    pub fn flush(&mut self) -> Option<Changes> {
        self.pending.take().map(|p| p.changes)
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_none()
    }
}

/// The follower's events with `Changes` debounced: what the controller's
/// loop awaits. Control events (`Gap`, `Replaced`, `Disabled`) pass at once,
/// after any pending `Changes` (those are flushed first, never dropped).
#[derive(Debug)]
pub struct DebouncedEvents {
    events: mpsc::Receiver<StreamEvent>,
    debouncer: Debouncer,
    held: Option<StreamEvent>,
    closed: bool,
}

impl DebouncedEvents {
    /// Debounces `events` with `debouncer`.
    pub fn new(events: mpsc::Receiver<StreamEvent>, debouncer: Debouncer) -> Self {
        Self {
            events,
            debouncer,
            held: None,
            closed: false,
        }
    }

    /// The next event; `None` once the follower is gone and nothing is
    /// pending. Cancel-safe: nothing received is lost if the future is
    /// dropped.
    pub async fn next(&mut self) -> Option<StreamEvent> {
        loop {
            self.drain_ready();
            if let Some(event) = self.ready_event() {
                return Some(event);
            }
            if self.closed {
                return self.debouncer.flush().map(StreamEvent::Changes);
            }
            self.wait_for_more().await;
        }
    }

    /// Takes the names waiting for their quiet time, e.g. when a full sync
    /// starts (it covers them, so they need no separate apply).
    pub fn take_pending(&mut self) -> Option<Changes> {
        self.drain_ready();
        self.debouncer.flush()
    }

    /// Takes whatever is already queued, without waiting.
    fn drain_ready(&mut self) {
        while self.held.is_none() && !self.closed {
            match self.events.try_recv() {
                Ok(event) => self.accept(event),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => self.closed = true,
            }
        }
    }

    /// A due batch, or a held control event (after flushing pending names).
    fn ready_event(&mut self) -> Option<StreamEvent> {
        if self.held.is_some() {
            return match self.debouncer.flush() {
                Some(changes) => Some(StreamEvent::Changes(changes)),
                None => self.held.take(),
            };
        }
        self.debouncer
            .take_due(Instant::now())
            .map(StreamEvent::Changes)
    }

    async fn wait_for_more(&mut self) {
        let deadline = self.debouncer.deadline();
        tokio::select! {
            event = self.events.recv() => match event {
                Some(event) => self.accept(event),
                None => self.closed = true,
            },
            _ = sleep_until_some(deadline) => {}
        }
    }

    fn accept(&mut self, event: StreamEvent) {
        match event {
            StreamEvent::Changes(changes) => self.debouncer.push(changes, Instant::now()),
            other => self.held = Some(other),
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
