//! Wiring: open the sensor, restore agents, start the stages downstream first (store, actions,
//! rules, then the front ends and the ring reader), and on SIGTERM/SIGINT stop them upstream
//! first, each joined, so that what was accepted reaches the store (leaving the sensor pinned
//! unless configured otherwise). Every thread and task is started through one supervisor
//! (`crate::supervise`, which says what runs on OS threads and what on tokio): a vital part that
//! ends on its own stops the daemon with an error, and systemd restarts it rather than let it
//! run blind.
use std::sync::Arc;

use anyhow::Context as _;
use tokio::signal::unix::SignalKind;

use crate::{
    actions::terminal::Terminals,
    agents::{Registry, lifecycle},
    api,
    bus::Bus,
    config::Config,
    kernel::{LoadOptions, NetMaps, Parts, Programs, Rings, TrackingMaps},
    sensor::{self, Pipeline},
    supervise::{Role, Supervisor},
};

pub(crate) fn load_options(cfg: &Config) -> LoadOptions {
    LoadOptions {
        sensor: cfg.sensor.clone(),
        net_cgroup: agents_cgroup_root(cfg),
        unix_allow: std::iter::once(cfg.api.socket.clone())
            .chain(cfg.confine.unix_sockets.iter().map(Into::into))
            .collect(),
    }
}

/// Where agents' cgroups go: configured, or `axiom` in the cgroup v2 mount.
pub(crate) fn agents_cgroup_root(cfg: &Config) -> Option<std::path::PathBuf> {
    cfg.agents
        .cgroup_root
        .clone()
        .or_else(|| crate::kernel::cgroup::mount_point().map(|m| m.join("axiom")))
}

/// Forwards the kernel programs' aya-log diagnostics to our log (a helper: axiomd goes on
/// without them).
fn spawn_kernel_log(sup: &mut Supervisor, program_id: Option<u32>) {
    let Some(id) = program_id else { return };
    match aya_log::EbpfLogger::init_from_id(id) {
        Ok(logger) => {
            sup.task("kernel-log", Role::Helper, async move {
                let mut fd = match crate::sensor::async_fd(logger) {
                    Ok(fd) => fd,
                    Err(e) => return tracing::warn!("kernel program diagnostics: {e}"),
                };
                loop {
                    let mut g = match fd.readable_mut().await {
                        Ok(g) => g,
                        Err(e) => return tracing::warn!("kernel program diagnostics: {e}"),
                    };
                    g.get_inner_mut().flush();
                    g.clear_ready();
                }
            });
        }
        Err(e) => tracing::warn!("kernel program diagnostics unavailable: {e}"),
    }
}

