//! Walking a doc's shell commands as an operator: a scratch folder with the built binary
//! first on PATH, each `$ ` line run with `sh` there (background lines under the harness's
//! process guards), its output judged by [`doc_shape`] against what the doc shows, and
//! the doc's items taken in order ([`Script`]). `tests/operations_doc.rs` walks
//! docs/operations.md with it.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tempfile::TempDir;

use super::doc_shape::*;
use super::process::{ProcessGuard, process_alive};
use super::sweep::{MARKER, command_line, kill_all_of_this_harness, processes_with};
use super::wait_for;

/// How long a state the prose describes may take to arrive on a shared, slow machine.
pub const WAIT: Duration = Duration::from_secs(60);
/// The longest a foreground command may run; none of the doc's takes more than half.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(60);
/// Tools a doc's line (or a script it runs) may call that a machine may lack.
const TOOLS: [&str; 5] = ["curl", "jq", "sed", "promtool", "python3"];

// The operator: a scratch folder, a shell, and the processes started in the background.

pub struct Operator {
    pub dir: TempDir,
    /// PATH with the folder holding `leasehold` (a link to the built binary) first.
    pub path: String,
    /// One guard per background line; dropped, each kills all its line started.
    pub background: Vec<ProcessGuard>,
    /// The doc's commands run, in order.
    pub ran: Vec<String>,
    /// The doc's commands not run, with why.
    pub skipped: Vec<(String, String)>,
    /// Numbers the files commands write their output to.
    counter: usize,
}

/// What a foreground command printed.
pub struct Printed {
    pub ok: bool,
    /// The exit code (`None` when a signal ended it).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Printed {
    pub fn context(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout, self.stderr)
    }

    /// What the terminal showed, as far as the test can tell: stdout, or else stderr's
    /// lines before stdout's (a progress line on stderr before the result; a line whose
    /// stdout goes to a file; an error).
    pub fn terminal(&self) -> String {
        format!("{}{}", self.stderr, self.stdout)
    }

    /// Checks what the terminal showed against the doc's `shown` lines.
    pub fn judge(&self, line: &str, shown: &[String], fit: Fit) -> Result<String, String> {
        match same_shape(line, shown, &self.stdout, fit) {
            Ok(()) => Ok(self.stdout.clone()),
            Err(diff) if self.stderr.is_empty() => Err(diff),
            Err(_) => {
                let terminal = self.terminal();
                same_shape(line, shown, &terminal, fit).map(|()| terminal)
            }
        }
    }
}

