//! Total readers for fields of documents that come from peers.
//!
//! Every read returns a [`FieldError`] instead of panicking: a field can be
//! missing, have the wrong type, or hold a value our types reject. Strings are
//! accepted both as scalar strings (what Rust writes; JS sees an
//! `ImmutableString`) and as `Text` objects (what JS writes for a plain JS
//! string). Integers are accepted as `Int`, as `Uint` within range, and as an
//! integral `F64` (JS numbers that happen to be stored as floats).

use std::ops::Bound;

use automerge::{ObjId, ObjType, ReadDoc, ScalarValue, Value};

/// One field that cannot be read as the schema says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("missing field `{field}`")]
    Missing { field: String },
    #[error("field `{field}`: expected {expected}, found {found}")]
    WrongType {
        field: String,
        expected: &'static str,
        found: String,
    },
    #[error("field `{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

impl FieldError {
    pub(crate) fn invalid(field: &str, reason: impl ToString) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            reason: reason.to_string(),
        }
    }
}

fn describe(value: &Value<'_>) -> String {
    match value {
        Value::Object(kind) => format!("{kind:?} object").to_lowercase(),
        Value::Scalar(scalar) => match scalar.as_ref() {
            ScalarValue::Bytes(_) => "bytes".into(),
            ScalarValue::Str(_) => "string".into(),
            ScalarValue::Int(_) => "int".into(),
            ScalarValue::Uint(_) => "uint".into(),
            ScalarValue::F64(_) => "f64".into(),
            ScalarValue::Counter(_) => "counter".into(),
            ScalarValue::Timestamp(_) => "timestamp".into(),
            ScalarValue::Boolean(_) => "boolean".into(),
            ScalarValue::Unknown { type_code, .. } => format!("unknown type {type_code}"),
            ScalarValue::Null => "null".into(),
        },
    }
}

fn wrong(field: &str, expected: &'static str, value: &Value<'_>) -> FieldError {
    FieldError::WrongType {
        field: field.to_owned(),
        expected,
        found: describe(value),
    }
}

/// The winning value of `obj[field]`, if any. A read error (the object does
/// not exist in this document) is reported as the field being invalid.
pub(crate) fn get_value<'a, R: ReadDoc>(
    doc: &'a R,
    obj: &ObjId,
    field: &str,
) -> Result<Option<(Value<'a>, ObjId)>, FieldError> {
    doc.get(obj, field)
        .map_err(|error| FieldError::invalid(field, error))
}

fn required<'a, R: ReadDoc>(
    doc: &'a R,
    obj: &ObjId,
    field: &str,
) -> Result<(Value<'a>, ObjId), FieldError> {
    get_value(doc, obj, field)?.ok_or_else(|| FieldError::Missing {
        field: field.to_owned(),
    })
}

fn string_of<R: ReadDoc>(
    doc: &R,
    field: &str,
    value: &Value<'_>,
    id: &ObjId,
) -> Result<String, FieldError> {
    match value {
        Value::Scalar(scalar) => match scalar.as_ref() {
            ScalarValue::Str(text) => Ok(text.to_string()),
            _ => Err(wrong(field, "string", value)),
        },
        Value::Object(ObjType::Text) => doc.text(id).map_err(|e| FieldError::invalid(field, e)),
        Value::Object(_) => Err(wrong(field, "string", value)),
    }
}

/// A string stored as a scalar string or as a `Text` object.
pub(crate) fn get_string<R: ReadDoc>(
    doc: &R,
    obj: &ObjId,
    field: &str,
) -> Result<String, FieldError> {
    let (value, id) = required(doc, obj, field)?;
    string_of(doc, field, &value, &id)
}

/// Like [`get_string`], `None` when absent or null.
pub(crate) fn get_optional_string<R: ReadDoc>(
    doc: &R,
    obj: &ObjId,
    field: &str,
) -> Result<Option<String>, FieldError> {
    match get_value(doc, obj, field)? {
        None => Ok(None),
        Some((Value::Scalar(scalar), _)) if matches!(scalar.as_ref(), ScalarValue::Null) => {
            Ok(None)
        }
        Some((value, id)) => string_of(doc, field, &value, &id).map(Some),
    }
}

/// A string parsed into one of our types.
pub(crate) fn get_parsed<R: ReadDoc, T, E: ToString>(
    doc: &R,
    obj: &ObjId,
    field: &str,
    parse: impl FnOnce(String) -> Result<T, E>,
) -> Result<T, FieldError> {
    let text = get_string(doc, obj, field)?;
    parse(text).map_err(|error| FieldError::invalid(field, error))
}

fn int_of(field: &str, value: &Value<'_>) -> Result<i64, FieldError> {
    match value {
        Value::Scalar(scalar) => match scalar.as_ref() {
            ScalarValue::Int(n) => Ok(*n),
            ScalarValue::Uint(n) => {
                i64::try_from(*n).map_err(|_| FieldError::invalid(field, "uint out of range"))
            }
            ScalarValue::F64(x) => f64_to_i64(*x)
                .ok_or_else(|| FieldError::invalid(field, format!("{x} is not an integer"))),
            _ => Err(wrong(field, "integer", value)),
        },
        Value::Object(_) => Err(wrong(field, "integer", value)),
    }
}

