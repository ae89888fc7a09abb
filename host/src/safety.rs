//! As root, a plugin is code running as root inside the scheduler, and its
//! config decides what it does: refuse files (and their folders) that anyone
//! but root could have written.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::input::InputError;

/// [`check_trusted`], unless the operator allowed untrusted files.
pub fn check(path: &Path, allow_untrusted: bool) -> Result<(), InputError> {
    if allow_untrusted {
        return Ok(());
    }
    check_trusted(path)
}

/// Checks that `path` and its parent folder are owned by root and not
/// writable by group or others. Does nothing when not running as root.
pub fn check_trusted(path: &Path) -> Result<(), InputError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let abs = std::fs::canonicalize(path).map_err(|e| InputError::new(path, e))?;
    let parent = abs.parent().unwrap_or(Path::new("/"));
    for (p, what) in [(abs.as_path(), "file"), (parent, "folder")] {
        let m = std::fs::metadata(p).map_err(|e| InputError::new(path, e))?;
        if m.uid() != 0 || m.mode() & 0o022 != 0 {
            return Err(InputError::new(
                path,
                format!(
                    "refusing {what} {} (owner uid {}, mode {:o}): as root, plugins and configs must be owned by root and writable by no one else (--allow-untrusted-files overrides)",
                    p.display(),
                    m.uid(),
                    m.mode() & 0o7777
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn world_writable_files_are_refused_as_root() {
        // SAFETY: geteuid has no preconditions.
        // The check only applies to root: as another user this test could
        // check nothing, so it fails rather than pass without testing.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test needs root (tests/run and CI run as root)"
        );
        let dir = std::env::temp_dir().join(format!("rthulhu-safety-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(&f, "").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_trusted(&f).is_ok());
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = check_trusted(&f).unwrap_err().to_string();
        assert!(e.contains("refusing file") && e.contains("mode 666"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_trusted(&f).unwrap_err().to_string();
        assert!(e.contains("refusing folder"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
