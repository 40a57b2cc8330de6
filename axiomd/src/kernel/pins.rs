//! Where the sensor lives between runs: its pin directory (root's, 0700), the maps and links
//! pinned in it, replaced without a detach window.
use std::path::{Path, PathBuf};

use aya::maps::MapData;
use aya::programs::links::FdLink;

use super::{LoadError, map_err};

/// Paths of the pins under the pin directory.
#[derive(Clone, Debug)]
pub struct Pins {
    pub(crate) root: PathBuf,
}

impl Pins {
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn maps(&self) -> PathBuf {
        self.root.join("maps")
    }
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }
    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }
    pub fn link(&self, program: &str) -> PathBuf {
        self.links().join(program)
    }

    /// Removes every pin: programs detach when the last reference (ours) closes.
    pub fn remove_all(&self) -> std::io::Result<()> {
        for dir in [self.links(), self.maps()] {
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.flatten() {
                    std::fs::remove_file(e.path())?;
                }
            }
            let _ = std::fs::remove_dir(&dir);
        }
        let _ = std::fs::remove_dir(&self.root);
        Ok(())
    }
}

pub(super) fn open_pinned(pins: &Pins, name: &'static str) -> Result<MapData, LoadError> {
    MapData::from_pin(pins.map(name)).map_err(map_err(name))
}

/// A pinned ring whose size differs from the configured one cannot be reused: unpin it so the
/// load creates a new one.
pub(super) fn drop_resized_ring(pins: &Pins, name: &'static str, bytes: u32) {
    let path = pins.map(name);
    if let Ok(info) = aya::maps::MapInfo::from_pin(&path)
        && info.max_entries() != bytes
    {
        tracing::warn!(
            map = name,
            pinned = info.max_entries(),
            configured = bytes,
            "ring size changed: replacing the pinned ring"
        );
        let _ = std::fs::remove_file(&path);
    }
}

/// The pin directories are root's and no one else may write them: /sys/fs/bpf is often
/// world-writable (sticky), so a user could make `axiom` (or `axiom/maps`) first and then
/// unlink or rename the pins in it. A directory that is not root's, or is writable by others,
/// is removed if empty (bpffs holds nothing else a user could have put there) and made anew
/// with mode 0700; one that is not empty is refused.
pub(super) fn own_pin_dirs(pins: &Pins) -> Result<(), LoadError> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    for dir in [pins.root.clone(), pins.maps(), pins.links()] {
        let err = |reason: String| LoadError::Pin {
            path: dir.clone(),
            reason,
        };
        if let Ok(m) = std::fs::symlink_metadata(&dir) {
            let foreign = !m.is_dir() || m.uid() != 0 || m.mode() & 0o022 != 0;
            if foreign {
                std::fs::remove_dir(&dir).map_err(|e| {
                    err(format!(
                        "not root's or writable by others (uid {}, mode {:o}), and cannot be \
                         removed: {e}",
                        m.uid(),
                        m.mode() & 0o7777
                    ))
                })?;
                tracing::warn!(path = %dir.display(), uid = m.uid(), "a pin directory that was not root's was removed");
            }
        }
        mkdir(&dir)?;
        // A user may have made it again between the removal and the mkdir: whatever stands
        // there now is made root's (a link is refused), so it cannot stay theirs.
        let m = std::fs::symlink_metadata(&dir).map_err(|e| err(e.to_string()))?;
        if !m.is_dir() {
            return Err(err("not a directory".into()));
        }
        if m.uid() != 0 || m.gid() != 0 {
            std::os::unix::fs::lchown(&dir, Some(0), Some(0)).map_err(|e| err(e.to_string()))?;
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| err(e.to_string()))?;
    }
    Ok(())
}

pub(super) fn mkdir(path: &Path) -> Result<(), LoadError> {
    std::fs::create_dir_all(path).map_err(|e| LoadError::Pin {
        path: path.into(),
        reason: e.to_string(),
    })
}

/// Pins the new link beside the old one, then swaps names: the old program stays attached until
/// the new one is, so there is never a moment with neither.
pub(super) fn replace_pin(pins: &Pins, program: &str, link: FdLink) -> Result<(), LoadError> {
    replace_pin_with(pins, program, |next| {
        link.pin(next).map(drop).map_err(|e| e.to_string())
    })
}

/// `replace_pin` for a link made without aya (`pin` pins it at the path it is given).
pub(super) fn replace_pin_with(
    pins: &Pins,
    program: &str,
    pin: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), LoadError> {
    let path = pins.link(program);
    let next = pins.links().join(format!("{program}_next"));
    let _ = std::fs::remove_file(&next);
    pin(&next).map_err(|reason| LoadError::Pin {
        path: next.clone(),
        reason,
    })?;
    let _ = std::fs::remove_file(&path);
    std::fs::rename(&next, &path).map_err(|e| LoadError::Pin {
        path: path.clone(),
        reason: format!("rename from {}: {e}", next.display()),
    })?;
    Ok(())
}
