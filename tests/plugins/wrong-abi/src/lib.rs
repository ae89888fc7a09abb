//! Test plugin: exports a root module under plugin-api's name and version but
//! with a different layout, as a plugin built against a changed ABI would.
//! The host's load-time layout check must refuse it.

use abi_stable::{
    export_root_module,
    library::RootModule,
    package_version_strings,
    prefix_type::PrefixTypeTrait,
    sabi_types::VersionStrings,
    std_types::{RStr, RString},
    StableAbi,
};

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    pub name: RStr<'static>,
    /// Was a string in plugin-api.
    pub version: u32,
    #[sabi(last_prefix_field)]
    pub new: extern "C" fn(RStr<'_>) -> RString,
}

impl RootModule for PluginModRef {
    abi_stable::declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "rthulhu_plugin";
    const NAME: &'static str = "rthulhu_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

extern "C" fn new(_: RStr<'_>) -> RString {
    RString::new()
}

#[export_root_module]
pub fn root() -> PluginModRef {
    PluginMod {
        name: RStr::from_str("wrong"),
        version: 2,
        new,
    }
    .leak_into_prefix()
}
