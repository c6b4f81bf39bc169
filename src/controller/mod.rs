//! The controller: the site's state, its HTTP API and web page, and its
//! metrics. (The control loop that feeds them is built on these pieces.)

pub mod api;
pub mod metrics;
pub mod state;
