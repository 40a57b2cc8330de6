//! What the servers `axiomctl` runs on loopback share (`mcp --http`, `ui`). Anyone on the
//! machine can reach a loopback port, and these servers act as the user who runs them: every
//! request must carry a token that only that user can read.
use std::{
    convert::Infallible,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::{Response, StatusCode};

/// A new random token, hex.
pub fn new_token() -> anyhow::Result<String> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .context("reading /dev/urandom")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Where the token goes: the given file, or the user's token directory (hidden from the
/// user's confined agents: `axiom_proto::confine::mcp_token_dir`), made private if absent and
/// refused if it is not this user's alone.
pub fn token_path(given: Option<&Path>, name: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let uid = nix::unistd::getuid().as_raw();
    let dir = axiom_proto::confine::mcp_token_dir(uid);
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("making {}", dir.display()))?;
    }
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::symlink_metadata(&dir)?;
    if !m.is_dir() || m.uid() != uid || m.mode() & 0o077 != 0 {
        anyhow::bail!(
            "{} is not a private directory of uid {uid}: remove it or pass --token-file",
            dir.display()
        );
    }
    Ok(dir.join(name))
}

/// Writes a fresh token, readable by this user only (an old file is replaced, not reused).
pub fn write_token(path: &Path) -> anyhow::Result<String> {
    let token = new_token()?;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing the token to {}", path.display()))?;
    writeln!(f, "{token}")?;
    Ok(token)
}

pub fn plain(status: StatusCode, text: &str) -> Response<BoxBody<bytes::Bytes, Infallible>> {
    let mut r = Response::new(Full::new(bytes::Bytes::from(text.to_string())).boxed());
    *r.status_mut() = status;
    r
}

/// Compares without stopping at the first difference.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
