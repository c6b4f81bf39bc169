//! Phoenix's facility I/O (issue #5): greenhouses over MQTT, heat pumps and meters over Modbus.

pub mod config;
pub mod registers;
