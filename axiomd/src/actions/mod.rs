//! Interventions axiomd performs on agents. Steering a whole agent (stop, freeze, thaw, kill)
//! lives with the agent registry, which knows its cgroup; typing into its terminal lives here.
pub mod terminal;
