//! `[dbus]`: which bus, and the name axiomd owns on it.
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DbusConfig {
    /// `system` (the system bus; if it is not running axiomd goes on without D-Bus), `off`, or
    /// a D-Bus address (`unix:path=…`), which must then be reachable.
    pub(crate) bus: String,
    /// Well-known name axiomd owns on the bus.
    pub(crate) name: String,
}

impl Default for DbusConfig {
    fn default() -> Self {
        DbusConfig {
            bus: "system".into(),
            name: "org.axiom.Axiom1".into(),
        }
    }
}

impl DbusConfig {
    /// The key (within `[dbus]`) and the reason, for the first value that cannot run.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        let bus = self.bus.as_str();
        if !matches!(bus, "system" | "off") && !bus.contains(':') {
            return Err((
                "bus",
                format!("{bus:?} is neither \"system\", \"off\" nor a D-Bus address (unix:path=…)"),
            ));
        }
        if zbus::names::WellKnownName::try_from(self.name.as_str()).is_err() {
            return Err(("name", format!("{:?} is not a valid D-Bus name", self.name)));
        }
        Ok(())
    }
}
