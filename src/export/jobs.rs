//! Running exports off the async runtime: at most N at once (the rest wait in line), either
//! while the caller waits or as background jobs whose files expire.

use super::model::GridError;
use super::read::{ExportOptions, InputFormat, export};
use super::writer::{ExportError, Report};
use crate::workers::Spawner;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use uuid::Uuid;

/// Where a finished workbook goes besides being kept for download (the OneDrive upload), as
/// types: what a delivery answers when it worked (`Receipt`) and when it did not (`Failure`).
/// The export engine knows nothing of either.
pub trait Delivery: Send + Sync + 'static {
    type Receipt: Clone + std::fmt::Debug + Send + Sync + 'static;
    type Failure: Clone + std::fmt::Debug + Send + Sync + 'static;
}

/// No delivery: the workbook is only kept for download.
#[derive(Debug)]
pub struct Download;

impl Delivery for Download {
    type Receipt = ();
    type Failure = ();
}

/// Where a job is.
#[derive(Debug, Clone)]
pub enum JobState<R, F> {
    Queued,
    Running,
    Done {
        report: Report,
        file: PathBuf,
        size: u64,
        /// What the delivery answered, when there was one.
        delivered: Option<R>,
    },
    Failed(JobFailure<F>),
}

/// Why a job failed.
#[derive(Debug, Clone)]
pub enum JobFailure<F> {
    /// The grid was at fault (what a caller waiting for the export would get as a 422).
    Grid(GridError),
    /// The workbook was written, its delivery failed.
    Delivery(F),
    /// Our own failure; logged with its cause, told to the caller in these words.
    Internal(String),
}

/// A job's state for a delivery `D`.
pub type StateOf<D> = JobState<<D as Delivery>::Receipt, <D as Delivery>::Failure>;

/// The delivery of one job: given the file, its size and the export's report, it answers
/// the receipt or the failure.
pub type Deliver<D> = Box<
    dyn FnOnce(
            std::fs::File,
            u64,
            Report,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<<D as Delivery>::Receipt, <D as Delivery>::Failure>> + Send>>
        + Send,
>;

#[derive(Debug)]
pub struct Job<D: Delivery> {
    pub id: Uuid,
    /// The API key that started it; nobody else may see it.
    pub owner: String,
    pub created_at: DateTime<Utc>,
    pub rows_written: Arc<AtomicU64>,
    state: Mutex<StateOf<D>>,
    finished_at: Mutex<Option<DateTime<Utc>>>,
}

impl<D: Delivery> Job<D> {
    pub fn state(&self) -> StateOf<D> {
        self.state.lock().expect("job lock").clone()
    }

    pub fn finished_at(&self) -> Option<DateTime<Utc>> {
        *self.finished_at.lock().expect("job lock")
    }

    fn set(&self, state: StateOf<D>) {
        if matches!(state, JobState::Done { .. } | JobState::Failed(_)) {
            *self.finished_at.lock().expect("job lock") = Some(Utc::now());
        }
        *self.state.lock().expect("job lock") = state;
    }
}

/// A finished export held in an unnamed file (its path is already gone), so it disappears
/// when the last handle closes — whether the response completes or the client goes away.
pub struct Finished {
    pub report: Report,
    pub file: std::fs::File,
    pub size: u64,
}

/// What one API key and everybody together may have waiting: spooled bodies (bytes on disk)
/// and background jobs not yet finished. A full disk is a denial of service too.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub max_spool_bytes: u64,
    pub max_spool_bytes_per_key: u64,
    pub max_jobs: usize,
    pub max_jobs_per_key: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            max_spool_bytes: u64::MAX,
            max_spool_bytes_per_key: u64::MAX,
            max_jobs: usize::MAX,
            max_jobs_per_key: usize::MAX,
        }
    }
}

/// Why a body or a job was not taken: which bound it met, in words naming the setting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct QueueFull(String);

#[derive(Default)]
struct Spooled {
    total: u64,
    by_key: HashMap<String, u64>,
}

/// Bytes of one request body counted against the spool budget; given back when dropped
/// (the spooled file is gone by then, or about to be).
pub struct SpoolClaim {
    jobs: Arc<dyn SpoolBudget>,
    owner: String,
    bytes: u64,
}

/// The spool counters a claim gives back to, whatever the jobs' delivery type.
trait SpoolBudget: Send + Sync {
    fn spooled(&self) -> &Mutex<Spooled>;
    fn limits(&self) -> QueueLimits;
}

impl<D: Delivery> SpoolBudget for ExportJobs<D> {
    fn spooled(&self) -> &Mutex<Spooled> {
        &self.spooled
    }

    fn limits(&self) -> QueueLimits {
        self.limits
    }
}

