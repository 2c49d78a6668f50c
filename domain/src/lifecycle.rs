//! The API version lifecycle: draft → published → deprecated → retired.
//! This module is the one place that decides which state changes are legal and
//! which operations a version's state permits; handlers and the store only ask.
//!
//! | from \ transition | publish   | deprecate  | retire  |
//! |-------------------|-----------|------------|---------|
//! | draft             | published | —          | retired |
//! | published         | —         | deprecated | retired |
//! | deprecated        | published | —          | retired |
//! | retired           | —         | —          | —       |
//!
//! Nothing ever returns to draft (a draft is edited in place; to change a live
//! version, copy it into a new draft), and a retired version is final: it cannot be
//! published again, because clients were told it was gone. A draft may be retired to
//! abandon it while keeping it on record. Publishing a deprecated version
//! un-deprecates it and clears its sunset date.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{Timestamp, VersionState};

/// A request to move a version to another state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    Publish,
    Deprecate,
    Retire,
}

impl Transition {
    pub const ALL: [Transition; 3] = [Transition::Publish, Transition::Deprecate, Transition::Retire];

    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Publish => "publish",
            Transition::Deprecate => "deprecate",
            Transition::Retire => "retire",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The state a successful transition leads to, whatever the state it starts from.
    pub fn target(self) -> VersionState {
        match self {
            Transition::Publish => VersionState::Published,
            Transition::Deprecate => VersionState::Deprecated,
            Transition::Retire => VersionState::Retired,
        }
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a lifecycle operation was refused. Every message names the version's
/// current state so that an admin can tell what to do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error(
        "cannot {transition} a {} version; allowed from {}: {}",
        from.as_str(),
        from.as_str(),
        describe(allowed)
    )]
    IllegalTransition { from: VersionState, transition: Transition, allowed: Vec<Transition> },
    #[error("deprecating a version requires a sunset date (sunset_at)")]
    SunsetRequired,
    #[error("sunset date {} is not in the future", sunset_at.to_rfc3339())]
    SunsetInPast { sunset_at: Timestamp },
    #[error("a sunset date only applies when deprecating, not to {transition}")]
    SunsetNotApplicable { transition: Transition },
    #[error("a {} version is read-only", state.as_str())]
    Immutable { state: VersionState },
    #[error("OpenAPI documents can only be imported into a draft version; this version is {}", state.as_str())]
    NotDraft { state: VersionState },
    #[error("a {} version cannot be deleted; retire it first", state.as_str())]
    NotDeletable { state: VersionState },
}

fn describe(allowed: &[Transition]) -> String {
    if allowed.is_empty() {
        return "none (retired versions are final)".to_owned();
    }
    allowed.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
}

/// The transitions a version in `state` may take, in a stable order.
pub fn allowed_transitions(state: VersionState) -> &'static [Transition] {
    match state {
        VersionState::Draft => &[Transition::Publish, Transition::Retire],
        VersionState::Published => &[Transition::Deprecate, Transition::Retire],
        VersionState::Deprecated => &[Transition::Publish, Transition::Retire],
        VersionState::Retired => &[],
    }
}

