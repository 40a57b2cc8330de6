//! The actions stage: what axiomd does about a rule's finding, and about a user's "tell the
//! agent this". The rules stage reports a violation and hands the finding here
//! ([`Actions::submit`]); the actions thread ([`Actions::run`]) turns it into the rule's
//! intervention — a message delivered to the agent's model (`deliver.rs`: typed into its
//! terminal the way its kind reads input, or handed over through Claude Code's hooks,
//! `hooks.rs`), a freeze, a kill — and reports it as an `intervention` event that says whether
//! the message arrived.
pub(crate) mod deliver;
pub(crate) mod hooks;
mod intervention;
pub(crate) mod terminal;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, mpsc},
    time::Instant,
};

use axiom_proto::{
    agent_profile::{Profile, Profiles},
    wire::{Body, Channel},
};
use axiom_rules::{Action, Deliver, RuleSet};

use crate::{
    agents::{Agent, Agents, Steer, notice},
    authz::Caller,
    bus::Bus,
    rules::{
        Claims,
        engine::{Finding, PluginFault},
    },
    screens::Screens,
};

pub(crate) use deliver::Message;
pub(crate) use intervention::Intervention;
use terminal::Terminals;

/// Findings waiting for the actions thread; more are counted lost (`actions_backlog`).
const BACKLOG: usize = 4096;

/// Messages being delivered at once (each on a thread of its own, which may wait for its agent
/// to be idle), per agent and in all. One more is not delivered, counted as the loss
/// `deliver_shed`: an agent that keeps a spinner going and trips a rule once a minute grew
/// axiomd's threads without bound (against systemd's `TasksMax`). The rule's cooldown makes
/// two per agent enough: one waiting for idle, one more that came meanwhile.
pub(crate) const DELIVER_PER_AGENT: usize = 2;
pub(crate) const DELIVER_MAX: usize = 64;

/// Deliveries in flight, per agent; a `Delivering` gives its place back when dropped.
#[derive(Default)]
struct InFlight {
    per_agent: Mutex<HashMap<u64, usize>>,
}

struct Delivering {
    flight: Arc<InFlight>,
    agent: u64,
}

impl InFlight {
    /// A place for one more delivery to `agent`, if both bounds allow.
    fn enter(self: &Arc<Self>, agent: u64) -> Option<Delivering> {
        let mut m = self.per_agent.lock().ok()?;
        // At most DELIVER_MAX agents have an entry: the sum is a short walk.
        let all: usize = m.values().sum();
        let n = m.entry(agent).or_default();
        if *n >= DELIVER_PER_AGENT || all >= DELIVER_MAX {
            return None;
        }
        *n += 1;
        Some(Delivering {
            flight: self.clone(),
            agent,
        })
    }
}

impl Drop for Delivering {
    fn drop(&mut self) {
        if let Ok(mut m) = self.flight.per_agent.lock()
            && let Some(n) = m.get_mut(&self.agent)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.agent);
            }
        }
    }
}

/// A message no channel has taken yet (a Claude Code hook call may take it).
struct Pending {
    id: u64,
    text: String,
    taken: bool,
}

pub(crate) struct Actions {
    agents: Arc<Agents>,
    /// What the rules say of an agent's claims (a Stop hook's last message).
    claims: Claims,
    /// What the agents' terminals show, and a notification when that changes.
    screens: Arc<Screens>,
    bus: Arc<Bus>,
    pub(crate) terminals: Arc<Terminals>,
    profiles: Profiles,
    queue: mpsc::SyncSender<(Arc<RuleSet>, Finding)>,
    /// Per agent, messages that wait (for the agent to be idle, or for a hook call).
    pending: Mutex<HashMap<u64, Vec<Pending>>>,
    /// Notified when a message is parked (a Stop hook waits for one on its way).
    parked: std::sync::Condvar,
    next_pending: std::sync::atomic::AtomicU64,
    /// Per agent, the stops refused in a row (Claude Code ends a turn after 8 anyway; we let
    /// it go after 3 so that an agent that cannot do better is not held in a loop).
    stop_refusals: Mutex<HashMap<u64, u32>>,
    /// Per hooked agent, whether its hooks have called (`true`) or were found not running
    /// (`false`, reported once as `hooks_inactive`); absent: neither yet.
    hooks_live: Mutex<HashMap<u64, bool>>,
    /// Messages being delivered, bounded per agent and in all.
    delivering: Arc<InFlight>,
}

