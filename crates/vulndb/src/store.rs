//! The data directory: generations of data behind one `current` symlink, a
//! staging directory for the update in progress, and the state that `status`
//! reads.
//!
//! ```text
//! <data_dir>/current -> .gen-0000000007        what cve-mapper reads (it skips hidden entries)
//! <data_dir>/.gen-0000000007/nvd/CVE-2021/CVE-2021-41773.json
//!                           /kev/known_exploited_vulnerabilities.json
//!                           /osv/PyPI/GHSA-….json
//!                           /.secflow-vulndb.json   per-source state
//! <data_dir>/.staging/                          the next generation, being built
//! ```
//!
//! A new generation starts as hard links to the current one and changes only
//! what the update brought: files are written under a temporary name and
//! renamed (never rewritten in place, which would change the live generation
//! through the shared inode), and a file whose bytes did not change is left
//! alone, so its size and modification time, and with them cve-mapper's index
//! fingerprint, stay the same. Committing renames the staging directory to the
//! next generation and swaps the symlink with one `rename(2)`: readers see the
//! old data or the new, never a mix, and a failed update leaves `current` as it
//! was. The previous generation is kept (a running cve-mapper may still read
//! it); older ones are removed.
//!
//! The data directory is not under `supervisor/`'s care: plugins read it as
//! other uids, so directories are made 0755 and files 0644 whatever the umask.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The symlink cve-mapper reads through.
pub const CURRENT: &str = "current";
/// Per-source state inside a generation (hidden: cve-mapper skips it).
pub const STATE_FILE: &str = ".secflow-vulndb.json";
/// Progress of an interrupted update inside the staging directory.
pub const PROGRESS_FILE: &str = ".secflow-vulndb-progress.json";
const STAGING: &str = ".staging";
const IMPORT_STAGING: &str = ".staging-import";
const LOCK: &str = ".lock";
const GENERATION_PREFIX: &str = ".gen-";
/// The state file's format; a newer one is refused rather than misread.
const STATE_FORMAT: u32 = 1;
/// Largest state or progress file read.
const MAX_STATE_BYTES: u64 = 16 << 20;
/// Deepest directory level copied into a new generation.
const MAX_DEPTH: usize = 8;

/// What went wrong with the data directory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {action}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("another update or import holds {path}; wait for it to finish")]
    Busy { path: PathBuf },
    #[error("{path} is not a symlink to a generation written by secflow vulndb ({reason})")]
    Foreign { path: PathBuf, reason: String },
    #[error("{path}: unreadable state ({reason})")]
    BadState { path: PathBuf, reason: String },
}

fn io_error<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        path: path.to_owned(),
        action,
        source,
    }
}

/// What one source holds, as of its last successful update or import.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceState {
    /// Records stored.
    pub records: u64,
    /// The newest record modification (NVD `lastModified`, KEV `dateReleased`,
    /// OSV `modified`), as the source writes it.
    pub newest_modified: Option<String>,
    /// When the source was last fetched or imported successfully (RFC 3339).
    pub checked_at: String,
    /// Where it came from: a URL or the imported files.
    pub origin: String,
    /// NVD: the time through which changes were fetched (the next update asks
    /// for changes since then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_through: Option<String>,
    /// KEV and OSV: the validators of the last download, for conditional requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

/// The state of a generation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    pub nvd: Option<SourceState>,
    pub kev: Option<SourceState>,
    /// By ecosystem directory name.
    #[serde(default)]
    pub osv: BTreeMap<String, SourceState>,
}

/// How far an interrupted update got; kept in the staging directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateProgress {
    /// The generation the staging directory was built from.
    pub base: Option<String>,
    /// The state of what is staged so far.
    pub state: State,
    /// Sources (`nvd`, `kev`, `osv:<ecosystem>`) already staged.
    pub done: BTreeSet<String>,
    /// Where the NVD download stands.
    pub nvd: Option<NvdCursor>,
}

