//! `axiomctl mcp`: a Model Context Protocol server, so that an orchestrating model can start
//! agents, watch them character by character, hold them to the principles, steer them and check
//! their claims — all through axiomd, as the user who runs it (D-Bus tells axiomd who that is).
//!
//! Stdio by default (the client starts `axiomctl mcp`); `--http 127.0.0.1:PORT` serves the
//! streamable HTTP transport on loopback, behind a bearer token only that user can read.
mod daemon;
mod http;
mod journal;
mod spawn;
mod tools;
mod verify;

use std::{
    collections::HashSet,
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex, OnceLock, Weak},
};

#[allow(deprecated)] // logging: what clients before protocol 2026-07-28 read
use rmcp::{
    ErrorData as McpError, Peer, RoleServer, ServerHandler, ServiceExt as _,
    handler::server::{router::tool::ToolRouter, tool::ToolCallContext},
    model::{
        CallToolRequestParams, CallToolResponse, ListResourceTemplatesResult, ListResourcesResult,
        LoggingMessageNotificationParam, PaginatedRequestParams, ReadResourceRequestParams,
        ReadResourceResponse, ReadResourceResult, Resource, ResourceContents, ResourceTemplate,
        ServerCapabilities, ServerConfig, SetLevelRequestParams, SubscribeRequestParams,
        UnsubscribeRequestParams,
    },
    service::{NotificationContext, RequestContext},
    tool_handler,
};

use self::{daemon::Daemon, journal::Journal, spawn::Launcher};

/// What `axiomctl mcp` was asked on its command line.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Where to find axiomd: `system` (the system bus; without one, the control socket),
    /// `socket` (the control socket), or a D-Bus address (`unix:path=…`).
    #[arg(long, env = "AXIOM_DBUS", default_value = "system")]
    pub bus: String,
    /// Serve streamable HTTP at this loopback address (e.g. 127.0.0.1:8765) instead of stdio.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<std::net::SocketAddr>,
    /// Where `--http` writes its bearer token (mode 0600; default
    /// /run/user/UID/axiom-mcp/PORT.token, hidden from confined agents).
    #[arg(long, requires = "http")]
    pub token_file: Option<PathBuf>,
    /// Rule files (or directories) `principles` checks text against (default: the files
    /// axiomd's active rules come from).
    #[arg(long)]
    pub rules: Vec<PathBuf>,
    /// Leave the agents this server started running when it ends (default: stop them).
    #[arg(long)]
    pub keep_agents: bool,
}

/// Shared by every session.
pub struct State {
    daemon: Daemon,
    journal: Arc<Journal>,
    launcher: Launcher,
    rule_files: Vec<PathBuf>,
    sessions: Mutex<Vec<Weak<Session>>>,
}

/// One client connection: its peer (for notifications) and the resources it subscribed to.
#[derive(Default)]
pub struct Session {
    peer: OnceLock<Peer<RoleServer>>,
    subscriptions: Mutex<HashSet<String>>,
}

#[derive(Clone)]
pub struct Server {
    st: Arc<State>,
    session: Arc<Session>,
    tool_router: ToolRouter<Server>,
}

impl Server {
    fn new(st: Arc<State>) -> Server {
        Server {
            st,
            session: Arc::default(),
            tool_router: Self::tool_router(),
        }
    }
}

const TRANSCRIPT_PREFIX: &str = "axiom://agents/";
const TRANSCRIPT_SUFFIX: &str = "/transcript";

fn transcript_uri(agent: u64) -> String {
    format!("{TRANSCRIPT_PREFIX}{agent}{TRANSCRIPT_SUFFIX}")
}

