//! Answers the plugin's questions that need the file system (a cgroup's
//! path, a process's uid) without the dispatch thread touching it: a helper
//! thread reads /sys/fs/cgroup and /proc and keeps the answers; the loop only
//! reads them (never waiting for the lock) and, on a miss, leaves the
//! question in a bounded queue and answers "not known yet". A plugin asks
//! again later (`strategy` does not cache an unknown answer).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// A cgroup miss rescans the hierarchy at most this often.
const RESCAN: Duration = Duration::from_secs(1);
/// A uid this old is still answered, and read again (a process may change
/// its uid, and a pid may be reused).
const UID_FRESH: Duration = Duration::from_secs(5);
/// Uids kept before the table starts over.
const MAX_UIDS: usize = 1 << 16;
/// Questions waiting for the helper; more are dropped (asked again later).
const QUEUE: usize = 256;

#[derive(Default)]
struct Answers {
    cgroups: HashMap<u64, String>,
    uids: HashMap<i32, (u32, Instant)>,
}

enum Question {
    Cgroup(u64),
    Uid(i32),
}

/// The loop's side: cheap, never blocks.
pub struct Lookups {
    answers: Arc<Mutex<Answers>>,
    ask: SyncSender<Question>,
}

impl Lookups {
    /// Starts the helper thread (it ends when this is dropped).
    pub fn start() -> std::io::Result<Self> {
        Self::start_at(Path::new(CGROUP_ROOT))
    }

    /// Like [`Lookups::start`], with the cgroup hierarchy mounted at `root`.
    fn start_at(root: &Path) -> std::io::Result<Self> {
        let answers = Arc::new(Mutex::new(Answers::default()));
        let (ask, questions) = sync_channel(QUEUE);
        let shared = answers.clone();
        let root = root.to_path_buf();
        std::thread::Builder::new()
            .name("rthulhu-lookups".into())
            .spawn(move || helper(&root, &shared, &questions))?;
        Ok(Lookups { answers, ask })
    }

    /// Path of cgroup `id` relative to the cgroup2 root ("/" for the root),
    /// if the helper knows it already.
    pub fn cgroup_path(&self, id: u64) -> Option<String> {
        if let Ok(a) = self.answers.try_lock() {
            if let Some(p) = a.cgroups.get(&id) {
                return Some(p.clone());
            }
        }
        let _ = self.ask.try_send(Question::Cgroup(id));
        None
    }

    /// Real uid of process `tgid`, if the helper read it already.
    pub fn task_uid(&self, tgid: i32) -> Option<u32> {
        let known = self
            .answers
            .try_lock()
            .ok()
            .and_then(|a| a.uids.get(&tgid).copied());
        if known.is_none_or(|(_, at)| at.elapsed() >= UID_FRESH) {
            let _ = self.ask.try_send(Question::Uid(tgid));
        }
        known.map(|(uid, _)| uid)
    }
}

fn helper(root: &Path, answers: &Mutex<Answers>, questions: &Receiver<Question>) {
    let lock = || answers.lock().unwrap_or_else(|e| e.into_inner());
    let mut scanned: Option<Instant> = None;
    while let Ok(q) = questions.recv() {
        match q {
            Question::Cgroup(id) => {
                if lock().cgroups.contains_key(&id) {
                    continue;
                }
                if let Some(wait) = scanned.map(|t| RESCAN.saturating_sub(t.elapsed())) {
                    std::thread::sleep(wait);
                }
                scanned = Some(Instant::now());
                let found = cgroup_paths(root);
                lock().cgroups = found;
            }
            Question::Uid(tgid) => {
                if lock()
                    .uids
                    .get(&tgid)
                    .is_some_and(|(_, at)| at.elapsed() < UID_FRESH)
                {
                    continue;
                }
                let uid = read_uid(tgid);
                let mut a = lock();
                match uid {
                    Some(uid) => {
                        if a.uids.len() >= MAX_UIDS {
                            a.uids.clear();
                        }
                        a.uids.insert(tgid, (uid, Instant::now()));
                    }
                    None => {
                        a.uids.remove(&tgid);
                    }
                }
            }
        }
    }
}

/// Real uid of process `tgid`, from /proc.
pub(crate) fn read_uid(tgid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tgid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Every cgroup under `root`: its id (inode) → its path from `root`.
pub(crate) fn cgroup_paths(root: &Path) -> HashMap<u64, String> {
    let mut out = HashMap::new();
    scan(root, "/", &mut out);
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Asks until the helper has answered (or gives up after `tries`).
    fn eventually<T>(tries: u32, mut ask: impl FnMut() -> Option<T>) -> Option<T> {
        for _ in 0..tries {
            if let Some(v) = ask() {
                return Some(v);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    #[test]
    fn a_uid_is_unknown_at_first_then_answered_by_the_helper() {
        let l = Lookups::start().unwrap();
        let me = std::process::id() as i32;
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        assert_eq!(l.task_uid(me), None, "the loop never reads /proc itself");
        assert_eq!(eventually(500, || l.task_uid(me)), Some(uid));
    }

    #[test]
    fn a_missing_process_has_no_uid() {
        let l = Lookups::start().unwrap();
        // Above the kernel's pid_max limit (4194304): no such process.
        assert_eq!(eventually(20, || l.task_uid(i32::MAX)), None);
    }

    #[test]
    fn a_cgroup_is_found_by_its_inode_then_a_new_one_after_a_rescan() {
        let root = std::env::temp_dir().join(format!("rthulhu-cgroups-{}", std::process::id()));
        std::fs::create_dir_all(root.join("kubepods/pod1")).unwrap();
        let ino = |p: &str| std::fs::metadata(root.join(p)).unwrap().ino();
        let l = Lookups::start_at(&root).unwrap();
        let pod1 = ino("kubepods/pod1");
        assert_eq!(
            l.cgroup_path(pod1),
            None,
            "the loop never walks the tree itself"
        );
        assert_eq!(
            eventually(500, || l.cgroup_path(pod1)).as_deref(),
            Some("/kubepods/pod1")
        );
        assert_eq!(l.cgroup_path(ino("")).as_deref(), Some("/"));
        // A cgroup made later is found by the next rescan (at most one a second).
        std::fs::create_dir_all(root.join("kubepods/pod2")).unwrap();
        let pod2 = ino("kubepods/pod2");
        assert_eq!(
            eventually(500, || l.cgroup_path(pod2)).as_deref(),
            Some("/kubepods/pod2")
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
