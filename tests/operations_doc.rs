//! docs/operations.md, "An operator's day", walked as the operator it is written for. The
//! test reads the section (from the top of the file to "## Securing the admin address"),
//! takes every `$ ` line of its fenced blocks, and runs them in order with `sh -c` in a
//! scratch folder that holds copies of configs/site-*.toml, the built binary first on PATH.
//! What the prose asks between commands (an edit, a refused edit, a restart, node agents
//! stopped) the test does where the prose says, and before each command whose output the
//! doc shows it waits, on the admin API, for the state the prose describes. Then
//! "Maintenance"'s drain and undrain run against the same federation, with a token of role
//! `write` set up as "Securing the admin address" says.
//!
//! Each command must exit 0 and print what the doc shows in shape, not in values: the same
//! `Field = ` names, headings and table headers, the same names in a table's first column,
//! the same JSON keys (and the same string values where they hold no number), the same
//! sentences with their numbers masked, and every audit kind the doc shows. So a changed
//! flag, a renamed column or a reworded line that the doc does not follow turns this red.
//!
//! The federation listens on the fixed ports of configs/, as tests/demo.rs does (test
//! binaries run one at a time); a port already in use fails the test at once, naming it.
//! Background lines (`... &`) run under the harness's process guards (docs/decisions.md,
//! D-25): whatever they start carries the guard's marker and is killed when the test ends,
//! passed or panicked.

use std::collections::VecDeque;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use leasehold_chaos_tests::harness::admin::{get_json, get_text};
use leasehold_chaos_tests::harness::doc_shape::*;
use leasehold_chaos_tests::harness::process::{ProcessGuard, process_alive};
use leasehold_chaos_tests::harness::sweep::{
    MARKER, command_line, kill_all_of_this_harness, processes_with,
};
use leasehold_chaos_tests::harness::wait_for;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");
/// How long a state the prose describes may take to arrive on a shared, slow machine.
const WAIT: Duration = Duration::from_secs(60);
/// The longest a foreground command may run; none of the doc's should take a second.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

fn read_doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

// ---------------------------------------------------------------------------------------
// The operator: a scratch folder, a shell, and the processes started in the background.

struct Operator {
    dir: TempDir,
    /// PATH with the folder holding `leasehold` (a link to the built binary) first.
    path: String,
    /// One guard per background line; dropped, each kills all its line started.
    background: Vec<ProcessGuard>,
    /// The doc's commands run, in order.
    ran: Vec<String>,
    /// The doc's commands not run, with why.
    skipped: Vec<(String, String)>,
    /// Numbers the files commands write their output to.
    counter: usize,
}

/// What a foreground command printed.
struct Printed {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Printed {
    fn context(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout, self.stderr)
    }
}

