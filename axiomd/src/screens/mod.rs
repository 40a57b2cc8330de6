//! The agents' terminals as their users see them: one emulated screen per terminal an agent
//! writes to (its own, and the ptys its commands run in), the texts typed into it, and when it
//! last painted its own terminal.
//!
//! A room of its own, with its own lock, because three stages need it and none owns it: the
//! rules thread feeds it each terminal write in the kernel's order and judges the rows that
//! changed; the actions ask whether an agent is idle and whether it showed what was typed into
//! it — and wait on this module's notification (a paint, a nudge) instead of polling another
//! stage's lock; the terminals the actions hold tell it the agent's own device and size.
use std::{
    collections::{BTreeMap, HashMap},
    os::fd::OwnedFd,
    sync::{Arc, Condvar, Mutex, MutexGuard, Weak},
    time::{Duration, Instant},
};

use axiom_rules::screen::{Changed, Screen};

use crate::kernel::pty;

/// Terminals emulated per agent at most: its own, and the ptys its commands run in (`script`,
/// `tmux`); a further pty it opens is not emulated (`screen_refused`), so an agent cannot make
/// axiomd hold a screen per pty it can open.
pub(crate) const SCREENS_PER_AGENT: usize = 8;

/// Texts typed into an agent remembered (the latest): their echo is not the agent's words.
const TYPED_KEPT: usize = 16;

/// Every agent's screens, behind one lock, with a notification for those who wait on them.
#[derive(Default)]
pub(crate) struct Screens {
    state: Mutex<State>,
    /// Notified on each paint of an agent's own terminal and on each nudge.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    agents: HashMap<u64, AgentScreens>,
    /// What a bound cut since the last `take_shed`, by cause.
    shed: BTreeMap<&'static str, u64>,
}

/// The agent's own terminal, when axiomd holds its master (`axiomctl run`): its screen is
/// emulated at its size, and only it is the agent's words (a command's pty inside it is not).
struct Own {
    device: String,
    rows: u16,
    cols: u16,
    /// The terminals' own (weak: a released terminal closes, the screens do not keep it open).
    master: Weak<OwnedFd>,
}

#[derive(Default)]
struct AgentScreens {
    own: Option<Own>,
    screens: HashMap<String, Screen>,
    /// When the agent last wrote to its own terminal (`None`: never): a busy TUI animates, an
    /// idle one is quiet.
    painted: Option<Instant>,
    typed: Vec<String>,
    /// The size of its terminals when axiomd holds none of them (a recorded session replayed:
    /// the size it ran at).
    size: Option<(u16, u16)>,
}

impl AgentScreens {
    fn shows(&self, text: &str) -> usize {
        self.screens.values().map(|s| s.occurrences(text)).sum()
    }
}

/// What a wait on an agent's screens ended with.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Waited {
    /// What was waited for holds.
    Done,
    /// The caller's own condition (checked on every wake) ended the wait.
    Interrupted,
    /// The deadline passed first.
    TimedOut,
}

impl Screens {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain data: a thread that panicked holding it left nothing half-done
        // that a screen model cannot recover from by its next paint.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The agent's own terminal is the pty whose master axiomd holds now.
    pub(crate) fn own(&self, agent: u64, master: &Arc<OwnedFd>) {
        let Some((device, rows, cols)) = pty::describe(master) else {
            return;
        };
        self.lock().agents.entry(agent).or_default().own = Some(Own {
            device,
            rows,
            cols,
            master: Arc::downgrade(master),
        });
    }

    /// The agent's terminals are `rows` × `cols`, though axiomd holds none of them (a recorded
    /// session replayed at the size it ran at).
    pub(crate) fn assume_size(&self, agent: u64, rows: u16, cols: u16) {
        self.lock().agents.entry(agent).or_default().size = Some((rows, cols));
    }

    /// Wakes whoever waits on the agent's screens to look again at their own condition (a hook
    /// took the message they wait to type; the terminal they type into closed).
    pub(crate) fn nudge(&self) {
        drop(self.lock());
        self.changed.notify_all();
    }

