//! A small tmpfs for tests that fill a disk up (mounting needs root or
//! CAP_SYS_ADMIN; CI runs as root). Shared by the store's, the server's
//! and the cluster's tests (`#[path]`).

use std::process::Command;

/// A tmpfs mounted for one test, unmounted when dropped.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(Tmpfs { dir })
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// [`Tmpfs::mount`], or `None` (the test is then skipped, saying so)
/// where mounting is not allowed; under CI (`CI` set, as `.ci/run` does)
/// it must work, since a skipped fault test proves nothing.
pub fn mount_or_skip(size: &str) -> Option<Tmpfs> {
    let mount = Tmpfs::mount(size);
    if mount.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to mount a tmpfs"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
    }
    mount
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes `path` until the file system is full.
pub fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let block = [0u8; 4096];
    loop {
        if let Err(e) = file.write_all(&block).and_then(|()| file.sync_all()) {
            assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
            return;
        }
    }
}
