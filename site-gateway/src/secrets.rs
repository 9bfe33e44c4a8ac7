//! Workload secrets (docs/operations.md, "Secrets"): read from the files the config names,
//! checked (mode, names), and held by the master's shell only. They leave the gateway in
//! two ways, both over mutual TLS: in a pointer to the node that runs the account, and, for
//! a loan, in the request to the lender. The core, the journal, the audit log, the
//! catalogue and the admin API never see them.
//!
//! A secrets file holds `NAME=value` lines (blank lines and `#` comments skipped; the value
//! is everything after the first `=`, kept as written). A secrets directory holds one file
//! per variable, named for it, its content the value (one final newline dropped), as
//! systemd credentials and Kubernetes secret volumes lay them out; names starting with `.`
//! are skipped. Either must be readable by its owner only.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use leasehold_federation::ids::{AccountId, SiteId};
use leasehold_federation::wire::common::Secrets;

use crate::config::SiteConfig;

#[derive(Debug, thiserror::Error)]
#[error("secrets of `{account}` in {path}: {detail}")]
pub struct SecretsError {
    pub account: AccountId,
    pub path: PathBuf,
    pub detail: String,
}

/// Every error of a config's secrets, one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct SecretsErrors(pub Vec<SecretsError>);

/// The secrets a gateway holds.
#[derive(Debug, Default)]
pub struct SecretStore {
    /// This site's accounts' and the accounts it may take over, by account.
    own: HashMap<AccountId, Secrets>,
    /// What borrowers sent with their loan requests, for the servers lent to them.
    lent: HashMap<(SiteId, AccountId), Secrets>,
}

impl SecretStore {
    /// Reads every secrets file `config` names.
    pub fn load(config: &SiteConfig) -> Result<SecretStore, SecretsErrors> {
        Ok(SecretStore {
            own: load_own(config)?,
            lent: HashMap::new(),
        })
    }

    /// After a config edit: the files as read again (`load_own`).
    pub fn replace_own(&mut self, own: HashMap<AccountId, Secrets>) {
        self.own = own;
    }

    /// The secrets of `account` as this site runs it (its own, or one it took over).
    pub fn own(&self, account: &AccountId) -> Secrets {
        self.own.get(account).cloned().unwrap_or_default()
    }

    /// A borrower's secrets for `account`, kept for the servers lent to it; an empty set
    /// leaves what an earlier request sent.
    pub fn lend(&mut self, borrower: &SiteId, account: &AccountId, secrets: Secrets) {
        if !secrets.is_empty() {
            self.lent
                .insert((borrower.clone(), account.clone()), secrets);
        }
    }

    /// The secrets a pointer for `account` carries: the borrower's for a lent server, this
    /// site's own otherwise. A borrower's never reach another borrower's servers, nor this
    /// site's own.
    pub fn for_pointer(&self, borrower: Option<&SiteId>, account: &AccountId) -> Secrets {
        match borrower {
            Some(borrower) => self
                .lent
                .get(&(borrower.clone(), account.clone()))
                .cloned()
                .unwrap_or_default(),
            None => self.own(account),
        }
    }
}

/// The secrets of this site's accounts and of `[failover_secrets]`, read and checked.
pub fn load_own(config: &SiteConfig) -> Result<HashMap<AccountId, Secrets>, SecretsErrors> {
    let mut own = HashMap::new();
    let mut errors = Vec::new();
    let wanted = config
        .accounts
        .iter()
        .filter_map(|account| {
            let path = account.workload.secrets.as_ref()?;
            let env: Vec<&str> = account.workload.env.keys().map(String::as_str).collect();
            Some((&account.name, path, env))
        })
        .chain(
            config
                .failover_secrets
                .iter()
                .map(|(account, path)| (account, path, Vec::new())),
        );
    for (account, path, env) in wanted {
        match read(path, &env) {
            Ok(values) => {
                own.insert(account.clone(), Secrets::new(values));
            }
            Err(detail) => errors.push(SecretsError {
                account: account.clone(),
                path: path.clone(),
                detail,
            }),
        }
    }
    if errors.is_empty() {
        Ok(own)
    } else {
        Err(SecretsErrors(errors))
    }
}

/// Reads a secrets file or directory; `env` are the workload's plain variables, which a
/// secret may not shadow.
fn read(path: &Path, env: &[&str]) -> Result<BTreeMap<String, String>, String> {
    let metadata = std::fs::metadata(path).map_err(|error| error.to_string())?;
    private(&metadata)?;
    let mut values = BTreeMap::new();
    if metadata.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|error| error.to_string())?;
        for entry in entries {
            let entry = entry.map_err(|error| error.to_string())?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let file = entry.path();
            let metadata = std::fs::metadata(&file).map_err(|error| format!("{name}: {error}"))?;
            if !metadata.is_file() {
                continue;
            }
            private(&metadata).map_err(|detail| format!("{name}: {detail}"))?;
            check_name(&name, env).map_err(|detail| format!("file {name}: {detail}"))?;
            let value = std::fs::read_to_string(&file)
                .map_err(|error| format!("{name}: {error} (a value must be UTF-8 text)"))?;
            let value = value.strip_suffix('\n').unwrap_or(&value).to_owned();
            values.insert(name, value);
        }
    } else {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("{error} (a secrets file is UTF-8 text)"))?;
        for (number, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let at = |detail: String| format!("line {}: {detail}", number + 1);
            let Some((name, value)) = trimmed.split_once('=') else {
                return Err(at("not NAME=value".to_owned()));
            };
            let name = name.trim_end();
            check_name(name, env).map_err(at)?;
            if values.insert(name.to_owned(), value.to_owned()).is_some() {
                return Err(at(format!("{name} is given twice")));
            }
        }
    }
    Ok(values)
}