    /// An agent is gone: its screens with it.
    pub(crate) fn forget(&self, agent: u64) {
        self.lock().agents.remove(&agent);
        self.changed.notify_all();
    }

    /// Terminal output of `agent` to `device`. Returns the rows that changed, when `emulate`
    /// (a rule reads terminals) and the device is the agent's own terminal (or any, when axiomd
    /// does not hold it).
    pub(crate) fn paint(
        &self,
        agent: u64,
        device: &str,
        bytes: &[u8],
        now: Instant,
        emulate: bool,
    ) -> Option<Changed> {
        let mut st = self.lock();
        let State { agents, shed } = &mut *st;
        let a = agents.entry(agent).or_default();
        if a.own.as_ref().is_some_and(|o| o.device != device) {
            return None;
        }
        a.painted = Some(now);
        let changed = emulate.then(|| {
            if !a.screens.contains_key(device) {
                if a.screens.len() >= SCREENS_PER_AGENT {
                    *shed.entry("screen_refused").or_default() += 1;
                    return None;
                }
                let screen = match &a.own {
                    Some(o) => {
                        if axiom_rules::screen::bounded(o.rows, o.cols).2 {
                            *shed.entry("screen_clamped").or_default() += 1;
                        }
                        Screen::new(o.rows, o.cols)
                    }
                    None => match a.size {
                        Some((rows, cols)) => Screen::new(rows, cols),
                        None => Screen::default(),
                    },
                };
                a.screens.insert(device.to_string(), screen);
            }
            let changed = a.screens.get_mut(device)?.feed(bytes);
            (!changed.text.is_empty()).then_some(changed)
        });
        drop(st);
        self.changed.notify_all();
        changed.flatten()
    }

    /// Whether the text a hit keyed `key` stands in is new on that screen (not a repaint).
    pub(crate) fn first_time(&self, agent: u64, device: &str, key: u64) -> bool {
        self.lock()
            .agents
            .get_mut(&agent)
            .and_then(|a| a.screens.get_mut(device))
            .is_some_and(|s| s.first_time(key))
    }

    /// Records a text typed into an agent's terminal (its echo is not the agent's words).
    pub(crate) fn typed(&self, agent: u64, text: &str) {
        let mut st = self.lock();
        let v = &mut st.agents.entry(agent).or_default().typed;
        v.push(text.to_string());
        if v.len() > TYPED_KEPT {
            v.remove(0);
        }
    }

    /// The texts typed into the agent lately, oldest first.
    pub(crate) fn typed_into(&self, agent: u64) -> Vec<String> {
        self.lock()
            .agents
            .get(&agent)
            .map(|a| a.typed.clone())
            .unwrap_or_default()
    }

    /// Whether the agent's program asked its terminal for bracketed paste.
    pub(crate) fn pastes(&self, agent: u64) -> bool {
        self.lock()
            .agents
            .get(&agent)
            .is_some_and(|a| a.screens.values().any(Screen::bracketed_paste))
    }

    /// How many times the agent's screens show `text`.
    pub(crate) fn shows(&self, agent: u64, text: &str) -> usize {
        self.lock().agents.get(&agent).map_or(0, |a| a.shows(text))
    }

    /// The agent's own terminal resized: its screen follows (asked once a second: the kernel
    /// tells nobody of a `TIOCSWINSZ`).
    pub(crate) fn follow_sizes(&self) {
        let mut st = self.lock();
        let State { agents, shed } = &mut *st;
        for a in agents.values_mut() {
            let Some(o) = &mut a.own else { continue };
            let Some((_, rows, cols)) = o.master.upgrade().and_then(|m| pty::describe(&m)) else {
                continue;
            };
            (o.rows, o.cols) = (rows, cols);
            if let Some(s) = a.screens.get_mut(&o.device)
                && s.resize(rows, cols)
            {
                *shed.entry("screen_clamped").or_default() += 1;
            }
        }
    }

