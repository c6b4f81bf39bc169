//! A Modbus TCP device for the demo: a bank of holding and input registers
//! shared with the twin (which writes measurements into it and reads the
//! setpoints the controller wrote), served by tokio-modbus on loopback.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::future;
use tokio::net::TcpListener;
use tokio_modbus::server::tcp::{accept_tcp_connection, Server};
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response};

/// Registers of one device.
#[derive(Debug, Clone)]
pub struct Bank {
    /// Holding registers (read/write).
    pub holding: Vec<u16>,
    /// Input registers (read-only).
    pub input: Vec<u16>,
}

impl Bank {
    /// A bank of `n` holding and `n` input registers, all zero.
    pub fn new(n: usize) -> Self {
        Self {
            holding: vec![0; n],
            input: vec![0; n],
        }
    }

    /// Store an f32 in two input registers, big-endian word order (`ABCD`).
    pub fn set_input_f32(&mut self, addr: usize, v: f32) {
        let b = v.to_bits();
        self.input[addr] = (b >> 16) as u16;
        self.input[addr + 1] = b as u16;
    }

    /// Store a value ×10 as i16 in an input register (CAREL style).
    pub fn set_input_i16_x10(&mut self, addr: usize, v: f64) {
        self.input[addr] = ((v * 10.0).round().clamp(-32768.0, 32767.0) as i16) as u16;
    }

    /// A holding register read as i16 ÷ 10.
    pub fn holding_i16_x10(&self, addr: usize) -> f64 {
        f64::from(self.holding[addr] as i16) / 10.0
    }
}

/// The shared bank.
pub type SharedBank = Arc<Mutex<Bank>>;

#[derive(Clone)]
struct BankService {
    bank: SharedBank,
}

fn slice(regs: &[u16], addr: u16, count: u16) -> Result<Vec<u16>, ExceptionCode> {
    let (a, n) = (usize::from(addr), usize::from(count));
    if n == 0 || n > 125 {
        return Err(ExceptionCode::IllegalDataValue);
    }
    regs.get(a..a + n)
        .map(<[u16]>::to_vec)
        .ok_or(ExceptionCode::IllegalDataAddress)
}

impl Service for BankService {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let mut b = self.bank.lock().unwrap_or_else(|e| e.into_inner());
        let r = match req {
            Request::ReadHoldingRegisters(a, n) => {
                slice(&b.holding, a, n).map(Response::ReadHoldingRegisters)
            }
            Request::ReadInputRegisters(a, n) => {
                slice(&b.input, a, n).map(Response::ReadInputRegisters)
            }
            Request::WriteSingleRegister(a, v) => match b.holding.get_mut(usize::from(a)) {
                Some(r) => {
                    *r = v;
                    Ok(Response::WriteSingleRegister(a, v))
                }
                None => Err(ExceptionCode::IllegalDataAddress),
            },
            Request::WriteMultipleRegisters(a, vs) => {
                let start = usize::from(a);
                match b.holding.get_mut(start..start + vs.len()) {
                    Some(dst) => {
                        dst.copy_from_slice(&vs);
                        Ok(Response::WriteMultipleRegisters(a, vs.len() as u16))
                    }
                    None => Err(ExceptionCode::IllegalDataAddress),
                }
            }
            _ => Err(ExceptionCode::IllegalFunction),
        };
        future::ready(r)
    }
}

/// Serve `bank` on a free loopback port; returns the address.
pub async fn serve(bank: SharedBank) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let service = BankService { bank };
    tokio::spawn(async move {
        let server = Server::new(listener);
        let new_service = move |_addr| Ok(Some(service.clone()));
        let on_connected = move |stream, addr| {
            let new_service = new_service.clone();
            async move { accept_tcp_connection(stream, addr, new_service) }
        };
        let _ = server
            .serve(
                &on_connected,
                |e| tracing::debug!(error = %e, "Demo device connection ended with an error."),
            )
            .await;
    });
    Ok(addr)
}