/// The receiving end of the actions queue, for [`Actions::run`].
pub(crate) struct Queue(mpsc::Receiver<(Arc<RuleSet>, Finding)>);

impl Actions {
    pub(crate) fn new(
        agents: Arc<Agents>,
        claims: Claims,
        bus: Arc<Bus>,
        terminals: Arc<Terminals>,
        profiles: Profiles,
    ) -> (Arc<Actions>, Queue) {
        let (queue, rx) = mpsc::sync_channel(BACKLOG);
        let a = Actions {
            agents,
            claims,
            screens: terminals.screens(),
            bus,
            terminals,
            profiles,
            queue,
            pending: Mutex::new(HashMap::new()),
            parked: std::sync::Condvar::new(),
            next_pending: std::sync::atomic::AtomicU64::new(1),
            stop_refusals: Mutex::new(HashMap::new()),
            hooks_live: Mutex::new(HashMap::new()),
            delivering: Arc::default(),
        };
        (Arc::new(a), Queue(rx))
    }

    pub(crate) fn profiles(&self) -> &Profiles {
        &self.profiles
    }

    /// The agent as it is now.
    fn agent(&self, id: u64) -> Option<Agent> {
        self.agents.get(id)
    }

    /// The profile of an agent's kind (generic when it has none).
    pub(crate) fn profile_of(&self, a: &Agent) -> Profile {
        self.profiles.of(a.kind.as_deref())
    }

