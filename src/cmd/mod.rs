pub mod batch;
pub mod fuzz;
pub mod hash;
pub mod module;
pub mod run;
pub mod verify;
