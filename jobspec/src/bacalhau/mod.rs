//! Bacalhau job specs: [`v1beta1`] (the `job.Spec` a Lilypad template renders) and
//! [`v1`] (the job files `bacalhau job run` takes, in YAML or JSON).

pub mod v1;
pub mod v1beta1;
