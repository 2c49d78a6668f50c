//! The last-known-good snapshot: every snapshot the gateway applies from the bus is
//! saved to a file, and a gateway that starts reads it back before the bus delivers
//! anything. A gateway whose control plane (database, bus) is down at start thus
//! serves the configuration it last had, and reports it as degraded.
//!
//! The file is written atomically (a temporary file beside it, `fsync`, rename,
//! `fsync` of the directory), so a crash leaves the old file or the new one, never a
//! mix. It is private to its owner (mode 0600): snapshots carry TLS private keys.
//!
//! Format: one header line of JSON, `{"format":1,"length":N,"sha256":"…"}`, then
//! the snapshot's JSON, N bytes whose SHA-256 the header names. A file that is
//! missing, empty, truncated, altered or whose snapshot fails its own checksum is
//! not used; the reason is logged and the gateway waits for the bus as without one.
//!
//! The file only stands in for the control plane until the bus is heard from; see
//! [`ConfigStore::apply`](crate::ConfigStore::apply) for which snapshot wins: the
//! bus's first intact snapshot confirms or replaces the file's, even when older (a
//! control plane restored from a backup), except an empty one that is not newer
//! (an emptied bus or a fresh database never wipes a good configuration).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use turnpike_domain::snapshot::{Snapshot, SnapshotError};

/// Version of the file layout, in its header line.
const FORMAT: u32 = 1;

/// The last-known-good file of one gateway; cheap to clone (clones share it).
#[derive(Debug, Clone)]
pub struct LastKnownGood {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// The version of the snapshot last written (0 for none yet).
    saved: watch::Sender<u64>,
}

/// Why the file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("there is no last-known-good snapshot yet")]
    Missing,
    #[error("the last-known-good file cannot be read: {0}")]
    Unreadable(#[source] io::Error),
    #[error("the last-known-good file is empty")]
    Empty,
    #[error("the last-known-good file is damaged: {0}")]
    Damaged(&'static str),
    #[error("the last-known-good file holds no valid snapshot: {0}")]
    Invalid(#[source] serde_json::Error),
    #[error("the last-known-good snapshot is corrupt: {0}")]
    Corrupt(#[source] SnapshotError),
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: u32,
    length: usize,
    sha256: String,
}

impl LastKnownGood {
    /// The file at `path`; nothing is read or written yet.
    pub fn new(path: impl Into<PathBuf>) -> LastKnownGood {
        LastKnownGood { inner: Arc::new(Inner { path: path.into(), saved: watch::Sender::new(0) }) }
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Reads and checks the file: header, length, digest, then the snapshot's own
    /// checksum and version.
    pub fn load(&self) -> Result<Snapshot, LoadError> {
        let bytes = match fs::read(self.path()) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(LoadError::Missing),
            Err(e) => return Err(LoadError::Unreadable(e)),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(LoadError::Empty);
        }
        let split = bytes.iter().position(|b| *b == b'\n').ok_or(LoadError::Damaged("no header line"))?;
        let header: Header =
            serde_json::from_slice(&bytes[..split]).map_err(|_| LoadError::Damaged("the header line is not valid"))?;
        if header.format != FORMAT {
            return Err(LoadError::Damaged("unknown format"));
        }
        let body = &bytes[split + 1..];
        if body.len() != header.length {
            return Err(LoadError::Damaged("its length differs from the header's (truncated?)"));
        }
        if hex(&Sha256::digest(body)) != header.sha256 {
            return Err(LoadError::Damaged("its digest differs from the header's"));
        }
        let snapshot: Snapshot = serde_json::from_slice(body).map_err(LoadError::Invalid)?;
        snapshot.verify().map_err(LoadError::Corrupt)?;
        Ok(snapshot)
    }

    /// Replaces the file with `snapshot`, atomically and durably. Blocking: call it
    /// off the async workers (see [`LastKnownGood::spawn_writer`]).
    pub fn save(&self, snapshot: &Snapshot) -> io::Result<()> {
        let body = serde_json::to_vec(snapshot).map_err(io::Error::other)?;
        let header = Header { format: FORMAT, length: body.len(), sha256: hex(&Sha256::digest(&body)) };
        let mut contents = serde_json::to_vec(&header).map_err(io::Error::other)?;
        contents.push(b'\n');
        contents.extend_from_slice(&body);

        let path = self.path();
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        fs::create_dir_all(dir)?;
        let mut tmp_name = path.file_name().ok_or_else(|| io::Error::other("the path names no file"))?.to_owned();
        tmp_name.push(".tmp");
        let tmp = dir.join(tmp_name);
        // Removed first so the new file gets mode 0600 whatever a leftover one had.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let written = (|| {
            let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            file.write_all(&contents)?;
            file.sync_all()?;
            fs::rename(&tmp, path)?;
            // The rename is durable once the directory is.
            File::open(dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
        self.inner.saved.send_replace(snapshot.version);
        Ok(())
    }

    /// The version of the snapshot this process last saved (0 for none).
    pub fn saved_version(&self) -> u64 {
        *self.inner.saved.borrow()
    }

    /// Waits until a snapshot of at least `version` has been saved.
    pub async fn wait_saved(&self, version: u64) {
        let mut rx = self.inner.saved.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|saved| *saved >= version).await;
    }

    /// Starts a task that saves each snapshot offered to the returned writer, newest
    /// first: offers made while a save runs are coalesced into the latest one. The
    /// task ends when the writer is dropped. Needs a Tokio runtime.
    pub(crate) fn spawn_writer(&self) -> Writer {
        let (tx, mut rx) = watch::channel::<Option<Arc<Snapshot>>>(None);
        let lkg = self.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some(snapshot) = rx.borrow_and_update().clone() else { continue };
                let version = snapshot.version;
                let writer = lkg.clone();
                match tokio::task::spawn_blocking(move || writer.save(&snapshot)).await {
                    Ok(Ok(())) => tracing::debug!(version, "saved the last-known-good snapshot"),
                    Ok(Err(e)) => tracing::error!(
                        version,
                        path = %lkg.path().display(),
                        error = %e,
                        "could not save the last-known-good snapshot; the previous file stays"
                    ),
                    Err(e) => tracing::error!(version, error = %e, "the last-known-good writer failed"),
                }
            }
        });
        Writer { tx }
    }
}

