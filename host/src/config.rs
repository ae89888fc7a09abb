//! The config file: `[scheduler]` settings for the host, `[plugin]` for the policy.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::input::{read_text, toml_error, InputError};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    scheduler: SchedulerSection,
    plugin: Option<toml::Table>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchedulerSection {
    plugin: Option<PathBuf>,
    slice_us: Option<u64>,
    slice_min_us: Option<u64>,
}

/// A parsed config file.
#[derive(Debug, Default, Clone)]
pub struct Config {
    /// Plugin library; a relative path is taken from the config file's folder.
    pub plugin: Option<PathBuf>,
    /// Host default slice (µs).
    pub slice_us: Option<u64>,
    /// Host minimum slice (µs).
    pub slice_min_us: Option<u64>,
    /// The `[plugin]` table, as TOML text for the plugin.
    pub plugin_table: String,
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, InputError> {
        let text = read_text(path)?;
        Self::parse(path, &text)
    }

    /// Reads the config from `file`, already open (see
    /// [`safety::open`](crate::safety::open)), naming `path` in errors.
    pub fn read(path: &Path, mut file: std::fs::File) -> Result<Self, InputError> {
        use std::io::Read;
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|e| InputError::new(path, e))?;
        Self::parse(path, &text)
    }

    /// Parses `text`, naming `path` in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, InputError> {
        let file: File = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
        let s = file.scheduler;
        if s.slice_us == Some(0) || s.slice_min_us == Some(0) {
            return Err(InputError::new(
                path,
                "[scheduler] slices must be at least 1 µs",
            ));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(Config {
            plugin: s.plugin.map(|p| base.join(p)),
            slice_us: s.slice_us,
            slice_min_us: s.slice_min_us,
            plugin_table: match file.plugin {
                Some(t) => toml::to_string(&t).map_err(|e| InputError::new(path, e))?,
                None => String::new(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_path_is_relative_to_the_file_and_table_is_passed_on() {
        let c = Config::parse(
            Path::new("/etc/rthulhu/c.toml"),
            "[scheduler]\nplugin = \"libx.so\"\nslice_us = 300\n[plugin]\nmode = \"fifo\"\n",
        )
        .unwrap();
        assert_eq!(c.plugin.unwrap(), Path::new("/etc/rthulhu/libx.so"));
        assert_eq!(c.slice_us, Some(300));
        assert_eq!(c.plugin_table.trim(), "mode = \"fifo\"");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_place() {
        let e = Config::parse(Path::new("c.toml"), "[scheduler]\nslice = 3\n").unwrap_err();
        assert!(e.to_string().contains("line 2, column 1"), "{e}");
        let e = Config::parse(Path::new("c.toml"), "[schedule]\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `schedule`"), "{e}");
    }
}
