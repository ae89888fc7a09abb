//! As root, a plugin is code running as root inside the scheduler, and its
//! config decides what it does: refuse files (and their folders) that anyone
//! but root could have written.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::input::InputError;

/// Opens `path` once, for reading, and returns that open file: the file
/// checked is the file used (a config is parsed from it, a plugin loaded
/// through `/proc/self/fd/N`), so nothing can be swapped in between.
///
/// As root, unless `allow_untrusted`: the path is walked from `/` one
/// component at a time without following symbolic links, and every folder
/// and the file itself are checked on their open descriptors: owned by root,
/// writable by no one else. A sticky folder such as `/tmp` may be writable
/// by all, as others cannot rename or remove root's entries in it.
/// A relative path is taken from the current folder, never looked up on a
/// search path.
pub fn open(path: &Path, allow_untrusted: bool) -> Result<File, InputError> {
    let abs = absolute(path)?;
    // SAFETY: geteuid has no preconditions.
    if allow_untrusted || unsafe { libc::geteuid() } != 0 {
        return File::open(&abs).map_err(|e| io_error(path, e));
    }
    open_trusted(path, &abs)
}

/// `path` made absolute from the current folder, with `.` and `..` folded
/// (no symbolic link is followed when it matters, so this is the real path).
fn absolute(path: &Path) -> Result<PathBuf, InputError> {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| InputError::new(path, e))?
            .join(path)
    };
    let mut abs = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::Normal(name) => abs.push(name),
            Component::ParentDir => {
                abs.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(abs)
}

/// An I/O error about `path` as one line; a missing file says so plainly.
fn io_error(path: &Path, e: std::io::Error) -> InputError {
    if e.kind() == std::io::ErrorKind::NotFound {
        InputError::new(path, format!("file not found ({e})"))
    } else {
        InputError::new(path, e)
    }
}

fn open_trusted(shown: &Path, abs: &Path) -> Result<File, InputError> {
    let err = |e: std::io::Error| io_error(shown, e);
    let names: Vec<_> = abs.components().skip(1).collect();
    let mut dir = open_at(None, Path::new("/"), libc::O_PATH | libc::O_DIRECTORY).map_err(err)?;
    let mut at = PathBuf::from("/");
    check_fd(shown, &at, &dir, true)?;
    for (k, name) in names.iter().enumerate() {
        at.push(name);
        let last = k + 1 == names.len();
        let flags = if last { libc::O_RDONLY } else { libc::O_PATH };
        let fd = open_at(
            Some(&dir),
            Path::new(name.as_os_str()),
            flags | libc::O_NOFOLLOW,
        )
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                InputError::new(
                    shown,
                    format!(
                        "refusing {}: a symbolic link (as root, give the real path)",
                        at.display()
                    ),
                )
            } else {
                err(e)
            }
        })?;
        check_fd(shown, &at, &fd, !last)?;
        dir = fd;
    }
    Ok(File::from(dir))
}

fn open_at(dir: Option<&OwnedFd>, name: &Path, flags: i32) -> std::io::Result<OwnedFd> {
    let c = std::ffi::CString::new(name.as_os_str().as_bytes())?;
    let base = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: `c` is a valid C string, `base` an open descriptor or AT_FDCWD.
    let fd = unsafe { libc::openat(base, c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One component, on its descriptor: a real folder (or, last, a regular
/// file), root's, and writable by no one else (sticky folders excepted).
fn check_fd(shown: &Path, at: &Path, fd: &OwnedFd, folder: bool) -> Result<(), InputError> {
    // SAFETY: an all-zero stat is a valid out-buffer; fd is open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(InputError::new(shown, std::io::Error::last_os_error()));
    }
    let kind = st.st_mode & libc::S_IFMT;
    let what = if folder { "folder" } else { "file" };
    if kind == libc::S_IFLNK {
        return Err(InputError::new(
            shown,
            format!(
                "refusing {}: a symbolic link (as root, give the real path)",
                at.display()
            ),
        ));
    }
    let wanted = if folder { libc::S_IFDIR } else { libc::S_IFREG };
    if kind != wanted {
        return Err(InputError::new(
            shown,
            format!("{} is not a {what}", at.display()),
        ));
    }
    let sticky = folder && st.st_mode & libc::S_ISVTX != 0;
    if st.st_uid != 0 || (st.st_mode & 0o022 != 0 && !sticky) {
        return Err(InputError::new(
            shown,
            format!(
                "refusing {what} {} (owner uid {}, mode {:o}): as root, plugins and configs and every folder above them must be owned by root and writable by no one else (--allow-untrusted-files overrides)",
                at.display(),
                st.st_uid,
                st.st_mode & 0o7777
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn world_writable_files_and_folders_are_refused_as_root() {
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
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(open(&f, false).is_ok());
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = open(&f, false).unwrap_err().to_string();
        assert!(e.contains("refusing file") && e.contains("mode 666"), "{e}");
        assert!(open(&f, true).is_ok(), "--allow-untrusted-files");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = open(&f, false).unwrap_err().to_string();
        assert!(e.contains("refusing folder"), "{e}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = dir.join("link.toml");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        let e = open(&link, false).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn relative_paths_are_taken_from_the_current_folder() {
        let here = std::env::current_dir().unwrap();
        assert_eq!(absolute(Path::new("a/../b/./c")).unwrap(), here.join("b/c"));
        assert_eq!(absolute(Path::new("/x/y/../z")).unwrap(), Path::new("/x/z"));
    }
}
