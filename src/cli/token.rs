//! `leasehold token add|remove|list --file FILE`: the admin token file of a site
//! (docs/operations.md, "Securing the admin address"). The file keeps only hashes; `add`
//! prints the new token once, on stdout alone, so that `> prometheus.token` keeps it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use leasehold_site_gateway::admin::tokens::{self, Entry, Role, Tokens};
use time::OffsetDateTime;

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Make a token, keep its hash in FILE (created with mode 0600), print the token once.
    Add {
        /// The site's token file ([admin] tokens).
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        /// Who holds it, as the access log will say: `prometheus`, `alice`, `ci@build-1`.
        #[arg(long)]
        name: String,
        /// metrics (only /metrics), read (the API, the page and /metrics), or write.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Valid for this long: 90d, 12h, 30m.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "expires")]
        expires_in: Option<time::Duration>,
        /// Valid until this time (RFC 3339, e.g. 2027-06-01T00:00:00Z).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        expires: Option<OffsetDateTime>,
    },
    /// Remove the token named NAME from FILE; gateways refuse it once they read the file.
    Remove {
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// List the tokens in FILE: names, roles, expiry (never the tokens: the file has none).
    List {
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
}

pub fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        TokenCommand::Add {
            file,
            name,
            role,
            expires_in,
            expires,
        } => {
            tokens::check_name(&name).map_err(|error| anyhow!("--name {error}"))?;
            let now = OffsetDateTime::now_utc();
            let expires = expires.or(expires_in.map(|duration| now + duration));
            if expires.is_some_and(|at| at <= now) {
                bail!("the token would have expired already; give a later time");
            }
            let mut tokens = read(&file)?;
            let token =
                tokens::generate().map_err(|_| anyhow!("the system's random source failed"))?;
            tokens
                .insert(Entry {
                    name: name.clone(),
                    role,
                    hash: tokens::hash(&token),
                    expires,
                })
                .map_err(|error| anyhow!("{}: {error}", file.display()))?;
            write(&file, &tokens)?;
            eprintln!(
                "added `{name}` (role {role}{}) to {}; the token, shown this once:",
                expires.map_or(String::new(), |at| format!(
                    ", expires {}",
                    tokens::rfc3339(at)
                )),
                file.display()
            );
            println!("{token}");
        }
        TokenCommand::Remove { file, name } => {
            let mut tokens = read(&file)?;
            if !tokens.remove(&name) {
                bail!(
                    "{} has no token named `{name}`; `leasehold token list --file {}` shows them",
                    file.display(),
                    file.display()
                );
            }
            write(&file, &tokens)?;
            eprintln!("removed `{name}` from {}", file.display());
        }
        TokenCommand::List { file } => {
            let tokens = Tokens::load(&file)?;
            let now = OffsetDateTime::now_utc();
            println!("{:<24} {:<8} EXPIRES", "NAME", "ROLE");
            for entry in tokens.entries() {
                let expires = match entry.expires {
                    None => "never".to_owned(),
                    Some(at) if at <= now => format!("{} (expired)", tokens::rfc3339(at)),
                    Some(at) => tokens::rfc3339(at),
                };
                println!("{:<24} {:<8} {expires}", entry.name, entry.role.as_str());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The file as it stands; a missing file is an empty one (for `add`).
fn read(path: &Path) -> anyhow::Result<Tokens> {
    if !path.exists() {
        return Ok(Tokens::default());
    }
    Ok(Tokens::load(path)?)
}

/// Writes the whole file aside with mode 0600 and renames it over the old one, so that a
/// gateway watching it reads the old file or the new one, never half of it.
fn write(path: &Path, tokens: &Tokens) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a file name", path.display()))?;
    let aside = dir.join(format!(".{}.new", name.to_string_lossy()));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&aside)
        .with_context(|| format!("writing {}", aside.display()))?;
    file.write_all(tokens.render().as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", aside.display()))?;
    std::fs::rename(&aside, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| format!("`{text}` is not a role: metrics, read or write"))
}

fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).map_err(|error| {
        format!("`{text}` is not an RFC 3339 time such as 2027-06-01T00:00:00Z ({error})")
    })
}

fn parse_duration(text: &str) -> Result<time::Duration, String> {
    let bad = || format!("`{text}` is not a duration such as 90d, 12h or 30m");
    let split = text.len().checked_sub(1).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().map_err(|_| bad())?;
    if n <= 0 {
        return Err(bad());
    }
    match unit {
        "d" => Ok(time::Duration::days(n)),
        "h" => Ok(time::Duration::hours(n)),
        "m" => Ok(time::Duration::minutes(n)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("90d"), Ok(time::Duration::days(90)));
        assert_eq!(parse_duration("12h"), Ok(time::Duration::hours(12)));
        assert_eq!(parse_duration("30m"), Ok(time::Duration::minutes(30)));
        for bad in ["", "d", "0d", "-1d", "5", "5s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
