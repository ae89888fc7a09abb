//! Cgroup ids (the inode numbers BPF reports) to paths under /sys/fs/cgroup.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

const ROOT: &str = "/sys/fs/cgroup";
/// A miss rescans the hierarchy at most this often.
const RESCAN: Duration = Duration::from_secs(1);

/// A cache of the cgroup2 hierarchy, rebuilt on a miss (rate-limited).
#[derive(Default)]
pub struct CgroupPaths {
    by_id: HashMap<u64, String>,
    scanned: Option<Instant>,
}

impl CgroupPaths {
    /// Path of cgroup `id` relative to the cgroup2 root ("/" for the root).
    pub fn path(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.by_id.get(&id) {
            return Some(p.clone());
        }
        if self.scanned.is_some_and(|t| t.elapsed() < RESCAN) {
            return None;
        }
        self.scanned = Some(Instant::now());
        self.by_id.clear();
        scan(Path::new(ROOT), "/", &mut self.by_id);
        self.by_id.get(&id).cloned()
    }
}

fn scan(dir: &Path, rel: &str, out: &mut HashMap<u64, String>) {
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    out.insert(meta.ino(), rel.to_string());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let child = if rel == "/" {
                format!("/{name}")
            } else {
                format!("{rel}/{name}")
            };
            scan(&e.path(), &child, out);
        }
    }
}
