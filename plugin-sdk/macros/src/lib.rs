//! `#[settings]`, re-exported by `calllogger-plugin-sdk`: derives `Deserialize` through the
//! SDK's own serde, so a plugin crate needs no serde dependency of its own.
//!
//! It only prepends two attributes to the item, so it needs no parser crate.

use proc_macro::TokenStream;

/// Makes a struct or enum a plugin settings type: `#[derive(Deserialize)]` through the SDK's
/// serde. `#[serde(...)]` attributes work on it and its fields as usual.
#[proc_macro_attribute]
pub fn settings(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return r##"::core::compile_error!("#[settings] takes no arguments");"##
            .parse()
            .expect("valid tokens");
    }
    let derive: TokenStream = r#"
        #[derive(::calllogger_plugin_sdk::serde::Deserialize)]
        #[serde(crate = "::calllogger_plugin_sdk::serde")]
    "#
    .parse()
    .expect("valid tokens");
    derive.into_iter().chain(item).collect()
}
