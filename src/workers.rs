//! Supervised background work. Everything that runs outside a request — the export-file
//! sweeper, device-code pollers, background exports, later the outbox — starts here, so that
//! nothing dies unnoticed and nothing is cut off at shutdown:
//!
//! - **Workers** ([`Workers::start`]) run for the life of the process. When one returns or
//!   panics, [`Workers::stopped`] reports which one and why, and the application shuts down
//!   (a process with a dead worker would look healthy while doing nothing).
//! - **Tasks** ([`Spawner::spawn`]) are work a request started. They run to their end; a panic
//!   is logged with the task's name; shutdown waits for them (up to a grace period).
//!
//! Both watch one [`CancellationToken`]: cancelled at SIGTERM, when a worker or task should
//! finish what it holds or hand it back (a device code is simply left to expire).
//!
//! The shape is Zero To Production's: `main` selects the server against the workers, and each
//! worker is a loop around a `run_once`-style step that tests call until it reports no work.

use std::future::Future;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a long-running worker ended with.
pub type WorkerResult = anyhow::Result<()>;

/// Starts request-born tasks under supervision. Cheap to clone; every clone shares the same
/// tracker and cancellation token.
#[derive(Clone, Debug)]
pub struct Spawner {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Spawner {
    /// Runs `task` in the background, named for the logs. Shutdown waits for it.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // The inner spawn catches a panic (the tracker's own task would swallow it silently).
        let handle = tokio::spawn(task);
        self.tracker.spawn(async move {
            if let Err(e) = handle.await {
                tracing::error!(task = name, error = %e, "background task panicked");
            }
        });
    }

    /// Resolves when the process is shutting down: a task should finish or hand back its work.
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// The token itself, for a task that outlives a borrow of the spawner.
    pub fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Waits until every task started so far has ended (tests use it instead of sleeping).
    pub async fn drain(&self) {
        // A tracker reports "empty" only once closed; reopened at once for later tasks.
        self.tracker.close();
        self.tracker.wait().await;
        self.tracker.reopen();
    }
}

/// The process's long-running workers and its task spawner.
#[derive(Debug)]
pub struct Workers {
    set: JoinSet<(&'static str, WorkerResult)>,
    spawner: Spawner,
}

impl Default for Workers {
    fn default() -> Self {
        Self::new()
    }
}

impl Workers {
    pub fn new() -> Self {
        Self {
            set: JoinSet::new(),
            spawner: Spawner {
                tracker: TaskTracker::new(),
                cancel: CancellationToken::new(),
            },
        }
    }

    pub fn spawner(&self) -> Spawner {
        self.spawner.clone()
    }

    /// Starts a worker: `work` gets the shutdown token and should return when it is cancelled.
    pub fn start<F, Fut>(&mut self, name: &'static str, work: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = WorkerResult> + Send + 'static,
    {
        let fut = work(self.spawner.token());
        self.set.spawn(async move { (name, fut.await) });
    }

    /// Resolves when a worker ends — before shutdown that is always a failure — with its
    /// name and why. Never resolves when there are no workers.
    pub async fn stopped(&mut self) -> (String, anyhow::Error) {
        match self.set.join_next().await {
            Some(Ok((name, Ok(())))) => (name.into(), anyhow::anyhow!("it returned")),
            Some(Ok((name, Err(e)))) => (name.into(), e),
            Some(Err(join)) => ("a worker".into(), anyhow::anyhow!("it panicked: {join}")),
            None => std::future::pending().await,
        }
    }

    /// Cancels everything and waits, at most `grace`, for the workers and tasks to finish.
    /// Returns whether everything finished in time.
    pub async fn shutdown(mut self, grace: Duration) -> bool {
        self.spawner.cancel.cancel();
        self.spawner.tracker.close();
        let workers = async {
            while let Some(done) = self.set.join_next().await {
                match done {
                    Ok((name, Err(e))) => tracing::warn!(worker = name, error = %e, "worker ended with an error"),
                    Err(e) => tracing::error!(error = %e, "worker panicked while stopping"),
                    Ok(_) => {}
                }
            }
            self.spawner.tracker.wait().await;
        };
        let finished = tokio::time::timeout(grace, workers).await.is_ok();
        if !finished {
            tracing::warn!(grace_secs = grace.as_secs(), "background work did not finish in time; abandoned");
        }
        finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_worker_that_ends_is_reported_by_name() {
        let mut workers = Workers::new();
        workers.start("forever", |cancel| async move {
            cancel.cancelled().await;
            Ok(())
        });
        workers.start("broken", |_| async { Err(anyhow::anyhow!("the database went away")) });
        let (name, why) = workers.stopped().await;
        assert_eq!(name, "broken");
        assert_eq!(why.to_string(), "the database went away");
        assert!(
            workers.shutdown(Duration::from_secs(5)).await,
            "the other worker stops when cancelled"
        );
    }

    #[tokio::test]
    async fn shutdown_waits_for_tasks_and_tells_them_to_stop() {
        let workers = Workers::new();
        let spawner = workers.spawner();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let inner = spawner.clone();
        spawner.spawn("handing back", async move {
            inner.cancelled().await;
            let _ = tx.send("handed back");
        });
        assert!(workers.shutdown(Duration::from_secs(5)).await);
        assert_eq!(rx.await.unwrap(), "handed back");
    }

    #[tokio::test]
    async fn drain_waits_for_started_tasks_and_accepts_more() {
        let spawner = Workers::new().spawner();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        spawner.spawn("quick", async move {
            tokio::task::yield_now().await;
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        spawner.drain().await;
        assert!(done.load(std::sync::atomic::Ordering::SeqCst));
        let (tx, rx) = tokio::sync::oneshot::channel();
        spawner.spawn("later", async move {
            let _ = tx.send(());
        });
        spawner.drain().await;
        assert!(rx.await.is_ok(), "a task after a drain still runs");
    }

    #[tokio::test]
    async fn a_panicking_task_does_not_stop_the_others() {
        let workers = Workers::new();
        let spawner = workers.spawner();
        spawner.spawn("panics", async { panic!("boom") });
        let (tx, rx) = tokio::sync::oneshot::channel();
        spawner.spawn("fine", async move {
            let _ = tx.send(());
        });
        assert!(workers.shutdown(Duration::from_secs(5)).await);
        assert!(rx.await.is_ok());
    }
}