/// Raises the soft descriptor limit to the hard one: the soft 1,024 systemd and shells give let
/// a few users' clients, terminals and pidfds use up what the rings, the store and every other
/// user need. The bounds on clients (`api.max_clients*`) keep within it.
fn raise_fd_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one rlimit through the pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            let from = l.rlim_cur;
            l.rlim_cur = l.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) == 0 {
                tracing::debug!("descriptor limit raised from {from} to {}", l.rlim_max);
            }
        }
    }
}

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    // Handlers first: a SIGTERM that arrives once the socket answers must be a clean stop.
    let mut term = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(SignalKind::interrupt())?;
    // systemd (Type=notify): READY once everything answers, WATCHDOG while the reader runs.
    let notifier = match crate::notify::Notifier::from_env() {
        Ok(n) => n.map(Arc::new),
        Err(e) => {
            tracing::warn!("no readiness notifications: {e}");
            None
        }
    };
    raise_fd_limit();
    let mut sup = Supervisor::default();
    let Parts {
        programs: s,
        rings,
        tracking,
        net,
    } = load_programs(&cfg, &mut sup)?;
    let registry = restore_agents(&cfg, tracking, net)?;
    let rules = load_rules(&cfg)?;
    // Downstream first: the store (behind the bus), the actions, the rules; then the front
    // ends; the reader last.
    let (bus, taps, store) = open_bus(&cfg, &mut sup)?;
    let (shared, stage) =
        start_rules_and_actions(&cfg, &mut sup, s, registry, rules, bus, store, taps)?;
    spawn_reload_on_hup(&mut sup, shared.clone(), notifier.clone())?;
    sup.task(
        "agent-limits",
        Role::Vital,
        lifecycle::watch_limits(shared.agents.clone(), shared.bus.clone()),
    );
    sup.task(
        "agent-sweep",
        Role::Vital,
        lifecycle::sweep(
            shared.agents.clone(),
            std::time::Duration::from_secs(cfg.agents.keep_exited_secs),
        ),
    );
    // OTLP traces and metrics, the Prometheus endpoint (each off unless configured): following
    // the bus before anyone can start an agent over the socket or D-Bus.
    let status: crate::telemetry::StatusSource = {
        let shared = shared.clone();
        Arc::new(move || shared.status())
    };
    let otlp = crate::telemetry::start(&cfg.telemetry, shared.bus.clone(), status, &mut sup)
        .await
        .context("starting telemetry")?;
    let listener = api::socket::bind(&cfg.api.socket)
        .with_context(|| format!("binding {}", cfg.api.socket.display()))?;
    tracing::info!(socket = %cfg.api.socket.display(), "control socket ready");
    sup.task(
        "api-socket",
        Role::Vital,
        api::socket::serve(listener, shared.clone()),
    );
    let dbus = crate::dbus::start(&cfg.dbus.bus, &cfg.dbus.name, shared.clone(), &mut sup).await?;
    if dbus.is_some() {
        tracing::info!(name = %cfg.dbus.name, bus = %cfg.dbus.bus, "D-Bus API ready");
    }
    let heartbeat = crate::notify::Heartbeat::default();
    spawn_reader(&cfg, &mut sup, rings, &shared, stage, heartbeat.clone())?;
    if let Some(n) = &notifier {
        n.send(&format!("READY=1\nSTATUS={}", status_line(&shared)));
        if let Some(every) = crate::notify::watchdog_interval() {
            tracing::info!(interval = ?every, "systemd watchdog on");
            let shared = shared.clone();
            sup.task(
                "watchdog",
                Role::Vital,
                crate::notify::watchdog(n.clone(), every, heartbeat, move || status_line(&shared)),
            );
        }
    }

    let result = tokio::select! {
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
        name = sup.ended() => Err(anyhow::anyhow!("the {name} part ended on its own")),
    };
    if let Err(e) = &result {
        tracing::error!("stopping: {e:#}");
    }
    if let Some(n) = &notifier {
        n.send("STOPPING=1\nSTATUS=stopping");
    }
    // The front ends take no more requests.
    sup.stop_first("api-socket").await;
    drop(dbus);
    let _ = std::fs::remove_file(&cfg.api.socket);
    stop(&cfg, sup, &shared, otlp).await?;
    result
}

/// Opens (or takes over) the kernel programs and takes their rings for the reader.
fn load_programs(cfg: &Config, sup: &mut Supervisor) -> anyhow::Result<Parts> {
    let opts = load_options(cfg);
    let mut parts = Programs::open(&opts)?;
    let s = &mut parts.programs;
    if s.reused {
        // Capture size and wakeup watermark are runtime settings: apply them to the running programs.
        s.configure(&opts)?;
    }
    tracing::info!(
        startup_ms = format!("{:.1}", s.startup.as_secs_f64() * 1e3),
        programs = s.attached.len(),
        reused_pins = s.reused,
        pin_dir = %s.pins.root.display(),
        "sensor attached"
    );
    if !s.skipped.is_empty() {
        tracing::info!(skipped = ?s.skipped, "hooks this kernel lacks (legacy syscalls)");
    }
    spawn_kernel_log(sup, s.log_program_id);
    Ok(parts)
}

/// The agent registry, rebuilt from the kernel's maps and the state files.
fn restore_agents(cfg: &Config, tracking: TrackingMaps, net: NetMaps) -> anyhow::Result<Registry> {
    let state = crate::agents::state::StateDir::open(cfg.agents.state_dir.clone())
        .with_context(|| format!("agent state directory {}", cfg.agents.state_dir.display()))?;
    let mut registry = Registry::restore(Box::new(tracking), Some(state));
    registry.set_max_per_user(cfg.agents.max_per_user);
    registry.set_net(net);
    match agents_cgroup_root(cfg) {
        Some(root) => {
            registry.set_cgroup_root(root.clone())?;
            tracing::info!(cgroup_root = %root.display(), "agent cgroups");
        }
        None => tracing::warn!("no cgroup v2 mount: agents cannot be started in cgroups"),
    }
    let restored = registry.agents().count();
    if restored > 0 {
        tracing::info!(
            agents = restored,
            "re-adopted agents tracked before the restart"
        );
    }
    Ok(registry)
}

