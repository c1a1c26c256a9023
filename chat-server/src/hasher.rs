//! Password hashing on a fixed pool of threads. argon2id allocates 19 MiB per hash; run on
//! tokio's blocking pool, each of up to hundreds of threads kept that much in its glibc arena
//! after a login flood (measured: 100 registrations took the server from 7 MB to 1.7 GB RSS).
//! Two dedicated threads bound both the CPU a flood can take and the memory it leaves behind.

use std::sync::Mutex;
use std::sync::mpsc::{SyncSender, sync_channel};

type Job = Box<dyn FnOnce() + Send>;

/// Runs closures on `threads` dedicated threads, queueing at most `queue` of them.
pub struct Hasher {
    jobs: SyncSender<Job>,
}

impl Hasher {
    pub fn new(threads: usize, queue: usize) -> std::io::Result<Self> {
        let (jobs, rx) = sync_channel::<Job>(queue);
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("hasher-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only to take the next job, not while running it.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(Self { jobs })
    }

    /// Runs `f` on a hashing thread. `None` if the queue is full (a flood: the caller answers
    /// "try again") or the pool is gone.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs.try_send(job).ok()?;
        rx.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_jobs_and_refuses_past_the_queue() {
        let h = std::sync::Arc::new(Hasher::new(1, 1).expect("threads"));
        assert_eq!(h.run(|| 2 + 2).await, Some(4));
        // Block the only thread, fill the one queue slot: the next job is refused.
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let h1 = h.clone();
        let blocked = tokio::spawn(async move { h1.run(move || wait.recv().is_ok()).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let h2 = h.clone();
        let queued = tokio::spawn(async move { h2.run(|| 1).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(h.run(|| 3).await, None);
        release.send(()).expect("release");
        assert_eq!(blocked.await.expect("join"), Some(true));
        assert_eq!(queued.await.expect("join"), Some(1));
    }
}
