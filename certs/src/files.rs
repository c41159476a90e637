//! Writing files that may hold secrets: atomically and durably (write a temporary file, fsync,
//! rename, fsync the directory) and
//! with owner-only permissions, in owner-only directories.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and its parents) with mode 0700 if it does not exist yet.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes `contents` to `path` atomically with the given mode: readers see the old file or the
/// whole new one, never a half-written one.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    // A name no one can predict, opened only if it does not exist yet (never through a
    // planted symlink), so a shared directory cannot redirect the write.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let unique = {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut bytes = [0u8; 8];
        crate::random::fill(&mut bytes)?;
        format!(
            "{}.{n}.{:016x}",
            std::process::id(),
            u64::from_le_bytes(bytes)
        )
    };
    let tmp = dir.join(format!(".{}.tmp.{unique}", file_name.to_string_lossy()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    // The rename is durable only once the directory is on disk too.
    sync_dir(dir)
}

/// Flushes a directory's entries to disk (after a rename or a new file in it).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    fs::File::open(dir)?.sync_all()
}

/// Whether a file's permissions let anyone but its owner read or write it.
pub fn is_exposed(path: &Path) -> io::Result<bool> {
    let mode = fs::metadata(path)?.permissions().mode();
    Ok(mode & 0o077 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_sets_mode_and_replaces() {
        let dir = std::env::temp_dir().join(format!("cmdop-files-{}", std::process::id()));
        ensure_private_dir(&dir).unwrap();
        let path = dir.join("secret");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert!(!is_exposed(&path).unwrap());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(is_exposed(&path).unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_relative_path_in_the_current_directory_is_written_and_its_directory_synced() {
        // `Path::parent` of a bare name is "": the directory sync must still find ".".
        sync_dir(Path::new("")).unwrap();
        let dir = std::env::temp_dir().join(format!("cmdop-files-sync-{}", std::process::id()));
        ensure_private_dir(&dir).unwrap();
        sync_dir(&dir).unwrap();
        assert!(sync_dir(&dir.join("missing")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
