//! `leasehold journal backup|verify|restore|compact`: a gateway's journal copied out while
//! it runs (through the admin API, role `write`) or while it is stopped (`--state`),
//! checked, restored into a state directory, and compacted (docs/operations.md, "Backups").

use std::fs::{File, OpenOptions};
use std::io::BufWriter;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use leasehold_node::clock::wall_ms;
use leasehold_site_gateway::journal::{self, BackupSummary, Journal};

use super::admin_client::{AdminArgs, Gateway};

#[derive(Debug, clap::Args)]
pub struct JournalArgs {
    #[command(subcommand)]
    pub command: JournalCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum JournalCommand {
    /// Copy a journal to FILE: from a running gateway (--gateway, a token of role write),
    /// or, with --state, from a stopped gateway's state directory. The copy is checked
    /// before it gets its name.
    Backup {
        /// Where the backup goes; refused if it exists.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Read the journal in this state directory (its gateway stopped) instead of
        /// asking a gateway.
        #[arg(long, value_name = "DIR")]
        state: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Check a backup line by line and say what it holds; changes nothing.
    Verify {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Restore a backup into a stopped gateway's state directory. Leases from then on get
    /// epochs above any the site handed out before (the restore's clock, in microseconds).
    Restore {
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        #[arg(long, value_name = "DIR")]
        state: PathBuf,
        /// Set the journal already in DIR aside (renamed, not deleted) and restore over it.
        #[arg(long)]
        replace: bool,
    },
    /// Remove audit records older than --retention-days from a stopped gateway's journal
    /// and give the space back to the file system.
    Compact {
        #[arg(long, value_name = "DIR")]
        state: PathBuf,
        /// Remove audit records older than this many days first (a running gateway does
        /// this by itself, by journal.audit_retention_days).
        #[arg(long, value_name = "DAYS")]
        retention_days: Option<u32>,
    },
}

pub fn run(args: JournalArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        JournalCommand::Backup { out, state, admin } => backup(&out, state.as_deref(), &admin),
        JournalCommand::Verify { file } => {
            let summary = journal::verify_backup(&file)?;
            println!("{}: {}", file.display(), describe(&summary));
            Ok(ExitCode::SUCCESS)
        }
        JournalCommand::Restore {
            from,
            state,
            replace,
        } => restore(&from, &state, replace),
        JournalCommand::Compact {
            state,
            retention_days,
        } => compact(&state, retention_days),
    }
}

fn backup(out: &Path, state: Option<&Path>, admin: &AdminArgs) -> anyhow::Result<ExitCode> {
    if out.exists() {
        bail!(
            "{} exists: give a new file name (backups are never overwritten)",
            out.display()
        );
    }
    let partial = out.with_file_name(format!(
        "{}.partial",
        out.file_name()
            .ok_or_else(|| anyhow!("--out {} names no file", out.display()))?
            .to_string_lossy()
    ));
    // Mode 0600: a backup carries the site's boot key.
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut writer = BufWriter::new(file);
    let written = match state {
        Some(state) => {
            let journal = Journal::open_existing(state)?;
            let snapshot = journal.snapshot()?;
            let boot_key = std::fs::read(state.join("boot.key")).ok();
            journal::write_backup(
                &snapshot,
                journal.path(),
                boot_key.as_deref(),
                wall_ms(),
                &mut writer,
            )
            .map(|_| ())
            .map_err(anyhow::Error::from)
        }
        None => {
            let gateway = Gateway::new(admin)?;
            eprintln!("asking {} for its journal…", gateway.url());
            gateway
                .download("/v1/journal/backup", &mut writer)
                .map(|_| ())
        }
    };
    let finished = written.and_then(|()| {
        let file = writer.into_inner().map_err(|error| error.into_error())?;
        file.sync_all()?;
        Ok(())
    });
    let checked = finished.and_then(|()| {
        journal::verify_backup(&partial).map_err(|error| anyhow!("the copy is not whole: {error}"))
    });
    let summary = match checked {
        Ok(summary) => summary,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error.context(format!("no backup was written to {}", out.display())));
        }
    };
    std::fs::rename(&partial, out).with_context(|| format!("naming {}", out.display()))?;
    if let Some(dir) = out.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        File::open(dir).and_then(|dir| dir.sync_all()).ok();
    }
    println!("{}: {}", out.display(), describe(&summary));
    Ok(ExitCode::SUCCESS)
}

fn restore(from: &Path, state: &Path, replace: bool) -> anyhow::Result<ExitCode> {
    let now_us = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("this machine's clock is before 1970")?
            .as_micros(),
    )
    .context("this machine's clock is past the year 586,000")?;
    let restored = journal::restore(state, from, now_us, replace)?;
    let backup = &restored.backup;
    println!(
        "restored {}'s journal into {} from {} ({})",
        backup.site,
        Journal::file_in(state).display(),
        from.display(),
        describe(backup)
    );
    if let Some(aside) = &restored.set_aside {
        println!("the journal that was there is now {}", aside.display());
    }
    println!(
        "leases from now on get epochs above {}; the site rejoins the members its peers run",
        restored.epoch_floor
    );
    println!(
        "next: start the gateway with --state {} (docs/operations.md, \"Backups\")",
        state.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn compact(state: &Path, retention_days: Option<u32>) -> anyhow::Result<ExitCode> {
    let mut journal = Journal::open_existing(state)?;
    let before = file_size(journal.path())?;
    if let Some(days) = retention_days {
        let now = wall_ms();
        let cutoff = now.saturating_sub(u64::from(days) * 86_400_000);
        let unit = if days == 1 { "day" } else { "days" };
        let why = format!("older than {days} {unit} (leasehold journal compact)");
        let mut removed = 0;
        while let Some(pruned) = journal.prune_audit(cutoff, 5_000, now, &why)? {
            removed += pruned.count;
        }
        println!("{removed} audit records older than {days} {unit} removed");
    }
    let started = std::time::Instant::now();
    journal.compact()?;
    let after = file_size(journal.path())?;
    println!(
        "{}: {} before, {} after compaction ({} ms)",
        journal.path().display(),
        size(before),
        size(after),
        started.elapsed().as_millis()
    );
    Ok(ExitCode::SUCCESS)
}

fn file_size(path: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len())
}

fn size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

/// What a backup holds, in one line.
fn describe(summary: &BackupSummary) -> String {
    let taken = journal::rfc3339(summary.taken_wall_ms);
    let audit = match summary.audit_seqs {
        Some((first, last)) => format!("{} audit records ({first} to {last})", summary.audit),
        None => "no audit records".to_owned(),
    };
    format!(
        "site {}, taken {taken}: {} leases, {audit}, {}the highest epoch {}; {}, sha256 {}",
        summary.site,
        summary.leases,
        if summary.boot_key {
            "the boot key, "
        } else {
            ""
        },
        summary.highest_epoch,
        size(summary.bytes),
        summary.sha256
    )
}
