//! Bans in the store: loaded at start-up; the running server adds and
//! removes them through facts ([`Fact::Banned`](crate::Fact::Banned),
//! [`Fact::Unbanned`](crate::Fact::Unbanned)).

use natter_core::bans::{Ban, BanTarget};
use natter_core::facts::UnixMs;
use rusqlite::params;

use crate::error::Doing;
use crate::{Store, StoreError};

impl Store {
    /// Every ban that still holds at `now`; lapsed ones are deleted, and a
    /// row this build cannot read is skipped (with a warning) rather than
    /// keeping the server from starting.
    pub fn load_bans(&mut self, now: UnixMs) -> Result<Vec<Ban>, StoreError> {
        let path = self.path().to_path_buf();
        self.connection()
            .execute(
                "DELETE FROM bans WHERE until_ms IS NOT NULL AND until_ms <= ?1",
                params![now],
            )
            .doing("dropping lapsed bans", &path)?;
        let rows: Vec<(String, Option<UnixMs>, String, UnixMs)> = self
            .connection()
            .prepare("SELECT target, until_ms, reason, created_ms FROM bans ORDER BY target")
            .and_then(|mut stmt| {
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect()
            })
            .doing("reading bans", &path)?;
        let mut bans = Vec::with_capacity(rows.len());
        for (stored, until, reason, created) in rows {
            let text = stored.strip_suffix("/64").unwrap_or(&stored);
            match BanTarget::parse(text) {
                Ok(target) => bans.push(Ban {
                    target,
                    until,
                    reason,
                    created,
                }),
                Err(error) => tracing::warn!(%error, "skipping a ban this build cannot read"),
            }
        }
        Ok(bans)
    }
}
