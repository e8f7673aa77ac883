//! Accounts and sessions in the store: what the server loads at start-up
//! and what `natter account` changes while the server is stopped.
//!
//! The running server changes accounts only through facts (SIGNUP,
//! PASSWORD, sessions), committed by the writer thread like every other
//! change; these methods are for start-up and for the operator's tool,
//! which holds the data-dir lock, so the two never write at once.

use natter_core::facts::{StoredAccount, TokenHash, UnixMs};
use rusqlite::{OptionalExtension, params};

use crate::error::Doing;
use crate::{Store, StoreError};

/// One account as `natter account list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSummary {
    pub display: String,
    pub created_ms: UnixMs,
    /// Live session tokens.
    pub sessions: u64,
}

impl Store {
    /// Every account with its password hash and session hashes.
    pub fn load_accounts(&self) -> Result<Vec<StoredAccount>, StoreError> {
        let conn = self.connection();
        let path = self.path();
        let mut accounts: Vec<StoredAccount> = conn
            .prepare("SELECT user_key, display, phc FROM accounts ORDER BY user_key")
            .and_then(|mut stmt| {
                stmt.query_map([], |r| {
                    Ok(StoredAccount {
                        key: r.get(0)?,
                        display: r.get(1)?,
                        phc: r.get(2)?,
                        sessions: Vec::new(),
                    })
                })?
                .collect()
            })
            .doing("reading accounts", path)?;
        let sessions: Vec<(String, Vec<u8>)> = conn
            .prepare("SELECT user_key, token_hash FROM sessions ORDER BY user_key")
            .and_then(|mut stmt| {
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .doing("reading sessions", path)?;
        for (key, hash) in sessions {
            let Ok(hash) = TokenHash::try_from(hash.as_slice()) else {
                continue; // not a hash this build wrote
            };
            if let Ok(i) = accounts.binary_search_by(|a| a.key.as_str().cmp(&key)) {
                accounts[i].sessions.push(hash);
            }
        }
        Ok(accounts)
    }

    /// Creates an account; false if the key is taken.
    pub fn add_account(
        &mut self,
        key: &str,
        display: &str,
        phc: &str,
        now: UnixMs,
    ) -> Result<bool, StoreError> {
        let added = self
            .connection()
            .execute(
                "INSERT INTO accounts (user_key, display, phc, created_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (user_key) DO NOTHING",
                params![key, display, phc, now],
            )
            .doing("adding an account", self.path())?;
        Ok(added > 0)
    }

    /// Sets an account's password hash and ends all its sessions; false if
    /// there is no such account.
    pub fn set_password(&mut self, key: &str, phc: &str) -> Result<bool, StoreError> {
        let path = self.path().to_path_buf();
        let tx = self
            .connection()
            .unchecked_transaction()
            .doing("changing a password", &path)?;
        let found =
            crate::store::set_password(&tx, key, phc, None).doing("changing a password", &path)?;
        tx.commit().doing("changing a password", &path)?;
        Ok(found)
    }

    /// Removes an account and its sessions (its memberships stay, as a
    /// guest's would after a restart); false if there is no such account.
    pub fn remove_account(&mut self, key: &str) -> Result<bool, StoreError> {
        let path = self.path().to_path_buf();
        let tx = self
            .connection()
            .unchecked_transaction()
            .doing("removing an account", &path)?;
        let removed = tx
            .execute("DELETE FROM accounts WHERE user_key = ?1", params![key])
            .doing("removing an account", &path)?;
        tx.execute("DELETE FROM sessions WHERE user_key = ?1", params![key])
            .doing("removing an account", &path)?;
        tx.commit().doing("removing an account", &path)?;
        Ok(removed > 0)
    }

    /// Every account, by key, with how many sessions it has.
    pub fn list_accounts(&self) -> Result<Vec<AccountSummary>, StoreError> {
        self.connection()
            .prepare(
                "SELECT a.display, a.created_ms,
                        (SELECT count(*) FROM sessions s WHERE s.user_key = a.user_key)
                 FROM accounts a ORDER BY a.user_key",
            )
            .and_then(|mut stmt| {
                stmt.query_map([], |r| {
                    Ok(AccountSummary {
                        display: r.get(0)?,
                        created_ms: r.get(1)?,
                        sessions: r.get(2)?,
                    })
                })?
                .collect()
            })
            .doing("listing accounts", self.path())
    }

    /// Whether `key` is an account.
    pub fn has_account(&self, key: &str) -> Result<bool, StoreError> {
        self.connection()
            .query_row(
                "SELECT 1 FROM accounts WHERE user_key = ?1",
                params![key],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
            .doing("looking up an account", self.path())
    }
}
