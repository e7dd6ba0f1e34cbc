//! metav1.Condition bookkeeping: positive polarity, CamelCase reasons, `lastTransitionTime`
//! moved only when the status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition as computed by a reconcile, before merging with what is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: bool,
    /// Unknown instead of True/False.
    pub unknown: bool,
    pub reason: String,
    pub message: String,
}

impl Desired {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Desired {
            type_,
            status,
            unknown: false,
            reason: reason.into(),
            message: message.into(),
        }
    }
    pub fn unknown(
        type_: &'static str,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Desired {
            type_,
            status: false,
            unknown: true,
            reason: reason.into(),
            message: message.into(),
        }
    }
    pub fn status_str(&self) -> &'static str {
        match (self.unknown, self.status) {
            (true, _) => "Unknown",
            (false, true) => "True",
            (false, false) => "False",
        }
    }
}

/// Merge `desired` into `existing`: keeps `lastTransitionTime` unless the status flips.
pub fn merge(
    existing: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let old = existing.iter().find(|c| c.type_ == d.type_);
            let last_transition_time = match old {
                Some(o) if o.status == d.status_str() => o.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: d.type_.to_string(),
                status: d.status_str().to_string(),
                reason: d.reason.clone(),
                message: truncate(&d.message, 1024),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Cut a message to at most `max` bytes on a char boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// The stored condition of a type.
pub fn find<'a>(conds: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conds.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).expect("ts"))
    }

    #[test]
    fn transition_time_moves_only_on_flips() {
        let first = merge(
            &[],
            &[Desired::new("Ready", false, "NoEndpoints", "a")],
            Some(1),
            &t(10),
        );
        assert_eq!(first[0].last_transition_time, t(10));
        let same = merge(
            &first,
            &[Desired::new("Ready", false, "MeasurementMismatch", "b")],
            Some(2),
            &t(20),
        );
        assert_eq!(
            same[0].last_transition_time,
            t(10),
            "reason change is not a flip"
        );
        assert_eq!(same[0].reason, "MeasurementMismatch");
        let flipped = merge(
            &same,
            &[Desired::new("Ready", true, "Serving", "c")],
            Some(2),
            &t(30),
        );
        assert_eq!(flipped[0].last_transition_time, t(30));
        let unknown = merge(
            &flipped,
            &[Desired::unknown("Ready", "Pending", "")],
            Some(2),
            &t(40),
        );
        assert_eq!(
            (
                unknown[0].status.as_str(),
                unknown[0].last_transition_time.clone()
            ),
            ("Unknown", t(40))
        );
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let s = "é".repeat(600);
        let c = truncate(&s, 1024);
        assert!(c.len() <= 1024 && c.ends_with("..."));
    }
}
