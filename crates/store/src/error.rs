//! Why the store could not do what it was asked.
//!
//! Each text names the file or directory involved and what natter was
//! doing, because an operator reads it in a log or on a terminal with no
//! other context ("cannot create data dir /var/lib/natter: permission
//! denied" is actionable; "I/O error" is not).

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another natter has the data dir open (it holds `DIR/LOCK`).
    #[error("data dir {} is in use by another natter (lock {} held)", .dir.display(), .lock.display())]
    Locked { dir: PathBuf, lock: PathBuf },

    #[error("cannot create data dir {}: {source}", .dir.display())]
    CreateDir { dir: PathBuf, source: io::Error },

    /// The lock file could not be created, written or locked.
    #[error("cannot write in data dir {}: {source}", .dir.display())]
    WriteDir { dir: PathBuf, source: io::Error },

    /// SQLite refused, with what natter was doing and on which database.
    #[error("{doing} ({}): {source}", .path.display())]
    Sqlite {
        doing: &'static str,
        path: PathBuf,
        source: rusqlite::Error,
    },

    #[error("cannot bring {} to schema version {}: {source}", .path.display(), crate::schema::VERSION)]
    Migration {
        path: PathBuf,
        source: rusqlite_migration::Error,
    },

    /// The data dir was written by a newer natter; opening it here could
    /// lose what that version stores.
    #[error(
        "{} has schema version {found}, newer than this natter knows ({}): upgrade natter",
        .path.display(), crate::schema::VERSION
    )]
    TooNew { path: PathBuf, found: usize },

    #[error("no natter database in {}", .0.display())]
    NoDatabase(PathBuf),

    #[error("backup target {} already holds a database: choose an empty directory", .0.display())]
    BackupExists(PathBuf),

    #[error("backup to {}: {source}", .path.display())]
    BackupIo { path: PathBuf, source: io::Error },

    /// Zeros ahead of the WAL could not be written (a full disk): commits
    /// go on appending, as SQLite does by itself.
    #[error("cannot make room ahead of the log of {}: {source}", .path.display())]
    WalRoom { path: PathBuf, source: io::Error },

    #[error("cannot start the store's {name} thread: {source}")]
    Thread {
        name: &'static str,
        source: io::Error,
    },
}

/// Attaches what natter was doing, and where, to a SQLite error.
pub(crate) trait Doing<T> {
    fn doing(self, doing: &'static str, path: &std::path::Path) -> Result<T, StoreError>;
}

impl<T> Doing<T> for Result<T, rusqlite::Error> {
    fn doing(self, doing: &'static str, path: &std::path::Path) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sqlite {
            doing,
            path: path.to_path_buf(),
            source,
        })
    }
}