/// Where applied snapshots are offered for saving.
#[derive(Debug)]
pub(crate) struct Writer {
    tx: watch::Sender<Option<Arc<Snapshot>>>,
}

impl Writer {
    pub(crate) fn offer(&self, snapshot: Arc<Snapshot>) {
        self.tx.send_replace(Some(snapshot));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use chrono::Utc;
    use turnpike_domain::snapshot::{SnapshotContent, SnapshotPlan};

    use super::*;

    fn snapshot(version: u64) -> Snapshot {
        let plan = SnapshotPlan { id: "p".into(), slug: "gold".into(), rate_limit: None, quota: None };
        Snapshot::compile(version, SnapshotContent { plans: vec![plan], ..SnapshotContent::default() }, Utc::now())
    }

    fn file_in(dir: &tempfile::TempDir) -> LastKnownGood {
        LastKnownGood::new(dir.path().join("state").join("gateway-snapshot.json"))
    }

    #[test]
    fn a_saved_snapshot_loads_back_from_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let lkg = file_in(&dir);
        assert!(matches!(lkg.load(), Err(LoadError::Missing)));
        assert_eq!(lkg.saved_version(), 0);
        let saved = snapshot(3);
        lkg.save(&saved).unwrap();
        assert_eq!(lkg.load().unwrap(), saved);
        assert_eq!(lkg.saved_version(), 3);
        let mode = fs::metadata(lkg.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "snapshots hold TLS private keys");

        // A later save replaces it, leaving no temporary file behind, whatever a
        // leftover one from a crash looked like.
        let tmp = lkg.path().with_file_name("gateway-snapshot.json.tmp");
        fs::write(&tmp, "left over").unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
        lkg.save(&snapshot(4)).unwrap();
        assert_eq!(lkg.load().unwrap().version, 4);
        assert!(!tmp.exists());
        let names: Vec<_> =
            fs::read_dir(lkg.path().parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["gateway-snapshot.json"]);
        assert_eq!(fs::metadata(lkg.path()).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn empty_truncated_altered_or_corrupt_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let lkg = file_in(&dir);
        lkg.save(&snapshot(5)).unwrap();
        let good = fs::read(lkg.path()).unwrap();
        let split = good.iter().position(|b| *b == b'\n').unwrap();
        let write = |bytes: &[u8]| fs::write(lkg.path(), bytes).unwrap();

        write(b"");
        assert!(matches!(lkg.load(), Err(LoadError::Empty)));
        write(b" \n\n");
        assert!(matches!(lkg.load(), Err(LoadError::Empty)));
        write(&good[..good.len() - 10]);
        assert!(matches!(lkg.load(), Err(LoadError::Damaged(_))), "truncated");
        write(&good[..split]);
        assert!(matches!(lkg.load(), Err(LoadError::Damaged("no header line"))));
        let mut flipped = good.clone();
        let at = good.len() - 20;
        flipped[at] ^= 0x01;
        write(&flipped);
        assert!(matches!(lkg.load(), Err(LoadError::Damaged(_))), "one bit changed");
        write(&good[split + 1..]);
        assert!(matches!(lkg.load(), Err(LoadError::Damaged(_))), "no header");

        // A well-formed file around a snapshot whose own checksum does not match.
        let mut corrupt = snapshot(6);
        corrupt.content.plans[0].slug = "platinum".into();
        lkg.save(&corrupt).unwrap();
        assert!(matches!(lkg.load(), Err(LoadError::Corrupt(_))));
        // And one whose body is not a snapshot at all.
        let body = b"{\"hello\":1}";
        let header = Header { format: FORMAT, length: body.len(), sha256: hex(&Sha256::digest(body)) };
        write(&[serde_json::to_vec(&header).unwrap(), b"\n".to_vec(), body.to_vec()].concat());
        assert!(matches!(lkg.load(), Err(LoadError::Invalid(_))));

        write(&good);
        assert_eq!(lkg.load().unwrap().version, 5, "the good file still loads");
    }

    #[tokio::test]
    async fn the_writer_saves_the_newest_offered_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let lkg = file_in(&dir);
        let writer = lkg.spawn_writer();
        for version in 1..=20 {
            writer.offer(Arc::new(snapshot(version)));
        }
        tokio::time::timeout(std::time::Duration::from_secs(10), lkg.wait_saved(20)).await.unwrap();
        assert_eq!(lkg.load().unwrap().version, 20);
    }

    #[test]
    fn a_file_that_cannot_be_written_leaves_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let lkg = file_in(&dir);
        lkg.save(&snapshot(1)).unwrap();
        // The temporary file's name is taken by a directory: the save fails.
        let tmp = lkg.path().with_file_name("gateway-snapshot.json.tmp");
        fs::create_dir(&tmp).unwrap();
        fs::write(tmp.join("x"), "").unwrap();
        assert!(lkg.save(&snapshot(2)).is_err());
        assert_eq!(lkg.load().unwrap().version, 1);
        assert_eq!(lkg.saved_version(), 1);
    }
}
