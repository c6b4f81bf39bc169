//! Physical models (DESIGN.md §3, reference/physics.md):
//!
//! - [`server`]: SPECpower power curves with caps, and the RC component
//!   temperature with an exact exponential step, for a whole bank of servers
//!   stored as a struct of arrays.
//! - [`heat`]: heat pump and chiller COPs (Carnot fraction, kelvin), the
//!   split of recovered heat between consumer, heat pump and cooling.
//! - [`greenhouse`]: a lumped greenhouse: cover and infiltration losses,
//!   solar gain, thermal mass, day/night setpoints, backup boiler.

pub mod greenhouse;
pub mod heat;
pub mod server;
