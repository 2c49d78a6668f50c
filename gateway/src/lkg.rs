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
//!
//! API-key credentials travel apart from snapshots (see `turnpike_bus::credentials`),
//! so [`LastKnownCredentials`] keeps them in a second file of the same format beside
//! the snapshot file: every key's keyed hash with what the gateway knows about the
//! key (application, developer, expiry, approved subscriptions), never a key itself.
//! A node that starts without its control plane checks keys against them; the
//! control plane's credentials replace them as soon as it answers, whatever they
//! are (a revoked key must stop working, so there is no "keep the file's" here).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use turnpike_bus::credentials::InProcessCredentials;
use turnpike_domain::credential::Credential;
use turnpike_domain::snapshot::{Snapshot, SnapshotError};

/// Version of the file layout, in its header line.
const FORMAT: u32 = 1;

/// Pause before a failed save of the credentials is tried again (unless they change first).
const SAVE_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

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
    #[error("there is no last-known-good file yet")]
    Missing,
    #[error("the last-known-good file cannot be read: {0}")]
    Unreadable(#[source] io::Error),
    #[error("the last-known-good file is empty")]
    Empty,
    #[error("the last-known-good file is damaged: {0}")]
    Damaged(&'static str),
    #[error("the last-known-good file holds nothing valid: {0}")]
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
        let body = read_checked(self.path())?;
        let snapshot: Snapshot = serde_json::from_slice(&body).map_err(LoadError::Invalid)?;
        snapshot.verify().map_err(LoadError::Corrupt)?;
        Ok(snapshot)
    }

    /// Replaces the file with `snapshot`, atomically and durably. Blocking: call it
    /// off the async workers (see [`LastKnownGood::spawn_writer`]).
    pub fn save(&self, snapshot: &Snapshot) -> io::Result<()> {
        let body = serde_json::to_vec(snapshot).map_err(io::Error::other)?;
        write_atomically(self.path(), &body)?;
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

/// The last-known-good credentials of one gateway, in a file of the same format as
/// the snapshot's; cheap to clone (clones share it).
#[derive(Debug, Clone)]
pub struct LastKnownCredentials {
    inner: Arc<CredentialsInner>,
}

#[derive(Debug)]
struct CredentialsInner {
    path: PathBuf,
    /// The generation of the credential table known to be in the file: loaded from
    /// it or saved to it (`None` for neither yet).
    saved: watch::Sender<Option<u64>>,
}

/// One entry of the credentials file: a key's keyed hash and what it opens.
#[derive(Serialize)]
struct EntryOut<'a> {
    key_hash: &'a str,
    credential: &'a Credential,
}

#[derive(Serialize)]
struct CredentialsOut<'a> {
    credentials: Vec<EntryOut<'a>>,
}

#[derive(Deserialize)]
struct EntryIn {
    key_hash: String,
    credential: Credential,
}

#[derive(Deserialize)]
struct CredentialsIn {
    credentials: Vec<EntryIn>,
}

impl LastKnownCredentials {
    /// The file at `path`; nothing is read or written yet.
    pub fn new(path: impl Into<PathBuf>) -> LastKnownCredentials {
        let inner = CredentialsInner { path: path.into(), saved: watch::Sender::new(None) };
        LastKnownCredentials { inner: Arc::new(inner) }
    }

    /// Where the credentials of the snapshot file `snapshot_file` are kept: beside
    /// it, its name with `-credentials` added (`gateway-snapshot.json` →
    /// `gateway-snapshot-credentials.json`).
    pub fn beside(snapshot_file: &Path) -> PathBuf {
        let stem = snapshot_file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let name = match snapshot_file.extension() {
            Some(ext) => format!("{stem}-credentials.{}", ext.to_string_lossy()),
            None => format!("{stem}-credentials"),
        };
        snapshot_file.with_file_name(name)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Reads and checks the file: header, length, digest, then every entry.
    pub fn load(&self) -> Result<Vec<(String, Credential)>, LoadError> {
        let body = read_checked(self.path())?;
        let file: CredentialsIn = serde_json::from_slice(&body).map_err(LoadError::Invalid)?;
        Ok(file.credentials.into_iter().map(|e| (e.key_hash, e.credential)).collect())
    }

    /// Loads the file into `credentials`, replacing the table, and remembers that the
    /// file holds the table's generation, so the writer does not write it back.
    /// Returns the number of credentials.
    pub fn load_into(&self, credentials: &InProcessCredentials) -> Result<usize, LoadError> {
        let loaded = self.load()?;
        let count = loaded.len();
        credentials.replace_all(loaded);
        self.inner.saved.send_replace(Some(credentials.generation()));
        Ok(count)
    }

    /// Replaces the file with `credentials`, atomically and durably. Blocking: call
    /// it off the async workers (see [`LastKnownCredentials::spawn_writer`]).
    pub fn save(&self, credentials: &[(String, Credential)]) -> io::Result<()> {
        let file = CredentialsOut {
            credentials: credentials.iter().map(|(key_hash, credential)| EntryOut { key_hash, credential }).collect(),
        };
        let body = serde_json::to_vec(&file).map_err(io::Error::other)?;
        write_atomically(self.path(), &body)
    }

    /// The generation of the credential table last saved to the file or loaded from it.
    pub fn saved_generation(&self) -> Option<u64> {
        *self.inner.saved.borrow()
    }

    /// Waits until the table's generation `generation` (or a later one) is in the file.
    pub async fn wait_saved(&self, generation: u64) {
        let mut rx = self.inner.saved.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|saved| saved.is_some_and(|g| g >= generation)).await;
    }

