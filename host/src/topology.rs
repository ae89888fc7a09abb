//! Which CPUs are online and which share a last-level cache, read from
//! sysfs: the BPF side keeps a queue of decided tasks per last-level cache
//! (see bpf/main.bpf.c).

use std::collections::BTreeMap;
use std::path::Path;

use crate::cpus::parse_list;

/// Last-level caches with a queue of their own (`RTHULHU_MAX_LLCS` in
/// bpf/intf.h); caches past this share queues round-robin.
pub const MAX_LLCS: u32 = 64;

/// The online CPUs and their last-level caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Llcs {
    /// How many CPUs are online (at least 1).
    pub online: u32,
    /// Each CPU id's cache index (`0..count`); offline CPUs map to 0.
    pub of_cpu: Vec<u32>,
    /// How many caches (at least 1, at most [`MAX_LLCS`]).
    pub count: u32,
}

/// Reads the topology under `root` (`/sys/devices/system/cpu` on a real
/// machine); only an unreadable list of online CPUs is an error. A CPU
/// whose cache sysfs does not describe (some VMs, some architectures)
/// counts as sharing the first cache: with none described, one queue.
pub fn read(root: &Path) -> Result<Llcs, String> {
    let online = root.join("online");
    let text =
        std::fs::read_to_string(&online).map_err(|e| format!("{}: {e}", online.display()))?;
    let cpus = parse_list(&text).map_err(|e| format!("{}: {e}", online.display()))?;
    // Caches are told apart by the CPUs that share them, numbered in the
    // order of their first CPU.
    let mut index: BTreeMap<Vec<u32>, u32> = BTreeMap::new();
    let mut of_cpu = vec![0; cpus.iter().max().map_or(1, |&m| m as usize + 1)];
    for &cpu in &cpus {
        let Some(shared) = last_level_cache(&root.join(format!("cpu{cpu}/cache"))) else {
            continue;
        };
        let next = index.len() as u32;
        let llc = *index.entry(shared).or_insert(next);
        of_cpu[cpu as usize] = llc % MAX_LLCS;
    }
    let count = (index.len() as u32).clamp(1, MAX_LLCS);
    let online = u32::try_from(cpus.len()).unwrap_or(u32::MAX).max(1);
    Ok(Llcs {
        online,
        of_cpu,
        count,
    })
}

/// The CPUs sharing the highest-level data or unified cache in a CPU's
/// `cache` directory, if sysfs describes one.
fn last_level_cache(dir: &Path) -> Option<Vec<u32>> {
    let read = |p: &Path| std::fs::read_to_string(p).ok();
    let mut best: Option<(u32, Vec<u32>)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if !entry.file_name().to_string_lossy().starts_with("index") {
            continue;
        }
        if read(&path.join("type")).is_some_and(|t| t.trim() == "Instruction") {
            continue;
        }
        let Some(level) = read(&path.join("level")).and_then(|l| l.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let Some(shared) = read(&path.join("shared_cpu_list")).and_then(|l| parse_list(&l).ok())
        else {
            continue;
        };
        if best.as_ref().is_none_or(|(l, _)| level > *l) {
            best = Some((level, shared));
        }
    }
    best.map(|(_, shared)| shared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A sysfs-like tree: `caches[cpu]` lists (level, type, shared_cpu_list).
    fn tree(name: &str, online: &str, caches: &[&[(u32, &str, &str)]]) -> std::path::PathBuf {
        let root =
            std::env::temp_dir().join(format!("rthulhu-topology-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("online"), online).unwrap();
        for (cpu, idx) in caches.iter().enumerate() {
            for (i, (level, kind, shared)) in idx.iter().enumerate() {
                let d = root.join(format!("cpu{cpu}/cache/index{i}"));
                fs::create_dir_all(&d).unwrap();
                fs::write(d.join("level"), format!("{level}\n")).unwrap();
                fs::write(d.join("type"), format!("{kind}\n")).unwrap();
                fs::write(d.join("shared_cpu_list"), format!("{shared}\n")).unwrap();
            }
        }
        root
    }

    #[test]
    fn groups_cpus_by_their_last_level_cache() {
        let socket =
            |l3: &'static str, me: &'static str| -> Vec<(u32, &'static str, &'static str)> {
                vec![
                    (1, "Data", me),
                    (1, "Instruction", me),
                    (2, "Unified", me),
                    (3, "Unified", l3),
                ]
            };
        let cpus: Vec<_> = ["0", "1", "2", "3"]
            .iter()
            .enumerate()
            .map(|(i, me)| socket(if i < 2 { "0-1" } else { "2-3" }, me))
            .collect();
        let refs: Vec<&[_]> = cpus.iter().map(|c| c.as_slice()).collect();
        let root = tree("two", "0-3\n", &refs);
        let llcs = read(&root).unwrap();
        assert_eq!((llcs.online, llcs.count), (4, 2));
        assert_eq!(llcs.of_cpu, [0, 0, 1, 1]);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn no_cache_description_means_one_queue() {
        let root = tree("none", "0-2,5\n", &[]);
        let llcs = read(&root).unwrap();
        assert_eq!((llcs.online, llcs.count), (4, 1));
        assert_eq!(llcs.of_cpu, [0; 6]);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_missing_online_list_is_an_error() {
        let root = std::env::temp_dir().join("rthulhu-topology-does-not-exist");
        assert!(read(&root).unwrap_err().contains("online"));
    }

    #[test]
    fn this_machine_has_an_online_cpu_and_a_cache() {
        let llcs = read(Path::new("/sys/devices/system/cpu")).unwrap();
        assert!(llcs.online >= 1 && llcs.count >= 1);
    }
}
