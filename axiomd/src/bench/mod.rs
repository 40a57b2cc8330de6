//! What `axiomd bench-*` measures for `cargo xtask bench`: kept out of the stages, which only
//! expose what the benchmarks drive.
pub mod followup;
pub mod sandbox;
pub mod store;
