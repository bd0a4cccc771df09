//! A plugin's persistent state directory (`sandbox.state: true`): the one
//! place a plugin may keep files from one run to the next — an index, a
//! cache. `<sandbox.state_root>/<plugin name>`, shown writable at the same
//! path in the plugin's view.
//!
//! Every run has its own uid, so before each run the directory and what the
//! previous runs left in it are handed to this run's uid. The walk never
//! follows a symlink a plugin planted (`lchown`, no descent), and a directory
//! holding more than `MAX_ENTRIES` entries is refused rather than walked for
//! ever: a plugin cannot make every later run of itself slow.

use std::io;
use std::os::unix::fs::{lchown, DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The most entries a state directory may hold (all levels).
pub const MAX_ENTRIES: usize = 10_000;

/// Why a state directory could not be handed to a run.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot prepare the state directory {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the state directory {path} holds more than {MAX_ENTRIES} entries; clear it (it is the plugin's cache)")]
    TooManyEntries { path: PathBuf },
}

/// Creates `dir` (mode 0700, its parent 0711) if missing and makes it and
/// everything in it owned by `owner`.
pub fn prepare_state_dir(dir: &Path, owner: Option<(u32, u32)>) -> Result<(), StateError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StateError::Io { path, source }
    };
    if let Some(root) = dir.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(root)
            .map_err(io_error(root))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(io_error(dir)(e)),
        _ => {}
    }
    let meta = std::fs::symlink_metadata(dir).map_err(io_error(dir))?;
    if !meta.is_dir() {
        return Err(io_error(dir)(io::Error::other("not a directory")));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_error(dir))?;
    let Some((uid, gid)) = owner else {
        return Ok(());
    };
    let mut pending = vec![dir.to_path_buf()];
    let mut seen = 0usize;
    lchown(dir, Some(uid), Some(gid)).map_err(io_error(dir))?;
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).map_err(io_error(&current))? {
            let entry = entry.map_err(io_error(&current))?;
            seen += 1;
            if seen > MAX_ENTRIES {
                return Err(StateError::TooManyEntries {
                    path: dir.to_path_buf(),
                });
            }
            let path = entry.path();
            lchown(&path, Some(uid), Some(gid)).map_err(io_error(&path))?;
            // file_type() does not follow symlinks: a planted link is chowned
            // itself and never entered.
            if entry.file_type().map_err(io_error(&path))?.is_dir() {
                pending.push(path);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_missing_state_dir_is_created_private() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("state/plugin");
        prepare_state_dir(&dir, None).unwrap();
        let meta = std::fs::metadata(&dir).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.mode() & 0o777, 0o700);
    }

    #[test]
    fn a_state_dir_with_too_many_entries_is_refused_naming_it() {
        if !is_root() {
            return;
        }
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("state/plugin");
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..=MAX_ENTRIES {
            std::fs::write(dir.join(i.to_string()), b"").unwrap();
        }
        let err = prepare_state_dir(&dir, Some((2_000_000_001, 2_000_000_001))).unwrap_err();
        assert!(matches!(err, StateError::TooManyEntries { .. }), "{err}");
        assert!(err.to_string().contains(&dir.display().to_string()));
    }

    #[test]
    fn every_entry_goes_to_the_run_uid_and_symlinks_are_not_followed() {
        if !is_root() {
            return;
        }
        let home = tempfile::tempdir().unwrap();
        let outside = home.path().join("outside");
        std::fs::write(&outside, b"not the plugin's").unwrap();
        let dir = home.path().join("state/plugin");
        std::fs::create_dir_all(dir.join("nested")).unwrap();
        std::fs::write(dir.join("nested/index"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("planted")).unwrap();
        let run = 2_000_000_007;
        prepare_state_dir(&dir, Some((run, run))).unwrap();
        for path in [dir.clone(), dir.join("nested"), dir.join("nested/index")] {
            assert_eq!(
                std::fs::metadata(&path).unwrap().uid(),
                run,
                "{}",
                path.display()
            );
        }
        assert_eq!(
            std::fs::symlink_metadata(dir.join("planted"))
                .unwrap()
                .uid(),
            run
        );
        assert_eq!(std::fs::metadata(&outside).unwrap().uid(), 0);
    }

    /// Handing files to another uid needs root; CI runs as root.
    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            assert!(std::env::var_os("CI").is_none(), "CI must run as root");
            eprintln!("skipped: handing files to another uid needs root");
        }
        root
    }
}