    /// What the bounds cut since the last call, by cause (counted as losses by the caller).
    pub(crate) fn take_shed(&self) -> BTreeMap<&'static str, u64> {
        std::mem::take(&mut self.lock().shed)
    }

    /// Waits until the agent's own terminal has been quiet for `idle` (or it never painted),
    /// or `interrupted` holds. `interrupted` is checked on every wake with this module's lock
    /// held, so a condition its owner sets before calling [`Screens::nudge`] is never missed;
    /// it must not call back into `Screens`.
    pub(crate) fn await_quiet(
        &self,
        agent: u64,
        idle: Duration,
        mut interrupted: impl FnMut() -> bool,
    ) -> Waited {
        self.wait(None, |st, now| {
            if interrupted() {
                return Ok(Waited::Interrupted);
            }
            let painted = st.agents.get(&agent).and_then(|a| a.painted);
            match painted.map(|p| now.saturating_duration_since(p)) {
                // Not quiet yet: look again when it would be, or at the next paint.
                Some(quiet) if quiet < idle => Err(Some(idle - quiet)),
                _ => Ok(Waited::Done),
            }
        })
        .unwrap_or(Waited::Done)
    }

    /// Waits until `deadline` for the agent's screens to show `text` more than `before` times.
    pub(crate) fn await_shown(
        &self,
        agent: u64,
        text: &str,
        before: usize,
        deadline: Instant,
    ) -> Waited {
        self.wait(Some(deadline), |st, _| {
            if st
                .agents
                .get(&agent)
                .is_some_and(|a| a.shows(text) > before)
            {
                Ok(Waited::Done)
            } else {
                Err(None)
            }
        })
        .unwrap_or(Waited::TimedOut)
    }

    /// Checks `ready` now and on every notification until it answers `Ok`; an `Err` may name
    /// when to look again even if nothing notifies (a quiet time running out). `None` when
    /// `deadline` passes first.
    fn wait<T>(
        &self,
        deadline: Option<Instant>,
        mut ready: impl FnMut(&State, Instant) -> Result<T, Option<Duration>>,
    ) -> Option<T> {
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            let again = match ready(&st, now) {
                Ok(t) => return Some(t),
                Err(again) => again,
            };
            let left = match deadline {
                Some(d) if now >= d => return None,
                Some(d) => Some(d - now),
                None => None,
            };
            st = match again.into_iter().chain(left).min() {
                Some(sleep) => match self.changed.wait_timeout(st, sleep) {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                },
                None => match self.changed.wait(st) {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                },
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_sees_what_is_painted_without_polling_for_it() {
        let s = Arc::new(Screens::default());
        let painter = {
            let s = s.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                s.paint(1, "/dev/pts/9", b"hello there\r\n", Instant::now(), true);
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        assert_eq!(s.await_shown(1, "hello there", 0, deadline), Waited::Done);
        painter.join().expect("painter");
        assert_eq!(s.shows(1, "hello there"), 1);
        // Shown once already: waiting for a second time times out.
        let soon = Instant::now() + Duration::from_millis(30);
        assert_eq!(s.await_shown(1, "hello there", 1, soon), Waited::TimedOut);
    }

    #[test]
    fn quiet_is_measured_from_the_last_paint_and_a_nudge_interrupts() {
        let s = Screens::default();
        // Never painted: nothing shows it busy.
        assert_eq!(
            s.await_quiet(7, Duration::from_secs(60), || false),
            Waited::Done
        );
        s.paint(7, "/dev/pts/3", b"working", Instant::now(), false);
        let asked = std::sync::atomic::AtomicBool::new(true);
        assert_eq!(
            s.await_quiet(7, Duration::from_secs(60), || asked
                .load(std::sync::atomic::Ordering::Relaxed)),
            Waited::Interrupted
        );
        assert_eq!(
            s.await_quiet(7, Duration::from_millis(20), || false),
            Waited::Done
        );
    }

    #[test]
    fn typed_texts_are_bounded_and_forgotten_with_the_agent() {
        let s = Screens::default();
        for i in 0..40 {
            s.typed(2, &format!("message {i}"));
        }
        let t = s.typed_into(2);
        assert_eq!(t.len(), TYPED_KEPT);
        assert_eq!(t.last().map(String::as_str), Some("message 39"));
        s.forget(2);
        assert!(s.typed_into(2).is_empty());
    }
}