impl Operator {
    /// A scratch folder with `binary` linked as `bin/leasehold`, `bin` first on PATH.
    pub fn new(binary: &Path) -> Operator {
        let dir = TempDir::new().expect("make a scratch folder");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("make the scratch bin folder");
        std::os::unix::fs::symlink(binary, bin.join("leasehold"))
            .expect("link leasehold into the scratch bin folder");
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Operator {
            dir,
            path,
            background: Vec::new(),
            ran: Vec::new(),
            skipped: Vec::new(),
            counter: 0,
        }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.file(name))
            .unwrap_or_else(|error| panic!("cannot read {name}: {error}"))
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.file(name), text)
            .unwrap_or_else(|error| panic!("cannot write {name}: {error}"));
    }

    /// Copies `from` (a file of the repository) to `to` in the scratch folder, making the
    /// folders it names; the copy keeps the original's mode.
    pub fn copy_in(&self, from: &Path, to: &str) {
        let target = self.file(to);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).expect("make a scratch folder's folder");
        }
        std::fs::copy(from, &target)
            .unwrap_or_else(|error| panic!("cannot copy {} to {to}: {error}", from.display()));
    }

    /// The tools a line calls, itself or through a script of the scratch folder it runs,
    /// that this machine lacks (leasehold itself is always here).
    pub fn missing_tools(&self, line: &str) -> Vec<String> {
        let script = line
            .split_whitespace()
            .next()
            .map(|first| self.file(first))
            .filter(|path| path.is_file())
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default();
        let words: Vec<&str> = line
            .split_whitespace()
            .chain(script.split(|c: char| !c.is_ascii_alphanumeric()))
            .collect();
        TOOLS
            .into_iter()
            .filter(|tool| words.contains(tool))
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
    pub fn shell(&mut self, line: &str) -> Printed {
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
            code: status.code(),
            stdout: std::fs::read_to_string(&out).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err).unwrap_or_default(),
        }
    }

    /// Runs a doc command once: it must succeed, and print the doc's shape.
    pub fn run(&mut self, command: &DocCommand, fit: Fit) -> Printed {
        if let Some(printed) = self.skip_without_tools(command) {
            return printed;
        }
        let printed = self.shell(&command.line);
        assert!(
            printed.ok,
            "`{}` failed:\n{}",
            command.line,
            printed.context()
        );
        // A line the doc shows no output under either prints nothing (`mv`) or has its
        // output shown in a block of its own (the certificates'), held against it there.
        let shown = if command.shown.is_empty() {
            printed.stdout.clone()
        } else {
            printed
                .judge(&command.line, &command.shown, fit)
                .unwrap_or_else(|diff| panic!("{diff}\n--- stderr\n{}", printed.stderr))
        };
        self.ran.push(command.line.clone());
        show(&command.line, &shown);
        printed
    }

    /// Runs a doc command that only reads (status, audit, curl) until it succeeds and
    /// prints the doc's shape: the state it shows may take a moment more to settle than
    /// the admin API the test waited on. Fails after [`WAIT`] with the last difference.
    pub fn run_reader(&mut self, command: &DocCommand, fit: Fit) -> Printed {
        self.run_until(command, fit, true)
    }

    /// As [`Operator::run_reader`], for a command the doc shows failing: it must exit
    /// non-zero and say what the doc shows.
    pub fn run_refused(&mut self, command: &DocCommand, fit: Fit) -> Printed {
        self.run_until(command, fit, false)
    }

    fn run_until(&mut self, command: &DocCommand, fit: Fit, succeeds: bool) -> Printed {
        if let Some(printed) = self.skip_without_tools(command) {
            return printed;
        }
        let mut last = None;
        let result = wait_for(
            &format!("`{}` to print the doc's shape", command.line),
            WAIT,
            || {
                let printed = self.shell(&command.line);
                let verdict = if printed.ok != succeeds {
                    let outcome = if succeeds { "failed" } else { "succeeded" };
                    Err(format!("it {outcome}:\n{}", printed.context()))
                } else {
                    printed.judge(&command.line, &command.shown, fit)
                };
                let outcome = verdict.clone().map(|_| ());
                last = Some((printed, verdict));
                outcome
            },
        );
        if let Err(error) = result {
            panic!("{error}");
        }
        self.ran.push(command.line.clone());
        let (printed, shown) = last.expect("the command ran at least once");
        show(&command.line, &shown.unwrap_or_default());
        printed
    }

    /// Records `command` as skipped, with why.
    pub fn skip(&mut self, command: &DocCommand, why: &str) {
        self.skipped.push((command.line.clone(), why.to_owned()));
    }

    fn skip_without_tools(&mut self, command: &DocCommand) -> Option<Printed> {
        let missing = self.missing_tools(&command.line);
        if missing.is_empty() {
            return None;
        }
        self.skip(
            command,
            &format!("{} not installed on this machine", missing.join(", ")),
        );
        Some(Printed {
            ok: true,
            code: Some(0),
            stdout: String::new(),
            stderr: String::new(),
        })
    }

    /// Starts a background line (`... &`, `for ...; do ... & done`) with `sh -c`, under a
    /// harness guard, its output in a log of its own; returns the log's path.
    pub fn start(&mut self, command: &DocCommand) -> PathBuf {
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
    pub fn log_shows(&self, command: &DocCommand, log: &Path) {
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
pub fn show(line: &str, printed: &str) {
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
pub fn leasehold_processes(pattern: &str) -> Vec<u32> {
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
pub fn terminate(pattern: &str, count: usize) -> Duration {
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
// The walk.

/// The section's items, taken in order: each step names what it expects next, so a doc
/// that gains, loses or reorders a command fails here, saying where.
pub struct Script {
    pub items: VecDeque<Item>,
}

impl Script {
    /// The items of `text`'s fenced blocks.
    pub fn of(text: &str) -> Script {
        Script { items: items(text) }
    }

    /// The `$ ` lines of `text`'s fenced blocks alone: for a section whose other blocks
    /// (configs, sketches of commands for other machines) the walk does not take.
    pub fn commands_of(text: &str) -> Script {
        let mut script = Script::of(text);
        script.items.retain(|item| matches!(item, Item::Command(_)));
        script
    }

    pub fn command(&mut self, what: &str, is: impl Fn(&str) -> bool) -> DocCommand {
        match self.items.pop_front() {
            Some(Item::Command(command)) if is(&command.line) => command,
            other => panic!(
                "the walk expected the doc's next command to be {what}; the doc has {other:?}"
            ),
        }
    }

    pub fn output(&mut self, what: &str) -> Vec<String> {
        match self.items.pop_front() {
            Some(Item::Output(lines)) => lines,
            other => panic!(
                "the walk expected the doc's next block to be {what} alone; the doc has {other:?}"
            ),
        }
    }

    pub fn done(&self) {
        assert!(
            self.items.is_empty(),
            "the doc has commands the walk does not know: {:?}",
            self.items
        );
    }
}

pub fn is_status(line: &str) -> bool {
    line.starts_with("leasehold status")
}

pub fn is_audit(line: &str) -> bool {
    line.starts_with("leasehold audit")
}

pub fn background(line: &str) -> bool {
    line.trim_end().ends_with('&') || line.contains("& done")
}