/// The NVD download in progress: its windows, the one being fetched and the
/// next `startIndex` in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvdCursor {
    /// A full download (no date range) rather than the changes in `windows`.
    #[serde(default)]
    pub full: bool,
    /// `(lastModStartDate, lastModEndDate)` per window of an incremental download.
    pub windows: Vec<(String, String)>,
    pub window: usize,
    pub start_index: u64,
    /// The first page's `timestamp` (a full download's `fetched_through`).
    pub first_timestamp: Option<String>,
    /// Newest `lastModified` among the records staged so far.
    pub newest_modified: Option<String>,
}

/// A committed generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub name: String,
    pub path: PathBuf,
}

/// The data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

/// The exclusive lock of updates and imports (released on drop).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl DataDir {
    pub fn new(root: &Path) -> DataDir {
        DataDir {
            root: root.to_owned(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the directory (0755) if it is missing.
    pub fn create(&self) -> Result<(), StoreError> {
        make_dir_all(&self.root)
    }

    /// Takes the update lock, or says who has it.
    pub fn lock(&self) -> Result<Lock, StoreError> {
        let path = self.root.join(LOCK);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error(&path, "cannot open the lock file"))?;
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            let source = io::Error::last_os_error();
            if source.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(StoreError::Busy { path });
            }
            return Err(io_error(&path, "cannot lock")(source));
        }
        Ok(Lock { _file: file })
    }

    /// The generation `current` points to; `None` when there is no data yet.
    pub fn current(&self) -> Result<Option<Generation>, StoreError> {
        let link = self.root.join(CURRENT);
        let target = match fs::read_link(&link) {
            Ok(target) => target,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if link.symlink_metadata().is_ok() {
                    return Err(StoreError::Foreign {
                        path: link,
                        reason: "not a symlink".into(),
                    });
                }
                return Ok(None);
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                return Err(StoreError::Foreign {
                    path: link,
                    reason: "not a symlink".into(),
                })
            }
            Err(e) => return Err(io_error(&link, "cannot read the symlink")(e)),
        };
        let name = target.to_string_lossy().into_owned();
        if generation_number(&name).is_none() {
            return Err(StoreError::Foreign {
                path: link,
                reason: format!("it points to {name:?}"),
            });
        }
        Ok(Some(Generation {
            path: self.root.join(&name),
            name,
        }))
    }

    /// The state of the current generation (empty without data).
    pub fn state(&self) -> Result<State, StoreError> {
        match self.current()? {
            Some(generation) => read_state(&generation.path.join(STATE_FILE)),
            None => Ok(State {
                format: STATE_FORMAT,
                ..State::default()
            }),
        }
    }

    /// Whether an interrupted update left a staging directory.
    pub fn interrupted(&self) -> bool {
        self.root.join(STAGING).join(PROGRESS_FILE).is_file()
    }

    /// The staging directory of an update: the interrupted one when it was
    /// built from the current generation (with its progress), else a fresh
    /// copy of the current generation.
    pub fn stage_update(&self) -> Result<(Staging, UpdateProgress, bool), StoreError> {
        let current = self.current()?;
        let dir = self.root.join(STAGING);
        let base = current.as_ref().map(|g| g.name.clone());
        if dir.is_dir() {
            let progress_path = dir.join(PROGRESS_FILE);
            if let Ok(progress) = read_json::<UpdateProgress>(&progress_path) {
                if progress.base == base {
                    return Ok((Staging { dir }, progress, true));
                }
            }
        }
        let staging = self.fresh_staging(&dir, current.as_ref())?;
        let state = match &current {
            Some(g) => read_state(&g.path.join(STATE_FILE))?,
            None => State {
                format: STATE_FORMAT,
                ..State::default()
            },
        };
        let progress = UpdateProgress {
            base,
            state,
            ..UpdateProgress::default()
        };
        staging.save_progress(&progress)?;
        Ok((staging, progress, false))
    }

    /// A fresh staging directory for an import (imports are not resumed).
    pub fn stage_import(&self) -> Result<(Staging, State), StoreError> {
        let current = self.current()?;
        let staging = self.fresh_staging(&self.root.join(IMPORT_STAGING), current.as_ref())?;
        let state = self.state()?;
        Ok((staging, state))
    }

    fn fresh_staging(
        &self,
        dir: &Path,
        current: Option<&Generation>,
    ) -> Result<Staging, StoreError> {
        remove_tree(dir)?;
        make_dir(dir)?;
        if let Some(generation) = current {
            link_tree(&generation.path, dir, 0)?;
        }
        Ok(Staging {
            dir: dir.to_owned(),
        })
    }

    /// Makes `staging` the current generation with `state`; keeps the
    /// previous generation and removes older ones.
    pub fn commit(&self, staging: Staging, state: &State) -> Result<Generation, StoreError> {
        let state = State {
            format: STATE_FORMAT,
            ..state.clone()
        };
        staging.write_json(Path::new(STATE_FILE), &state)?;
        let progress = staging.dir.join(PROGRESS_FILE);
        if progress.exists() {
            fs::remove_file(&progress).map_err(io_error(&progress, "cannot remove"))?;
        }
        sync_filesystem(&staging.dir)?;
        let previous = self.current()?;
        let number = self.newest_generation_number()?.map_or(1, |n| n + 1);
        let name = format!("{GENERATION_PREFIX}{number:010}");
        let path = self.root.join(&name);
        fs::rename(&staging.dir, &path).map_err(io_error(&path, "cannot rename staging to"))?;
        let link = self.root.join(".current.new");
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&name, &link).map_err(io_error(&link, "cannot create"))?;
        let current = self.root.join(CURRENT);
        fs::rename(&link, &current).map_err(io_error(&current, "cannot replace"))?;
        sync_dir(&self.root)?;
        for entry in self.generations()? {
            let keep = entry == name || previous.as_ref().is_some_and(|p| p.name == entry);
            if !keep {
                remove_tree(&self.root.join(&entry))?;
            }
        }
        Ok(Generation { name, path })
    }

    fn generations(&self) -> Result<Vec<String>, StoreError> {
        let entries = fs::read_dir(&self.root).map_err(io_error(&self.root, "cannot list"))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error(&self.root, "cannot list"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if generation_number(&name).is_some() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn newest_generation_number(&self) -> Result<Option<u64>, StoreError> {
        Ok(self
            .generations()?
            .iter()
            .filter_map(|n| generation_number(n))
            .max())
    }
}

fn generation_number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(GENERATION_PREFIX)?;
    if digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

/// What writing a file did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Replaced,
    Same,
}

