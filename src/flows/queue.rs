//! Requests decided off the request path: the answer, and its timing, are the same whatever
//! becomes of the request (a sign-in link, a recovery code: whether the email is known must not
//! show). A queue is bounded; past its bound a request is refused with a retry, whatever it
//! asks, so a flood cannot grow memory. One task decides the queued requests one after another.

use crate::flows::FlowError;
use aggregates::log::EventMetadata;
use std::future::Future;
use tokio::sync::{mpsc, watch};

/// Requests waiting in one queue at most.
pub const OFF_PATH_QUEUE_MAX: usize = 1_024;

/// A bounded queue of requests of kind `T`, each with the metadata of the request that asked.
pub struct OffPathQueue<T> {
    sender: mpsc::Sender<(T, EventMetadata)>,
}

/// The receiving end of an [`OffPathQueue`].
pub type OffPathRequests<T> = mpsc::Receiver<(T, EventMetadata)>;

impl<T> OffPathQueue<T> {
    /// A queue of [`OFF_PATH_QUEUE_MAX`] places and its receiving end.
    pub fn new() -> (OffPathQueue<T>, OffPathRequests<T>) {
        let (sender, receiver) = mpsc::channel(OFF_PATH_QUEUE_MAX);
        (OffPathQueue { sender }, receiver)
    }

    /// Queues a request; `Err` with it when the queue is full (or its decider stopped).
    pub fn enqueue(&self, request: T, metadata: EventMetadata) -> Result<(), T> {
        self.sender
            .try_send((request, metadata))
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full((request, _))
                | mpsc::error::TrySendError::Closed((request, _)) => request,
            })
    }
}

/// Decides queued requests with `decide`, one after another, until the queue closes or `stopped`
/// turns true. A request that fails (the database away) is logged and dropped: its answer
/// promised nothing, and the person can ask again.
pub async fn decide_each<T, F, Fut>(
    mut requests: OffPathRequests<T>,
    mut stopped: watch::Receiver<bool>,
    what: &'static str,
    decide: F,
) where
    F: Fn(T, EventMetadata) -> Fut,
    Fut: Future<Output = Result<(), FlowError>>,
{
    loop {
        let next = tokio::select! {
            next = requests.recv() => next,
            _ = stopped.changed() => None,
        };
        let Some((request, metadata)) = next else {
            return;
        };
        if let Err(error) = decide(request, metadata).await {
            tracing::warn!(%error, what, "a queued request could not be decided; the person may ask again");
        }
    }
}
