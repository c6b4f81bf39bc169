//! The read-out Modbus TCP server: Phoenix's figures for a building
//! management system, read-only.
//!
//! Holding registers (FC 3) and input registers (FC 4) serve the same map
//! ([`REGISTER_MAP`], documented in `docs/bridge.md`): figures as `f32`,
//! counters as `u32`, both big-endian (`ABCD`: high word first). Reads
//! outside the map answer `IllegalDataAddress`, more than 125 registers
//! `IllegalDataValue`, every write or other function `IllegalFunction`. The
//! service is built per connection over shared state
//! (`Arc<Mutex<…>>` inside [`FigureSource`]).

use std::future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_modbus::server::tcp::{accept_tcp_connection, Server};
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response};
use tracing::{debug, info};

use crate::registers::{Encoding, ValueType, WordOrder, MAX_REGISTERS_PER_READ};

/// Phoenix's figures as served to a BMS.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Figures {
    /// Sum of the heat offered to consumers now, kW.
    pub heat_offered_kw: f64,
    /// Heat delivered, kW (heat meter `power_kw`).
    pub heat_delivered_kw: f64,
    /// Sum of the consumers' current demand, kW.
    pub heat_demand_kw: f64,
    /// IT power of the servers reporting telemetry, kW.
    pub it_power_kw: f64,
    /// Loop supply temperature, °C (heat meter `supply_c`).
    pub supply_temp_c: f64,
    /// Loop return temperature, °C (heat meter `return_c`).
    pub return_temp_c: f64,
    /// Servers whose agent reports `online`.
    pub servers_on: f64,
    /// Counter: failed Modbus calls (timeouts, connection and transport
    /// errors).
    pub modbus_errors: u32,
    /// Counter: Modbus exception answers.
    pub modbus_exceptions: u32,
    /// Counter: malformed MQTT payloads.
    pub malformed_payloads: u32,
    /// Counter: writes refused by the checks.
    pub writes_refused: u32,
    /// Counter: consumers that went stale.
    pub stale_events: u32,
    /// Devices answering now.
    pub devices_online: u32,
    /// Consumers whose demand is stale now.
    pub consumers_stale: u32,
    /// Counter: write requests answered `applied`.
    pub writes_applied: u32,
    /// Counter: write requests answered `pending` (device down, or held by
    /// the rate limit).
    pub writes_pending: u32,
    /// Counter: write requests answered `expired` (superseded, or past
    /// `write_expiry_s`).
    pub writes_expired: u32,
    /// Counter: write requests refused by a device exception.
    pub writes_refused_by_device: u32,
    /// Counter: consumer supply temperatures ignored (consumer not
    /// configured, or its demand went stale).
    pub supply_temps_ignored: u32,
}

/// A register-map entry.
#[derive(Debug, Clone, Copy)]
pub struct RegisterDef {
    /// First register (0-based).
    pub address: u16,
    /// Name (the [`Figures`] field).
    pub name: &'static str,
    /// Type (`f32` or `u32`, ABCD).
    pub value_type: ValueType,
    /// Unit, for the docs.
    pub unit: &'static str,
    read: fn(&Figures) -> f64,
}

macro_rules! reg {
    ($addr:expr, $name:ident, $ty:ident, $unit:expr) => {
        RegisterDef {
            address: $addr,
            name: stringify!($name),
            value_type: ValueType::$ty,
            unit: $unit,
            read: |f| f64::from(f.$name),
        }
    };
}

/// The register map, contiguous from 0.
pub const REGISTER_MAP: &[RegisterDef] = &[
    reg!(0, heat_offered_kw, F32, "kW"),
    reg!(2, heat_delivered_kw, F32, "kW"),
    reg!(4, heat_demand_kw, F32, "kW"),
    reg!(6, it_power_kw, F32, "kW"),
    reg!(8, supply_temp_c, F32, "°C"),
    reg!(10, return_temp_c, F32, "°C"),
    reg!(12, servers_on, F32, "count"),
    reg!(14, modbus_errors, U32, "count"),
    reg!(16, modbus_exceptions, U32, "count"),
    reg!(18, malformed_payloads, U32, "count"),
    reg!(20, writes_refused, U32, "count"),
    reg!(22, stale_events, U32, "count"),
    reg!(24, devices_online, U32, "count"),
    reg!(26, consumers_stale, U32, "count"),
    reg!(28, writes_applied, U32, "count"),
    reg!(30, writes_pending, U32, "count"),
    reg!(32, writes_expired, U32, "count"),
    reg!(34, writes_refused_by_device, U32, "count"),
    reg!(36, supply_temps_ignored, U32, "count"),
];