/// An integral f64 inside the range where every integer is exact (2^53).
fn f64_to_i64(x: f64) -> Option<i64> {
    const EXACT_MAX: f64 = 9_007_199_254_740_992.0;
    if x.is_finite() && x.fract() == 0.0 && x.abs() <= EXACT_MAX {
        // Exact: integral and within 2^53, checked above.
        #[allow(clippy::cast_possible_truncation)]
        Some(x as i64)
    } else {
        None
    }
}

/// An integer (`Int`, in-range `Uint`, integral `F64`).
pub(crate) fn get_int<R: ReadDoc>(doc: &R, obj: &ObjId, field: &str) -> Result<i64, FieldError> {
    let (value, _) = required(doc, obj, field)?;
    int_of(field, &value)
}

/// Every concurrent integer value of a register (for "take the maximum"
/// registers such as the device's sequence counter).
pub(crate) fn get_all_ints<R: ReadDoc>(
    doc: &R,
    obj: &ObjId,
    field: &str,
) -> Result<Vec<i64>, FieldError> {
    let values = doc
        .get_all(obj, field)
        .map_err(|error| FieldError::invalid(field, error))?;
    values
        .iter()
        .map(|(value, _)| int_of(field, value))
        .collect()
}

/// The current value of a `Counter`. A plain integer here would not merge
/// concurrent increments, so it is a wrong type.
pub(crate) fn counter_of(field: &str, value: &Value<'_>) -> Result<i64, FieldError> {
    match value {
        Value::Scalar(scalar) => match scalar.as_ref() {
            ScalarValue::Counter(counter) => Ok(i64::from(counter)),
            _ => Err(wrong(field, "counter", value)),
        },
        Value::Object(_) => Err(wrong(field, "counter", value)),
    }
}

pub(crate) fn get_bool<R: ReadDoc>(doc: &R, obj: &ObjId, field: &str) -> Result<bool, FieldError> {
    let (value, _) = required(doc, obj, field)?;
    match &value {
        Value::Scalar(scalar) => match scalar.as_ref() {
            ScalarValue::Boolean(b) => Ok(*b),
            _ => Err(wrong(field, "boolean", &value)),
        },
        Value::Object(_) => Err(wrong(field, "boolean", &value)),
    }
}

fn get_object<R: ReadDoc>(
    doc: &R,
    obj: &ObjId,
    field: &str,
    kind: ObjType,
    expected: &'static str,
) -> Result<ObjId, FieldError> {
    let (value, id) = required(doc, obj, field)?;
    match value {
        Value::Object(found) if found == kind => Ok(id),
        other => Err(wrong(field, expected, &other)),
    }
}

pub(crate) fn get_map<R: ReadDoc>(doc: &R, obj: &ObjId, field: &str) -> Result<ObjId, FieldError> {
    get_object(doc, obj, field, ObjType::Map, "map")
}

pub(crate) fn get_list<R: ReadDoc>(doc: &R, obj: &ObjId, field: &str) -> Result<ObjId, FieldError> {
    get_object(doc, obj, field, ObjType::List, "list")
}

/// The map at index `index` of a list.
pub(crate) fn list_map<R: ReadDoc>(
    doc: &R,
    list: &ObjId,
    index: usize,
    field: &str,
) -> Result<ObjId, FieldError> {
    match doc
        .get(list, index)
        .map_err(|error| FieldError::invalid(field, error))?
    {
        Some((Value::Object(ObjType::Map), id)) => Ok(id),
        Some((other, _)) => Err(wrong(field, "map", &other)),
        None => Err(FieldError::Missing {
            field: field.to_owned(),
        }),
    }
}

/// Strings of a list (each a scalar string or Text).
pub(crate) fn list_strings<R: ReadDoc>(
    doc: &R,
    list: &ObjId,
    field: &str,
) -> Result<Vec<String>, FieldError> {
    let mut out = Vec::new();
    for index in 0..doc.length(list) {
        let (value, id) = doc
            .get(list, index)
            .map_err(|error| FieldError::invalid(field, error))?
            .ok_or_else(|| FieldError::Missing {
                field: format!("{field}[{index}]"),
            })?;
        out.push(string_of(doc, field, &value, &id)?);
    }
    Ok(out)
}

/// Keys of a map, with how many concurrent values each key holds (more than
/// one means two replicas wrote the same key: a collision our ids should make
/// impossible, reported by validation).
pub(crate) fn keys_with_conflicts<R: ReadDoc>(doc: &R, map: &ObjId) -> Vec<(String, usize)> {
    keys_with_conflicts_in(doc, map, (Bound::Unbounded, Bound::Unbounded))
}

/// [`keys_with_conflicts`] for keys in `range`.
pub(crate) fn keys_with_conflicts_in<R: ReadDoc>(
    doc: &R,
    map: &ObjId,
    range: (Bound<String>, Bound<String>),
) -> Vec<(String, usize)> {
    doc.map_range(map, range)
        .map(|item| {
            let count = if item.conflict {
                doc.get_all(map, item.key.as_ref())
                    .map(|all| all.len())
                    .unwrap_or(2)
            } else {
                1
            };
            (item.key.into_owned(), count)
        })
        .collect()
}