    /// The actions thread: until `stop` is set and what was queued before it is carried out.
    pub(crate) fn run(self: Arc<Self>, q: Queue, stop: &std::sync::atomic::AtomicBool) {
        loop {
            let (set, f) = match q.0.recv_timeout(std::time::Duration::from_millis(100)) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout)
                    if !stop.load(std::sync::atomic::Ordering::Relaxed) =>
                {
                    continue;
                }
                Err(_) => return,
            };
            // A message is paced (hundreds of ms) and may wait for the agent to be idle: it
            // gets a thread of its own, so freezes and kills of other agents do not wait
            // behind it (each agent's terminal types one message at a time).
            let inject = set
                .rules
                .get(f.rule)
                .is_some_and(|r| r.action == Action::Inject);
            if inject {
                let Some(place) = self.delivering.enter(f.agent) else {
                    self.bus.stats.count_loss("deliver_shed");
                    continue;
                };
                let me = self.clone();
                let spawned = std::thread::Builder::new()
                    .name("deliver".into())
                    .spawn(move || {
                        // Held by the thread that delivers, given back when it ends.
                        let _place = place;
                        me.intervene_for(&set, &f)
                    });
                if spawned.is_err() {
                    tracing::warn!("no thread to deliver a message on");
                    self.bus.stats.count_loss("actions_no_thread");
                }
            } else {
                self.intervene_for(&set, &f);
            }
        }
    }

    /// Carries out a finding's action and reports it as an `intervention` event.
    fn intervene_for(&self, set: &RuleSet, f: &Finding) {
        let Some(r) = set.rules.get(f.rule) else {
            return;
        };
        let Some(agent) = self.agent(f.agent) else {
            return;
        };
        let t0 = Instant::now();
        let Some(action) = crate::rules::engine::effective(r.action, f.in_kernel) else {
            let what = format!("pid {} killed in the kernel before its write landed", f.pid);
            self.bus.publish(
                Intervention::by_rule(axiom_proto::wire::Action::Deny, &r.id, &what)
                    .channel(Channel::Kernel)
                    .timed(f.latency_us, Some(0.0), None)
                    .event(&agent),
            );
            return;
        };
        let mut queued_us = None;
        let (what, delivered, channel) = match action {
            Action::Alert => return,
            Action::Inject => {
                let msg = Message {
                    text: &r.message,
                    interrupt: r.deliver == Deliver::Interrupt,
                    wait_idle: r.deliver == Deliver::Idle,
                };
                let d = self.deliver(&agent, &msg);
                queued_us = (!d.queued.is_zero()).then_some(d.queued.as_secs_f64() * 1e6);
                let what = match (&d.error, d.delivered) {
                    (Some(e), _) => format!("not delivered: {e}: {}", r.message),
                    (None, true) => r.message.clone(),
                    (None, false) => format!(
                        "typed {} times, the agent's screen never showed it: {}",
                        d.attempts, r.message
                    ),
                };
                (what, Some(d.delivered), Some(d.channel))
            }
            Action::Freeze | Action::Kill | Action::Deny => {
                let how = if action == Action::Freeze {
                    Steer::Freeze
                } else {
                    Steer::Kill
                };
                let done = self
                    .agents
                    .with(|c| c.steer(f.agent, how, Caller::ROOT).map(drop))
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                let what = match done {
                    Ok(()) => r.message.clone(),
                    Err(e) => format!("failed: {e}"),
                };
                (what, None, None)
            }
        };
        let mut i = Intervention::by_rule(action.wire(), &r.id, &what)
            .delivered(delivered)
            .timed(
                f.latency_us,
                Some(t0.elapsed().as_secs_f64() * 1e6),
                queued_us,
            );
        if let Some(c) = channel {
            i = i.channel(c);
        }
        self.bus.publish(i.event(&agent));
    }

    /// A user's message for an agent (`axiomctl inject`, D-Bus, MCP), delivered as a rule's
    /// would be, interrupting the agent; `raw` types the bytes as they are (no confirmation).
    /// Reported as an `intervention` event by the caller's uid, with the secrets `set` knows
    /// masked in what it says was typed.
    pub(crate) fn inject(
        &self,
        set: &RuleSet,
        agent: &Agent,
        text: &str,
        raw: bool,
        by_uid: u32,
    ) -> Result<Option<bool>, terminal::TerminalError> {
        let t0 = Instant::now();
        let delivered = if raw {
            self.screens.typed(agent.id, text);
            self.terminals.inject(agent.id, text.as_bytes())?;
            None
        } else {
            if !self.terminals.has(agent.id) {
                return Err(terminal::TerminalError::NoTerminal(agent.id));
            }
            let d = self.deliver(
                agent,
                &Message {
                    text,
                    interrupt: true,
                    wait_idle: false,
                },
            );
            if let Some(e) = d.error {
                return Err(e);
            }
            Some(d.delivered)
        };
        let shown = set
            .redact(None, text)
            .map_or_else(|| text.into(), |(m, _)| m);
        self.bus.publish(
            Intervention::by_user(axiom_proto::wire::Action::Inject, by_uid, shown)
                .channel(Channel::Terminal)
                .delivered(delivered)
                .timed(None, Some(t0.elapsed().as_secs_f64() * 1e6), None)
                .event(agent),
        );
        Ok(delivered)
    }

    /// An agent is gone: what waited for it is dropped (its waiters see it gone).
    pub(crate) fn forget(&self, agent: u64) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&agent);
        }
        if let Ok(mut s) = self.stop_refusals.lock() {
            s.remove(&agent);
        }
        if let Ok(mut h) = self.hooks_live.lock() {
            h.remove(&agent);
        }
    }

    /// One of the agent's hooks called: they run.
    pub(crate) fn hook_called(&self, agent: u64) {
        if let Ok(mut h) = self.hooks_live.lock() {
            h.insert(agent, true);
        }
    }

    /// Whether a message for `agent` may wait for its next hook call: it was run with Axiom's
    /// hooks and they were not found inactive.
    pub(crate) fn hooks_usable(&self, agent: &Agent) -> bool {
        agent.hooks
            && self
                .hooks_live
                .lock()
                .map_or(true, |h| h.get(&agent.id) != Some(&false))
    }

    /// A hooked agent did `what` (a finding about its work): when none of its hooks has called
    /// yet, they are not running — every hook Axiom installs is called before the model's
    /// first turn (a prompt's) and before each command or write it could refuse, so the agent's
    /// work cannot come first. Reported once (`hooks_inactive`); its messages are typed from
    /// then on.
    fn hooks_ran_before(&self, agent: &Agent, what: &str) {
        if !agent.hooks {
            return;
        }
        {
            let Ok(mut h) = self.hooks_live.lock() else {
                return;
            };
            if h.contains_key(&agent.id) {
                return;
            }
            h.insert(agent.id, false);
        }
        let reason = format!(
            "{what} before any of its hooks called axiomd: nothing is refused before it runs, \
             and messages are typed into its terminal"
        );
        tracing::warn!(agent = agent.id, "hooks inactive: {reason}");
        self.bus.publish(crate::agents::notice(
            agent,
            axiom_proto::wire::Body::HooksInactive { reason },
        ));
    }

    /// Queues a message for a hook call to take; its id.
    fn park(&self, agent: u64, text: &str) -> u64 {
        let id = self
            .next_pending
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut p) = self.pending.lock() {
            p.entry(agent).or_default().push(Pending {
                id,
                text: text.to_string(),
                taken: false,
            });
        }
        self.parked.notify_all();
        id
    }

    /// Whether a hook call took message `id` (removing it either way: it is settled now).
    fn unpark(&self, agent: u64, id: u64) -> bool {
        let Ok(mut p) = self.pending.lock() else {
            return false;
        };
        let Some(v) = p.get_mut(&agent) else {
            return false;
        };
        let taken = v.iter().any(|m| m.id == id && m.taken);
        v.retain(|m| m.id != id);
        taken
    }

    /// Whether message `id` was taken by a hook call (it stays parked for `unpark`).
    fn taken(&self, agent: u64, id: u64) -> bool {
        self.pending.lock().is_ok_and(|p| {
            p.get(&agent)
                .is_some_and(|v| v.iter().any(|m| m.id == id && m.taken))
        })
    }

    /// Takes every parked message of an agent (a hook call hands them to its model); whoever
    /// waits to type one of them into the agent's terminal is woken to see it taken.
    fn take_parked(&self, agent: u64) -> Vec<String> {
        let took = match self.pending.lock() {
            Ok(mut p) => Self::take_from(&mut p, agent),
            Err(_) => return Vec::new(),
        };
        if !took.is_empty() {
            self.screens.nudge();
        }
        took
    }

    fn take_from(p: &mut HashMap<u64, Vec<Pending>>, agent: u64) -> Vec<String> {
        p.get_mut(&agent)
            .map(|v| {
                v.iter_mut()
                    .filter(|m| !m.taken)
                    .map(|m| {
                        m.taken = true;
                        m.text.clone()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The rules stage hands its findings here.
impl crate::rules::Enforce for Actions {
    /// A finding whose rule acts: carried out on the actions thread, so the thread that found
    /// it goes straight back to finding (acting may block on a terminal or a cgroup file).
    fn submit(&self, set: &Arc<RuleSet>, f: Finding) {
        if let Err(mpsc::TrySendError::Full(_)) = self.queue.try_send((set.clone(), f)) {
            self.bus.stats.count_loss("actions_backlog");
        }
    }

    fn note_work(&self, agent: &Agent, what: &str) {
        self.hooks_ran_before(agent, what);
    }

    /// Reports a plugin call a sandbox limit stopped: a `denied` event on the agent whose event
    /// it was looking at (the sandbox refused the plugin more fuel, memory or time).
    fn plugin_fault(&self, set: &RuleSet, f: &PluginFault) {
        let Some(r) = set.rules.get(f.rule) else {
            return;
        };
        let path = r
            .plugin
            .as_ref()
            .map(|p| p.plugin.path.display().to_string())
            .unwrap_or_default();
        tracing::warn!(rule = %r.id, plugin = %path, fault = %f.fault, switched_off = f.disabled, "plugin call stopped");
        let Some(agent) = self.agent(f.agent) else {
            return;
        };
        let mut by = f.fault.to_string();
        if f.disabled {
            by.push_str(&format!(
                "; switched off for this agent after {} stopped calls in a row, until the rules reload",
                axiom_rules::PLUGIN_STRIKES
            ));
        }
        let mut ev = notice(
            &agent,
            Body::Denied {
                op: axiom_proto::wire::DeniedOp::Plugin,
                target: format!("rule {} ({path})", r.id),
                by,
                count: 1,
            },
        );
        if f.pid != 0 {
            (ev.pid, ev.tgid) = (f.pid, f.pid);
        }
        self.bus.publish(ev);
    }
}

impl crate::bus::Describe for Actions {
    /// The bounds on messages being delivered.
    fn describe(&self, st: &mut axiom_proto::wire::Status) {
        st.bounds.extend([
            (
                "messages_in_flight_per_agent".to_string(),
                DELIVER_PER_AGENT as u64,
            ),
            ("messages_in_flight".to_string(), DELIVER_MAX as u64),
        ]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages in flight are bounded per agent and in all; a finished one gives its place back.
    #[test]
    fn deliveries_in_flight_are_bounded() {
        let f = Arc::new(InFlight::default());
        let held: Vec<Delivering> = (0..DELIVER_PER_AGENT)
            .map(|_| f.enter(1).expect("a place"))
            .collect();
        assert!(f.enter(1).is_none(), "a third message for one agent");
        drop(held);
        assert!(f.enter(1).is_some(), "places given back");
        let many: Vec<Delivering> = (0..DELIVER_MAX as u64)
            .filter_map(|a| f.enter(100 + a))
            .collect();
        assert_eq!(many.len(), DELIVER_MAX);
        assert!(f.enter(7).is_none(), "past the bound in all");
    }
}