/// The rule files, their plugins compiled through the process's one sandbox engine.
fn load_rules(cfg: &Config) -> anyhow::Result<Arc<crate::rules::Rules>> {
    let sandbox = axiom_sandbox::configure(Some(cfg.rules.plugin_cache.clone()))
        .context("starting the wasm engine")?;
    if let Some(note) = &sandbox.cache_note {
        tracing::warn!(cache = %note, "compiled plugins are not cached");
    }
    let rules =
        Arc::new(crate::rules::Rules::load(cfg.rules.paths.clone()).context("loading the rules")?);
    tracing::info!(rules = rules.get().rules.len(), paths = ?cfg.rules.paths, "rules loaded");
    Ok(rules)
}

/// The bus, and the store's threads fed by its tap: the first part started, the last stopped
/// (once the bus has let go of its tap, the store commits what it was given).
fn open_bus(
    cfg: &Config,
    sup: &mut Supervisor,
) -> anyhow::Result<(
    Arc<Bus>,
    crate::bus::Taps,
    Option<Arc<crate::store::Running>>,
)> {
    let (bus, taps) = Bus::new(1 << 16, cfg.api.replay_events);
    if !cfg.store.enabled {
        return Ok((Arc::new(bus), taps, None));
    }
    let (tap, intake) = crate::bus::tap::tap(
        cfg.store.queue_events,
        cfg.store.memory_cap_mib.saturating_mul(1 << 20),
    );
    let running = Arc::new(crate::store::start(&cfg.store, intake, &sup.watch())?);
    tracing::info!(
        path = %cfg.store.path.display(),
        hot = cfg.store.hot.enabled,
        cold = cfg.store.cold.enabled,
        "event store open"
    );
    let bus = Arc::new(bus.with_store(tap));
    {
        let (bus, store) = (bus.clone(), running.clone());
        sup.own("store", move || {
            bus.close_store();
            store.finish();
        });
    }
    Ok((bus, taps, Some(running)))
}

/// Starts the actions and the rules stages (in that order: the rules hand their findings to
/// the actions), and the follower of agent exits; returns what the front ends share and the
/// rules stage (the reader matches kernel records through it).
#[allow(clippy::too_many_arguments)]
fn start_rules_and_actions(
    cfg: &Config,
    sup: &mut Supervisor,
    sensor: Programs,
    registry: Registry,
    rules: Arc<crate::rules::Rules>,
    bus: Arc<Bus>,
    store: Option<Arc<crate::store::Running>>,
    taps: crate::bus::Taps,
) -> anyhow::Result<(Arc<api::Shared>, Arc<crate::rules::Stage>)> {
    let admin_gid = crate::authz::admin_gid(&cfg.api.admin_group);
    if admin_gid.is_none() {
        tracing::info!(group = %cfg.api.admin_group, "no such admin group: only root may act on every agent");
    }
    let profiles = axiom_proto::agent_profile::Profiles::load(&cfg.agents.profiles)
        .context("loading the agent profiles")?;
    // The agents' screens: painted by the rules, read by the actions, told by the terminals the
    // actions hold which device is an agent's own and its size.
    let screens = Arc::new(crate::screens::Screens::default());
    let terminals = Arc::new(Terminals::new(screens.clone()));
    let agents = crate::agents::Agents::new(registry);
    let engine = crate::rules::engine::Engine::shared(screens);
    let (actions, queue) = crate::actions::Actions::new(
        agents.clone(),
        crate::rules::Claims::of(&engine),
        bus.clone(),
        terminals,
        profiles,
    );
    {
        let actions = actions.clone();
        sup.thread("actions", move |stop| actions.run(queue, stop))?;
    }
    let shared = Arc::new(api::Shared {
        agents,
        bus: bus.clone(),
        sensor: crate::kernel::Sensor::new(Box::new(sensor)),
        admin_gid,
        rules: rules.clone(),
        actions: actions.clone(),
        store,
        confine: cfg.confine.clone(),
        clients: api::Clients::new(cfg.api.max_clients, cfg.api.max_clients_per_user),
    });
    shared.rules.install(&shared.sensor, shared.rules.get());
    let ended = shared.actions.clone();
    sup.task(
        "agent-exits",
        Role::Vital,
        lifecycle::exits(
            taps.exits,
            shared.agents.clone(),
            shared.bus.clone(),
            move |agent| {
                // What waited for it in the actions stage goes with it.
                ended.terminals.release(agent);
                ended.forget(agent);
            },
        ),
    );
    let stage = Arc::new(crate::rules::Stage {
        rules,
        engine,
        agents: shared.agents.clone(),
        bus,
        actions,
    });
    {
        let stage = stage.clone();
        let rx = taps.rules;
        sup.thread("rules", move |stop| crate::rules::run(rx, stage, stop))?;
    }
    Ok((shared, stage))
}