impl SpoolClaim {
    /// Counts `n` more bytes, unless they would pass a limit.
    pub fn grow(&mut self, n: u64) -> Result<(), QueueFull> {
        let limits = self.jobs.limits();
        let mut spooled = self.jobs.spooled().lock().expect("spool lock");
        let mine = spooled.by_key.get(&self.owner).copied().unwrap_or(0);
        if mine + n > limits.max_spool_bytes_per_key {
            return Err(QueueFull(format!(
                "this API key already has {mine} bytes of uploads waiting (export.max_spool_bytes_per_key)"
            )));
        }
        if spooled.total + n > limits.max_spool_bytes {
            return Err(QueueFull(
                "the server holds as many uploads as it may (export.max_spool_bytes); try again shortly".into(),
            ));
        }
        spooled.total += n;
        *spooled.by_key.entry(self.owner.clone()).or_default() += n;
        self.bytes += n;
        Ok(())
    }
}

impl Drop for SpoolClaim {
    fn drop(&mut self) {
        let mut spooled = self.jobs.spooled().lock().expect("spool lock");
        spooled.total -= self.bytes;
        if let Some(mine) = spooled.by_key.get_mut(&self.owner) {
            *mine -= self.bytes;
            if *mine == 0 {
                spooled.by_key.remove(&self.owner);
            }
        }
    }
}

pub struct ExportJobs<D: Delivery = Download> {
    jobs: Mutex<HashMap<Uuid, Arc<Job<D>>>>,
    spooled: Mutex<Spooled>,
    limits: QueueLimits,
    permits: Arc<Semaphore>,
    dir: PathBuf,
    retention: Duration,
    /// Rows per sheet (lowered only by tests).
    max_rows: Option<u32>,
}

impl<D: Delivery> std::fmt::Debug for ExportJobs<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExportJobs({})", self.dir.display())
    }
}

