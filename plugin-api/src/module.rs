//! The plugin's root module: what the host finds in the shared library.

use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::{
    library::RootModule,
    package_version_strings,
    prefix_type::PrefixTypeTrait,
    sabi_types::VersionStrings,
    std_types::{RResult, RStr, RString},
    StableAbi,
};

use crate::scheduler::{panic_message, CustomScheduler, SchedulerBox};

/// The root module every plugin exports (through [`export_plugin!`](crate::export_plugin)).
///
/// Its layout and the `plugin-api` version it was built against are checked
/// when the host loads it: a plugin built against an incompatible ABI is
/// refused with an error instead of being called.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    /// The policy's name ([`CustomScheduler::NAME`]).
    pub name: RStr<'static>,
    /// The plugin crate's own version.
    pub version: RStr<'static>,
    /// Builds the scheduler from its `[plugin]` table (TOML text).
    #[sabi(last_prefix_field)]
    pub new: extern "C" fn(config: RStr<'_>) -> RResult<SchedulerBox, RString>,
}

impl RootModule for PluginModRef {
    abi_stable::declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "rthulhu_plugin";
    const NAME: &'static str = "rthulhu_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// Builds the root module for `T`; used by [`export_plugin!`](crate::export_plugin).
#[doc(hidden)]
pub fn make_module<T: CustomScheduler>(version: &'static str) -> PluginModRef {
    PluginMod {
        name: RStr::from_str(T::NAME),
        version: RStr::from_str(version),
        new: construct::<T>,
    }
    .leak_into_prefix()
}

extern "C" fn construct<T: CustomScheduler>(config: RStr<'_>) -> RResult<SchedulerBox, RString> {
    match catch_unwind(AssertUnwindSafe(|| T::new(config.as_str()))) {
        Ok(Ok(s)) => RResult::ROk(SchedulerBox::new(s)),
        Ok(Err(e)) => RResult::RErr(e.into()),
        Err(p) => RResult::RErr(
            format!("plugin {} panicked in new: {}", T::NAME, panic_message(&*p)).into(),
        ),
    }
}

/// Exports a [`CustomScheduler`] as this cdylib's plugin.
///
/// The plugin crate needs only `plugin-api` as a dependency:
///
/// ```ignore
/// plugin_api::export_plugin!(MyScheduler);
/// ```
//
// This writes out what `abi_stable`'s `#[export_root_module]` would, but
// through `$crate` paths, so plugin crates need not depend on abi_stable.
// The symbol is the one abi_stable looks up (a test below checks it).
#[macro_export]
macro_rules! export_plugin {
    ($ty:ty) => {
        #[doc(hidden)]
        pub fn rthulhu_plugin_root() -> $crate::PluginModRef {
            $crate::make_module::<$ty>(env!("CARGO_PKG_VERSION"))
        }

        #[doc(hidden)]
        #[no_mangle]
        #[allow(non_upper_case_globals)]
        pub static _1as_0lib_1header_0root_bmodule_bloader:
            $crate::abi_stable::library::LibHeader = {
            extern "C" fn erased_root() -> $crate::abi_stable::library::RootModuleResult {
                $crate::abi_stable::library::__call_root_module_loader(rthulhu_plugin_root)
            }
            // SAFETY: `erased_root` returns the module type named here.
            unsafe {
                $crate::abi_stable::library::LibHeader::from_constructor::<$crate::PluginModRef>(
                    erased_root,
                    $crate::abi_stable::library::CheckTypeLayout::Yes,
                )
            }
        };
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn loader_symbol_matches_abi_stable() {
        assert_eq!(
            abi_stable::library::ROOT_MODULE_LOADER_NAME,
            "_1as_0lib_1header_0root_bmodule_bloader"
        );
    }
}
