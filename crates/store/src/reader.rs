//! [`Reader`]: a read-only connection for `HISTORY`, on its own thread.
//!
//! In WAL mode a reader sees the last committed state and neither waits
//! for the writer nor makes it wait, so history requests never delay a
//! commit (and so never delay a delivery).

use std::path::{Path, PathBuf};

use natter_core::facts::StoredMessage;
use natter_proto::ConvId;
use rusqlite::{Connection, OpenFlags, params};

use crate::error::{Doing, StoreError};
use crate::store::{BUSY_TIMEOUT, CACHE_KIB, message_columns, message_from_row};

/// A read-only connection to a data dir's database.
pub struct Reader {
    conn: Connection,
    path: PathBuf,
}

impl Reader {
    pub(crate) fn open(path: &Path) -> Result<Reader, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).doing("opening a reader", path)?;
        configure_reader(&conn).doing("configuring a reader", path)?;
        Ok(Reader {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Up to `limit` messages of `conv` with `seq < before_seq`
    /// (`before_seq == 0`: the newest), oldest first.
    pub fn history(
        &self,
        conv: ConvId,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let before = if before_seq == 0 {
            i64::MAX as u64
        } else {
            before_seq
        };
        // Newest first, then turned around: a page is the `limit` messages
        // just before `before`. Those filed in `message_keys` are found
        // through it; the newest few, not filed yet, by a scan of the end
        // of the table (at most a key batch; see schema version 5).
        let mut stmt = self
            .conn
            .prepare_cached(concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages WHERE id IN (SELECT id FROM message_keys
                     WHERE conv = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3)
                 UNION ALL SELECT ",
                message_columns!(),
                " FROM messages WHERE id > (SELECT id FROM message_keys_through)
                     AND conv = ?1 AND seq < ?2
                 ORDER BY seq DESC LIMIT ?3"
            ))
            .doing("reading history", &self.path)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut page = stmt
            .query_map(params![conv, before, limit], message_from_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .doing("reading history", &self.path)?;
        page.reverse();
        Ok(page)
    }
}

fn configure_reader(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    conn.set_prepared_statement_cache_capacity(8);
    Ok(())
}
