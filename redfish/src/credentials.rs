//! BMC credentials live in a file of their own, readable by its owner only: a site's config
//! is shared and committed, a BMC password must not be, and nothing here ever formats the
//! password (not `Debug`, not an error).

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::Deserialize;

use crate::Error;

#[derive(Clone)]
pub struct Credentials {
    username: String,
    password: String,
    /// Where they came from, for error messages ("check the file ...").
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    username: String,
    password: String,
}

impl Credentials {
    /// Reads `username = "..."` and `password = "..."` (TOML) from `path`, which must not be
    /// readable or writable by group or others.
    pub fn from_file(path: &Path) -> Result<Credentials, Error> {
        let fail = |detail: String| Error::Credentials {
            path: path.display().to_string(),
            detail,
        };
        let metadata =
            std::fs::metadata(path).map_err(|error| fail(format!("cannot read it: {error}")))?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(fail(format!(
                "has mode {mode:o}, so others may read the BMC password; make it readable by its owner only: chmod 600 {}",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|error| fail(format!("cannot read it: {error}")))?;
        // The TOML error's own Display quotes the offending line, which may hold the
        // password: say only what is wrong and on which line.
        let file: CredentialsFile = toml::from_str(&text).map_err(|error| {
            let line = error
                .span()
                .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
            match line {
                Some(line) => fail(format!(
                    "line {line}: {}; the file holds username = \"...\" and password = \"...\"",
                    error.message()
                )),
                None => fail(format!(
                    "{}; the file holds username = \"...\" and password = \"...\"",
                    error.message()
                )),
            }
        })?;
        if file.username.is_empty() {
            return Err(fail("username is empty".to_owned()));
        }
        Ok(Credentials {
            username: file.username,
            password: file.password,
            source: path.display().to_string(),
        })
    }

    /// Credentials held in memory (a test, or a caller with its own secret store).
    pub fn new(username: &str, password: &str) -> Credentials {
        Credentials {
            username: username.to_owned(),
            password: password.to_owned(),
            source: "(given in memory)".to_owned(),
        }
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub(crate) fn password(&self) -> &str {
        &self.password
    }

    pub(crate) fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str, mode: u32) -> std::path::PathBuf {
        let path = dir.join("bmc.toml");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_file_of_mode_0600_is_read_and_its_password_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "username = \"admin\"\npassword = \"s3cret-pw\"\n",
            0o600,
        );
        let credentials = Credentials::from_file(&path).unwrap();
        assert_eq!(credentials.username(), "admin");
        assert_eq!(credentials.password(), "s3cret-pw");
        assert!(!format!("{credentials:?}").contains("s3cret-pw"));
    }

    #[test]
    fn a_file_others_can_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "username = \"a\"\npassword = \"b\"\n", 0o644);
        let error = Credentials::from_file(&path).unwrap_err().to_string();
        assert!(error.contains("mode 644"), "{error}");
        assert!(error.contains("chmod 600"), "{error}");
        assert!(error.contains(&path.display().to_string()), "{error}");
    }

    #[test]
    fn a_malformed_file_names_its_line_and_not_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "username = \"admin\"\npassword = s3cret-pw\n",
            0o600,
        );
        let error = Credentials::from_file(&path).unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
        assert!(!error.contains("s3cret-pw"), "{error}");
    }

    #[test]
    fn a_missing_field_or_empty_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "username = \"admin\"\n", 0o600);
        let error = Credentials::from_file(&path).unwrap_err().to_string();
        assert!(error.contains("password"), "{error}");
        let path = write(dir.path(), "username = \"\"\npassword = \"x\"\n", 0o600);
        let error = Credentials::from_file(&path).unwrap_err().to_string();
        assert!(error.contains("username is empty"), "{error}");
    }
}
