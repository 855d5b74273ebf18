//! Money and quantities: integer cents with an ISO 4217 currency code,
//! integer units. Every sum goes through checked arithmetic; an overflow is a
//! value ([`AmountOverflow`]), never a wrap.

use std::fmt;

use super::ids::IdError;

/// An ISO 4217 code: three upper-case ASCII letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn new(code: &str) -> Result<Self, IdError> {
        let bytes = code.as_bytes();
        match bytes {
            [a, b, c] if bytes.iter().all(u8::is_ascii_uppercase) => Ok(Self([*a, *b, *c])),
            _ => Err(IdError::BadCurrency {
                value: code.to_owned(),
            }),
        }
    }

    pub fn as_str(&self) -> &str {
        // Constructed only from ASCII upper-case letters.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sum of cents or units left the `i64` range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("amount overflow")]
pub struct AmountOverflow;

/// `quantity * unit_price_cents`, checked.
pub fn line_total_cents(quantity: i64, unit_price_cents: i64) -> Result<i64, AmountOverflow> {
    quantity.checked_mul(unit_price_cents).ok_or(AmountOverflow)
}

/// Sum of cents or units, checked.
pub fn checked_sum(values: impl IntoIterator<Item = i64>) -> Result<i64, AmountOverflow> {
    values.into_iter().try_fold(0i64, |sum, value| {
        sum.checked_add(value).ok_or(AmountOverflow)
    })
}
