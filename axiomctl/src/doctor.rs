//! `axiomctl doctor`: every prerequisite of axiomd on this host, each PASS, WARN or FAIL with
//! what to do about it. The kernel checks are the ones axiomd itself runs at start-up
//! (`axiom_proto::preflight`); the rest ask the running services.
use std::{path::Path, process::ExitCode};

use axiom_proto::{
    preflight::{self, Check, Status},
    wire::{Connection, Request},
};

/// The system bus socket (`$DBUS_SYSTEM_BUS_ADDRESS` when it names a unix path).
fn system_bus_path() -> String {
    std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
        .ok()
        .and_then(|a| {
            a.split(';').find_map(|p| {
                p.strip_prefix("unix:path=")
                    .map(|s| s.split(',').next().unwrap_or(s).to_string())
            })
        })
        .unwrap_or_else(|| "/run/dbus/system_bus_socket".into())
}

fn landlock() -> Check {
    match crate::confine::kernel_abi() {
        0 => Check::fail(
            "landlock",
            "not available",
            "a kernel with CONFIG_SECURITY_LANDLOCK=y and landlock in the lsm= boot list",
        ),
        abi if abi < 4 => Check::warn(
            "landlock",
            format!("ABI {abi}"),
            "ABI 4 (Linux 6.7) adds TCP port rules; profiles degrade in best-effort mode",
        ),
        abi => Check::pass("landlock", format!("ABI {abi}")),
    }
}

fn dbus() -> Check {
    let p = system_bus_path();
    match std::os::unix::net::UnixStream::connect(&p) {
        Ok(_) => Check::pass("d-bus", format!("system bus at {p}")),
        Err(e) => Check::warn(
            "d-bus",
            format!("system bus {p}: {e}"),
            "start dbus (the D-Bus API is off without it; the control socket still works)",
        ),
    }
}

/// axiomd itself, and the storage tiers as it sees them.
fn daemon(socket: &Path) -> Vec<Check> {
    let mut out = Vec::new();
    let status = Connection::connect(socket)
        .map_err(|e| e.to_string())
        .and_then(|mut c| c.request(&Request::Status).map_err(|e| e.to_string()))
        .and_then(|r| {
            r.status
                .ok_or_else(|| r.error.unwrap_or_else(|| "no status".into()))
        });
    let st = match status {
        Ok(s) => s,
        Err(e) => {
            out.push(Check::fail(
                "axiomd",
                e,
                "start it: `systemctl start axiomd` (or `axiomd` as root); check \
                 `journalctl -u axiomd`",
            ));
            return out;
        }
    };
    out.push(Check::pass(
        "axiomd",
        format!(
            "{} at {}: {} programs attached, {} processes tracked",
            st.version,
            socket.display(),
            st.attached.len(),
            st.tracked_processes
        ),
    ));
    let lost: u64 = st.lost.values().sum();
    if lost > 0 {
        out.push(Check::warn(
            "losses",
            format!("{lost} records lost: {:?}", st.lost),
            "raise sensor.output_ring_bytes / events_ring_bytes; see `axiomctl status`",
        ));
    }
    if st.store.is_empty() {
        out.push(Check::warn(
            "store",
            "off (store.enabled = false)",
            "enable [store] in /etc/axiom/axiomd.toml to keep events",
        ));
    } else {
        let get = |k: &str| st.store.get(k).copied().unwrap_or(0);
        out.push(Check::pass(
            "store (warm)",
            format!("{} events stored", get("stored")),
        ));
        if st.store.contains_key("hot_sent") {
            let bad = get("hot_redis_errors") + get("hot_failed_batches");
            out.push(if get("hot_spooled") > 0 || bad > 0 {
                Check::warn(
                    "store (hot)",
                    format!(
                        "{} spooled, {} Redis errors, {} failed batches",
                        get("hot_spooled"),
                        get("hot_redis_errors"),
                        get("hot_failed_batches")
                    ),
                    "check that Redis is reachable at store.hot.url (events wait in the spool)",
                )
            } else {
                Check::pass("store (hot)", format!("{} sent to Redis", get("hot_sent")))
            });
        }
        if st.store.contains_key("cold_parts") {
            out.push(Check::pass(
                "store (cold)",
                format!("{} Parquet parts", get("cold_parts")),
            ));
        }
    }
    out
}

