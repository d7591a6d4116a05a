//! Lilypad-style module specs: template rendering and Bacalhau job specs.

pub mod gofmt;
pub mod template;