    /// Starts a task that keeps the file equal to `credentials`: it saves the table
    /// now unless the file already holds it (see [`LastKnownCredentials::load_into`]),
    /// then after every change, changes made during a save coalesced into one. A
    /// failed save is logged and tried again after a pause or at the next change.
    /// The task ends when `credentials` is dropped. Needs a Tokio runtime.
    pub fn spawn_writer(&self, credentials: &Arc<InProcessCredentials>) {
        let mut rx = credentials.subscribe();
        let table = Arc::downgrade(credentials);
        if self.saved_generation() != Some(credentials.generation()) {
            rx.mark_changed();
        }
        let file = self.clone();
        tokio::spawn(async move {
            let mut failed = false;
            loop {
                let next = if failed {
                    tokio::select! {
                        changed = rx.changed() => changed,
                        () = tokio::time::sleep(SAVE_RETRY) => Ok(()),
                    }
                } else {
                    rx.changed().await
                };
                if next.is_err() {
                    break;
                }
                let Some(credentials) = table.upgrade() else { break };
                let (generation, entries) = credentials.entries();
                drop(credentials);
                if file.saved_generation() == Some(generation) {
                    continue;
                }
                let writer = file.clone();
                let saved = tokio::task::spawn_blocking(move || writer.save(&entries)).await;
                failed = !matches!(saved, Ok(Ok(())));
                match saved {
                    Ok(Ok(())) => {
                        file.inner.saved.send_replace(Some(generation));
                        tracing::debug!(generation, "saved the last-known-good credentials");
                    }
                    Ok(Err(e)) => tracing::error!(
                        path = %file.path().display(),
                        error = %e,
                        retry_in = ?SAVE_RETRY,
                        "could not save the last-known-good credentials; the previous file stays"
                    ),
                    Err(e) => tracing::error!(error = %e, "the last-known-good credentials writer failed"),
                }
            }
        });
    }
}

