//! The session page in a real browser: Debian's chromium, headless, driven over WebDriver by
//! Debian's chromedriver; and `axiomctl ui` served as a user. For the ui test and `cargo xtask
//! bench ui`.
use std::{
    io::BufRead as _,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

use crate::{axiomctl_bin, free_port, users::SessionUser};

/// How long a page is waited for.
pub const WAIT: Duration = Duration::from_secs(60);

/// A child process killed on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Debian's chromedriver on a port of its own, once it answers; and its URL.
pub fn chromedriver() -> (Killed, String) {
    for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: cargo xtask setup installs Debian's chromium and chromium-driver"
        );
    }
    let port = free_port();
    let child = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver");
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t0.elapsed() < WAIT, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    (Killed(child), format!("http://127.0.0.1:{port}"))
}

/// Headless chromium, as a user's browser with nothing of its own: a fresh profile, no
/// background traffic (this machine has no network).
pub async fn browser(driver: &str, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1600,1300",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(driver)
        .await
        .expect("a WebDriver session in chromium")
}

/// `script`'s value once `ok` holds of it (within `WAIT`).
pub async fn wait_for(c: &Client, what: &str, script: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let v = c
            .execute(script, vec![])
            .await
            .expect("a script in the page");
        if ok(&v) {
            return v;
        }
        assert!(t0.elapsed() < WAIT, "{what}; last seen: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `axiomctl ui` of the axiomd at `socket`, run as `user`; and the address it printed (with
/// its token).
pub fn ui_server(socket: &Path, user: &SessionUser) -> (Killed, String) {
    let prefix = user.prefix(&[]);
    let mut ui = Command::new(&prefix[0]);
    ui.args(&prefix[1..])
        .arg(axiomctl_bin())
        .arg("--socket")
        .arg(socket)
        .arg("ui")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut ui = Killed(ui.spawn().expect("axiomctl ui"));
    let mut url = String::new();
    std::io::BufReader::new(ui.0.stdout.take().expect("its stdout"))
        .read_line(&mut url)
        .expect("the address it prints");
    let url = url.trim().to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/#token="),
        "axiomctl ui printed {url:?}"
    );
    (ui, url)
}
