//! `axiomctl ui`: the session page, served on loopback by the user who runs it.
//!
//! The page asks this server, and this server asks axiomd over its control socket as that
//! user: the socket's per-user authorisation (the kernel's word on the caller's uid) decides
//! what the page may show, exactly as for `axiomctl agents` and `query`. Nothing is served
//! beyond loopback, and every API request must carry the token printed at start (and kept in
//! a file only the user can read): another user on the machine can reach the port, not the
//! data. The page is a file of this binary (no CDN, no script fetched at run time).
//!
//! A session is read from the store a page at a time (the earliest events after a cursor),
//! and its shape — the lanes' counts over time — from axiomd's summary, so a session of a
//! million events opens as fast as one of a thousand.
mod api;
mod replay;

use std::{convert::Infallible, net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::{Request, Response, StatusCode, body::Incoming, header};

use crate::{
    client::Global,
    loopback::{plain, same, token_path, write_token},
};

/// What `axiomctl ui` was asked.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Where to serve the page: a loopback address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Where to write the access token (default: the user's private token directory).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// The page's files, compiled in.
const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");

/// Scripts, styles and requests from this origin only; the page is never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

struct Served {
    socket: PathBuf,
    replays: Arc<api::Replays>,
    /// `Bearer <token>`.
    bearer: String,
    addr: SocketAddr,
}

pub fn run(g: &Global, a: &Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(serve(g.socket.clone(), a.clone()))
}

async fn serve(socket: PathBuf, a: Args) -> anyhow::Result<ExitCode> {
    if !a.listen.ip().is_loopback() {
        bail!(
            "--listen {}: only a loopback address (127.0.0.1, ::1) is served; reach it from \
             another machine through ssh -L",
            a.listen
        );
    }
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("listening on {}", a.listen))?;
    let addr = listener.local_addr()?;
    let path = token_path(
        a.token_file.as_deref(),
        &format!("ui-{}.token", addr.port()),
    )?;
    let token = write_token(&path)?;
    // The token rides in the URL's fragment, which a browser never sends to a server: it
    // reaches no log and no Referer; the page hands it back in a header.
    println!("http://{addr}/#token={token}");
    eprintln!(
        "axiomctl ui: serving the session page on http://{addr}/ (its token is in {})",
        path.display()
    );
    let served = Arc::new(Served {
        socket,
        replays: Arc::default(),
        bearer: format!("Bearer {token}"),
        addr,
    });
    loop {
        let (stream, _) = listener.accept().await?;
        let served = served.clone();
        tokio::spawn(async move {
            let handler = hyper::service::service_fn(move |req: Request<Incoming>| {
                let served = served.clone();
                async move { Ok::<_, Infallible>(answer(&served, req).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, handler)
                .await
            {
                tracing::debug!("ui connection: {e}");
            }
        });
    }
}

type Body = BoxBody<bytes::Bytes, Infallible>;

/// A `Host` this server answers to: its own address, or `localhost` at its port. Any other
/// is a page elsewhere that renamed its host to 127.0.0.1 (DNS rebinding) and is refused.
fn host_ok(host: Option<&str>, addr: SocketAddr) -> bool {
    let Some(h) = host else { return false };
    let port = addr.port();
    h == addr.to_string() || h == format!("localhost:{port}")
}

fn with_headers(mut r: Response<Body>, content_type: &str) -> Response<Body> {
    let h = r.headers_mut();
    let mut set = |k: header::HeaderName, v: &str| {
        if let Ok(v) = header::HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    set(header::CONTENT_TYPE, content_type);
    set(header::CONTENT_SECURITY_POLICY, CSP);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "no-referrer");
    set(header::CACHE_CONTROL, "no-store");
    r
}

fn body(text: String) -> Body {
    Full::new(bytes::Bytes::from(text)).boxed()
}

async fn answer(served: &Served, req: Request<Incoming>) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    if !host_ok(host, served.addr) {
        return plain(
            StatusCode::FORBIDDEN,
            "this page answers to its own address\n",
        );
    }
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let file = |text: &str, kind: &str| with_headers(Response::new(body(text.into())), kind);
    match path.as_str() {
        "/" | "/index.html" => return file(PAGE, "text/html; charset=utf-8"),
        "/page.js" => return file(SCRIPT, "text/javascript; charset=utf-8"),
        "/page.css" => return file(STYLE, "text/css; charset=utf-8"),
        p if p.starts_with("/api/") => {}
        _ => return plain(StatusCode::NOT_FOUND, "no such page\n"),
    }
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| same(v.as_bytes(), served.bearer.as_bytes()));
    if !authorized {
        return plain(
            StatusCode::UNAUTHORIZED,
            "the token axiomctl ui printed is required\n",
        );
    }
    let (socket, replays) = (served.socket.clone(), served.replays.clone());
    let answer =
        tokio::task::spawn_blocking(move || api::answer(&socket, &replays, &path, &query)).await;
    match answer {
        Ok(Ok(api::Answer::Json(v))) => {
            with_headers(Response::new(body(v.to_string())), "application/json")
        }
        Ok(Ok(api::Answer::Download { name, text })) => {
            let mut r = with_headers(Response::new(body(text)), "application/x-asciicast");
            if let Ok(v) =
                header::HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
            {
                r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            r
        }
        Ok(Err(api::Refused { status, message })) => {
            let mut r = with_headers(
                Response::new(body(serde_json::json!({ "error": message }).to_string())),
                "application/json",
            );
            *r.status_mut() = status;
            r
        }
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::host_ok;

    /// Only the server's own host answers: a rebinding page's host name does not.
    #[test]
    fn only_its_own_host_is_answered() {
        let a: std::net::SocketAddr = "127.0.0.1:4321".parse().unwrap();
        assert!(host_ok(Some("127.0.0.1:4321"), a));
        assert!(host_ok(Some("localhost:4321"), a));
        assert!(!host_ok(Some("evil.example:4321"), a));
        assert!(!host_ok(Some("127.0.0.1:80"), a));
        assert!(!host_ok(None, a));
    }
}
