//! Loading a policy plugin (a cdylib exporting `plugin_api`'s root module).

use std::path::{Path, PathBuf};

use abi_stable::abi_stability::abi_checking::{
    check_layout_compatibility, AbiInstability, AbiInstabilityErrors,
};
use abi_stable::library::{lib_header_from_path, LibraryError};
use abi_stable::type_layout::{TLData, TLFieldOrFunction};
use abi_stable::StableAbi;
use plugin_api::{PluginModRef, SchedulerBox};

use crate::input::InputError;

/// A plugin library, loaded and checked, not yet constructed.
pub struct Plugin {
    /// Where it was loaded from.
    pub path: PathBuf,
    module: PluginModRef,
}

impl Plugin {
    /// Loads `path`, checking that it is an Rthulhu plugin whose ABI matches
    /// this host. The library stays mapped for the life of the process.
    /// No ownership checks: the host opens plugins with
    /// [`safety::open`](crate::safety::open) and [`Plugin::load_file`].
    pub fn load(path: &Path) -> Result<Self, InputError> {
        let file = crate::safety::open(path, true)?;
        Self::load_file(path, &file)
    }

    /// Loads the plugin from `file`, already open (through
    /// `/proc/self/fd/N`: the file checked is the file loaded, never one
    /// found on the library search path), naming `path` in errors.
    pub fn load_file(path: &Path, file: &std::fs::File) -> Result<Self, InputError> {
        use std::os::fd::AsRawFd;
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return Err(InputError::new(path, "plugin file not found"));
        }
        let by_fd = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        let header =
            lib_header_from_path(&by_fd).map_err(|e| InputError::new(path, describe(&e)))?;
        // Name the two versions when they differ: clearer than a layout diff.
        let theirs = header.version_strings().version;
        let ours = env!("CARGO_PKG_VERSION");
        if !compatible(theirs.as_str(), ours) {
            return Err(InputError::new(
                path,
                format!("plugin built against an incompatible plugin-api version {theirs}; this host has {ours}: rebuild the plugin against it"),
            ));
        }
        let older = header
            .layout()
            .and_then(|theirs| check_layout_compatibility(PluginModRef::LAYOUT, theirs).err())
            .is_some_and(|errs| built_before_appended_entries(&errs));
        let module = if older {
            // SAFETY: the layouts differ only in vtable entries appended after
            // the plugin was built (checked just above). abi_stable's accessor
            // for such an entry reads the vtable's own field count at run
            // time and answers None where it lacks one (plugin-api declares
            // every appended entry `missing_field(option)`), so no entry the
            // plugin lacks is ever called, and the plugin reads only the
            // prefix of the host's longer tables.
            unsafe { header.init_root_module_with_unchecked_layout::<PluginModRef>() }
        } else {
            header.init_root_module::<PluginModRef>()
        }
        .map_err(|e| InputError::new(path, describe(&e)))?;
        Ok(Plugin {
            path: path.to_path_buf(),
            module,
        })
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        self.module.name().as_str()
    }

    /// The plugin crate's version.
    pub fn version(&self) -> &str {
        self.module.version().as_str()
    }

    /// Builds the scheduler from its `[plugin]` table (TOML text).
    pub fn construct(&self, config: &str) -> Result<SchedulerBox, String> {
        (self.module.new())(config.into())
            .into_result()
            .map_err(|e| e.into_string())
    }
}

/// Whether a plugin whose layout differs from ours was built against an
/// older 0.1 layout: every difference is a prefix-type vtable with fewer
/// entries than ours, all of its prefix there. abi_stable's own check refuses
/// that (it lets only the loaded library be the newer side), yet the guide
/// promises that a plugin keeps loading in later 0.1 hosts.
fn built_before_appended_entries(errs: &AbiInstabilityErrors) -> bool {
    // The report also lists the types on the way to each difference, with
    // no error of their own.
    let mut found = errs.errors.iter().filter(|e| !e.errs.is_empty()).peekable();
    found.peek().is_some()
        && found.all(|e| {
            let prefix_len = match e.stack_trace.last().map(|ef| &ef.expected) {
                Some(TLFieldOrFunction::Field(f)) => match f.layout().data() {
                    TLData::PrefixType(p) => usize::from(p.first_suffix_field),
                    _ => return false,
                },
                _ => return false,
            };
            e.errs.iter().all(|x| {
                matches!(x, AbiInstability::FieldCountMismatch(n)
                    if n.found < n.expected && n.found >= prefix_len)
            })
        })
}

/// Semver compatibility as abi_stable applies it: same major, and for 0.x the
/// same minor.
fn compatible(theirs: &str, ours: &str) -> bool {
    let parts = |v: &str| -> Vec<u64> {
        v.split('.')
            .take(2)
            .map(|p| p.parse().unwrap_or(u64::MAX))
            .collect()
    };
    let (t, o) = (parts(theirs), parts(ours));
    match (t.first(), o.first()) {
        (Some(0), Some(0)) => t.get(1) == o.get(1),
        (a, b) => a == b,
    }
}

/// One line for each way a library can fail to be a usable plugin.
fn describe(e: &LibraryError) -> String {
    tracing::debug!("plugin load error in full: {e}");
    match e {
        LibraryError::OpenError { .. } => format!("cannot load library: {}", first_line(e)),
        LibraryError::GetSymbolError { .. } => {
            "not an Rthulhu plugin (it exports no plugin_api root module)".into()
        }
        LibraryError::ParseVersionError(_) | LibraryError::IncompatibleVersionNumber { .. } => {
            format!(
                "plugin built against an incompatible plugin-api version: {}",
                first_line(e)
            )
        }
        LibraryError::AbiInstability(_) => format!(
            "plugin ABI does not match this host (rebuild it against plugin-api {})",
            env!("CARGO_PKG_VERSION")
        ),
        LibraryError::InvalidAbiHeader(_) => {
            "plugin was built with an incompatible abi_stable version".into()
        }
        _ => format!("not a usable plugin: {}", first_line(e)),
    }
}

fn first_line(e: &LibraryError) -> String {
    e.to_string()
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_are_compatible_as_semver_says() {
        assert!(super::compatible("0.1.0", "0.1.7"));
        assert!(!super::compatible("0.2.0", "0.1.0"));
        assert!(super::compatible("1.2.0", "1.0.0"));
        assert!(!super::compatible("2.0.0", "1.0.0"));
    }
}
