//! Lilypad-style module specs: template rendering and Bacalhau job specs.