/// Reads a file in the format of this module and returns its body once the header's
/// length and digest agree with it.
fn read_checked(path: &Path) -> Result<Vec<u8>, LoadError> {
    let mut bytes = match fs::read(path) {
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
    let body = bytes.split_off(split + 1);
    if body.len() != header.length {
        return Err(LoadError::Damaged("its length differs from the header's (truncated?)"));
    }
    if hex(&Sha256::digest(&body)) != header.sha256 {
        return Err(LoadError::Damaged("its digest differs from the header's"));
    }
    Ok(body)
}

/// Replaces the file at `path` with `body` under its header, atomically and durably,
/// readable by its owner only.
fn write_atomically(path: &Path, body: &[u8]) -> io::Result<()> {
    let header = Header { format: FORMAT, length: body.len(), sha256: hex(&Sha256::digest(body)) };
    let mut contents = serde_json::to_vec(&header).map_err(io::Error::other)?;
    contents.push(b'\n');
    contents.extend_from_slice(body);

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
    written
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use chrono::Utc;
    use turnpike_bus::credentials::CredentialStore;
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

    fn credential(key_id: &str, plan: &str) -> Credential {
        Credential {
            key_id: key_id.into(),
            application_id: "app".into(),
            developer_id: "dev".into(),
            expires_at: chrono::DateTime::from_timestamp(1_900_000_000, 0),
            subscriptions: [("v1".to_owned(), plan.to_owned())].into(),
        }
    }

    fn credentials_in(dir: &tempfile::TempDir) -> LastKnownCredentials {
        let snapshot = dir.path().join("state").join("gateway-snapshot.json");
        LastKnownCredentials::new(LastKnownCredentials::beside(&snapshot))
    }

    #[test]
    fn the_credentials_file_sits_beside_the_snapshot_file() {
        let beside = |p: &str| LastKnownCredentials::beside(Path::new(p));
        assert_eq!(
            beside("/var/lib/tp/gateway-snapshot.json"),
            Path::new("/var/lib/tp/gateway-snapshot-credentials.json")
        );
        assert_eq!(beside("/srv/lkg"), Path::new("/srv/lkg-credentials"));
        assert_eq!(beside("lkg.json"), Path::new("lkg-credentials.json"));
    }

    #[test]
    fn saved_credentials_load_back_from_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = credentials_in(&dir);
        assert!(matches!(file.load(), Err(LoadError::Missing)));
        let saved = vec![("h1".to_owned(), credential("k1", "gold")), ("h2".to_owned(), credential("k2", "free"))];
        file.save(&saved).unwrap();
        assert_eq!(file.load().unwrap(), saved);
        let mode = fs::metadata(file.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the file lists every key's hash");
        // The same envelope as the snapshot file; the body holds hashes, no keys.
        let text = fs::read_to_string(file.path()).unwrap();
        let (header, body) = text.split_once('\n').unwrap();
        assert!(header.starts_with("{\"format\":1,"), "{header}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["credentials"][1]["key_hash"], "h2");
        assert_eq!(body["credentials"][1]["credential"]["key_id"], "k2");

        // Replaced as a whole, leaving no temporary file whatever a leftover one was.
        let tmp = file.path().with_file_name("gateway-snapshot-credentials.json.tmp");
        fs::write(&tmp, "left over").unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
        file.save(&[]).unwrap();
        assert_eq!(file.load().unwrap(), []);
        assert!(!tmp.exists());
        assert_eq!(fs::metadata(file.path()).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn damaged_credentials_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = credentials_in(&dir);
        file.save(&[("h1".to_owned(), credential("k1", "gold"))]).unwrap();
        let good = fs::read(file.path()).unwrap();
        let split = good.iter().position(|b| *b == b'\n').unwrap();
        let write = |bytes: &[u8]| fs::write(file.path(), bytes).unwrap();

        write(b"");
        assert!(matches!(file.load(), Err(LoadError::Empty)));
        write(&good[..good.len() - 5]);
        assert!(matches!(file.load(), Err(LoadError::Damaged(_))), "truncated");
        write(&good[..split]);
        assert!(matches!(file.load(), Err(LoadError::Damaged("no header line"))));
        // Another plan for the same key, one byte changed: the digest tells.
        let text = String::from_utf8(good.clone()).unwrap().replace("gold", "gole");
        write(text.as_bytes());
        assert!(matches!(file.load(), Err(LoadError::Damaged(_))), "altered");
        write(&good[split + 1..]);
        assert!(matches!(file.load(), Err(LoadError::Damaged(_))), "no header");
        // A snapshot file is no credentials file.
        let snapshots = LastKnownGood::new(file.path());
        snapshots.save(&snapshot(2)).unwrap();
        assert!(matches!(file.load(), Err(LoadError::Invalid(_))));
        // A file that is not loaded leaves the table as it was.
        let table = InProcessCredentials::new();
        table.replace_all([("h9".to_owned(), credential("k9", "free"))]);
        assert!(file.load_into(&table).is_err());
        assert_eq!(table.get("h9").unwrap().key_id, "k9");
        assert_eq!(file.saved_generation(), None);

        write(&good);
        assert_eq!(file.load().unwrap()[0].1.key_id, "k1", "the good file still loads");
    }

    #[tokio::test]
    async fn the_credentials_writer_follows_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let file = credentials_in(&dir);
        let within = |f| tokio::time::timeout(std::time::Duration::from_secs(10), f);

        // A table that did not come from the file is saved at once, even empty: the
        // file must never keep keys the control plane no longer has.
        file.save(&[("revoked".to_owned(), credential("k0", "gold"))]).unwrap();
        let table = Arc::new(InProcessCredentials::new());
        file.spawn_writer(&table);
        within(file.wait_saved(0)).await.unwrap();
        assert_eq!(file.load().unwrap(), []);

        for i in 1..=20 {
            table.replace_all((0..i).map(|j| (format!("h{j:02}"), credential(&format!("k{j}"), "gold"))));
        }
        within(file.wait_saved(20)).await.unwrap();
        let saved = file.load().unwrap();
        assert_eq!(saved.len(), 20);
        assert_eq!(saved, table.entries().1, "in hash order");

        // Loaded from the file, the table is not written back; its next change is.
        let restarted = credentials_in(&dir);
        let fresh = Arc::new(InProcessCredentials::new());
        assert_eq!(restarted.load_into(&fresh).unwrap(), 20);
        assert_eq!(fresh.get("h07").unwrap().key_id, "k7");
        fs::set_permissions(restarted.path(), fs::Permissions::from_mode(0o400)).unwrap();
        restarted.spawn_writer(&fresh);
        assert_eq!(restarted.saved_generation(), Some(fresh.generation()));
        fresh.replace_all([("h07".to_owned(), credential("k7", "free"))]);
        within(restarted.wait_saved(fresh.generation())).await.unwrap();
        assert_eq!(restarted.load().unwrap(), [("h07".to_owned(), credential("k7", "free"))]);
        assert_eq!(fs::metadata(restarted.path()).unwrap().permissions().mode() & 0o777, 0o600);
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
