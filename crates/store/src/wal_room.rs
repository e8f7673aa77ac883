//! [`WalRoom`]: zeroed space ahead of the WAL's end, made while the writer
//! is idle, so that commits overwrite the log instead of appending to it.
//!
//! Why: a commit that appends makes the file longer, and its fsync must
//! then also write the file's inode (its size) after the data: two writes
//! to the disk, one after the other, instead of one. Measured on the
//! reference machine's ext4: an fdatasync after a 12 KiB append took
//! 0.19–0.21 ms (p50), after a 12 KiB overwrite 0.14 ms, and the writer
//! spent CPU on the inode too. SQLite reuses its WAL from the start after
//! each checkpoint, so only the log's first cycle after a start appends;
//! but that cycle is ~40 MB ([`WAL_CHECKPOINT_PAGES`]), seconds of a busy
//! server's commits. (`fallocate` would not do: ext4 marks such space
//! unwritten, and the first write into it changes the extent tree, which
//! the fsync must write as well; only real zeros are plain overwrites.)
//!
//! How: after each commit the writer looks at the WAL's length; when it
//! grew (SQLite appended past the zeros), one [`CHUNK`] of zeros goes past
//! the new end with its own fdatasync, at the writer's next idle moment,
//! so no commit waits behind it unless it arrives during those ~1.2 ms.
//!
//! Why this is safe: the zeros are only ever written past the file's
//! current end, which is past every frame SQLite has written, on the
//! writer's thread, between its transactions. SQLite reads a WAL's frames
//! up to the first one whose salt and checksum do not match the header's,
//! which a zeroed frame never does; it already finds stale frames there
//! after every restart of the log. And [`ROOM_CAP`] stays under the
//! `journal_size_limit` SQLite cuts the file back to, so it never undoes
//! the work.
//!
//! [`WAL_CHECKPOINT_PAGES`]: crate::store::WAL_CHECKPOINT_PAGES

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::store::{WAL_CHECKPOINT_PAGES, WAL_SIZE_LIMIT};

/// Zeros added at a time: 1 MiB took 1.2 ms to write and sync (p50) on
/// the reference machine, 4 MiB 15 ms; a commit that comes in meanwhile
/// waits for it, so chunks stay small.
pub(crate) const CHUNK: u64 = 1 << 20;

/// The WAL is grown up to this length and no further: a full cycle of the
/// log (a checkpoint every [`WAL_CHECKPOINT_PAGES`] pages of 4 KiB, each
/// with a 24-byte frame header) and a margin for the commit that crosses
/// the line, rounded up to whole chunks.
pub(crate) const ROOM_CAP: u64 = {
    let cycle = WAL_CHECKPOINT_PAGES as u64 * (4096 + 24);
    (cycle / CHUNK + 2) * CHUNK
};

const _: () = assert!(
    ROOM_CAP <= WAL_SIZE_LIMIT as u64,
    "SQLite would cut the room back"
);

/// The WAL file beside a database, and how long it was when last seen.
pub(crate) struct WalRoom {
    path: PathBuf,
    /// Opened once SQLite has made the file.
    file: Option<File>,
    /// The length after our last look or growth: a longer file means
    /// SQLite wrote past the room.
    known_len: u64,
    /// Growth is due at the next idle moment.
    wanted: bool,
}

impl WalRoom {
    /// The room of the WAL that SQLite keeps beside `db` (`DB-wal`).
    pub(crate) fn new(db: &std::path::Path) -> WalRoom {
        let mut path = db.as_os_str().to_owned();
        path.push("-wal");
        WalRoom {
            path: path.into(),
            file: None,
            known_len: 0,
            wanted: false,
        }
    }

    /// After a commit: is the log longer than the room we made? Only a
    /// look at its length; the work waits for [`WalRoom::grow`].
    pub(crate) fn note_commit(&mut self) {
        let Some(len) = self.len() else {
            return;
        };
        if len > self.known_len {
            self.known_len = len;
            self.wanted = len < ROOM_CAP;
        }
    }

    /// Whether [`WalRoom::grow`] has work to do.
    pub(crate) fn wanted(&self) -> bool {
        self.wanted
    }

    /// Writes one chunk of zeros past the WAL's end and syncs them. On
    /// failure (a full disk) the room waits until SQLite appends again, so
    /// a full disk is not retried in a loop; SQLite's own writes report
    /// the problem to senders.
    pub(crate) fn grow(&mut self) -> io::Result<()> {
        self.wanted = false;
        let Some(file) = &self.file else {
            return Ok(());
        };
        let end = end_of(file)?;
        if end >= ROOM_CAP {
            self.known_len = end;
            return Ok(());
        }
        let zeros = vec![0u8; (ROOM_CAP - end).min(CHUNK) as usize];
        let made = file
            .write_all_at(&zeros, end)
            .and_then(|()| file.sync_data());
        // Whatever part was written counts as room already looked at, so a
        // full disk is tried again only after SQLite appends.
        self.known_len = end_of(file).unwrap_or(end);
        made
    }

    fn len(&mut self) -> Option<u64> {
        if self.file.is_none() {
            // SQLite makes the file at the first write; until then there
            // is nothing to grow.
            self.file = OpenOptions::new().write(true).open(&self.path).ok();
        }
        end_of(self.file.as_ref()?).ok()
    }
}

/// The file's length, by seeking to its end rather than by `fstat`: on
/// Linux (6.13 on) a file whose times were looked at gets a fine-grained
/// new mtime at its next write, so an `fstat` per commit would change the
/// inode at every commit and its fsync would write the inode every time,
/// the very cost the room is there to save. Unlooked at, mtime moves once
/// per clock tick (4 ms here), and only the commits of a new tick pay.
fn end_of(mut file: &File) -> io::Result<u64> {
    file.seek(SeekFrom::End(0))
}
