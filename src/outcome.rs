//! The vocabulary of a reconcile's history: what started it ([`Trigger`]) and how it ended ([`SyncOutcome`]). The
//! daemon decides in these enums, the store keeps their stored form (checked by the schema), and the pages and the
//! API compare and show them as enums. Pure data.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a reconcile runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Trigger {
    Startup,
    Poll,
    Webhook,
    /// `POST /api/v1/sync`: also applies under the manual sync policy.
    Api,
    /// A rollback through the API, the page or the CLI pinned an earlier commit; applied as a manual sync is.
    Rollback,
    Drift,
    Retry,
    /// The environment was removed from the Project's list.
    Removed,
    /// A ScalingRule's schedule changes the bounds now.
    Schedule,
    /// The CPU autoscaler decided another replica count.
    Autoscale,
    /// A worker panicked: recorded in the history, never fired.
    Panic,
}

/// How a recorded reconcile ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncOutcome {
    /// Every action of the plan was applied.
    Synced,
    /// An action failed (or the reconcile did); retried with backoff.
    Failed,
    /// New replicas did not become healthy and the old ones kept serving; the commit is held.
    RolledBack,
    /// Changes wait: for a manual sync, a sync window, or (an environment removed from the list) its destroy.
    Pending,
    /// The commit failed validation; the last good state keeps running.
    Invalid,
    /// railyard stopped during the apply; the next start finishes it.
    Interrupted,
    /// The environment was torn down.
    Destroyed,
}

/// A stored word that names no trigger or outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{word}` is not a known {what}; known: {}", .known.join(", "))]
pub struct UnknownWord {
    pub what: &'static str,
    pub word: String,
    pub known: Vec<&'static str>,
}

/// An enum stored and shown as one lowercase word.
macro_rules! words {
    ($type:ident, $what:literal, { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl $type {
            pub const ALL: &'static [$type] = &[$($type::$variant),+];

            /// The stored and shown word.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($type::$variant => $word),+
                }
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $type {
            type Err = UnknownWord;

            fn from_str(word: &str) -> Result<Self, UnknownWord> {
                $type::ALL.iter().copied().find(|value| value.as_str() == word).ok_or_else(|| UnknownWord {
                    what: $what,
                    word: word.to_owned(),
                    known: $type::ALL.iter().map(|value| value.as_str()).collect(),
                })
            }
        }
    };
}

words!(Trigger, "trigger", {
    Startup => "startup",
    Poll => "poll",
    Webhook => "webhook",
    Api => "api",
    Rollback => "rollback",
    Drift => "drift",
    Retry => "retry",
    Removed => "removed",
    Schedule => "schedule",
    Autoscale => "autoscale",
    Panic => "panic",
});

words!(SyncOutcome, "sync outcome", {
    Synced => "synced",
    Failed => "failed",
    RolledBack => "rolled-back",
    Pending => "pending",
    Invalid => "invalid",
    Interrupted => "interrupted",
    Destroyed => "destroyed",
});

impl Trigger {
    /// Whether the reconcile needs a fetch newer than the trigger: a drift check compares what runs with the commit
    /// already fetched.
    pub fn needs_fetch(self) -> bool {
        !matches!(self, Trigger::Drift | Trigger::Removed | Trigger::Schedule | Trigger::Autoscale | Trigger::Panic)
    }

    /// Asked for by a person (a sync or a rollback through the API, the page's button, the CLI): it applies under
    /// the manual sync policy and lets a held rollback through.
    pub fn is_manual(self) -> bool {
        matches!(self, Trigger::Api | Trigger::Rollback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back_as_its_value_and_serialises_as_the_word() {
        for trigger in Trigger::ALL {
            assert_eq!(trigger.as_str().parse::<Trigger>(), Ok(*trigger));
            let json = serde_json::to_string(trigger).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", trigger.as_str()));
        }
        for outcome in SyncOutcome::ALL {
            assert_eq!(outcome.as_str().parse::<SyncOutcome>(), Ok(*outcome));
            let json = serde_json::to_string(outcome).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", outcome.as_str()));
        }
    }

    #[test]
    fn an_unknown_word_names_the_known_ones() {
        let error = "exploded".parse::<SyncOutcome>().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("`exploded` is not a known sync outcome") && error.contains("rolled-back"), "{error}");
    }
}
