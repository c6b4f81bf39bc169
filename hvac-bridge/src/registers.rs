//! The pure register codec: Modbus words ⇄ engineering values, and the
//! coalescing of a device's points into as few reads as possible.
//!
//! Nothing here does I/O. A 32-bit value spans two registers; the order of
//! its four bytes on the wire is named as Telegraf names it: the value's
//! big-endian bytes are `A B C D`, and the word order says how they lie in
//! the two registers (`ABCD`: `[AB, CD]`, big-endian, the Modbus default;
//! `CDAB`: `[CD, AB]`, word-swapped; `BADC`: `[BA, DC]`, byte-swapped;
//! `DCBA`: `[DC, BA]`, little-endian).

use serde::{Deserialize, Serialize};

/// Largest number of registers one read may ask for (Modbus spec: 125 for
/// FC 3/4).
pub const MAX_REGISTERS_PER_READ: u16 = 125;
/// Largest number of coils or discrete inputs one read may ask for (2000).
pub const MAX_BITS_PER_READ: u16 = 2000;

/// The four Modbus tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    /// Holding registers (FC 3 read, FC 6/16 write).
    Holding,
    /// Input registers (FC 4, read-only).
    Input,
    /// Coils (FC 1 read, FC 5 write).
    Coil,
    /// Discrete inputs (FC 2, read-only).
    Discrete,
}

impl Table {
    /// Whether the table holds single bits rather than 16-bit registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }

    /// Whether Modbus allows writing this table at all.
    pub fn is_writable(self) -> bool {
        matches!(self, Table::Holding | Table::Coil)
    }

    /// The name used in config files and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Holding => "holding",
            Table::Input => "input",
            Table::Coil => "coil",
            Table::Discrete => "discrete",
        }
    }
}

/// The type of a register value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// Unsigned 16-bit, one register.
    U16,
    /// Signed 16-bit (two's complement), one register.
    I16,
    /// Unsigned 32-bit, two registers.
    U32,
    /// Signed 32-bit, two registers.
    I32,
    /// IEEE 754 single precision, two registers.
    F32,
}

impl ValueType {
    /// Registers the value spans.
    pub fn width(self) -> u16 {
        match self {
            ValueType::U16 | ValueType::I16 => 1,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 2,
        }
    }

    /// Smallest and largest raw value (before scaling) the type can hold.
    pub fn raw_range(self) -> (f64, f64) {
        match self {
            ValueType::U16 => (0.0, f64::from(u16::MAX)),
            ValueType::I16 => (f64::from(i16::MIN), f64::from(i16::MAX)),
            ValueType::U32 => (0.0, f64::from(u32::MAX)),
            ValueType::I32 => (f64::from(i32::MIN), f64::from(i32::MAX)),
            ValueType::F32 => (f64::from(f32::MIN), f64::from(f32::MAX)),
        }
    }

    /// The name used in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::F32 => "f32",
        }
    }
}

/// Byte order of a 32-bit value over two registers (Telegraf's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WordOrder {
    /// `[AB, CD]`: big-endian (the Modbus convention).
    ABCD,
    /// `[CD, AB]`: words swapped.
    CDAB,
    /// `[BA, DC]`: bytes swapped inside each word.
    BADC,
    /// `[DC, BA]`: little-endian.
    DCBA,
}

impl WordOrder {
    /// Every word order, for tests and docs.
    pub const ALL: [WordOrder; 4] = [
        WordOrder::ABCD,
        WordOrder::CDAB,
        WordOrder::BADC,
        WordOrder::DCBA,
    ];

    /// Lay out the big-endian bytes `[A, B, C, D]` as two registers.
    pub fn to_words(self, be: [u8; 4]) -> [u16; 2] {
        let [a, b, c, d] = be;
        let w = |hi: u8, lo: u8| u16::from_be_bytes([hi, lo]);
        match self {
            WordOrder::ABCD => [w(a, b), w(c, d)],
            WordOrder::CDAB => [w(c, d), w(a, b)],
            WordOrder::BADC => [w(b, a), w(d, c)],
            WordOrder::DCBA => [w(d, c), w(b, a)],
        }
    }

    /// Recover the big-endian bytes `[A, B, C, D]` from two registers.
    pub fn from_words(self, words: [u16; 2]) -> [u8; 4] {
        let [x0, x1] = words[0].to_be_bytes();
        let [y0, y1] = words[1].to_be_bytes();
        match self {
            WordOrder::ABCD => [x0, x1, y0, y1],
            WordOrder::CDAB => [y0, y1, x0, x1],
            WordOrder::BADC => [x1, x0, y1, y0],
            WordOrder::DCBA => [y1, y0, x1, x0],
        }
    }
}

