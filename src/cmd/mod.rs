pub mod batch;
pub mod cache;
pub mod fetch;
pub mod fuzz;
pub mod hash;
pub mod module;
pub mod resume;
pub mod run;
pub mod unpack;
pub mod verify;

/// Untrusted text as the terminal is shown it (see [`detwasm_ops::text::shown`]).
pub use detwasm_ops::text::shown;

/// JSON as printed: DEL and C1 controls escaped too (see
/// [`detwasm_ops::text::json_safe`]).
pub fn json<T: serde::Serialize + ?Sized>(value: &T, pretty: bool) -> serde_json::Result<String> {
    let text = if pretty {
        serde_json::to_string_pretty(value)?
    } else {
        serde_json::to_string(value)?
    };
    Ok(detwasm_ops::text::json_safe(text))
}