/// The next generation being built.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
}

impl Staging {
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes `bytes` at `relative` unless the file already holds them.
    pub fn write_if_changed(&self, relative: &Path, bytes: &[u8]) -> Result<Change, StoreError> {
        let path = self.dir.join(relative);
        let change = match fs::metadata(&path) {
            Ok(meta) if meta.len() == bytes.len() as u64 => {
                let old = fs::read(&path).map_err(io_error(&path, "cannot read"))?;
                if old == bytes {
                    return Ok(Change::Same);
                }
                Change::Replaced
            }
            Ok(_) => Change::Replaced,
            Err(_) => Change::Added,
        };
        if let Some(parent) = path.parent() {
            make_dir_all(parent)?;
        }
        write_atomically(&path, bytes)?;
        Ok(change)
    }

    /// Removes the file at `relative`; whether there was one.
    pub fn remove(&self, relative: &Path) -> Result<bool, StoreError> {
        let path = self.dir.join(relative);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(&path, "cannot remove")(e)),
        }
    }

    /// Removes the files of directory `relative` not named in `keep`; how many.
    pub fn prune(&self, relative: &Path, keep: &BTreeSet<String>) -> Result<u64, StoreError> {
        let dir = self.dir.join(relative);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_error(&dir, "cannot list")(e)),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(io_error(&dir, "cannot list"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                let path = entry.path();
                if path.is_dir() {
                    remove_tree(&path)?;
                } else {
                    fs::remove_file(&path).map_err(io_error(&path, "cannot remove"))?;
                }
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The `*.json` files under `relative`.
    pub fn count_json(&self, relative: &Path) -> Result<u64, StoreError> {
        count_json_under(&self.dir.join(relative), 0)
    }

    /// Persists the progress of the update (written atomically).
    pub fn save_progress(&self, progress: &UpdateProgress) -> Result<(), StoreError> {
        self.write_json(Path::new(PROGRESS_FILE), progress)
    }

    fn write_json<T: Serialize>(&self, relative: &Path, value: &T) -> Result<(), StoreError> {
        let path = self.dir.join(relative);
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| StoreError::BadState {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomically(&path, &bytes)
    }

    /// Removes the staging directory (a failed import).
    pub fn discard(self) -> Result<(), StoreError> {
        remove_tree(&self.dir)
    }
}

fn read_state(path: &Path) -> Result<State, StoreError> {
    let state: State = match read_json(path) {
        Ok(state) => state,
        Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => State {
            format: STATE_FORMAT,
            ..State::default()
        },
        Err(e) => return Err(e),
    };
    if state.format > STATE_FORMAT {
        return Err(StoreError::BadState {
            path: path.to_owned(),
            reason: format!(
                "format {} is newer than this secflow's {STATE_FORMAT}",
                state.format
            ),
        });
    }
    Ok(state)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, StoreError> {
    let file = File::open(path).map_err(io_error(path, "cannot open"))?;
    let meta = file.metadata().map_err(io_error(path, "cannot stat"))?;
    if meta.len() > MAX_STATE_BYTES {
        return Err(StoreError::BadState {
            path: path.to_owned(),
            reason: format!("larger than {MAX_STATE_BYTES} bytes"),
        });
    }
    let bytes = fs::read(path).map_err(io_error(path, "cannot read"))?;
    serde_json::from_slice(&bytes).map_err(|e| StoreError::BadState {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Writes `bytes` to a temporary sibling of `path` (0644) and renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.tmp"));
    let mut file = File::create(&temporary).map_err(io_error(&temporary, "cannot create"))?;
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(io_error(&temporary, "cannot set permissions on"))?;
    file.write_all(bytes)
        .map_err(io_error(&temporary, "cannot write"))?;
    drop(file);
    fs::rename(&temporary, path).map_err(io_error(path, "cannot rename into place"))
}

fn make_dir(path: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .mode(0o755)
        .create(path)
        .map_err(io_error(path, "cannot create directory"))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .map_err(io_error(path, "cannot set permissions on"))
}

fn make_dir_all(path: &Path) -> Result<(), StoreError> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        make_dir_all(parent)?;
    }
    match make_dir(path) {
        Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
            Ok(())
        }
        other => other,
    }
}

fn remove_tree(path: &Path) -> Result<(), StoreError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(path, "cannot remove")(e)),
    }
}

