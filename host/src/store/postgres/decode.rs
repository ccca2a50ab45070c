//! Reading typed values out of PostgreSQL rows: what the row decoders of this backend share.
//! A value that does not decode is [`StoreError::Corrupt`] or a database error, never a panic.

use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, Type};

use super::db;
use crate::store::StoreError;

/// Column `i` of `r` as `T`.
pub(super) fn get<'a, T: FromSql<'a>>(r: &'a Row, i: usize) -> Result<T, StoreError> {
    r.try_get(i).map_err(db)
}

/// An integer column, whatever its width (the model's counts are `u32`, stored as integers).
pub(super) fn int(r: &Row, i: usize) -> Result<Option<i64>, StoreError> {
    let ty = r.columns()[i].type_();
    Ok(if *ty == Type::INT2 {
        get::<Option<i16>>(r, i)?.map(i64::from)
    } else if *ty == Type::INT4 {
        get::<Option<i32>>(r, i)?.map(i64::from)
    } else {
        get::<Option<i64>>(r, i)?
    })
}

/// A non-null integer column.
pub(super) fn int_req(r: &Row, i: usize, what: &str) -> Result<i64, StoreError> {
    int(r, i)?.ok_or_else(|| corrupt(what))
}

/// A nullable column holding a `u32`.
pub(super) fn opt_u32(r: &Row, i: usize, what: &str) -> Result<Option<u32>, StoreError> {
    int(r, i)?
        .map(|v| u32::try_from(v).map_err(|_| corrupt(what)))
        .transpose()
}

/// A non-null column holding a `u32`.
pub(super) fn u32_req(r: &Row, i: usize, what: &str) -> Result<u32, StoreError> {
    opt_u32(r, i, what)?.ok_or_else(|| corrupt(what))
}

/// A JSON document stored as text.
pub(super) fn json_col<T: serde::de::DeserializeOwned>(
    r: &Row,
    i: usize,
    what: &str,
) -> Result<T, StoreError> {
    let text: String = get(r, i)?;
    serde_json::from_str(&text).map_err(|_| corrupt(what))
}

/// A text column holding one of an enum's names.
pub(super) fn parsed<T>(
    r: &Row,
    i: usize,
    parse: fn(&str) -> Option<T>,
    what: &str,
) -> Result<T, StoreError> {
    let text: String = get(r, i)?;
    parse(&text).ok_or_else(|| corrupt(what))
}

/// A value as JSON text, for a JSON column.
pub(super) fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).expect("plain data serializes")
}

pub(super) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("column {what}"))
}
