//! The `intervention` event, built one way wherever an action is taken: by a rule (its id
//! leads the detail) or by a user (their uid), then what carried it and how it went.
use axiom_proto::wire::{Action, Body, Channel, Event};

use crate::agents::{Agent, notice};

/// An intervention being described; [`Intervention::event`] makes the event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Intervention {
    action: Action,
    by_uid: Option<u32>,
    rule: Option<String>,
    detail: String,
    detect_us: Option<f64>,
    act_us: Option<f64>,
    queued_us: Option<f64>,
    delivered: Option<bool>,
    channel: Option<Channel>,
}

impl Intervention {
    /// What rule `rule` called for: the detail reads `rule <id>: <what>`.
    pub(crate) fn by_rule(action: Action, rule: &str, what: &str) -> Self {
        Intervention {
            rule: Some(rule.to_string()),
            detail: format!("rule {rule}: {what}"),
            ..Self::new(action, None)
        }
    }

    /// What user `uid` asked for; `detail` as it may be shown (secrets masked by the caller).
    pub(crate) fn by_user(action: Action, uid: u32, detail: String) -> Self {
        Intervention {
            detail,
            ..Self::new(action, Some(uid))
        }
    }

    fn new(action: Action, by_uid: Option<u32>) -> Self {
        Intervention {
            action,
            by_uid,
            rule: None,
            detail: String::new(),
            detect_us: None,
            act_us: None,
            queued_us: None,
            delivered: None,
            channel: None,
        }
    }

    /// What carried it: `kernel`, `hook`, `terminal`, or a delivery's own channel.
    pub(crate) fn channel(mut self, channel: Channel) -> Self {
        self.channel = Some(channel);
        self
    }

    /// Whether the message reached the agent (messages only).
    pub(crate) fn delivered(mut self, delivered: Option<bool>) -> Self {
        self.delivered = delivered;
        self
    }

    /// From the offending syscall to the violation, carrying the action out, and waiting in a
    /// queue first (µs).
    pub(crate) fn timed(
        mut self,
        detect_us: Option<f64>,
        act_us: Option<f64>,
        queued_us: Option<f64>,
    ) -> Self {
        (self.detect_us, self.act_us, self.queued_us) = (detect_us, act_us, queued_us);
        self
    }

    pub(crate) fn body(self) -> Body {
        Body::Intervention {
            action: self.action,
            by_uid: self.by_uid,
            detail: self.detail,
            rule: self.rule,
            detect_us: self.detect_us,
            act_us: self.act_us,
            delivered: self.delivered,
            channel: self.channel,
            queued_us: self.queued_us,
        }
    }

    /// The event, about `agent` as a whole.
    pub(crate) fn event(self, agent: &Agent) -> Event {
        notice(agent, self.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rules_detail_leads_with_its_id_and_a_users_names_them() {
        let Body::Intervention {
            detail,
            rule,
            by_uid,
            channel,
            delivered,
            ..
        } = Intervention::by_rule(Action::Deny, "curl-pipe-shell", "refused")
            .channel(Channel::Hook)
            .delivered(Some(true))
            .body()
        else {
            unreachable!()
        };
        assert_eq!(detail, "rule curl-pipe-shell: refused");
        assert_eq!(rule.as_deref(), Some("curl-pipe-shell"));
        assert_eq!(
            (by_uid, channel, delivered),
            (None, Some(Channel::Hook), Some(true))
        );
        let Body::Intervention { by_uid, rule, .. } =
            Intervention::by_user(Action::Freeze, 1000, String::new()).body()
        else {
            unreachable!()
        };
        assert_eq!((by_uid, rule), (Some(1000), None));
    }
}