/// Applies `t` to a version in `state` and returns its new state.
///
/// `sunset_at` is required by [`Transition::Deprecate`] and must be later than
/// `now`. Any other transition given a sunset date is refused rather than silently
/// ignoring it, since a client sending one has misunderstood the operation. What
/// happens to the stored sunset date afterwards is decided by [`sunset_after`].
pub fn transition(
    state: VersionState,
    t: Transition,
    sunset_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<VersionState, LifecycleError> {
    let allowed = allowed_transitions(state);
    if !allowed.contains(&t) {
        return Err(LifecycleError::IllegalTransition { from: state, transition: t, allowed: allowed.to_vec() });
    }
    match (t, sunset_at) {
        (Transition::Deprecate, None) => return Err(LifecycleError::SunsetRequired),
        (Transition::Deprecate, Some(sunset)) => check_sunset(sunset, now)?,
        (_, Some(_)) => return Err(LifecycleError::SunsetNotApplicable { transition: t }),
        (_, None) => {}
    }
    Ok(t.target())
}

/// The sunset date a version carries after a successful transition `t`, given the
/// one it had (`current`) and the one sent with the request (`requested`).
/// Deprecating sets it; publishing (including un-deprecating) clears it, because a
/// live, non-deprecated version has no end date; retiring keeps it as a record of
/// what clients were promised.
pub fn sunset_after(t: Transition, current: Option<Timestamp>, requested: Option<Timestamp>) -> Option<Timestamp> {
    match t {
        Transition::Deprecate => requested,
        Transition::Publish => None,
        Transition::Retire => current,
    }
}

/// Checks a sunset date given outside a transition (for example when an admin moves
/// the sunset of an already deprecated version): it must lie in the future.
pub fn check_sunset(sunset_at: Timestamp, now: Timestamp) -> Result<(), LifecycleError> {
    if sunset_at <= now {
        return Err(LifecycleError::SunsetInPast { sunset_at });
    }
    Ok(())
}

/// A version's metadata and routes may be changed unless it is retired.
pub fn ensure_editable(state: VersionState) -> Result<(), LifecycleError> {
    match state {
        VersionState::Retired => Err(LifecycleError::Immutable { state }),
        _ => Ok(()),
    }
}

/// An OpenAPI import replaces a version's routes wholesale, which is only safe
/// before the version carries traffic, so it is limited to drafts.
pub fn ensure_importable(state: VersionState) -> Result<(), LifecycleError> {
    match state {
        VersionState::Draft => Ok(()),
        _ => Err(LifecycleError::NotDraft { state }),
    }
}

/// Only versions that carry no traffic (draft or retired) may be deleted; a live
/// version must be retired first so that its clients get a clear 410, not a 404.
pub fn ensure_deletable(state: VersionState) -> Result<(), LifecycleError> {
    match state {
        VersionState::Draft | VersionState::Retired => Ok(()),
        _ => Err(LifecycleError::NotDeletable { state }),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Utc};

    use super::*;
    use VersionState::*;

    fn now() -> Timestamp {
        Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap()
    }

    /// The full table: the state each (state, transition) pair leads to, or `None`
    /// where the move is illegal. Deprecation gets a valid future sunset date.
    #[test]
    fn transition_table_is_exactly_as_documented() {
        let expected = |from: VersionState, t: Transition| -> Option<VersionState> {
            match (from, t) {
                (Draft, Transition::Publish) => Some(Published),
                (Draft, Transition::Retire) => Some(Retired),
                (Published, Transition::Deprecate) => Some(Deprecated),
                (Published, Transition::Retire) => Some(Retired),
                (Deprecated, Transition::Publish) => Some(Published),
                (Deprecated, Transition::Retire) => Some(Retired),
                _ => None,
            }
        };
        let mut legal = 0;
        for from in VersionState::ALL {
            for t in Transition::ALL {
                let sunset = (t == Transition::Deprecate).then(|| now() + Duration::days(30));
                let got = transition(from, t, sunset, now());
                match expected(from, t) {
                    Some(to) => {
                        legal += 1;
                        assert_eq!(got, Ok(to), "{from:?} --{t}--> should reach {to:?}");
                        assert!(allowed_transitions(from).contains(&t));
                    }
                    None => {
                        assert_eq!(
                            got,
                            Err(LifecycleError::IllegalTransition {
                                from,
                                transition: t,
                                allowed: allowed_transitions(from).to_vec(),
                            }),
                            "{from:?} --{t}--> should be illegal"
                        );
                        assert!(!allowed_transitions(from).contains(&t));
                    }
                }
            }
        }
        assert_eq!(legal, 6);
    }

    #[test]
    fn nothing_returns_to_draft_and_retired_is_final() {
        for from in VersionState::ALL {
            for t in allowed_transitions(from) {
                assert_ne!(t.target(), Draft);
            }
        }
        assert!(allowed_transitions(Retired).is_empty());
    }

    #[test]
    fn deprecation_requires_a_future_sunset() {
        assert_eq!(transition(Published, Transition::Deprecate, None, now()), Err(LifecycleError::SunsetRequired));
        let past = now() - Duration::seconds(1);
        assert_eq!(
            transition(Published, Transition::Deprecate, Some(past), now()),
            Err(LifecycleError::SunsetInPast { sunset_at: past })
        );
        // A sunset at exactly `now` has already arrived.
        assert_eq!(
            transition(Published, Transition::Deprecate, Some(now()), now()),
            Err(LifecycleError::SunsetInPast { sunset_at: now() })
        );
        let future = now() + Duration::seconds(1);
        assert_eq!(transition(Published, Transition::Deprecate, Some(future), now()), Ok(Deprecated));
    }

    #[test]
    fn illegal_transition_is_reported_before_sunset_problems() {
        // A retired version is refused for being retired, not for a missing sunset.
        assert!(matches!(
            transition(Retired, Transition::Deprecate, None, now()),
            Err(LifecycleError::IllegalTransition { from: Retired, .. })
        ));
    }

    #[test]
    fn sunset_is_refused_on_other_transitions() {
        let future = Some(now() + Duration::days(1));
        for (from, t) in
            [(Draft, Transition::Publish), (Published, Transition::Retire), (Deprecated, Transition::Publish)]
        {
            assert_eq!(transition(from, t, future, now()), Err(LifecycleError::SunsetNotApplicable { transition: t }));
        }
    }

    #[test]
    fn sunset_after_sets_clears_or_keeps() {
        let old = Some(now() + Duration::days(10));
        let new = Some(now() + Duration::days(20));
        assert_eq!(sunset_after(Transition::Deprecate, old, new), new);
        assert_eq!(sunset_after(Transition::Publish, old, None), None);
        assert_eq!(sunset_after(Transition::Retire, old, None), old);
    }

    #[test]
    fn check_sunset_rejects_now_and_past() {
        assert!(check_sunset(now() + Duration::milliseconds(1), now()).is_ok());
        assert!(check_sunset(now(), now()).is_err());
        assert!(check_sunset(now() - Duration::days(1), now()).is_err());
    }

    #[test]
    fn permissions_by_state() {
        let table = [
            // state, editable, importable, deletable
            (Draft, true, true, true),
            (Published, true, false, false),
            (Deprecated, true, false, false),
            (Retired, false, false, true),
        ];
        for (state, editable, importable, deletable) in table {
            assert_eq!(ensure_editable(state).is_ok(), editable, "editable {state:?}");
            assert_eq!(ensure_importable(state).is_ok(), importable, "importable {state:?}");
            assert_eq!(ensure_deletable(state).is_ok(), deletable, "deletable {state:?}");
        }
        assert_eq!(ensure_editable(Retired), Err(LifecycleError::Immutable { state: Retired }));
        assert_eq!(ensure_importable(Published), Err(LifecycleError::NotDraft { state: Published }));
        assert_eq!(ensure_deletable(Deprecated), Err(LifecycleError::NotDeletable { state: Deprecated }));
    }

    #[test]
    fn messages_name_state_and_allowed_transitions() {
        let err = transition(Draft, Transition::Deprecate, None, now()).unwrap_err();
        assert_eq!(err.to_string(), "cannot deprecate a draft version; allowed from draft: publish, retire");
        let err = transition(Retired, Transition::Publish, None, now()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot publish a retired version; allowed from retired: none (retired versions are final)"
        );
        let err = ensure_deletable(Published).unwrap_err();
        assert_eq!(err.to_string(), "a published version cannot be deleted; retire it first");
    }

    #[test]
    fn transition_names_round_trip_through_serde_and_parse() {
        for t in Transition::ALL {
            assert_eq!(serde_json::to_value(t).unwrap(), serde_json::json!(t.as_str()));
            assert_eq!(Transition::parse(t.as_str()), Some(t));
        }
        assert_eq!(Transition::parse("unpublish"), None);
    }
}
