//! The Modbus TCP client link: one connection to one device, one request at
//! a time (the link is `&mut`), a timeout on every call, reconnection with
//! backoff.
//!
//! tokio-modbus has no timeout and no reconnection of its own. After a
//! timeout a late reply would confuse the context (mismatched transaction
//! ids), so the context is dropped and the next call reconnects. A device
//! exception (`IllegalDataAddress`, …) is a value: the connection is fine.

use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::{timeout, Instant};
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::{ExceptionCode, Slave};

use crate::registers::{ReadBlock, Table};

/// Why a call reached no answer from the device.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinkError {
    /// Waiting before the next connection attempt.
    #[error("not connected; next attempt in {0:?}")]
    Backoff(Duration),
    /// Name resolution or TCP connect failed.
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// `host:port`.
        address: String,
        /// Why.
        reason: String,
    },
    /// No answer within the timeout (the connection is dropped).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed or the answer was not Modbus (dropped).
    #[error("transport: {0}")]
    Transport(String),
}

/// Doubling delay between connection attempts, from `initial` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff starting at `initial`, capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay to wait now; the following one doubles.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Back to the initial delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Values read from one block.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Registers.
    Words(Vec<u16>),
    /// Coils or discrete inputs.
    Bits(Vec<bool>),
}

/// The answer of a device: values, or the exception it raised.
pub type Answer<T> = Result<T, ExceptionCode>;

/// One device connection.
pub struct ModbusLink {
    address: String,
    unit: u8,
    call_timeout: Duration,
    ctx: Option<Context>,
    backoff: Backoff,
    retry_at: Option<Instant>,
}

impl std::fmt::Debug for ModbusLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModbusLink")
            .field("address", &self.address)
            .field("unit", &self.unit)
            .field("connected", &self.ctx.is_some())
            .finish_non_exhaustive()
    }
}

impl ModbusLink {
    /// A link to `address` (`host:port`), unit id `unit`; every call (and
    /// every connect) times out after `call_timeout`. Nothing connects
    /// until the first call.
    pub fn new(address: impl Into<String>, unit: u8, call_timeout: Duration) -> Self {
        Self {
            address: address.into(),
            unit,
            call_timeout,
            ctx: None,
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(30)),
            retry_at: None,
        }
    }

    /// Whether a connection is open.
    pub fn is_connected(&self) -> bool {
        self.ctx.is_some()
    }

    /// Drop the connection (the next call reconnects).
    pub fn disconnect(&mut self) {
        self.ctx = None;
    }

    async fn connect(&mut self) -> Result<(), LinkError> {
        if let Some(at) = self.retry_at {
            let now = Instant::now();
            if now < at {
                return Err(LinkError::Backoff(at - now));
            }
        }
        let address = self.address.clone();
        let unit = self.unit;
        let attempt = async move {
            let addr = tokio::net::lookup_host(&address)
                .await?
                .next()
                .ok_or_else(|| std::io::Error::other("name resolves to no address"))?;
            tokio_modbus::client::tcp::connect_slave(addr, Slave(unit)).await
        };
        let err = match timeout(self.call_timeout, attempt).await {
            Ok(Ok(ctx)) => {
                self.ctx = Some(ctx);
                self.retry_at = None;
                self.backoff.reset();
                return Ok(());
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no connection within {:?}", self.call_timeout),
        };
        self.retry_at = Some(Instant::now() + self.backoff.next_delay());
        Err(LinkError::Connect {
            address: self.address.clone(),
            reason: err,
        })
    }

    async fn call<T, F>(&mut self, f: F) -> Result<Answer<T>, LinkError>
    where
        F: for<'a> FnOnce(&'a mut Context) -> BoxFuture<'a, tokio_modbus::Result<T>>,
    {
        if self.ctx.is_none() {
            self.connect().await?;
        }
        let ctx = self.ctx.as_mut().expect("connected above");
        match timeout(self.call_timeout, f(ctx)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                self.ctx = None;
                Err(LinkError::Transport(e.to_string()))
            }
            Err(_) => {
                self.ctx = None;
                Err(LinkError::Timeout(self.call_timeout))
            }
        }
    }

    /// Read one block (FC 1, 2, 3 or 4).
    pub async fn read(&mut self, block: ReadBlock) -> Result<Answer<Values>, LinkError> {
        let (start, count) = (block.start, block.count);
        match block.table {
            Table::Holding => self
                .call(|c| Box::pin(async move { c.read_holding_registers(start, count).await }))
                .await
                .map(|a| a.map(Values::Words)),
            Table::Input => self
                .call(|c| Box::pin(async move { c.read_input_registers(start, count).await }))
                .await
                .map(|a| a.map(Values::Words)),
            Table::Coil => self
                .call(|c| Box::pin(async move { c.read_coils(start, count).await }))
                .await
                .map(|a| a.map(Values::Bits)),
            Table::Discrete => self
                .call(|c| Box::pin(async move { c.read_discrete_inputs(start, count).await }))
                .await
                .map(|a| a.map(Values::Bits)),
        }
    }

    /// Write holding registers: FC 6 for one word, FC 16 for more.
    pub async fn write_registers(
        &mut self,
        address: u16,
        words: Vec<u16>,
    ) -> Result<Answer<()>, LinkError> {
        if words.len() == 1 {
            let w = words[0];
            self.call(|c| Box::pin(async move { c.write_single_register(address, w).await }))
                .await
        } else {
            self.call(|c| {
                Box::pin(async move { c.write_multiple_registers(address, &words).await })
            })
            .await
        }
    }

    /// Write one coil (FC 5).
    pub async fn write_coil(&mut self, address: u16, on: bool) -> Result<Answer<()>, LinkError> {
        self.call(|c| Box::pin(async move { c.write_single_coil(address, on).await }))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let seen: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(seen, vec![100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_refused_connection_backs_off_instead_of_hammering() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut link = ModbusLink::new(format!("127.0.0.1:{port}"), 1, Duration::from_millis(200));
        let block = ReadBlock {
            table: Table::Holding,
            start: 0,
            count: 1,
        };
        assert!(matches!(
            link.read(block).await,
            Err(LinkError::Connect { .. })
        ));
        assert!(matches!(link.read(block).await, Err(LinkError::Backoff(_))));
        assert!(!link.is_connected());
    }
}