fn transcript_agent(uri: &str) -> Option<u64> {
    uri.strip_prefix(TRANSCRIPT_PREFIX)?
        .strip_suffix(TRANSCRIPT_SUFFIX)?
        .parse()
        .ok()
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Server {
    #[allow(deprecated)] // logging: the notifications clients before 2026-07-28 read
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_logging()
                .enable_resources()
                .enable_tools()
                .enable_resources_subscribe()
                .enable_resources_list_changed()
                .build(),
        )
        .with_instructions(
            "Axiom watches AI coding agents from the kernel. spawn starts agents (in parallel), \
             observe streams what they do (page with next_cursor, wait with wait_ms), status \
             sums each one up, intervene types into an agent's terminal or freezes, thaws, \
             stops or kills it, principles lists the rules (or checks a text against them), \
             verify sets what the kernel saw against what an agent claims. Each agent's \
             terminal is the resource axiom://agents/{id}/transcript; agent exits and \
             violations arrive as log notifications.",
        )
    }

    /// The SDK answers arguments that do not fit a tool's schema with a tool result marked as
    /// an error; this server answers them like every other argument it cannot take: a JSON-RPC
    /// invalid-params error with the reason.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        const SCHEMA_MISFIT: &str = "failed to deserialize parameters:";
        let tcc = ToolCallContext::new(self, request, context);
        match self.tool_router.call(tcc).await? {
            CallToolResponse::Complete(r) if r.is_error == Some(true) => {
                let text = r
                    .content
                    .first()
                    .and_then(|c| c.as_text())
                    .map(|t| t.text.clone())
                    .filter(|t| t.starts_with(SCHEMA_MISFIT));
                match text {
                    Some(t) => Err(McpError::invalid_params(t, None)),
                    None => Ok(CallToolResponse::Complete(r)),
                }
            }
            other => Ok(other),
        }
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let _ = self.session.peer.set(context.peer.clone());
        let mut s = self.st.sessions.lock().unwrap_or_else(|p| p.into_inner());
        s.retain(|w| w.strong_count() > 0);
        s.push(Arc::downgrade(&self.session));
    }

    #[allow(deprecated)]
    async fn set_level(
        &self,
        _request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        Ok(())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let agents = daemon::agents(&self.st.daemon).await.map_err(|e| {
            McpError::internal_error(format!("axiomd: {}", daemon::reason(&e)), None)
        })?;
        let resources = agents
            .iter()
            .map(|a| {
                Resource::new(transcript_uri(a.id), format!("agent-{}-transcript", a.id))
                    .with_title(format!(
                        "Agent {} ({}) terminal",
                        a.id,
                        a.name.as_deref().unwrap_or(&a.command.join(" "))
                    ))
                    .with_description(format!(
                        "What agent {} showed on its terminal ({})",
                        a.id, a.state
                    ))
                    .with_mime_type("text/plain")
            })
            .collect();
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new("axiom://agents/{agent}/transcript", "agent-transcript")
                .with_description("An agent's terminal output")
                .with_mime_type("text/plain"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let agent = transcript_agent(&request.uri).ok_or_else(|| {
            McpError::resource_not_found(
                format!(
                    "{}: resources are {TRANSCRIPT_PREFIX}<agent>{TRANSCRIPT_SUFFIX}",
                    request.uri
                ),
                None,
            )
        })?;
        let visible = daemon::agents(&self.st.daemon)
            .await
            .map_err(|e| McpError::internal_error(daemon::reason(&e), None))?
            .iter()
            .any(|a| a.id == agent);
        if !visible {
            return Err(McpError::resource_not_found(
                format!("no agent {agent} among the agents you may see"),
                None,
            ));
        }
        let text = self.st.journal.transcript(agent).unwrap_or_default();
        Ok(ReadResourceResponse::Complete(ReadResourceResult::new(
            vec![ResourceContents::text(text, request.uri)],
        )))
    }

    #[allow(deprecated)] // resources/subscribe: what clients on 2025-11-25 and before use
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if transcript_agent(&request.uri).is_none() {
            return Err(McpError::resource_not_found(
                format!("{}: not a resource of this server", request.uri),
                None,
            ));
        }
        self.session
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(request.uri);
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.session
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&request.uri);
        Ok(())
    }
}

/// Tells every session what matters as it happens: agents starting and ending, violations,
/// interventions and denials (log messages), a subscribed transcript changing with them.
#[allow(deprecated)] // logging notifications
async fn notify(st: Arc<State>) {
    let mut rx = st.journal.notices();
    loop {
        let ev = match rx.recv().await {
            Ok(ev) => ev,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!("{n} notices not sent (the clients fell behind)");
                continue;
            }
            Err(_) => return,
        };
        let Some((level, data)) = tools::notice_data(&ev) else {
            continue;
        };
        let sessions: Vec<Arc<Session>> = st
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let uri = transcript_uri(ev.agent);
        for s in sessions {
            let Some(peer) = s.peer.get() else { continue };
            let mut p = LoggingMessageNotificationParam::new(level, data.clone());
            p.logger = Some("axiom".into());
            let _ = peer.notify_logging_message(p).await;
            if matches!(ev.body, axiom_proto::wire::Body::AgentStarted { .. }) {
                let _ = peer.notify_resource_list_changed().await;
            }
            let subscribed = s
                .subscriptions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&uri);
            if subscribed {
                let _ = peer
                    .notify_resource_updated(rmcp::model::ResourceUpdatedNotificationParam::new(
                        uri.clone(),
                    ))
                    .await;
            }
        }
    }
}

/// Runs the server until the client goes (stdio) or the process is stopped (HTTP).
pub fn run(a: &Args, socket: &std::path::Path) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AXIOM_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(serve(a.clone(), socket.to_path_buf()))
}

async fn serve(opts: Args, socket: PathBuf) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    if let Some(a) = opts.http
        && !a.ip().is_loopback()
    {
        anyhow::bail!("--http {a}: only a loopback address (127.0.0.1, ::1) is served");
    }
    let daemon = daemon::connect(Some(&opts.bus), &socket)
        .await
        .with_context(|| format!("connecting to D-Bus ({})", opts.bus))?;
    // axiomd must be there: say so now rather than at the first tool call.
    daemon
        .status()
        .await
        .map_err(|e| anyhow::anyhow!("axiomd ({}): {}", opts.bus, daemon::reason(&e)))?;
    let journal = Arc::new(Journal::default());
    let st = Arc::new(State {
        daemon: daemon.clone(),
        journal: journal.clone(),
        launcher: Launcher::new(socket.clone(), journal.clone())?,
        rule_files: opts.rules.clone(),
        sessions: Mutex::default(),
    });
    tokio::spawn(daemon::follow(daemon, journal));
    tokio::spawn(notify(st.clone()));
    match opts.http {
        None => {
            let running = Server::new(st.clone())
                .serve(rmcp::transport::stdio())
                .await
                .context("MCP over stdio")?;
            let _ = running.waiting().await;
        }
        Some(addr) => http::serve(st.clone(), addr, opts.token_file.as_deref()).await?,
    }
    if !opts.keep_agents {
        // The agents this server started end with it, unless asked otherwise.
        let mine = st.launcher.spawned();
        let running = daemon::agents(&st.daemon).await.unwrap_or_default();
        for a in running
            .iter()
            .filter(|a| a.state != "exited" && mine.contains(&a.id))
        {
            let _ = st.daemon.stop(a.id).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}