/// Readable and writable by its owner only: anyone else on the machine could read it.
fn private(metadata: &std::fs::Metadata) -> Result<(), String> {
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        let fix = if metadata.is_dir() {
            "chmod 700 the directory and 600 its files"
        } else {
            "chmod 600"
        };
        return Err(format!(
            "has mode {mode:o}: others may read it; {fix}, owned by the user the gateway runs as"
        ));
    }
    Ok(())
}

/// An environment variable's name that is neither the agent's nor a plain `env` one.
fn check_name(name: &str, env: &[&str]) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|first| first == '_' || first.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric());
    if !valid {
        return Err(format!(
            "`{name}` is not an environment variable's name (letters, digits, _; not starting with a digit)"
        ));
    }
    if name.starts_with("LEASEHOLD_") {
        return Err(format!(
            "`{name}`: names starting with LEASEHOLD_ are the node agent's own"
        ));
    }
    if env.contains(&name) {
        return Err(format!(
            "`{name}` is also in the workload's env; give it in one place"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn write(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_file_of_lines_and_a_directory_of_files_give_the_same_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shop.env");
        write(
            &file,
            "# the shop's database\nDB_PASSWORD=a=b c \n\nAPI_KEY=k1\n",
            0o600,
        );
        let values = read(&file, &["GREETING"]).unwrap();
        assert_eq!(values["DB_PASSWORD"], "a=b c ");
        assert_eq!(values["API_KEY"], "k1");

        let secrets = dir.path().join("shop");
        std::fs::create_dir(&secrets).unwrap();
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700)).unwrap();
        write(&secrets.join("DB_PASSWORD"), "a=b c \n", 0o600);
        write(&secrets.join("API_KEY"), "k1", 0o400);
        write(&secrets.join(".hidden"), "skipped", 0o600);
        assert_eq!(read(&secrets, &[]).unwrap(), values);
    }

    #[test]
    fn files_others_may_read_and_bad_names_are_refused_by_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shop.env");
        write(&file, "DB_PASSWORD=x\n", 0o644);
        let error = read(&file, &[]).unwrap_err();
        assert!(
            error.contains("mode 644") && error.contains("chmod 600"),
            "{error}"
        );

        for (text, expected) in [
            (
                "1X=y\n",
                "line 1: `1X` is not an environment variable's name",
            ),
            ("A=1\nnothing here\n", "line 2: not NAME=value"),
            ("LEASEHOLD_EPOCH=9\n", "LEASEHOLD_ are the node agent's own"),
            ("GREETING=x\n", "also in the workload's env"),
            ("A=1\nA=2\n", "line 2: A is given twice"),
        ] {
            write(&file, text, 0o600);
            let error = read(&file, &["GREETING"]).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }

        let secrets = dir.path().join("shop");
        std::fs::create_dir(&secrets).unwrap();
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o755)).unwrap();
        let error = read(&secrets, &[]).unwrap_err();
        assert!(error.contains("chmod 700"), "{error}");
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700)).unwrap();
        write(&secrets.join("TOKEN"), "t", 0o640);
        let error = read(&secrets, &[]).unwrap_err();
        assert!(error.starts_with("TOKEN: has mode 640"), "{error}");
    }

    #[test]
    fn a_borrowers_secrets_reach_only_its_own_lent_servers() {
        let shop = AccountId::parse("shop").unwrap();
        let site_b = SiteId::parse("site-b").unwrap();
        let site_c = SiteId::parse("site-c").unwrap();
        let mut store = SecretStore::default();
        store.own.insert(
            shop.clone(),
            Secrets::new(BTreeMap::from([("K".into(), "ours".into())])),
        );
        store.lend(
            &site_b,
            &shop,
            Secrets::new(BTreeMap::from([("K".into(), "b's".into())])),
        );
        let value = |secrets: Secrets| secrets.reveal().get("K").cloned();
        assert_eq!(
            value(store.for_pointer(None, &shop)).as_deref(),
            Some("ours")
        );
        assert_eq!(
            value(store.for_pointer(Some(&site_b), &shop)).as_deref(),
            Some("b's")
        );
        assert_eq!(value(store.for_pointer(Some(&site_c), &shop)), None);
        // A later request without secrets keeps what the borrower sent before.
        store.lend(&site_b, &shop, Secrets::default());
        assert_eq!(
            value(store.for_pointer(Some(&site_b), &shop)).as_deref(),
            Some("b's")
        );
    }
}
