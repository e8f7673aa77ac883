//! Session tokens kept between runs, one file per server and name, in the
//! user's config directory, readable by the user only.
//!
//! A token opens the account like its password does (until LOGOUT or a
//! password change ends it), so it is kept like one: the directory is
//! made `0700`, each file is written `0600` under a temporary name and
//! renamed into place, so no other user can read it at any moment and a
//! crash never leaves half a token.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use natter_proto::Secret;

/// Where [`crate::Credentials`] keep session tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenStore {
    dir: PathBuf,
}

impl TokenStore {
    /// Tokens in `dir` (made when the first token is saved).
    pub fn new(dir: impl Into<PathBuf>) -> TokenStore {
        TokenStore { dir: dir.into() }
    }

    /// `$XDG_CONFIG_HOME/natter/sessions`, or `~/.config/natter/sessions`;
    /// `None` when neither variable is set.
    pub fn user_default() -> Option<TokenStore> {
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                let home = std::env::var_os("HOME").filter(|dir| !dir.is_empty())?;
                Some(PathBuf::from(home).join(".config"))
            })?;
        Some(TokenStore::new(config.join("natter").join("sessions")))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file for `name` on `server` (names compare case-insensitively,
    /// as the server compares them).
    pub fn path(&self, server: &str, name: &str) -> PathBuf {
        let file = format!("{}@{}", file_safe(server), file_safe(&name.to_lowercase()));
        self.dir.join(file)
    }

    /// The kept token, if there is one.
    pub fn load(&self, server: &str, name: &str) -> Option<Secret> {
        let text = fs::read_to_string(self.path(server, name)).ok()?;
        let token = text.trim();
        (!token.is_empty()).then(|| Secret::new(token))
    }

    /// Keeps `token`, readable by the user only.
    pub fn save(&self, server: &str, name: &str, token: &Secret) -> io::Result<()> {
        make_private_dir(&self.dir)?;
        let path = self.path(server, name);
        let temporary = path.with_extension("new");
        let _ = fs::remove_file(&temporary);
        let mut file = private_file(&temporary)?;
        file.write_all(token.expose().as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        fs::rename(&temporary, &path)
    }

    /// Forgets the token (it was refused, or the user logged out).
    pub fn forget(&self, server: &str, name: &str) {
        let _ = fs::remove_file(self.path(server, name));
    }
}

/// Letters, digits, `.`, `-`, `_` as they are; anything else (`:` of an
/// address, `/`) as `_`, so a name or address never leaves the directory.
fn file_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(unix)]
fn make_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn make_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

#[cfg(unix)]
fn private_file(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_kept_private_per_server_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path().join("natter").join("sessions"));
        assert_eq!(store.load("127.0.0.1:6666", "ann"), None);
        store
            .save("127.0.0.1:6666", "Ann", &Secret::new("nt1.abc"))
            .unwrap();
        assert_eq!(
            store.load("127.0.0.1:6666", "ANN"),
            Some(Secret::new("nt1.abc"))
        );
        assert_eq!(store.load("127.0.0.1:7777", "ann"), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&store.path("127.0.0.1:6666", "ann")), 0o600);
            assert_eq!(mode(store.dir()), 0o700);
        }
        store.forget("127.0.0.1:6666", "ann");
        assert_eq!(store.load("127.0.0.1:6666", "ann"), None);
    }

    #[test]
    fn names_and_addresses_stay_inside_the_directory() {
        let store = TokenStore::new("/tmp/x");
        let path = store.path("../../etc:1", "..");
        assert_eq!(path.parent(), Some(Path::new("/tmp/x")));
        assert_eq!(path.file_name().unwrap(), ".._.._etc_1@..");
    }
}
