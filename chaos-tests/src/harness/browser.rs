//! Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
//! JSON messages ended by a NUL byte, commands on the browser's fd 3, answers on fd 4), so
//! that a test can type into a page and read what it shows, with no WebDriver and no
//! WebSocket. A shell sets up fds 3 and 4 from the child's stdin and stdout.
//!
//! Trust: `trust_ca` puts a CA into an NSS database under the browser's own `HOME`, where
//! Chromium on Linux reads the roots a user added; the browser then trusts what the CA
//! signed, as an operator's browser would after importing the federation CA.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// Chromium's flags for a test: headless, in a container (no sandbox, no GPU, a small
/// /dev/shm), and quiet (no first-run page, no background fetches).
pub const HEADLESS_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

/// A browser with one page open. Dropping it kills Chromium's whole process group.
pub struct Browser {
    child: Child,
    commands: ChildStdin,
    answers: Receiver<Value>,
    next_id: u64,
    session: String,
    log: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Makes `home/.pki/nssdb` trust `ca` (PEM) to identify websites; needs NSS's `certutil`
/// (Debian: libnss3-tools).
pub fn trust_ca(home: &Path, ca: &Path) -> Result<(), String> {
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db).map_err(|error| format!("{}: {error}", db.display()))?;
    let db_arg = format!("sql:{}", db.display());
    let run = |args: &[&str]| -> Result<(), String> {
        let out = Command::new("certutil").args(args).output().map_err(|error| {
            if error.kind() == std::io::ErrorKind::NotFound {
                "certutil is not installed, and this test needs it: apt-get install libnss3-tools (.ci/run installs it)".to_owned()
            } else {
                format!("cannot run certutil: {error}")
            }
        })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "certutil {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    run(&["-N", "-d", &db_arg, "--empty-password"])?;
    let ca = ca.to_string_lossy();
    run(&[
        "-A",
        "-d",
        &db_arg,
        "-n",
        "leasehold-test-ca",
        "-t",
        "C,,",
        "-i",
        &ca,
    ])
}

impl Browser {
    /// Starts headless Chromium with `home` as its HOME (for its NSS database) and a
    /// profile under it, and opens a blank page.
    pub fn start(home: &Path) -> Result<Browser, String> {
        let profile = home.join("chromium-profile");
        let log = home.join("chromium.log");
        let stderr = std::fs::File::create(&log).map_err(|error| error.to_string())?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("exec chromium \"$@\" 3<&0 4>&1 </dev/null >/dev/null")
            .arg("chromium")
            .args(HEADLESS_FLAGS)
            .arg("--remote-debugging-pipe")
            .arg(format!("--user-data-dir={}", profile.display()))
            .env("HOME", home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|error| format!("cannot start chromium: {error}"))?;
        let (Some(commands), Some(out)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("chromium's pipes were not set up".to_owned());
        };
        let (sender, answers) = channel();
        std::thread::spawn(move || {
            let mut out = BufReader::new(out);
            loop {
                let mut message = Vec::new();
                match out.read_until(0, &mut message) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        message.pop();
                        if let Ok(value) = serde_json::from_slice::<Value>(&message)
                            && sender.send(value).is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        let mut browser = Browser {
            child,
            commands,
            answers,
            next_id: 0,
            session: String::new(),
            log,
        };
        let target = browser.call(None, "Target.createTarget", json!({"url": "about:blank"}))?;
        let target_id = target["targetId"]
            .as_str()
            .ok_or_else(|| format!("no targetId in {target}"))?
            .to_owned();
        let attached = browser.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        )?;
        browser.session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no sessionId in {attached}"))?
            .to_owned();
        Ok(browser)
    }

    /// Sends one command (to the page's session, or to the browser with `None`) and waits
    /// for its answer; events in between are skipped.
    fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).map_err(|error| error.to_string())?;
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .and_then(|()| self.commands.flush())
            .map_err(|error| format!("{method}: chromium is gone ({error}): {}", self.log()))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.answers.recv_timeout(left) {
                Ok(answer) if answer["id"] == id => {
                    return match answer.get("error") {
                        Some(error) => Err(format!("{method}: {error}")),
                        None => Ok(answer["result"].clone()),
                    };
                }
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("{method}: no answer within 60 s: {}", self.log()));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("{method}: chromium exited: {}", self.log()));
                }
            }
        }
    }

    /// Loads `url` in the page.
    pub fn navigate(&mut self, url: &str) -> Result<(), String> {
        let session = self.session.clone();
        let result = self.call(Some(&session), "Page.navigate", json!({"url": url}))?;
        match result.get("errorText").and_then(Value::as_str) {
            Some(error) => Err(format!("loading {url}: {error}")),
            None => Ok(()),
        }
    }

    /// The value of a JavaScript expression in the page (JSON-serializable).
    pub fn eval(&mut self, expression: &str) -> Result<Value, String> {
        let session = self.session.clone();
        let result = self.call(
            Some(&session),
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        )?;
        if let Some(exception) = result.get("exceptionDetails") {
            return Err(format!("{expression}: {exception}"));
        }
        Ok(result["result"]["value"].clone())
    }

    /// Chromium's stderr so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