/// How one register point is encoded: type, word order (32-bit types) and
/// scale (engineering value = raw × scale).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Encoding {
    /// Raw type.
    pub value_type: ValueType,
    /// Word order; ignored for 16-bit types.
    pub word_order: WordOrder,
    /// Engineering value = raw × scale (scale ≠ 0).
    pub scale: f64,
}

/// Why an engineering value cannot be written as registers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// NaN or infinite.
    #[error("{0} is not a finite number")]
    NotFinite(f64),
    /// The scaled raw value does not fit the type.
    #[error("raw value {raw} does not fit {ty} (range {min}..={max})")]
    OutOfRange {
        /// Raw value after dividing by the scale and rounding.
        raw: f64,
        /// Type name.
        ty: &'static str,
        /// Type minimum.
        min: f64,
        /// Type maximum.
        max: f64,
    },
}

impl Encoding {
    /// Decode `words` (exactly `width()` registers) to an engineering value.
    pub fn decode(&self, words: &[u16]) -> f64 {
        let raw = match self.value_type {
            ValueType::U16 => f64::from(words[0]),
            ValueType::I16 => f64::from(words[0] as i16),
            ValueType::U32 => f64::from(u32::from_be_bytes(self.bytes(words))),
            ValueType::I32 => f64::from(i32::from_be_bytes(self.bytes(words))),
            ValueType::F32 => f64::from(f32::from_be_bytes(self.bytes(words))),
        };
        raw * self.scale
    }

    fn bytes(&self, words: &[u16]) -> [u8; 4] {
        self.word_order.from_words([words[0], words[1]])
    }

    /// Encode an engineering value to registers: raw = value / scale,
    /// rounded to the nearest integer for integer types.
    pub fn encode(&self, value: f64) -> Result<Vec<u16>, EncodeError> {
        if !value.is_finite() {
            return Err(EncodeError::NotFinite(value));
        }
        let raw = value / self.scale;
        let raw = if self.value_type == ValueType::F32 {
            raw
        } else {
            raw.round()
        };
        let (min, max) = self.value_type.raw_range();
        if !(min..=max).contains(&raw) {
            return Err(EncodeError::OutOfRange {
                raw,
                ty: self.value_type.as_str(),
                min,
                max,
            });
        }
        let words = match self.value_type {
            ValueType::U16 => vec![raw as u16],
            ValueType::I16 => vec![(raw as i16) as u16],
            ValueType::U32 => self
                .word_order
                .to_words((raw as u32).to_be_bytes())
                .to_vec(),
            ValueType::I32 => self
                .word_order
                .to_words((raw as i32).to_be_bytes())
                .to_vec(),
            ValueType::F32 => self
                .word_order
                .to_words((raw as f32).to_be_bytes())
                .to_vec(),
        };
        Ok(words)
    }
}

/// One span to read: `count` registers (or bits) of `table` from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadBlock {
    /// Table read.
    pub table: Table,
    /// First address (0-based PDU address).
    pub start: u16,
    /// Number of registers or bits.
    pub count: u16,
}

impl ReadBlock {
    /// One past the last address.
    pub fn end(&self) -> u32 {
        u32::from(self.start) + u32::from(self.count)
    }
}

