//! The streamable HTTP transport, on loopback only. Anyone on the machine can reach a loopback
//! port, and this server acts as the user who runs it: every request must carry
//! `Authorization: Bearer <token>`, the token in a file only that user can read.
use std::{convert::Infallible, net::SocketAddr, path::Path, sync::Arc};

use anyhow::{Context as _, bail};
use hyper::{Request, StatusCode, body::Incoming};
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};

use super::{Server, State};
use crate::loopback::{plain, same, token_path, write_token};

/// The path the MCP endpoint is served at.
pub const ENDPOINT: &str = "/mcp";

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
    let path = token_path(token_file, &format!("{}.token", addr.port()))?;
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
