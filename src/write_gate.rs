//! The gate a write batch passes before it plans and writes Secrets, so that
//! a graceful shutdown (a leader handing over) never cuts a batch between
//! its plan and its last write (prunes included).

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct GateState {
    closed: bool,
    batches_in_flight: usize,
}

/// Open until [`WriteGate::close_and_drain`]; clones share the gate.
#[derive(Debug, Clone)]
pub struct WriteGate {
    state: watch::Sender<GateState>,
}

impl Default for WriteGate {
    fn default() -> Self {
        Self {
            state: watch::Sender::new(GateState::default()),
        }
    }
}

/// Held by one write batch from its plan to its last write.
#[derive(Debug)]
pub struct BatchPermit {
    state: watch::Sender<GateState>,
}

impl Drop for BatchPermit {
    fn drop(&mut self) {
        self.state
            .send_modify(|s| s.batches_in_flight = s.batches_in_flight.saturating_sub(1));
    }
}

impl WriteGate {
    /// A permit for a batch about to plan and write, or `None` once the gate
    /// is closed (the batch must write nothing).
    pub fn try_enter(&self) -> Option<BatchPermit> {
        let entered = self.state.send_if_modified(|s| {
            if s.closed {
                return false;
            }
            s.batches_in_flight += 1;
            true
        });
        entered.then(|| BatchPermit {
            state: self.state.clone(),
        })
    }

    /// Waits for a permit; while the gate is closed this never resolves:
    /// the batch is abandoned before it writes anything, and whoever closed
    /// the gate drops it.
    pub async fn enter(&self) -> BatchPermit {
        match self.try_enter() {
            Some(permit) => permit,
            None => std::future::pending().await,
        }
    }

    /// Lets no new batch in and waits until the batches in flight are done.
    pub async fn close_and_drain(&self) {
        self.state.send_modify(|s| s.closed = true);
        let mut state = self.state.subscribe();
        let _ = state.wait_for(|s| s.batches_in_flight == 0).await;
    }

    /// Batches between plan and last write right now.
    pub fn batches_in_flight(&self) -> usize {
        self.state.borrow().batches_in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn draining_waits_for_the_batch_in_flight_and_admits_no_new_one() {
        let gate = WriteGate::default();
        let permit = gate.try_enter().expect("open gate admits a batch");
        assert_eq!(gate.batches_in_flight(), 1);
        let draining = tokio::spawn({
            let gate = gate.clone();
            async move { gate.close_and_drain().await }
        });
        tokio::task::yield_now().await;
        tokio::time::timeout(Duration::from_millis(50), async {
            while gate.try_enter().is_some() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("a closing gate admits no batch");
        assert!(
            !draining.is_finished(),
            "the batch in flight is still writing"
        );
        drop(permit);
        tokio::time::timeout(Duration::from_secs(1), draining)
            .await
            .expect("drained once the batch finished")
            .unwrap();
        assert_eq!(gate.batches_in_flight(), 0);
    }

    #[tokio::test]
    async fn a_closed_gate_parks_a_batch_before_it_writes() {
        let gate = WriteGate::default();
        gate.close_and_drain().await;
        let parked = tokio::time::timeout(Duration::from_millis(50), gate.enter()).await;
        assert!(parked.is_err(), "no permit after closing");
    }
}
