//! Backups and restores on real journal files: what comes back, what never does (an epoch
//! handed out after the backup), and every way a bad backup or a busy directory is refused
//! with the directory left as it was.

use std::path::{Path, PathBuf};

use leasehold_federation::ids::{AccountId, Epoch, ServerId, SiteId};

use super::*;
use crate::model::effects::{AuditEntry, AuditKind, JournalOp, MaintenanceRecord};

fn site() -> SiteId {
    SiteId::parse("site-a").unwrap()
}

fn server(id: &str) -> ServerId {
    ServerId::parse(id).unwrap()
}

fn granted(id: &str, epoch: Epoch) -> JournalOp {
    JournalOp::LeaseGranted {
        server: server(id),
        account: AccountId::parse("shop").unwrap(),
        epoch,
        lent_to: None,
    }
}

fn entry(reason: &str) -> AuditEntry {
    AuditEntry {
        kind: AuditKind::Assign,
        server: Some(server("a1")),
        account: None,
        from: None,
        epoch: None,
        peer: None,
        term: None,
        reason: reason.into(),
    }
}

/// Microseconds since 1970 at about the time these tests were written.
const NOW_US: u64 = 1_796_000_000_000_000;

/// A journal with leases on a1 (epoch 2) and a2 (epoch 1), a server in maintenance, a
/// member set and three audit records; its backup in `dir/backup.jsonl`.
fn journal_and_backup(dir: &Path) -> (PathBuf, PathBuf) {
    let state = dir.join("state");
    let e1 = Epoch::NONE.next();
    let (mut journal, _) = Journal::open(&state, &site()).unwrap();
    journal
        .persist(
            &[
                granted("a1", e1),
                JournalOp::LeaseEnded {
                    server: server("a1"),
                    epoch: e1,
                },
                granted("a1", e1.next()),
                granted("a2", e1),
                JournalOp::Maintenance {
                    server: server("a3"),
                    record: Some(MaintenanceRecord {
                        by: "alice".into(),
                        reason: "a disk".into(),
                        since_wall_ms: 5,
                        force: false,
                    }),
                },
                JournalOp::Members {
                    running: vec![site(), SiteId::parse("site-b").unwrap()],
                },
            ],
            &[entry("one"), entry("two"), entry("three")],
            1_000,
        )
        .unwrap();
    let backup = dir.join("backup.jsonl");
    let mut file = std::fs::File::create(&backup).unwrap();
    let summary = write_backup(
        &journal.snapshot().unwrap(),
        journal.path(),
        Some(&[7u8; 32]),
        2_000,
        &mut file,
    )
    .unwrap();
    assert_eq!(summary.leases, 2);
    assert_eq!(summary.audit_seqs, Some((1, 3)));
    assert_eq!(summary, verify_backup(&backup).unwrap());
    (state, backup)
}

