//! The streamable HTTP transport, on loopback only. Anyone on the machine can reach a loopback
//! port, and this server acts as the user who runs it: every request must carry
//! `Authorization: Bearer <token>`, the token in a file only that user can read.
use std::{
    convert::Infallible,
    io::Write as _,
    net::SocketAddr,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::{Request, Response, StatusCode, body::Incoming};
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};

use super::{Server, State};

/// The path the MCP endpoint is served at.
pub const ENDPOINT: &str = "/mcp";

/// A new random token, hex.
fn new_token() -> anyhow::Result<String> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .context("reading /dev/urandom")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Where the token goes: the given file, or the user's token directory (hidden from the
/// user's confined agents: `axiom_proto::confine::mcp_token_dir`), made private if absent and
/// refused if it is not this user's alone.
fn token_path(given: Option<&Path>, addr: SocketAddr) -> anyhow::Result<PathBuf> {
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
    Ok(dir.join(format!("{}.token", addr.port())))
}

/// Writes a fresh token, readable by this user only (an old file is replaced, not reused).
fn write_token(path: &Path) -> anyhow::Result<String> {
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

fn plain(status: StatusCode, text: &str) -> Response<BoxBody<bytes::Bytes, Infallible>> {
    let mut r = Response::new(Full::new(bytes::Bytes::from(text.to_string())).boxed());
    *r.status_mut() = status;
    r
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn serve(
    st: Arc<State>,
    addr: SocketAddr,
    token_file: Option<&Path>,
) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() {
        bail!("--http {addr}: only a loopback address (127.0.0.1, ::1) is served");
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let addr = listener.local_addr()?;
    let path = token_path(token_file, addr)?;
    let token = Arc::new(format!("Bearer {}", write_token(&path)?));
    let service = StreamableHttpService::new(
        {
            let st = st.clone();
            move || Ok(Server::new(st.clone()))
        },
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    eprintln!(
        "axiomctl mcp: serving http://{addr}{ENDPOINT} (Authorization: Bearer <the token in {}>)",
        path.display()
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let service = service.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let handler = hyper::service::service_fn(move |req: Request<Incoming>| {
                let service = service.clone();
                let token = token.clone();
                async move {
                    let authorized = req
                        .headers()
                        .get(hyper::header::AUTHORIZATION)
                        .is_some_and(|v| same(v.as_bytes(), token.as_bytes()));
                    if !authorized {
                        return Ok::<_, Infallible>(plain(
                            StatusCode::UNAUTHORIZED,
                            "a bearer token is required (see axiomctl mcp --token-file)\n",
                        ));
                    }
                    if req.uri().path() != ENDPOINT {
                        return Ok(plain(StatusCode::NOT_FOUND, "the MCP endpoint is /mcp\n"));
                    }
                    Ok(service.handle(req).await)
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, handler)
                .await
            {
                tracing::debug!("MCP HTTP connection: {e}");
            }
        });
    }
}