/// Registers in the map.
pub fn map_len() -> u16 {
    REGISTER_MAP
        .iter()
        .map(|r| r.address + r.value_type.width())
        .max()
        .unwrap_or(0)
}

/// Encode the figures as the register image.
pub fn register_image(f: &Figures) -> Vec<u16> {
    let mut image = vec![0u16; usize::from(map_len())];
    for r in REGISTER_MAP {
        let enc = Encoding {
            value_type: r.value_type,
            word_order: WordOrder::ABCD,
            scale: 1.0,
        };
        let v = (r.read)(f);
        let words = enc
            .encode(if v.is_finite() { v } else { 0.0 })
            .unwrap_or_default();
        let at = usize::from(r.address);
        image[at..at + words.len()].copy_from_slice(&words);
    }
    image
}

/// Where the server gets the current figures.
pub type FigureSource = Arc<dyn Fn() -> Figures + Send + Sync>;

/// The per-connection service.
#[derive(Clone)]
pub struct ReadOutService {
    source: FigureSource,
}

impl std::fmt::Debug for ReadOutService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadOutService").finish_non_exhaustive()
    }
}

impl ReadOutService {
    /// A service reading figures from `source`.
    pub fn new(source: FigureSource) -> Self {
        Self { source }
    }

    /// Answer one request (the logic of [`Service::call`]).
    pub fn answer(&self, req: &Request<'_>) -> Result<Response, ExceptionCode> {
        let (addr, count) = match req {
            Request::ReadHoldingRegisters(a, c) | Request::ReadInputRegisters(a, c) => (*a, *c),
            _ => return Err(ExceptionCode::IllegalFunction),
        };
        if count == 0 || count > MAX_REGISTERS_PER_READ {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let end = u32::from(addr) + u32::from(count);
        if end > u32::from(map_len()) {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let image = register_image(&(self.source)());
        let words = image[usize::from(addr)..end as usize].to_vec();
        Ok(match req {
            Request::ReadHoldingRegisters(..) => Response::ReadHoldingRegisters(words),
            _ => Response::ReadInputRegisters(words),
        })
    }
}

impl Service for ReadOutService {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let r = self.answer(&req);
        if let Err(e) = &r {
            debug!(request = ?req, exception = ?e, "Read-out request refused.");
        }
        future::ready(r)
    }
}

/// Bind the read-out server (bind errors surface here, at start).
pub async fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(listen).await
}

/// Serve `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, source: FigureSource) -> std::io::Result<()> {
    info!(listen = %listener.local_addr()?, registers = map_len(), "Modbus read-out server listening.");
    let server = Server::new(listener);
    let service = ReadOutService::new(source);
    let new_service = move |_addr| Ok(Some(service.clone()));
    let on_connected = move |stream, addr| {
        let new_service = new_service.clone();
        async move { accept_tcp_connection(stream, addr, new_service) }
    };
    server
        .serve(
            &on_connected,
            |e| debug!(error = %e, "Read-out connection ended with an error."),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> ReadOutService {
        ReadOutService::new(Arc::new(|| Figures {
            heat_offered_kw: 1.0,
            modbus_errors: 7,
            ..Default::default()
        }))
    }

    #[test]
    fn the_map_is_contiguous_and_ordered() {
        let mut next = 0;
        for r in REGISTER_MAP {
            assert_eq!(r.address, next, "{}", r.name);
            next += r.value_type.width();
        }
        assert_eq!(map_len(), next);
    }

    #[test]
    fn figures_read_back_big_endian() {
        let r = service()
            .answer(&Request::ReadHoldingRegisters(0, 2))
            .unwrap();
        assert_eq!(r, Response::ReadHoldingRegisters(vec![0x3F80, 0x0000]));
        let r = service()
            .answer(&Request::ReadInputRegisters(14, 2))
            .unwrap();
        assert_eq!(r, Response::ReadInputRegisters(vec![0, 7]));
    }

    #[test]
    fn writes_and_reads_outside_the_map_are_refused() {
        let s = service();
        assert_eq!(
            s.answer(&Request::WriteSingleRegister(0, 1)),
            Err(ExceptionCode::IllegalFunction)
        );
        assert_eq!(
            s.answer(&Request::ReadCoils(0, 1)),
            Err(ExceptionCode::IllegalFunction)
        );
        assert_eq!(
            s.answer(&Request::ReadHoldingRegisters(map_len() - 1, 2)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            s.answer(&Request::ReadHoldingRegisters(0, 126)),
            Err(ExceptionCode::IllegalDataValue)
        );
    }
}