/// Recreates the directories of `from` under `to` and hard-links its files.
fn link_tree(from: &Path, to: &Path, depth: usize) -> Result<(), StoreError> {
    let entries = fs::read_dir(from).map_err(io_error(from, "cannot list"))?;
    for entry in entries {
        let entry = entry.map_err(io_error(from, "cannot list"))?;
        let kind = entry.file_type().map_err(io_error(from, "cannot list"))?;
        let target = to.join(entry.file_name());
        if kind.is_dir() && depth < MAX_DEPTH {
            make_dir(&target)?;
            link_tree(&entry.path(), &target, depth + 1)?;
        } else if kind.is_file() {
            fs::hard_link(entry.path(), &target).map_err(io_error(&target, "cannot link"))?;
        }
    }
    Ok(())
}

/// The `*.json` files under `dir`, hidden entries skipped (as cve-mapper reads them).
pub(crate) fn count_json(dir: &Path) -> Result<u64, StoreError> {
    count_json_under(dir, 0)
}

fn count_json_under(dir: &Path, depth: usize) -> Result<u64, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_error(dir, "cannot list")(e)),
    };
    let mut count = 0;
    for entry in entries {
        let entry = entry.map_err(io_error(dir, "cannot list"))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let kind = entry.file_type().map_err(io_error(dir, "cannot list"))?;
        if kind.is_dir() && depth < MAX_DEPTH {
            count += count_json_under(&entry.path(), depth + 1)?;
        } else if kind.is_file() && name.ends_with(".json") {
            count += 1;
        }
    }
    Ok(count)
}

