//! Subscription approval rules: the one place that says how a subscription's state
//! may change and what state a new subscription starts in.

use crate::model::SubscriptionState;

/// An admin's decision on a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionAction {
    Approve,
    Reject,
    Revoke,
}

impl SubscriptionAction {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionAction::Approve => "approve",
            SubscriptionAction::Reject => "reject",
            SubscriptionAction::Revoke => "revoke",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {} a subscription that is {}; allowed: {}", action.as_str(), from.as_str(), allowed_list(allowed))]
pub struct IllegalSubscriptionAction {
    pub from: SubscriptionState,
    pub action: SubscriptionAction,
    pub allowed: Vec<SubscriptionAction>,
}

fn allowed_list(allowed: &[SubscriptionAction]) -> String {
    if allowed.is_empty() {
        return "none".into();
    }
    allowed.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")
}

/// A new subscription waits for an admin when its plan requires approval.
pub fn initial_state(requires_approval: bool) -> SubscriptionState {
    if requires_approval { SubscriptionState::Pending } else { SubscriptionState::Approved }
}

/// Actions an admin may take on a subscription in `state`.
pub fn allowed_actions(state: SubscriptionState) -> &'static [SubscriptionAction] {
    use SubscriptionAction::*;
    match state {
        SubscriptionState::Pending => &[Approve, Reject],
        SubscriptionState::Approved => &[Revoke],
        // Rejected and revoked are final: the developer subscribes again instead.
        SubscriptionState::Rejected | SubscriptionState::Revoked => &[],
    }
}

/// Applies `action`, or explains why it is not allowed.
pub fn apply(
    state: SubscriptionState,
    action: SubscriptionAction,
) -> Result<SubscriptionState, IllegalSubscriptionAction> {
    if !allowed_actions(state).contains(&action) {
        return Err(IllegalSubscriptionAction { from: state, action, allowed: allowed_actions(state).to_vec() });
    }
    Ok(match action {
        SubscriptionAction::Approve => SubscriptionState::Approved,
        SubscriptionAction::Reject => SubscriptionState::Rejected,
        SubscriptionAction::Revoke => SubscriptionState::Revoked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use SubscriptionAction::*;
    use SubscriptionState::*;

    #[test]
    fn full_transition_table() {
        let expected = [
            (Pending, Approve, Some(Approved)),
            (Pending, Reject, Some(Rejected)),
            (Pending, Revoke, None),
            (Approved, Approve, None),
            (Approved, Reject, None),
            (Approved, Revoke, Some(Revoked)),
            (Rejected, Approve, None),
            (Rejected, Reject, None),
            (Rejected, Revoke, None),
            (Revoked, Approve, None),
            (Revoked, Reject, None),
            (Revoked, Revoke, None),
        ];
        for (from, action, to) in expected {
            assert_eq!(apply(from, action).ok(), to, "{from:?} {action:?}");
        }
    }

    #[test]
    fn refusal_names_state_and_alternatives() {
        let err = apply(Pending, Revoke).unwrap_err();
        assert_eq!(err.to_string(), "cannot revoke a subscription that is pending; allowed: approve, reject");
        assert_eq!(
            apply(Revoked, Approve).unwrap_err().to_string(),
            "cannot approve a subscription that is revoked; allowed: none"
        );
    }

    #[test]
    fn approval_requirement_decides_the_initial_state() {
        assert_eq!(initial_state(true), Pending);
        assert_eq!(initial_state(false), Approved);
    }
}