#[test]
fn a_restore_brings_back_leases_maintenance_and_the_audit_log_but_no_members() {
    let dir = tempfile::tempdir().unwrap();
    let (_, backup) = journal_and_backup(dir.path());
    let target = dir.path().join("restored");
    let restored = restore(&target, &backup, NOW_US, false).unwrap();
    assert_eq!(restored.epoch_floor, NOW_US);
    assert_eq!(restored.set_aside, None);

    let (journal, recovered) = Journal::open(&target, &site()).unwrap();
    let mut leases = recovered.leases.clone();
    leases.sort();
    let e1 = Epoch::NONE.next();
    assert_eq!(
        leases,
        vec![
            (server("a1"), AccountId::parse("shop").unwrap(), e1.next()),
            (server("a2"), AccountId::parse("shop").unwrap(), e1),
        ]
    );
    assert_eq!(recovered.maintenance.len(), 1);
    assert_eq!(
        recovered.members,
        Some(Vec::new()),
        "the running set is dropped"
    );
    assert!(!recovered.new_journal);
    assert_eq!(recovered.epoch_floor, Epoch::from_journal(NOW_US));
    let audit = journal.audit_after(0, 10).unwrap();
    let reasons: Vec<&str> = audit.iter().map(|r| r.entry.reason.as_str()).collect();
    assert_eq!(&reasons[..3], ["one", "two", "three"]);
    assert_eq!(audit[3].seq, 4);
    assert_eq!(audit[3].entry.kind, AuditKind::JournalRestored);
    let key = std::fs::read(target.join("boot.key")).unwrap();
    assert_eq!(key, [7u8; 32]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(target.join("boot.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// The argument of docs/operations.md "Backups", on the files: a backup is restored, leases
/// are handed out, the same backup is restored again later; no epoch comes back.
#[test]
fn restoring_an_old_backup_twice_never_reuses_an_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let (state, backup) = journal_and_backup(dir.path());
    // After the backup, the live journal goes on: a1 gets epochs 3 to 12.
    {
        let (mut journal, _) = Journal::open(&state, &site()).unwrap();
        let mut epoch = Epoch::NONE.next().next();
        for _ in 0..10 {
            epoch = epoch.next();
            journal
                .persist(&[granted("a1", epoch)], &[], 3_000)
                .unwrap();
        }
    }
    let mut issued: Vec<u64> = (1..=12).collect();
    let mut now = NOW_US;
    for round in 0..2 {
        let restored = restore(&state, &backup, now, true).unwrap();
        let (mut journal, recovered) = Journal::open(&state, &site()).unwrap();
        let floor = recovered.epoch_floor;
        // What the site core does for a new lease: above the server's highest and the floor.
        let highest = recovered
            .epochs
            .iter()
            .filter(|(id, _)| *id == server("a1"))
            .map(|(_, epoch)| *epoch)
            .max()
            .unwrap();
        let mut epoch = highest.max(floor);
        for _ in 0..5 {
            epoch = epoch.next();
            assert!(
                !issued.contains(&epoch.value()),
                "round {round}: epoch {} handed out again",
                epoch.value()
            );
            issued.push(epoch.value());
            journal
                .persist(&[granted("a1", epoch)], &[], 3_000)
                .unwrap();
        }
        assert!(restored.set_aside.is_some());
        // A later restore: the clock has moved on by more than the five grants' µs.
        now += 1_000;
    }
}

/// Restores `backup` into a fresh directory and checks that it was refused and that the
/// directory holds nothing.
fn refused(dir: &Path, backup: &Path) -> BackupError {
    let target = dir.join(format!("target-{}", rand_suffix()));
    let error = restore(&target, backup, NOW_US, false).unwrap_err();
    let left: Vec<_> = std::fs::read_dir(&target)
        .map(|entries| entries.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "a refused restore left {left:?}");
    error
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn a_cut_short_altered_or_malformed_backup_is_refused_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let (_, backup) = journal_and_backup(dir.path());
    let text = std::fs::read_to_string(&backup).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let write = |name: &str, body: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path
    };

    // Cut short: the closing line is missing.
    let cut = write(
        "cut.jsonl",
        format!("{}\n", lines[..lines.len() - 1].join("\n")),
    );
    let error = refused(dir.path(), &cut);
    assert!(matches!(error, BackupError::Truncated { .. }), "{error}");
    assert!(error.to_string().contains("incomplete"), "{error}");

    // One epoch changed by hand: the checksum no longer matches.
    let altered = write(
        "altered.jsonl",
        text.replacen("\"value\":2}", "\"value\":1}", 1),
    );
    assert_ne!(std::fs::read_to_string(&altered).unwrap(), text);
    let error = refused(dir.path(), &altered);
    assert!(matches!(error, BackupError::Checksum { .. }), "{error}");

    // A line that is not a record: named by its number.
    let mut broken = lines.clone();
    broken.insert(
        2,
        "{\"table\":\"leases\",\"key\":\"a9\",\"value\":{\"v\":1}}",
    );
    let error = refused(dir.path(), &write("broken.jsonl", broken.join("\n") + "\n"));
    match &error {
        BackupError::Line { line, detail, .. } => {
            assert_eq!(*line, 3);
            assert!(detail.contains("leases row a9"), "{detail}");
        }
        other => panic!("expected a line error, got {other}"),
    }

    // Not a backup at all.
    let error = refused(dir.path(), &write("other.jsonl", "hello\n".into()));
    assert!(
        matches!(error, BackupError::Line { line: 1, .. }),
        "{error}"
    );
}

#[test]
fn a_journal_in_place_is_kept_unless_replaced_and_never_while_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let (state, backup) = journal_and_backup(dir.path());
    let error = restore(&state, &backup, NOW_US, false).unwrap_err();
    assert!(
        matches!(error, BackupError::Exists { audit: 3, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("--replace"), "{error}");

    let running = Journal::open(&state, &site()).unwrap();
    let error = restore(&state, &backup, NOW_US, true).unwrap_err();
    assert!(
        matches!(error, BackupError::Journal(JournalError::InUse { .. })),
        "{error}"
    );
    drop(running);

    let clock = restore(&state, &backup, 1_000, true).unwrap_err();
    assert!(matches!(clock, BackupError::ClockBehind { .. }), "{clock}");

    let restored = restore(&state, &backup, NOW_US, true).unwrap();
    let aside = restored.set_aside.unwrap();
    // The journal set aside is the one that was there, whole.
    std::fs::rename(&aside, dir.path().join("aside.redb")).unwrap();
    let check = dir.path().join("check");
    std::fs::create_dir_all(&check).unwrap();
    std::fs::rename(dir.path().join("aside.redb"), Journal::file_in(&check)).unwrap();
    let (journal, recovered) = Journal::open(&check, &site()).unwrap();
    assert_eq!(recovered.epoch_floor, Epoch::NONE);
    assert_eq!(journal.audit_after(0, 10).unwrap().len(), 3);
}

#[test]
fn audit_records_past_retention_are_removed_and_that_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(dir.path(), &site()).unwrap();
    journal
        .persist(
            &[granted("a1", Epoch::NONE.next())],
            &[entry("old"), entry("old"), entry("old")],
            1_000,
        )
        .unwrap();
    journal.persist(&[], &[entry("new")], 9_000).unwrap();
    assert_eq!(journal.prune_audit(500, 10, 9_500, "test").unwrap(), None);
    let pruned = journal
        .prune_audit(5_000, 2, 9_500, "older than a test")
        .unwrap();
    assert_eq!(
        pruned,
        Some(retention::Pruned {
            first_seq: 1,
            last_seq: 2,
            count: 2
        })
    );
    let pruned = journal
        .prune_audit(5_000, 10, 9_600, "older than a test")
        .unwrap();
    assert_eq!(pruned.map(|p| (p.first_seq, p.last_seq)), Some((3, 3)));
    let left = journal.audit_after(0, 10).unwrap();
    let kinds: Vec<(u64, AuditKind)> = left.iter().map(|r| (r.seq, r.entry.kind)).collect();
    assert_eq!(
        kinds,
        [
            (4, AuditKind::Assign),
            (5, AuditKind::AuditPruned),
            (6, AuditKind::AuditPruned)
        ]
    );
    assert!(left[1].entry.reason.contains("1 to 2: older than a test"));
    // Leases are state, not history: untouched.
    drop(journal);
    let (mut journal, recovered) = Journal::open(dir.path(), &site()).unwrap();
    assert_eq!(recovered.leases.len(), 1);
    journal.compact().unwrap();
}
