pub mod hash;
pub mod module;
pub mod run;
