//! `natter backup`: a consistent copy of a data dir while its server runs.
//!
//! SQLite's online backup API copies every page of the database inside one
//! read transaction (one `step(-1)`), so the copy is the database as it was
//! at one commit, however much the server writes meanwhile (in WAL mode the
//! server's writer never waits for this reader). The backup does not take
//! `DIR/LOCK`: that lock says who *writes*.
//!
//! The copy is written as `OUT/natter.db.partial`, synced, checked and only
//! then renamed to `OUT/natter.db`, so an interrupted backup never leaves
//! a file that looks complete.

use std::fs::{self, File};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use tracing::info;

use crate::error::{Doing, StoreError};
use crate::store::{BUSY_TIMEOUT, DB_FILE};

/// Copies the database of data dir `dir` into directory `out` (created if
/// missing; must not already hold a `natter.db`). The copy opens with
/// [`crate::Store::open`]: restoring is replacing a stopped server's data
/// dir with it.
pub fn backup(dir: &Path, out: &Path) -> Result<(), StoreError> {
    let source = dir.join(DB_FILE);
    if !source.is_file() {
        return Err(StoreError::NoDatabase(dir.to_path_buf()));
    }
    let target = out.join(DB_FILE);
    let io_err = |source| StoreError::BackupIo {
        path: out.to_path_buf(),
        source,
    };
    fs::create_dir_all(out).map_err(io_err)?;
    if target.exists() {
        return Err(StoreError::BackupExists(out.to_path_buf()));
    }
    let partial = out.join(format!("{DB_FILE}.partial"));
    // A leftover of an interrupted backup is not worth keeping.
    if partial.exists() {
        fs::remove_file(&partial).map_err(io_err)?;
    }

    copy_pages(&source, &partial)?;
    check(&partial)?;
    File::open(&partial)
        .and_then(|f| f.sync_all())
        .map_err(io_err)?;
    fs::rename(&partial, &target).map_err(io_err)?;
    File::open(out).and_then(|d| d.sync_all()).map_err(io_err)?;
    info!(from = %source.display(), to = %target.display(), "backup written");
    Ok(())
}

fn copy_pages(source: &Path, partial: &Path) -> Result<(), StoreError> {
    // Read-write (never created), though nothing is written: a read-only
    // connection to a stopped server's dir would leave `-wal` and `-shm`
    // files behind, which only the last *writable* connection removes.
    // (SQLite falls back to read-only by itself on a read-only disk.)
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let from = Connection::open_with_flags(source, flags).doing("opening the database", source)?;
    from.busy_timeout(BUSY_TIMEOUT)
        .doing("opening the database", source)?;
    let mut to = Connection::open(partial).doing("creating the backup", partial)?;
    let backup = Backup::new(&from, &mut to).doing("starting the backup", partial)?;
    // -1: all pages in one step, i.e. in one read transaction of the
    // source. Smaller steps would let the server's commits restart the copy.
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match backup.step(-1).doing("copying the database", partial)? {
            StepResult::Done => return Ok(()),
            // Busy: a lock held for a moment (a checkpoint); try again.
            _ if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => {
                return Err(StoreError::Sqlite {
                    doing: "copying the database",
                    path: source.to_path_buf(),
                    source: rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                        Some("the database stayed locked".into()),
                    ),
                });
            }
        }
    }
}

/// The copy is a sound database (pages, indexes and free lists agree).
fn check(partial: &Path) -> Result<(), StoreError> {
    let conn = Connection::open(partial).doing("checking the backup", partial)?;
    let verdict: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .doing("checking the backup", partial)?;
    if verdict == "ok" {
        return Ok(());
    }
    Err(StoreError::Sqlite {
        doing: "checking the backup",
        path: partial.to_path_buf(),
        source: rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(verdict),
        ),
    })
}