impl Operator {
    fn new() -> Operator {
        let dir = TempDir::new().expect("make a scratch folder");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("make the scratch bin folder");
        std::os::unix::fs::symlink(BINARY, bin.join("leasehold"))
            .expect("link leasehold into the scratch bin folder");
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        // "with copies of `configs/site-a.toml`, `site-b.toml` and `site-c.toml`"
        let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        for site in ["site-a", "site-b", "site-c"] {
            let name = format!("{site}.toml");
            std::fs::copy(configs.join(&name), dir.path().join(&name))
                .unwrap_or_else(|error| panic!("cannot copy configs/{name}: {error}"));
        }
        Operator {
            dir,
            path,
            background: Vec::new(),
            ran: Vec::new(),
            skipped: Vec::new(),
            counter: 0,
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.file(name))
            .unwrap_or_else(|error| panic!("cannot read {name}: {error}"))
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.file(name), text)
            .unwrap_or_else(|error| panic!("cannot write {name}: {error}"));
    }

    /// The tools a line calls that this machine may lack (leasehold itself is always here).
    fn missing_tools(&self, line: &str) -> Vec<String> {
        ["curl", "jq", "sed"]
            .into_iter()
            .filter(|tool| line.split_whitespace().any(|word| word == *tool))
            .filter(|tool| {
                !self
                    .path
                    .split(':')
                    .any(|dir| Path::new(dir).join(tool).is_file())
            })
            .map(str::to_owned)
            .collect()
    }

    /// Runs `line` with `sh -ec` in the scratch folder, to its end (at most
    /// [`COMMAND_LIMIT`]): `-e`, so that a failing step of a `for` loop fails the line.
    fn shell(&mut self, line: &str) -> Printed {
        self.counter += 1;
        let out = self.file(&format!("command-{}.out", self.counter));
        let err = self.file(&format!("command-{}.err", self.counter));
        let mut child = Command::new("sh")
            .args(["-ec", line])
            .current_dir(self.dir.path())
            .env("PATH", &self.path)
            // Kin of the background processes' markers: the final sweep finds it too.
            .env(MARKER, format!("{}.foreground", std::process::id()))
            .stdin(Stdio::null())
            .stdout(File::create(&out).expect("create a command's output file"))
            .stderr(File::create(&err).expect("create a command's error file"))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run sh -c {line}: {error}"));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for a command") {
                break status;
            }
            if started.elapsed() > COMMAND_LIMIT {
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                }
                let _ = child.wait();
                panic!(
                    "`{line}` still ran after {COMMAND_LIMIT:?}:\n{}",
                    std::fs::read_to_string(&out).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Printed {
            ok: status.success(),
            stdout: std::fs::read_to_string(&out).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err).unwrap_or_default(),
        }
    }

    /// Runs a doc command once: it must succeed, and print the doc's shape.
    fn run(&mut self, command: &DocCommand, fit: Fit) -> Printed {
        let printed = self.shell(&command.line);
        assert!(
            printed.ok,
            "`{}` failed:\n{}",
            command.line,
            printed.context()
        );
        // A line the doc shows no output under either prints nothing (`mv`) or has its
        // output shown in a block of its own (the certificates'), held against it there.
        if !command.shown.is_empty()
            && let Err(diff) = same_shape(&command.line, &command.shown, &printed.stdout, fit)
        {
            panic!("{diff}\n--- stderr\n{}", printed.stderr);
        }
        self.ran.push(command.line.clone());
        show(&command.line, &printed.stdout);
        printed
    }

    /// Runs a doc command that only reads (status, audit, curl) until it succeeds and
    /// prints the doc's shape: the state it shows may take a moment more to settle than
    /// the admin API the test waited on. Fails after [`WAIT`] with the last difference.
    fn run_reader(&mut self, command: &DocCommand, fit: Fit) -> Printed {
        if let Some(printed) = self.skip_without_tools(command) {
            return printed;
        }
        let mut last = None;
        let result = wait_for(
            &format!("`{}` to print the doc's shape", command.line),
            WAIT,
            || {
                let printed = self.shell(&command.line);
                let verdict = if !printed.ok {
                    Err(format!("it failed:\n{}", printed.context()))
                } else {
                    same_shape(&command.line, &command.shown, &printed.stdout, fit)
                };
                last = Some(printed);
                verdict
            },
        );
        if let Err(error) = result {
            panic!("{error}");
        }
        self.ran.push(command.line.clone());
        let printed = last.expect("the command ran at least once");
        show(&command.line, &printed.stdout);
        printed
    }

    fn skip_without_tools(&mut self, command: &DocCommand) -> Option<Printed> {
        let missing = self.missing_tools(&command.line);
        if missing.is_empty() {
            return None;
        }
        self.skipped.push((
            command.line.clone(),
            format!("{} not installed on this machine", missing.join(", ")),
        ));
        Some(Printed {
            ok: true,
            stdout: String::new(),
            stderr: String::new(),
        })
    }

    /// Starts a background line (`... &`, `for ...; do ... & done`) with `sh -c`, under a
    /// harness guard, its output in a log of its own; returns the log's path.
    fn start(&mut self, command: &DocCommand) -> PathBuf {
        assert!(
            command.line.trim_end().ends_with('&') || command.line.contains("& done"),
            "`{}` is not a background line",
            command.line
        );
        self.counter += 1;
        let log = self.file(&format!("background-{}.log", self.counter));
        // `cd` first, then the doc's line as written: its own `&` puts it in the background.
        let script = format!(
            "cd '{}' || exit 1; {}",
            self.dir.path().display(),
            command.line
        );
        let guard = ProcessGuard::spawn_with_env(
            &command.line,
            Path::new("sh"),
            &["-c".to_owned(), script],
            &log,
            &[("PATH".to_owned(), self.path.clone())],
        )
        .unwrap_or_else(|error| panic!("{error}"));
        self.background.push(guard);
        self.ran.push(command.line.clone());
        log
    }

    /// Waits until the background log `log` holds the doc's lines of `command` in order.
    fn log_shows(&self, command: &DocCommand, log: &Path) {
        if let Err(error) = wait_for(&format!("the output of `{}`", command.line), WAIT, || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            same_shape(&command.line, &command.shown, &text, Fit::Log)
        }) {
            panic!("{error}");
        }
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let head: Vec<&str> = text.lines().take(command.shown.len() + 4).collect();
        show(&command.line, &format!("{}\n...", head.join("\n")));
    }
}