/// Each installed agent CLI of a kind with hooks (found on `PATH` by its kind's commands): what
/// in the user's or the host's settings would keep Axiom's hooks for a run from running. A
/// run notices it too (`hooks_inactive`), after the fact.
fn agent_hooks() -> Vec<Check> {
    let profiles = crate::agent_kind::profiles();
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let json = |p: &Path| -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
    };
    let mut out = Vec::new();
    for (kind, name) in [
        ("claude", "hooks: claude"),
        ("codex", "hooks: codex"),
        ("gemini", "hooks: gemini"),
    ] {
        if !profiles.of(Some(kind)).hooks {
            continue;
        }
        let Some(bin) = profiles
            .of(Some(kind))
            .commands
            .iter()
            .find_map(|c| on_path(c))
        else {
            continue;
        };
        let mut off = Vec::new();
        match kind {
            "claude" => {
                let mut files = vec![std::path::PathBuf::from(
                    "/etc/claude-code/managed-settings.json",
                )];
                files.extend(home.iter().map(|h| h.join(".claude/settings.json")));
                for f in files {
                    let Some(v) = json(&f) else { continue };
                    if v["disableAllHooks"] == true {
                        off.push(format!("disableAllHooks in {}", f.display()));
                    }
                    if v["allowManagedHooksOnly"] == true {
                        off.push(format!("allowManagedHooksOnly in {}", f.display()));
                    }
                }
            }
            "gemini" => {
                let system = Path::new("/etc/gemini-cli/settings.json");
                if let Some(v) = json(system)
                    && v["hooksConfig"]["enabled"] == false
                {
                    off.push(format!("hooksConfig.enabled false in {}", system.display()));
                }
                for f in home.iter().map(|h| h.join(".gemini/settings.json")) {
                    let disabled = json(&f).is_some_and(|v| {
                        v["hooksConfig"]["disabled"]
                            .as_array()
                            .is_some_and(|d| d.iter().any(|x| x == "axiom"))
                    });
                    if disabled {
                        off.push(format!(
                            "\"axiom\" in hooksConfig.disabled in {}",
                            f.display()
                        ));
                    }
                }
            }
            _ => {}
        }
        out.push(if off.is_empty() {
            Check::pass(
                name,
                format!(
                    "{}: Axiom's hooks are installed for each run",
                    bin.display()
                ),
            )
        } else {
            Check::warn(
                name,
                format!("{}: switched off by {}", bin.display(), off.join("; ")),
                "remove the setting, or expect hooks_inactive: nothing refused before it runs",
            )
        });
    }
    out
}

/// `cmd` found on `PATH`.
fn on_path(cmd: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(cmd))
        .find(|p| p.is_file())
}

pub fn run(socket: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let mut checks = vec![
        preflight::btf(),
        preflight::bpffs(),
        preflight::tracefs(),
        preflight::lockdown(),
        preflight::ringbuf(),
    ];
    checks.extend(preflight::program_types());
    checks.push(landlock());
    checks.push(preflight::cgroup2());
    checks.push(dbus());
    checks.extend(daemon(socket));
    checks.extend(agent_hooks());
    if json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for c in &checks {
            let tag = match c.status {
                Status::Pass => "PASS",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            println!("{tag}  {:<22} {}", c.name, c.detail);
            if let Some(r) = &c.remedy {
                println!("      {:<22} → {r}", "");
            }
        }
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    if !json {
        println!(
            "{} checks: {} failed, {} warnings",
            checks.len(),
            failed,
            checks.iter().filter(|c| c.status == Status::Warn).count()
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
