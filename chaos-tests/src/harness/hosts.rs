//! Names from a hosts file a test writes. A process started under [`HostsFile::prefix`]
//! runs in a mount namespace of its own in which that file is `/etc/hosts`: the system
//! resolver answers from it (glibc's `files` source, first in every nsswitch.conf), as it
//! would on a host an operator configured, while the machine's own `/etc/hosts` stays as it
//! was. Making the namespace needs root (CAP_SYS_ADMIN), as CI has.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct HostsFile {
    path: PathBuf,
}

impl HostsFile {
    /// Writes `path` with `localhost` and each `(name, address)`.
    pub fn write(path: &Path, names: &[(&str, IpAddr)]) -> Result<HostsFile, String> {
        let mut text = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
        for (name, addr) in names {
            let _ = writeln!(text, "{addr}\t{name}");
        }
        std::fs::write(path, text)
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
        Ok(HostsFile {
            path: path.to_path_buf(),
        })
    }

    /// Whether this machine lets a test make a mount namespace; the error says what it needs.
    pub fn available() -> Result<(), String> {
        let out = Command::new("unshare")
            .args(["--mount", "true"])
            .output()
            .map_err(|error| format!("cannot run unshare (util-linux): {error}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`unshare --mount true` failed ({}): {}; tests that name hosts in a file of \
                 their own must run as root (CAP_SYS_ADMIN)",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// The program and arguments to put before a command so that it sees this file as
    /// `/etc/hosts`. `unshare` makes the namespace's mounts private (its default), and
    /// neither it nor `sh` forks: the command keeps the pid it was started with.
    pub fn prefix(&self) -> Vec<String> {
        vec![
            "unshare".into(),
            "--mount".into(),
            "sh".into(),
            "-c".into(),
            "mount --bind \"$0\" /etc/hosts && exec \"$@\"".into(),
            self.path.display().to_string(),
        ]
    }

    /// `program` to run with this file as `/etc/hosts`; add its arguments.
    pub fn command(&self, program: &Path) -> Command {
        let prefix = self.prefix();
        let mut command = Command::new(&prefix[0]);
        command.args(&prefix[1..]).arg(program);
        command
    }
}