/// SIGHUP reloads the rules (systemd hears RELOADING, then READY); a broken file keeps the old.
fn spawn_reload_on_hup(
    sup: &mut Supervisor,
    shared: Arc<api::Shared>,
    notifier: Option<Arc<crate::notify::Notifier>>,
) -> std::io::Result<()> {
    let mut hup = tokio::signal::unix::signal(SignalKind::hangup())?;
    sup.task("reload-on-hup", Role::Vital, async move {
        while hup.recv().await.is_some() {
            if let Some(n) = &notifier {
                n.send(&format!(
                    "RELOADING=1\nMONOTONIC_USEC={}",
                    crate::notify::monotonic_usec()
                ));
            }
            match shared.rules.reload_into(&shared.sensor) {
                Ok(n) => tracing::info!(rules = n, "SIGHUP: rules reloaded"),
                Err(e) => tracing::warn!("SIGHUP: rules not reloaded, the old ones stay: {e}"),
            }
            if let Some(n) = &notifier {
                n.send(&format!("READY=1\nSTATUS={}", status_line(&shared)));
            }
        }
    });
    Ok(())
}

/// The ring reader, last to start: from now on records flow.
fn spawn_reader(
    cfg: &Config,
    sup: &mut Supervisor,
    rings: Rings,
    shared: &Arc<api::Shared>,
    stage: Arc<crate::rules::Stage>,
    heartbeat: crate::notify::Heartbeat,
) -> std::io::Result<()> {
    let flush = std::time::Duration::from_millis(cfg.sensor.output_flush_ms.into());
    let realtime = cfg.daemon.realtime_reader;
    let on_match: sensor::OnMatch =
        Box::new(move |ev: &axiom_proto::wire::Event| crate::rules::on_kernel_match(&stage, ev));
    let redactor: sensor::Redactor = {
        let shared = shared.clone();
        Box::new(move |scope, text: &str| shared.rules.get().redact(scope, text))
    };
    let bus = shared.bus.clone();
    sup.thread("ring-reader", move |stop| {
        if realtime {
            sensor::make_realtime();
        }
        let r = sensor::run(
            rings,
            Pipeline::new(bus)
                .on_match(on_match)
                .redactor(redactor)
                .heartbeat(heartbeat),
            flush,
            stop,
        );
        // Its end is the supervisor's to hear; why is said here.
        if let Err(e) = r {
            tracing::error!("ring reader failed: {e}");
        }
    })
}

/// The ordered stop, once the front ends are closed. Upstream first: the reader hands on what
/// the rings hold, the rules match what it handed them, the actions carry out what the rules
/// found; then the store commits what the bus gave it, telemetry sends what it holds, and the
/// sensor stays pinned (or is unpinned, as configured).
async fn stop(
    cfg: &Config,
    mut sup: Supervisor,
    shared: &api::Shared,
    otlp: Option<crate::telemetry::metrics::Otlp>,
) -> anyhow::Result<()> {
    sup.stop_all().await;
    if let Some(o) = otlp {
        // The exporters block: off the runtime's threads.
        let _ = tokio::task::spawn_blocking(move || o.shutdown()).await;
    }
    if cfg.sensor.keep_sensors_on_exit {
        tracing::info!("stopping; sensor stays attached and pinned (keep_sensors_on_exit)");
    } else {
        shared.sensor.unpin().context("unpinning the sensor")?;
        tracing::info!("stopping; sensor unpinned and detached");
    }
    Ok(())
}

/// What `systemctl status` shows on its Status line.
fn status_line(shared: &api::Shared) -> String {
    let agents = shared.agents.running();
    format!(
        "watching {agents} agents; {} rules",
        shared.rules.get().rules.len()
    )
}
