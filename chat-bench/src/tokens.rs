//! Tokens for the bench users `bench0..benchN`, registered or logged in once. Each login costs
//! the server an argon2 hash (tens of ms by design), so a join storm of 5,000 users keeps its
//! tokens in a cache file between runs against the same server.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

pub fn user(n: usize) -> String {
    format!("bench{n}")
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Cache {
    url: String,
    tokens: HashMap<String, String>,
}

/// Tokens for users 0..`users`, in user order.
pub async fn get(
    urls: &[String],
    users: usize,
    cache: Option<&Path>,
) -> anyhow::Result<Vec<String>> {
    // The cache is for these servers: a list is one cluster, the same accounts on every node.
    let url = urls.join(",");
    let mut known = cache
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice::<Cache>(&b).ok())
        .filter(|c| c.url == url)
        .map(|c| c.tokens)
        .unwrap_or_default();
    let mut set = tokio::task::JoinSet::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(4));
    for u in (0..users).filter(|u| !known.contains_key(&user(*u))) {
        let (urls, sem) = (urls.to_vec(), sem.clone());
        set.spawn(async move {
            let _p = sem.acquire().await;
            let name = user(u);
            let t = crate::net::token(&urls, &name, "bench password").await;
            (name, t)
        });
    }
    let fetched = !set.is_empty();
    while let Some(r) = set.join_next().await {
        let (name, t) = r?;
        let t = t.with_context(|| {
            format!("getting a token from {url}: is chat-server running there (benchmarks want --rate-per-sec 0)?")
        })?;
        known.insert(name, t);
    }
    if let (Some(path), true) = (cache, fetched) {
        let c = Cache {
            url: url.clone(),
            tokens: known.clone(),
        };
        std::fs::write(path, serde_json::to_vec(&c)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    (0..users)
        .map(|u| known.remove(&user(u)).context("token missing"))
        .collect()
}