/// What a command printed, for the test's own output (`--nocapture`): what an operator
/// would have seen, to compare by eye or to paste into the doc when it changes.
fn show(line: &str, printed: &str) {
    eprintln!("$ {line}\n{}", printed.trim_end());
}

impl Drop for Operator {
    fn drop(&mut self) {
        // Each guard kills its line's process group and every process with its marker.
        self.background.clear();
        // A foreground command killed mid-way may have left children.
        kill_all_of_this_harness();
    }
}

/// The processes the test's lines started that run `leasehold` with `pattern` in their
/// command line (not the shells around them).
fn leasehold_processes(pattern: &str) -> Vec<u32> {
    let mine = format!("{}.", std::process::id());
    processes_with(MARKER)
        .into_iter()
        .filter(|(_, marker)| marker.starts_with(&mine))
        .filter_map(|(pid, _)| {
            let line = command_line(pid)?;
            let program = line.split_whitespace().next()?;
            (Path::new(program).file_name()? == "leasehold" && line.contains(pattern))
                .then_some(pid)
        })
        .collect()
}

/// `kill -TERM` each process of `pattern` and waits for it to exit; returns how long that
/// took. There must be `count` of them.
fn terminate(pattern: &str, count: usize) -> Duration {
    let pids = leasehold_processes(pattern);
    assert_eq!(
        pids.len(),
        count,
        "expected {count} process(es) running `{pattern}`, found {pids:?}"
    );
    let started = Instant::now();
    for pid in &pids {
        let raw = i32::try_from(*pid).expect("a pid fits an i32");
        kill(Pid::from_raw(raw), Signal::SIGTERM).expect("send SIGTERM");
    }
    if let Err(error) = wait_for(&format!("`{pattern}` to exit"), WAIT, || {
        let alive: Vec<&u32> = pids.iter().filter(|pid| process_alive(**pid)).collect();
        if alive.is_empty() {
            Ok(())
        } else {
            Err(format!("still running: {alive:?}"))
        }
    }) {
        panic!("{error}");
    }
    started.elapsed()
}

// ---------------------------------------------------------------------------------------
// The federation, as the admin API shows it.

/// The `KEY = "HOST:PORT"` lines of a config whose key ends in `_addr`.
fn addresses(config: &str) -> Vec<(String, SocketAddr)> {
    config
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            let key = key.trim();
            let value = value.split('#').next()?.trim().trim_matches('"');
            key.ends_with("_addr")
                .then(|| Some((key.to_owned(), value.parse().ok()?)))
                .flatten()
        })
        .collect()
}

