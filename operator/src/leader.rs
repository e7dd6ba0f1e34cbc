//! Leader election with a `coordination.k8s.io/v1` Lease: acquire when free or expired, renew
//! while held (optimistic concurrency on resourceVersion), release on shutdown. Losing the
//! Lease ends the process so a restarted pod starts from a clean cache.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};

use crate::error::{Error, Result};

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration: Duration,
}

/// What one acquire/renew attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// We hold the Lease.
    Leader,
    /// Another holder's Lease is still valid.
    Follower(String),
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renew) = spec.renew_time.as_ref() else {
        return true;
    };
    let secs = spec.lease_duration_seconds.unwrap_or(15) as i64;
    renew.0 + SignedDuration::from_secs(secs) < now
}

/// Try once to acquire or renew.
pub async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<Held> {
    let now = Timestamp::now();
    let dur = cfg.duration.as_secs() as i32;
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(dur),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Held::Leader),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    Ok(Held::Follower("(just created)".into()))
                }
                Err(e) => Err(e.into()),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            let holder = spec.holder_identity.clone().unwrap_or_default();
            let ours = holder == cfg.identity;
            if !ours && !holder.is_empty() && !expired(spec, now) {
                return Ok(Held::Follower(holder));
            }
            if !ours {
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.holder_identity = Some(cfg.identity.clone());
            spec.lease_duration_seconds = Some(dur);
            spec.renew_time = Some(MicroTime(now));
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(Held::Leader),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Held::Follower(holder)),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Block until we hold the Lease.
pub async fn acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<()> {
    loop {
        match try_acquire(api, cfg).await {
            Ok(Held::Leader) => return Ok(()),
            Ok(Held::Follower(h)) => tracing::info!(holder = %h, "waiting for the leader Lease"),
            Err(e) => tracing::warn!(error = %e, "leader election"),
        }
        tokio::time::sleep(cfg.duration / 3).await;
    }
}

/// Renew until renewal fails for longer than the Lease duration; returns the error then.
pub async fn hold(api: Api<Lease>, cfg: LeaseConfig) -> Error {
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(cfg.duration / 3).await;
        match try_acquire(&api, &cfg).await {
            Ok(Held::Leader) => last_ok = tokio::time::Instant::now(),
            Ok(Held::Follower(h)) => return Error::Lease(format!("lost the Lease to {h}")),
            Err(e) if last_ok.elapsed() > cfg.duration => {
                return Error::Lease(format!("cannot renew: {e}"));
            }
            Err(e) => tracing::warn!(error = %e, "renewing the Lease"),
        }
    }
}

/// Give the Lease up (shutdown), so a successor does not wait for it to expire.
pub async fn release(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<()> {
    if let Some(mut lease) = api.get_opt(&cfg.name).await?
        && let Some(spec) = lease.spec.as_mut()
        && spec.holder_identity.as_deref() == Some(cfg.identity.as_str())
    {
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        api.replace(&cfg.name, &PostParams::default(), &lease)
            .await?;
    }
    Ok(())
}