/// Coalesce spans `(table, start, width)` into reads: spans of one table
/// that touch or overlap are merged while the read stays within the
/// per-request limit (125 registers, 2000 bits). Gaps are never read (a gap
/// may be an address the device refuses). Blocks come out sorted by table
/// and address.
pub fn coalesce(spans: &[(Table, u16, u16)]) -> Vec<ReadBlock> {
    let mut sorted: Vec<(Table, u16, u16)> = spans.to_vec();
    sorted.sort();
    let mut blocks: Vec<ReadBlock> = Vec::new();
    for (table, start, width) in sorted {
        let limit = u32::from(if table.is_bits() {
            MAX_BITS_PER_READ
        } else {
            MAX_REGISTERS_PER_READ
        });
        let end = u32::from(start) + u32::from(width);
        if let Some(last) = blocks.last_mut() {
            if last.table == table && u32::from(start) <= last.end() {
                let merged_end = last.end().max(end);
                if merged_end - u32::from(last.start) <= limit {
                    last.count = (merged_end - u32::from(last.start)) as u16;
                    continue;
                }
            }
        }
        blocks.push(ReadBlock {
            table,
            start,
            count: width,
        });
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(value_type: ValueType, word_order: WordOrder, scale: f64) -> Encoding {
        Encoding {
            value_type,
            word_order,
            scale,
        }
    }

    #[test]
    fn one_as_f32_has_the_known_patterns_in_every_word_order() {
        let expected = [
            (WordOrder::ABCD, [0x3F80, 0x0000]),
            (WordOrder::CDAB, [0x0000, 0x3F80]),
            (WordOrder::BADC, [0x803F, 0x0000]),
            (WordOrder::DCBA, [0x0000, 0x803F]),
        ];
        for (order, words) in expected {
            let e = enc(ValueType::F32, order, 1.0);
            assert_eq!(e.encode(1.0).unwrap(), words.to_vec(), "{order:?}");
            assert_eq!(e.decode(&words), 1.0, "{order:?}");
        }
    }

    #[test]
    fn u32_0x11223344_lies_as_telegraf_names_it() {
        let v = f64::from(0x1122_3344u32);
        let expected = [
            (WordOrder::ABCD, [0x1122, 0x3344]),
            (WordOrder::CDAB, [0x3344, 0x1122]),
            (WordOrder::BADC, [0x2211, 0x4433]),
            (WordOrder::DCBA, [0x4433, 0x2211]),
        ];
        for (order, words) in expected {
            let e = enc(ValueType::U32, order, 1.0);
            assert_eq!(e.encode(v).unwrap(), words.to_vec(), "{order:?}");
            assert_eq!(e.decode(&words), v);
        }
    }

    #[test]
    fn every_type_and_word_order_round_trips() {
        let samples: [(ValueType, &[f64]); 5] = [
            (ValueType::U16, &[0.0, 1.0, 450.0, 65535.0]),
            (ValueType::I16, &[-32768.0, -55.0, 0.0, 32767.0]),
            (ValueType::U32, &[0.0, 1234567.0, 4294967295.0]),
            (
                ValueType::I32,
                &[-2147483648.0, -100000.0, 0.0, 2147483647.0],
            ),
            (ValueType::F32, &[0.0, -1.5, 21.5, 3.0e38, -7.25e-5]),
        ];
        for (ty, values) in samples {
            for order in WordOrder::ALL {
                for scale in [1.0, 0.1, 0.01] {
                    let e = enc(ty, order, scale);
                    for raw in values {
                        let value = raw * scale;
                        let words = e.encode(value).unwrap();
                        assert_eq!(words.len(), usize::from(ty.width()));
                        let back = e.decode(&words);
                        let tol = if ty == ValueType::F32 {
                            value.abs() * 1e-6
                        } else {
                            scale * 1e-6
                        };
                        assert!(
                            (back - value).abs() <= tol,
                            "{ty:?} {order:?} scale {scale}: {value} came back as {back}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn i16_with_scale_decodes_negative_tenths() {
        let e = enc(ValueType::I16, WordOrder::ABCD, 0.1);
        assert!((e.decode(&[(-55i16) as u16]) - -5.5).abs() < 1e-9);
        assert_eq!(e.encode(45.0).unwrap(), vec![450]);
    }

    #[test]
    fn values_that_do_not_fit_the_type_are_refused() {
        let e = enc(ValueType::I16, WordOrder::ABCD, 0.1);
        assert!(matches!(
            e.encode(4000.0),
            Err(EncodeError::OutOfRange { ty: "i16", .. })
        ));
        assert!(matches!(
            enc(ValueType::U16, WordOrder::ABCD, 1.0).encode(-1.0),
            Err(EncodeError::OutOfRange { .. })
        ));
        assert!(matches!(e.encode(f64::NAN), Err(EncodeError::NotFinite(_))));
    }

    #[test]
    fn adjacent_points_coalesce_and_gaps_split() {
        let blocks = coalesce(&[
            (Table::Holding, 10, 1),
            (Table::Holding, 11, 2),
            (Table::Holding, 13, 1),
            (Table::Holding, 20, 2),
            (Table::Input, 0, 2),
            (Table::Coil, 3, 1),
            (Table::Coil, 4, 1),
        ]);
        assert_eq!(
            blocks,
            vec![
                ReadBlock {
                    table: Table::Holding,
                    start: 10,
                    count: 4
                },
                ReadBlock {
                    table: Table::Holding,
                    start: 20,
                    count: 2
                },
                ReadBlock {
                    table: Table::Input,
                    start: 0,
                    count: 2
                },
                ReadBlock {
                    table: Table::Coil,
                    start: 3,
                    count: 2
                },
            ]
        );
    }

    #[test]
    fn coalesced_reads_never_exceed_125_registers() {
        let spans: Vec<(Table, u16, u16)> = (0..200u16).map(|i| (Table::Input, i * 2, 2)).collect();
        let blocks = coalesce(&spans);
        assert!(blocks.iter().all(|b| b.count <= MAX_REGISTERS_PER_READ));
        let covered: u32 = blocks.iter().map(|b| u32::from(b.count)).sum();
        assert_eq!(covered, 400);
        // A 2-register value is never split across two reads.
        assert!(blocks.iter().all(|b| b.count % 2 == 0));
        assert_eq!(blocks[0].count, 124);
    }
}