/// Fails at once, naming them, if any of the configs' fixed ports is taken.
fn ports_are_free(operator: &Operator) {
    let mut taken = Vec::new();
    for site in ["site-a", "site-b", "site-c"] {
        for (key, addr) in addresses(&operator.read(&format!("{site}.toml"))) {
            // QUIC listens on UDP; the admin API and the workloads on TCP.
            let free = if key == "federation_addr" || key == "management_addr" {
                UdpSocket::bind(addr).is_ok()
            } else {
                TcpListener::bind(addr).is_ok()
            };
            if !free {
                taken.push(format!("{site} {key} {addr}"));
            }
        }
    }
    assert!(
        taken.is_empty(),
        "the fixed ports of configs/ are in use, so the doc's federation cannot start: {taken:?} \
         (a `leasehold demo`, a federation started by hand from configs/, or another test?)"
    );
}

fn admin_addr(operator: &Operator) -> SocketAddr {
    addresses(&operator.read("site-a.toml"))
        .into_iter()
        .find(|(key, _)| key == "admin_addr")
        .map(|(_, addr)| addr)
        .expect("site-a.toml has an admin_addr")
}

/// Waits until `holds` says the admin API of site-a shows what the prose describes.
fn wait_until(what: &str, admin: SocketAddr, holds: impl Fn(&Api) -> Result<(), String>) {
    let result = wait_for(what, WAIT, || {
        let api = Api::read(admin)?;
        holds(&api).map_err(|why| format!("{why}\n{api}"))
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}

/// One reading of site-a's admin API.
struct Api {
    status: Value,
    servers: Vec<Value>,
    accounts: Vec<Value>,
    peers: Vec<Value>,
    loans: Value,
}

impl Api {
    fn read(admin: SocketAddr) -> Result<Api, String> {
        let array = |path: &str| -> Result<Vec<Value>, String> {
            get_json(admin, path)?
                .as_array()
                .cloned()
                .ok_or_else(|| format!("{path} is not an array"))
        };
        Ok(Api {
            status: get_json(admin, "/v1/status")?,
            servers: array("/v1/servers")?,
            accounts: array("/v1/accounts")?,
            peers: array("/v1/peers")?,
            loans: get_json(admin, "/v1/loans")?,
        })
    }

    fn server(&self, id: &str) -> &Value {
        self.servers
            .iter()
            .find(|server| server["id"] == id)
            .unwrap_or(&Value::Null)
    }

    fn account(&self, name: &str) -> &Value {
        self.accounts
            .iter()
            .find(|account| account["name"] == name)
            .unwrap_or(&Value::Null)
    }

    fn count_in(&self, state: &str) -> usize {
        self.servers.iter().filter(|s| s["state"] == state).count()
    }

    fn borrowed(&self) -> &[Value] {
        self.loans["borrowed"].as_array().map_or(&[], Vec::as_slice)
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let brief = |items: &[Value], keys: &[&str]| -> String {
            items
                .iter()
                .map(|item| {
                    keys.iter()
                        .map(|key| format!("{key}={}", item[*key]))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect::<Vec<_>>()
                .join("\n  ")
        };
        write!(
            f,
            "servers:\n  {}\naccounts:\n  {}\npeers:\n  {}\nloans: {}\nconfig: {}",
            brief(&self.servers, &["id", "state", "account", "connected"]),
            brief(
                &self.accounts,
                &["name", "owner", "servers", "borrowed", "min_servers"]
            ),
            brief(&self.peers, &["name", "state", "accounts"]),
            self.loans,
            self.status["config"],
        )
    }
}

fn check(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(why()) }
}

/// The newest audit seq and the number of `config` records, from `/v1/audit`.
fn audit_summary(admin: SocketAddr) -> (u64, usize) {
    let records = get_json(admin, "/v1/audit?limit=1000").unwrap_or_else(|error| panic!("{error}"));
    let records = records.as_array().cloned().unwrap_or_default();
    let newest = records
        .iter()
        .filter_map(|r| r["seq"].as_u64())
        .max()
        .unwrap_or(0);
    let configs = records.iter().filter(|r| r["kind"] == "config").count();
    (newest, configs)
}

// ---------------------------------------------------------------------------------------
// The walk.

/// The section's items, taken in order: each step names what it expects next, so a doc
/// that gains, loses or reorders a command fails here, saying where.
struct Script {
    items: VecDeque<Item>,
}

impl Script {
    fn command(&mut self, what: &str, is: impl Fn(&str) -> bool) -> DocCommand {
        match self.items.pop_front() {
            Some(Item::Command(command)) if is(&command.line) => command,
            other => panic!(
                "the walk expected the doc's next command to be {what}; the doc has {other:?}"
            ),
        }
    }

    fn output(&mut self, what: &str) -> Vec<String> {
        match self.items.pop_front() {
            Some(Item::Output(lines)) => lines,
            other => panic!(
                "the walk expected the doc's next block to be {what} alone; the doc has {other:?}"
            ),
        }
    }

    fn done(&self) {
        assert!(
            self.items.is_empty(),
            "the doc has commands the walk does not know: {:?}",
            self.items
        );
    }
}

fn is_status(line: &str) -> bool {
    line.starts_with("leasehold status")
}

fn is_audit(line: &str) -> bool {
    line.starts_with("leasehold audit")
}

fn background(line: &str) -> bool {
    line.trim_end().ends_with('&') || line.contains("& done")
}

#[test]
fn an_operators_day_runs_as_the_doc_says() {
    let started = Instant::now();
    let doc = read_doc();
    let day = section(&doc, None, "## Securing the admin address");
    let maintenance = section(&doc, Some("## Maintenance"), "## Installing");
    let mut script = Script { items: items(day) };

    let mut op = Operator::new();
    ports_are_free(&op);
    let admin = admin_addr(&op);

    // **Start the federation.** The CA and the certificates.
    let mut first_two = String::new();
    for at in 0.. {
        match script.items.front() {
            Some(Item::Command(command)) if command.line.contains("leasehold certs") => {}
            _ => {
                assert!(at >= 2, "the doc makes fewer than two certificates' worth");
                break;
            }
        }
        let command = script.command("a `leasehold certs` line", |_| true);
        let printed = op.run(&command, Fit::Whole);
        if at < 2 {
            first_two.push_str(&printed.stdout);
        }
    }
    quote(day, "The first two printed:");
    let shown = script.output("what the first two certificate commands printed");
    if let Err(diff) = same_shape(
        "the first two certs commands",
        &shown,
        &first_two,
        Fit::Whole,
    ) {
        panic!("{diff}");
    }

    // "Start site-a's gateway and its four node agents first"
    let gateway_a = script.command("site-a's gateway", |l| {
        background(l) && l.contains("gateway run") && l.contains("site-a.toml")
    });
    op.start(&gateway_a);
    let agents_a = script.command("site-a's node agents", |l| {
        background(l) && l.contains("node run")
    });
    op.start(&agents_a);
    quote(
        day,
        "its servers are connected and free, and its accounts have no owner",
    );
    wait_until(
        "site-a's servers connected and free, its accounts unowned",
        admin,
        |api| {
            check(api.servers.len() == 4 && api.count_in("free") == 4, || {
                "not every server is free".into()
            })?;
            check(api.servers.iter().all(|s| s["connected"] == true), || {
                "not every server is connected".into()
            })?;
            check(
                !api.accounts.is_empty() && api.accounts.iter().all(|a| a["owner"].is_null()),
                || "an account has an owner".into(),
            )
        },
    );
    let status = script.command("`leasehold status`", is_status);
    op.run_reader(&status, Fit::Whole);

    // "Then start the other two gateways and their node agents"
    for _ in 0..4 {
        let line = script.command("the other sites' gateways and node agents", background);
        op.start(&line);
    }
    quote(day, "The peers are up with the accounts they home");
    quote(day, "each account got its minimum; two servers are free");
    wait_until(
        "peers up, site-a owning its accounts at their minimum",
        admin,
        |api| {
            check(
                api.peers.len() == 2
                    && api.peers.iter().all(|p| {
                        p["state"] == "up"
                            && p["accounts"].as_array().is_some_and(|a| !a.is_empty())
                    }),
                || "a peer is not up, or has not told its accounts".into(),
            )?;
            check(
                api.accounts.iter().all(|a| {
                    a["owner"] == "site-a" && a["servers"].as_u64() >= a["min_servers"].as_u64()
                }),
                || "an account is not owned by site-a or below its minimum".into(),
            )?;
            check(api.count_in("free") == 2, || "not two servers free".into())
        },
    );
    let status = script.command("`leasehold status`", is_status);
    op.run_reader(&status, Fit::Whole);
    let accounts = script.command("`curl .../v1/accounts | jq`", |l| {
        l.contains("/v1/accounts")
    });
    op.run_reader(&accounts, Fit::Whole);

    // **Change an SLA.** "Raise shop's `min_servers` from 1 to 3."
    quote(day, "Raise shop's `min_servers` from 1 to 3");
    let diff = script.command("`leasehold config diff`", |l| l.contains("config diff"));
    let new_file = diff
        .line
        .split_whitespace()
        .last()
        .expect("config diff names two files")
        .to_owned();
    let edited = raise_min_servers(&op.read("site-a.toml"), "shop", 1, 3);
    op.write(&new_file, &edited);
    op.run(&diff, Fit::Whole);
    let save = script.command("saving the edit (`mv`)", |l| l.starts_with("mv "));
    op.run(&save, Fit::Whole);

    // "Within the next round shop has its three servers"
    wait_until("shop serving on three servers", admin, |api| {
        check(api.account("shop")["servers"] == 3, || {
            "shop is not on 3".into()
        })
    });
    let audit = script.command("`leasehold audit`", is_audit);
    op.run_reader(&audit, Fit::Whole);

    // **A bad edit is refused**: "After saving the file with `priority = twenty`,
    // `leasehold status` says:"
    quote(
        day,
        "After saving the file with `priority = twenty`, `leasehold status` says:",
    );
    let good = op.read("site-a.toml");
    let (_, configs_before) = audit_summary(admin);
    let bad = good.replacen("priority = 20", "priority = twenty", 1);
    assert_ne!(bad, good, "site-a.toml has no `priority = 20` to break");
    op.write("site-a.toml", &bad);
    let refused = script.output("the status of a refused edit");
    // The doc's `Config = ...` line ends with the counts: those the status must reach.
    let counts = refused
        .iter()
        .find_map(|line| line.split_once(", ").map(|(_, rest)| rest.to_owned()))
        .expect("the refused edit's block shows the Config line's counts");
    let mut last_status = String::new();
    let waited = wait_for("the refused edit in `leasehold status`", WAIT, || {
        let printed = op.shell("leasehold status");
        last_status = printed.stdout.clone();
        if !printed.ok {
            return Err(printed.context());
        }
        check(
            printed
                .stdout
                .lines()
                .any(|l| l.starts_with("Config") && l.ends_with(&counts)),
            || format!("no Config line ending in `{counts}`:\n{}", printed.stdout),
        )
    });
    if let Err(error) = waited {
        panic!("{error}");
    }
    if let Err(diff) = same_shape("the refused edit", &refused, &last_status, Fit::Excerpt) {
        panic!("{diff}");
    }
    // "and `/metrics` counts it (`leasehold_config_reloads_total{...} 1`)"
    let series = code_span(day, "leasehold_config_reloads_total");
    let metrics = get_text(admin, "/metrics").unwrap_or_else(|error| panic!("{error}"));
    assert!(
        metrics.lines().any(|line| line == series),
        "/metrics has no line `{series}`:\n{metrics}"
    );
    // "the status page shows the same error in a red banner"
    quote(day, "the status page shows the same error");
    let error_line = refused
        .iter()
        .find_map(|line| line.find("syntax error").map(|at| &line[at..]))
        .expect("the refused edit's block shows the error");
    let page = get_text(admin, "/").unwrap_or_else(|error| panic!("{error}"));
    assert!(
        page.contains(error_line) || page.contains(&error_line.replace('`', "&#96;")),
        "the status page does not show `{error_line}`"
    );
    // "Saving the good file again applies it (`2 applied, 1 refused`; ... the gateway logs
    // "config file is back to the running config; refusal cleared" and the audit log gets
    // no new record)"
    op.write("site-a.toml", &good);
    let counts = quote(day, "2 applied, 1 refused");
    let cleared = quote(
        day,
        "config file is back to the running config; refusal cleared",
    );
    quote(day, "the audit log gets no new record");
    wait_until("the good file applied again", admin, |api| {
        let config = &api.status["config"];
        check(
            config["reloads_applied"] == 2
                && config["reloads_refused"] == 1
                && config["last_refused"].is_null(),
            || format!("not yet `{counts}`"),
        )
    });
    let printed = op.shell("leasehold status");
    assert!(printed.stdout.contains(counts), "{}", printed.context());
    let gateway_log = op.background[0].output();
    assert!(
        gateway_log.contains(cleared),
        "site-a's gateway did not log \"{cleared}\":\n{gateway_log}"
    );
    let (_, configs_after) = audit_summary(admin);
    assert_eq!(
        configs_after, configs_before,
        "saving the running config again added a config record to the audit log"
    );

    // **A restart borrows**: "`kill -TERM` the gateway and wait for it to exit", "stop a2's
    // and a3's node agents the same way", "then start the gateway at once".
    quote(day, "`kill -TERM` the gateway and wait for it to exit");
    quote(day, "stop a2's and a3's node agents the same way");
    let exit = terminate("gateway run --config site-a.toml", 1);
    terminate("--id a2 ", 1);
    terminate("--id a3 ", 1);
    let json_gateway = script.command("site-a's gateway, logging JSON", |l| {
        background(l) && l.contains("--log-format json") && l.contains("site-a.toml")
    });
    let log = op.start(&json_gateway);
    op.log_shows(&json_gateway, &log);
    eprintln!("site-a's gateway took {exit:?} to exit on SIGTERM");

    // "While the loans run, the Loans section of `leasehold status` lists them"
    quote(
        day,
        "borrows from site-b once its start-up grace (3 s) is over",
    );
    wait_until("two servers borrowed, serving", admin, |api| {
        let serving = api
            .borrowed()
            .iter()
            .filter(|l| l["state"] == "serving")
            .count();
        check(serving == 2 && api.count_in("failed") == 2, || {
            "not two loans serving and two servers failed".into()
        })
    });
    let loans = script.command("`leasehold status` with the Loans", is_status);
    op.run_reader(&loans, Fit::Whole);

    // "Start a2's and a3's agents again"
    quote(day, "Start a2's and a3's agents again");
    let agents = script.command("a2's and a3's node agents", |l| {
        background(l) && l.contains("node run")
    });
    op.start(&agents);
    quote(
        day,
        "site-a serves from its own servers again, and gives the loans back",
    );
    wait_until(
        "site-a on its own servers again, the loans returned",
        admin,
        |api| {
            check(
                ["a1", "a2", "a3", "a4"]
                    .iter()
                    .all(|id| api.server(id)["state"] == "serving"),
                || "not all of a1..a4 serving".into(),
            )?;
            check(
                api.borrowed().is_empty() && api.loans["counts"]["returned"] == 2,
                || "the loans are not both returned".into(),
            )
        },
    );
    let audit = script.command("`leasehold audit`", is_audit);
    op.run_reader(&audit, Fit::Whole);
    let servers = script.command("`leasehold status` with the servers", is_status);
    op.run_reader(&servers, Fit::Whole);
    script.done();

    walk_maintenance(&mut op, admin, day, maintenance, &gateway_a);

    eprintln!("ran, in order:");
    for line in &op.ran {
        eprintln!("  $ {line}");
    }
    eprintln!("skipped: {:?}", op.skipped);
    drop(op);
    let left = leasehold_processes("");
    assert!(left.is_empty(), "processes of the walk still run: {left:?}");
    eprintln!("the walk took {:?}", started.elapsed());
}

/// "Maintenance": drain a1 and give it back, with a token of role `write` made and
/// configured as "Securing the admin address" says.
fn walk_maintenance(
    op: &mut Operator,
    admin: SocketAddr,
    day: &str,
    maintenance: &str,
    gateway_a: &DocCommand,
) {
    let mut script = Script {
        items: items(maintenance),
    };
    // "with a token of role `write` in `ops.token`"; "A token per person or program"
    // (`leasehold token add --file admin-tokens --name NAME --role ROLE > NAME.token`) and
    // "3. The config: [admin] tokens = "admin-tokens"". A restart takes the file's path.
    quote(maintenance, "with a token of role `write` in `ops.token`");
    let made =
        op.shell("leasehold token add --file admin-tokens --name ops --role write > ops.token");
    assert!(made.ok, "cannot make a write token:\n{}", made.context());
    let config = op.read("site-a.toml");
    let secured = config.replacen(
        "anonymous_role = \"read\"\n",
        "anonymous_role = \"read\"\ntokens = \"admin-tokens\"\n",
        1,
    );
    assert_ne!(
        secured, config,
        "site-a.toml's [admin] has no anonymous_role line"
    );
    op.write("site-a.toml", &secured);
    terminate("gateway run --config site-a.toml", 1);
    op.start(gateway_a);
    quote(
        day,
        "The restarted gateway owns its accounts again within a second",
    );
    wait_until(
        "site-a back, owning its accounts on its own servers",
        admin,
        |api| {
            check(
                api.accounts
                    .iter()
                    .all(|a| a["owner"] == "site-a" && a["servers"] == a["min_servers"])
                    && api.count_in("serving") == 4
                    && api.borrowed().is_empty(),
                || "not every account owned at its minimum on site-a's own servers".into(),
            )
        },
    );

    let drain = script.command("`leasehold server drain`", |l| l.contains("server drain"));
    op.run(&drain, Fit::Whole);
    // "once a replacement serves, it drains": site-a has no free server of its own (shop
    // at its minimum of 3 and blog at 1 take all four), so the replacement is borrowed.
    quote(maintenance, "once a replacement serves, it drains");
    let drained = drain
        .line
        .split_whitespace()
        .nth(3)
        .expect("`leasehold server drain ID`")
        .to_owned();
    wait_until("the drained server in maintenance", admin, |api| {
        let server = api.server(&drained);
        check(server["state"] == "maintenance", || {
            format!("{drained} is {}, not drained yet", server["state"])
        })
    });
    let status = script.command("`leasehold status`", is_status);
    // The doc's example is a site of two servers and one account, as its prose says: its
    // headings and table header must be printed, and a row for each of its servers, the
    // drained one's in the state the doc shows.
    quote(maintenance, "What a site of two servers and one account");
    let printed = op.shell(&status.line);
    show(&status.line, &printed.stdout);
    assert!(
        printed.ok,
        "`{}` failed:\n{}",
        status.line,
        printed.context()
    );
    if let Err(error) = rows_present(&status.line, &status.shown, &printed.stdout) {
        panic!("{error}");
    }
    let state_of = |text: &str| -> Option<String> {
        text.lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|cells| cells.first() == Some(&drained.as_str()))
            .and_then(|cells| cells.get(1).map(|cell| cell.to_string()))
    };
    let shown_state = state_of(&status.shown.join("\n"));
    assert!(
        shown_state.is_some(),
        "the doc's status shows no row for {drained}"
    );
    assert_eq!(
        state_of(&printed.stdout),
        shown_state,
        "`{}`: {drained}'s state",
        status.line
    );
    op.ran.push(status.line.clone());
    let undrain = script.command("`leasehold server undrain`", |l| {
        l.contains("server undrain")
    });
    op.run(&undrain, Fit::Whole);
    script.done();
}

/// `config` with `min_servers = from` of account `account` as `to`.
fn raise_min_servers(config: &str, account: &str, from: u32, to: u32) -> String {
    let start = config
        .find(&format!("name = \"{account}\""))
        .unwrap_or_else(|| panic!("site-a.toml has no account {account}"));
    let old = format!("min_servers = {from}");
    let at = start
        + config[start..]
            .find(&old)
            .unwrap_or_else(|| panic!("account {account} has no `{old}`"));
    format!(
        "{}min_servers = {to}{}",
        &config[..at],
        &config[at + old.len()..]
    )
}