/// Flushes the filesystem holding `dir`: one call instead of an fsync per record.
fn sync_filesystem(dir: &Path) -> Result<(), StoreError> {
    let handle = File::open(dir).map_err(io_error(dir, "cannot open"))?;
    // SAFETY: syncfs takes a descriptor owned by `handle`, alive for the call.
    if unsafe { libc::syncfs(handle.as_raw_fd()) } != 0 {
        return Err(io_error(dir, "cannot sync")(io::Error::last_os_error()));
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir, "cannot sync"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_dir() -> (tempfile::TempDir, DataDir) {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(&dir.path().join("vulndb"));
        data.create().unwrap();
        (dir, data)
    }

    #[test]
    fn a_commit_swaps_current_and_keeps_only_the_previous_generation() {
        let (_dir, data) = data_dir();
        assert_eq!(data.current().unwrap(), None);
        for round in 0..3u8 {
            let (staging, progress, resumed) = data.stage_update().unwrap();
            assert!(!resumed);
            staging
                .write_if_changed(Path::new("kev/k.json"), &[b'0' + round])
                .unwrap();
            data.commit(staging, &progress.state).unwrap();
        }
        let current = data.current().unwrap().unwrap();
        assert_eq!(current.name, ".gen-0000000003");
        assert_eq!(
            fs::read(data.root().join("current/kev/k.json")).unwrap(),
            b"2"
        );
        assert_eq!(
            data.generations().unwrap(),
            [".gen-0000000002", ".gen-0000000003"]
        );
    }

    #[test]
    fn an_unchanged_file_keeps_its_inode_and_a_changed_one_leaves_the_live_copy_alone() {
        let (_dir, data) = data_dir();
        let (staging, progress, _) = data.stage_update().unwrap();
        staging
            .write_if_changed(Path::new("a.json"), b"same")
            .unwrap();
        staging
            .write_if_changed(Path::new("b.json"), b"old")
            .unwrap();
        data.commit(staging, &progress.state).unwrap();
        let live_b = data.root().join("current/b.json");
        let (staging, _, _) = data.stage_update().unwrap();
        assert_eq!(
            staging
                .write_if_changed(Path::new("a.json"), b"same")
                .unwrap(),
            Change::Same
        );
        assert_eq!(
            staging
                .write_if_changed(Path::new("b.json"), b"new!")
                .unwrap(),
            Change::Replaced
        );
        assert_eq!(
            fs::read(&live_b).unwrap(),
            b"old",
            "the live generation is untouched"
        );
        use std::os::unix::fs::MetadataExt;
        let live_a = fs::metadata(data.root().join("current/a.json")).unwrap();
        let staged_a = fs::metadata(staging.path().join("a.json")).unwrap();
        assert_eq!(live_a.ino(), staged_a.ino());
        assert_eq!(staged_a.mode() & 0o777, 0o644);
    }

    #[test]
    fn a_second_lock_is_refused_while_the_first_is_held() {
        let (_dir, data) = data_dir();
        let lock = data.lock().unwrap();
        assert!(matches!(data.lock(), Err(StoreError::Busy { .. })));
        drop(lock);
        data.lock().unwrap();
    }

    #[test]
    fn a_current_that_is_a_plain_directory_is_refused_by_name() {
        let (_dir, data) = data_dir();
        fs::create_dir(data.root().join(CURRENT)).unwrap();
        let error = data.current().unwrap_err().to_string();
        assert!(error.ends_with("current is not a symlink to a generation written by secflow vulndb (not a symlink)"), "{error}");
    }
}
