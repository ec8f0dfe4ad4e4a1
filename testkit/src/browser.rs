//! A real headless Chromium for end-to-end tests of the dashboard, driven through
//! Debian's `chromedriver` with the W3C WebDriver protocol (JSON over HTTP on
//! loopback). The handful of commands the tests need are spoken here directly:
//! fantoccini's TLS stack would bring `aws-lc-rs` into the tree (see STACK.md).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The browser binary and its driver (Debian's `chromium`, `chromium-driver`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// See [`CHROMIUM`].
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Why the browser could not be driven.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// chromedriver or chromium is not installed (`./dev` installs them).
    #[error("{0} is not installed (./dev setup installs chromium and chromium-driver)")]
    Missing(&'static str),
    /// chromedriver did not start or answer.
    #[error("chromedriver: {0}")]
    Driver(String),
    /// A WebDriver command failed.
    #[error("WebDriver {command}: {message}")]
    Command {
        /// The command.
        command: String,
        /// What the driver said.
        message: String,
    },
}

/// A running chromedriver with one headless Chromium session; both end on drop.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium session of
    /// `width` x `height` pixels.
    pub async fn start(width: u32, height: u32) -> Result<Browser, BrowserError> {
        for (path, name) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromedriver")] {
            if !std::path::Path::new(path).exists() {
                return Err(BrowserError::Missing(name));
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| BrowserError::Driver(e.to_string()))?
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BrowserError::Driver(e.to_string()))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let profile = tempfile::tempdir().map_err(|e| BrowserError::Driver(e.to_string()))?;
        let mut up = false;
        for _ in 0..100 {
            if crate::http::request(addr, "GET", "/status", None)
                .await
                .is_some()
            {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !up {
            return Err(BrowserError::Driver("did not answer within 10 s".into()));
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--window-size={width},{height}"),
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let created = browser
            .command("POST", "/session", Some(capabilities))
            .await?;
        browser.session = created["sessionId"]
            .as_str()
            .ok_or_else(|| BrowserError::Driver(format!("no session id in {created}")))?
            .to_owned();
        Ok(browser)
    }

    async fn command(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, BrowserError> {
        let failed = |message: String| BrowserError::Command {
            command: format!("{method} {path}"),
            message,
        };
        let body = body.map(|b| b.to_string());
        let (status, answer) = tokio::time::timeout(
            Duration::from_secs(60),
            crate::http::request(self.addr, method, path, body.as_deref()),
        )
        .await
        .map_err(|_| failed("no answer within 60 s".into()))?
        .ok_or_else(|| failed("no HTTP answer".into()))?;
        let answer: Value = serde_json::from_str(&answer).map_err(|e| failed(e.to_string()))?;
        if status != 200 {
            return Err(failed(answer["value"]["message"].to_string()));
        }
        Ok(answer["value"].clone())
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) -> Result<(), BrowserError> {
        self.command(
            "POST",
            &self.session_path("/url"),
            Some(json!({ "url": url })),
        )
        .await
        .map(drop)
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and
    /// returns its value; a returned promise is awaited.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value, BrowserError> {
        self.command(
            "POST",
            &self.session_path("/execute/sync"),
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// A PNG screenshot of the window.
    pub async fn screenshot(&self) -> Result<Vec<u8>, BrowserError> {
        let value = self
            .command("GET", &self.session_path("/screenshot"), None)
            .await?;
        let text = value.as_str().unwrap_or_default();
        base64(text).ok_or_else(|| BrowserError::Command {
            command: "screenshot".into(),
            message: "not base64".into(),
        })
    }

    /// Ends the session and the driver.
    pub async fn close(mut self) {
        let _ = self.command("DELETE", &self.session_path(""), None).await;
        let _ = self.driver.kill().await;
    }
}

/// Standard base64 (with padding) to bytes.
fn base64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = if c == b'=' { 0 } else { value(c)? };
            n |= v << (18 - 6 * i);
        }
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..3 - pad.min(2)]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_decodes() {
        assert_eq!(base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64("aGk=").unwrap(), b"hi");
        assert_eq!(base64("YWJj").unwrap(), b"abc");
        assert!(base64("a*==").is_none());
    }
}
