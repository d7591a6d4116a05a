pub mod batch;
pub mod cache;
pub mod fuzz;
pub mod hash;
pub mod module;
pub mod resume;
pub mod run;
pub mod verify;