impl<D: Delivery> ExportJobs<D> {
    /// `dir` holds temporary and finished files; what an earlier process left there is removed.
    pub fn new(dir: &Path, max_concurrent: usize, retention: Duration, max_rows: Option<u32>) -> anyhow::Result<Self> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            jobs: Mutex::default(),
            spooled: Mutex::default(),
            limits: QueueLimits::default(),
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            dir: dir.to_path_buf(),
            retention,
            max_rows,
        })
    }

    /// The same, with bounds on what may wait.
    pub fn with_limits(mut self, limits: QueueLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts counting a request body of `owner`'s against the spool budget.
    pub fn spool_claim(self: &Arc<Self>, owner: &str) -> SpoolClaim {
        let jobs: Arc<dyn SpoolBudget> = self.clone();
        SpoolClaim {
            jobs,
            owner: owner.to_string(),
            bytes: 0,
        }
    }

    /// Whether `owner` may start one more background job.
    pub fn admit(&self, owner: &str) -> Result<(), QueueFull> {
        let jobs = self.jobs.lock().expect("jobs lock");
        let open = |j: &&Arc<Job<D>>| matches!(j.state(), JobState::Queued | JobState::Running);
        let mine = jobs.values().filter(open).filter(|j| j.owner == owner).count();
        if mine >= self.limits.max_jobs_per_key {
            return Err(QueueFull(format!(
                "this API key has {mine} background exports waiting or running (export.max_queued_jobs_per_key)"
            )));
        }
        if jobs.values().filter(open).count() >= self.limits.max_jobs {
            return Err(QueueFull(
                "the server has as many background exports waiting as it may (export.max_queued_jobs); try again shortly".into(),
            ));
        }
        Ok(())
    }

    fn options(&self, mut opts: ExportOptions) -> ExportOptions {
        opts.tempdir = Some(self.dir.clone());
        opts.max_rows = opts.max_rows.or(self.max_rows);
        opts
    }

    /// One of the export slots, for other work as heavy as an export (imports share them).
    pub async fn slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.permits.clone().acquire_owned().await.expect("semaphore is never closed")
    }

    /// Exports while the caller waits (after waiting for a free slot).
    pub async fn run<R: Read + Send + 'static>(&self, format: InputFormat, input: R, opts: ExportOptions) -> Result<Finished, ExportError> {
        let _permit = self.slot().await;
        let opts = self.options(opts);
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let out = tempfile::Builder::new().prefix("export-").suffix(".xlsx").tempfile_in(&dir)?;
            let report = export(
                format,
                BufReader::with_capacity(1 << 16, input),
                out.as_file(),
                &opts,
                Arc::default(),
            )?;
            let file = out.reopen()?;
            let size = file.metadata()?.len();
            drop(out); // removes the path; `file` keeps the data readable
            Ok(Finished { report, file, size })
        })
        .await
        .map_err(|e| ExportError::Io(std::io::Error::other(e)))?
    }

    /// Starts a background export of the spooled body in `input` (deleted when done), as a
    /// task of `spawner` (so shutdown waits for it).
    #[allow(clippy::too_many_arguments)]
    pub fn submit(
        self: &Arc<Self>,
        spawner: &Spawner,
        owner: &str,
        format: InputFormat,
        input: tempfile::TempPath,
        claim: SpoolClaim,
        opts: ExportOptions,
        deliver: Option<Deliver<D>>,
    ) -> Arc<Job<D>> {
        let job = Arc::new(Job {
            id: Uuid::new_v4(),
            owner: owner.to_string(),
            created_at: Utc::now(),
            rows_written: Arc::default(),
            state: Mutex::new(JobState::Queued),
            finished_at: Mutex::default(),
        });
        self.jobs.lock().expect("jobs lock").insert(job.id, job.clone());
        let (jobs, running) = (self.clone(), job.clone());
        spawner.spawn("background export", async move {
            let _permit = jobs.slot().await;
            running.set(JobState::Running);
            let opts = jobs.options(opts);
            let target = jobs.dir.join(format!("{}.xlsx", running.id));
            let progress = running.rows_written.clone();
            let path = target.clone();
            let outcome = tokio::task::spawn_blocking(move || -> Result<(Report, u64), ExportError> {
                let source = std::fs::File::open(&input)?;
                let out = std::fs::File::create(&path)?;
                let report = export(format, BufReader::with_capacity(1 << 16, source), &out, &opts, progress)?;
                // The spooled body is read: its file and its share of the budget go now.
                drop(input);
                drop(claim);
                Ok((report, out.metadata()?.len()))
            })
            .await;
            let state = match outcome {
                Ok(Ok((report, size))) => match deliver {
                    None => JobState::Done {
                        report,
                        file: target,
                        size,
                        delivered: None,
                    },
                    Some(deliver) => match std::fs::File::open(&target) {
                        Ok(file) => match deliver(file, size, report.clone()).await {
                            Ok(receipt) => JobState::Done {
                                report,
                                file: target,
                                size,
                                delivered: Some(receipt),
                            },
                            Err(failure) => JobState::Failed(JobFailure::Delivery(failure)),
                        },
                        Err(e) => JobState::Failed(JobFailure::Internal(format!("the finished export could not be reopened: {e}"))),
                    },
                },
                Ok(Err(e)) => {
                    let _ = std::fs::remove_file(&target);
                    match e {
                        ExportError::Grid(g) => JobState::Failed(JobFailure::Grid(g)),
                        other => {
                            tracing::error!(job = %running.id, error = %other, "export job failed");
                            JobState::Failed(JobFailure::Internal("the export failed; it has been logged".into()))
                        }
                    }
                }
                Err(join) => {
                    tracing::error!(job = %running.id, error = %join, "export job panicked");
                    JobState::Failed(JobFailure::Internal("the export failed; it has been logged".into()))
                }
            };
            running.set(state);
        });
        job
    }

    /// The caller's job, unless it does not exist, is someone else's or has expired.
    pub fn get(&self, id: Uuid, owner: &str) -> Option<Arc<Job<D>>> {
        self.sweep();
        self.jobs.lock().expect("jobs lock").get(&id).filter(|j| j.owner == owner).cloned()
    }

    pub fn expires_at(&self, job: &Job<D>) -> Option<DateTime<Utc>> {
        job.finished_at().map(|t| t + self.retention)
    }

    /// Forgets finished jobs older than the retention time and deletes their files.
    pub fn sweep(&self) {
        let now = Utc::now();
        let expired: Vec<Arc<Job<D>>> = {
            let mut jobs = self.jobs.lock().expect("jobs lock");
            let ids: Vec<Uuid> = jobs
                .values()
                .filter(|j| self.expires_at(j).is_some_and(|t| t <= now))
                .map(|j| j.id)
                .collect();
            ids.iter().filter_map(|id| jobs.remove(id)).collect()
        };
        for job in expired {
            if let JobState::Done { file, .. } = job.state() {
                let _ = std::fs::remove_file(file);
            }
        }
    }

    /// How many rows a job has written.
    pub fn rows(job: &Job<D>) -> u64 {
        job.rows_written.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With every slot taken (by an export or an import), a background job waits in line and
    /// counts against its key's queue; it runs once a slot is free.
    #[tokio::test]
    async fn jobs_beyond_the_limit_wait_in_line_and_count_against_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = Arc::new(
            ExportJobs::<Download>::new(&dir.path().join("exports"), 1, Duration::from_secs(60), None)
                .unwrap()
                .with_limits(QueueLimits {
                    max_jobs_per_key: 1,
                    ..QueueLimits::default()
                }),
        );
        let held = jobs.slot().await;
        let spool = tempfile::NamedTempFile::new_in(jobs.dir()).unwrap();
        std::fs::write(spool.path(), "a\n1\n").unwrap();
        let spawner = crate::workers::Workers::new().spawner();
        let job = jobs.submit(
            &spawner,
            "k",
            InputFormat::Csv,
            spool.into_temp_path(),
            jobs.spool_claim("k"),
            ExportOptions::default(),
            None,
        );
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(job.state(), JobState::Queued), "the only slot is held");
        assert!(jobs.admit("k").is_err(), "k has a job waiting");
        assert!(jobs.admit("other").is_ok());
        drop(held);
        spawner.drain().await;
        assert!(matches!(job.state(), JobState::Done { .. }), "{:?}", job.state());
        assert!(jobs.admit("k").is_ok(), "a finished job no longer counts");
    }
}
