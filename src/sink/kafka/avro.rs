//! `format = "avro"` of the Kafka sink: records encoded with an Avro record schema (the
//! `apache-avro` crate writes the binary body) in the Confluent wire format: magic byte 0, the
//! 4-byte big-endian schema id, the Avro body. The id comes from `schema_id` or from a Confluent
//! schema registry ([`super::schema_registry`]).
//!
//! Record fields are mapped to the schema by name with Avro's type rules: a field missing from
//! the record takes its default, or null in a union with null, or makes the record unencodable
//! (dead-lettered with a message naming the field); numbers widen (int → long, float, double),
//! strings fill `string`, `bytes`, `enum` (a symbol), `fixed` (of its size), `uuid`; maps fill
//! records and `map`s; arrays fill `array`s; a union takes the first branch the value fits.
//! The field named `timestamp_key`, when the schema has one, gets the record time: a `long`
//! with the `timestamp-millis` (or `-micros`) logical type, a plain `long` in ms, a `double` in
//! seconds, or an ISO 8601 `string`.

use std::collections::HashMap;

use apache_avro::schema::{Name, RecordSchema, Schema};
use apache_avro::types::Value as Avro;

use crate::event::{Event, Value};

/// A record that cannot be encoded with the schema; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    #[error("Avro field `{field}`: {message}")]
    Field { field: String, message: String },
    #[error("Avro encoding failed: {0}")]
    Encode(String),
}

fn field_error(path: &str, message: impl Into<String>) -> AvroError {
    AvroError::Field {
        field: path.to_string(),
        message: message.into(),
    }
}

/// Checks a writer schema: it parses and is a record. Returns it.
pub fn parse_record_schema(text: &str) -> Result<Schema, String> {
    let schema = Schema::parse_str(text).map_err(|e| format!("not a valid Avro schema: {e}"))?;
    match &schema {
        Schema::Record(_) => Ok(schema),
        other => Err(format!(
            "the schema must be an Avro record, not {:?}",
            apache_avro::schema::SchemaKind::from(other)
        )),
    }
}

/// Encodes records with one schema and id.
pub struct AvroWriter {
    schema: Schema,
    named: HashMap<String, Schema>,
    id: u32,
    time_field: Option<String>,
}

impl AvroWriter {
    pub fn new(schema: Schema, id: u32, timestamp_key: Option<&str>) -> AvroWriter {
        let mut named = HashMap::new();
        collect_named(&schema, &mut named);
        let time_field = match (&schema, timestamp_key) {
            (Schema::Record(r), Some(key)) if r.lookup.contains_key(key) => Some(key.to_string()),
            _ => None,
        };
        AvroWriter {
            schema,
            named,
            id,
            time_field,
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// Appends the record in the Confluent wire format to `out`.
    pub fn encode(&self, event: &Event, out: &mut Vec<u8>) -> Result<(), AvroError> {
        let Schema::Record(record) = &self.schema else {
            return Err(AvroError::Encode("the schema is not a record".into()));
        };
        let value = self.record(record, "", &|name| {
            if self.time_field.as_deref() == Some(name) {
                return Some(Lookup::Time(event));
            }
            event.record.get(name.as_bytes()).map(Lookup::Value)
        })?;
        let body = apache_avro::to_avro_datum(&self.schema, value)
            .map_err(|e| AvroError::Encode(e.to_string()))?;
        out.push(0);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&body);
        Ok(())
    }

    fn record<'a>(
        &self,
        schema: &RecordSchema,
        path: &str,
        get: &dyn Fn(&str) -> Option<Lookup<'a>>,
    ) -> Result<Avro, AvroError> {
        let mut fields = Vec::with_capacity(schema.fields.len());
        for field in &schema.fields {
            let here = join(path, &field.name);
            let value = match get(&field.name) {
                Some(Lookup::Value(Value::Nil)) | None => match &field.default {
                    Some(default) => Avro::from(default.clone())
                        .resolve(&self.resolved(&field.schema))
                        .map_err(|e| field_error(&here, format!("bad default: {e}")))?,
                    None if self.accepts_null(&field.schema) => self.null(&field.schema),
                    None => {
                        return Err(field_error(
                            &here,
                            "missing from the record, and the schema gives no default",
                        ))
                    }
                },
                Some(Lookup::Value(v)) => self.value(v, &field.schema, &here)?,
                Some(Lookup::Time(event)) => self.time(event, &field.schema, &here)?,
            };
            fields.push((field.name.clone(), value));
        }
        Ok(Avro::Record(fields))
    }

    /// A named reference resolved to its definition.
    fn resolved(&self, schema: &Schema) -> Schema {
        match schema {
            Schema::Ref { name } => self
                .named
                .get(&name.fullname(None))
                .cloned()
                .unwrap_or_else(|| schema.clone()),
            other => other.clone(),
        }
    }

    fn accepts_null(&self, schema: &Schema) -> bool {
        match schema {
            Schema::Null => true,
            Schema::Union(u) => u.variants().iter().any(|s| matches!(s, Schema::Null)),
            _ => false,
        }
    }

    fn null(&self, schema: &Schema) -> Avro {
        match schema {
            Schema::Union(u) => {
                let index = u
                    .variants()
                    .iter()
                    .position(|s| matches!(s, Schema::Null))
                    .unwrap_or(0);
                Avro::Union(index as u32, Box::new(Avro::Null))
            }
            _ => Avro::Null,
        }
    }

    fn value(&self, value: &Value, schema: &Schema, path: &str) -> Result<Avro, AvroError> {
        let mismatch = || {
            field_error(
                path,
                format!("{} does not fit {}", kind(value), name(schema)),
            )
        };
        Ok(match (schema, value) {
            (Schema::Ref { .. }, _) => return self.value(value, &self.resolved(schema), path),
            (Schema::Union(u), _) => {
                if matches!(value, Value::Nil) && self.accepts_null(schema) {
                    return Ok(self.null(schema));
                }
                for (i, branch) in u.variants().iter().enumerate() {
                    if matches!(branch, Schema::Null) {
                        continue;
                    }
                    if let Ok(v) = self.value(value, branch, path) {
                        return Ok(Avro::Union(i as u32, Box::new(v)));
                    }
                }
                return Err(field_error(
                    path,
                    format!(
                        "{} fits no branch of the union {}",
                        kind(value),
                        name(schema)
                    ),
                ));
            }
            (Schema::Null, Value::Nil) => Avro::Null,
            (Schema::Boolean, Value::Bool(b)) => Avro::Boolean(*b),
            (Schema::Int | Schema::Date | Schema::TimeMillis, Value::Int(i)) => {
                let i = i32::try_from(*i)
                    .map_err(|_| field_error(path, format!("{i} is out of the int range")))?;
                match schema {
                    Schema::Date => Avro::Date(i),
                    Schema::TimeMillis => Avro::TimeMillis(i),
                    _ => Avro::Int(i),
                }
            }
            (Schema::Int, Value::UInt(u)) => Avro::Int(
                i32::try_from(*u)
                    .map_err(|_| field_error(path, format!("{u} is out of the int range")))?,
            ),
            (Schema::Long, Value::Int(i)) => Avro::Long(*i),
            (Schema::Long, Value::UInt(u)) => Avro::Long(
                i64::try_from(*u)
                    .map_err(|_| field_error(path, format!("{u} is out of the long range")))?,
            ),
            (Schema::TimestampMillis, Value::Int(i)) => Avro::TimestampMillis(*i),
            (Schema::TimestampMicros, Value::Int(i)) => Avro::TimestampMicros(*i),
            (Schema::TimeMicros, Value::Int(i)) => Avro::TimeMicros(*i),
            (Schema::Float, Value::Int(i)) => Avro::Float(*i as f32),
            (Schema::Float, Value::UInt(u)) => Avro::Float(*u as f32),
            (Schema::Float, Value::Float(f)) => Avro::Float(*f as f32),
            (Schema::Double, Value::Int(i)) => Avro::Double(*i as f64),
            (Schema::Double, Value::UInt(u)) => Avro::Double(*u as f64),
            (Schema::Double, Value::Float(f)) => Avro::Double(*f),
            (Schema::String, Value::Str(s)) => Avro::String(
                String::from_utf8(s.to_vec()).map_err(|_| field_error(path, "not valid UTF-8"))?,
            ),
            (Schema::Uuid, Value::Str(s)) => {
                let text =
                    std::str::from_utf8(s).map_err(|_| field_error(path, "not valid UTF-8"))?;
                Avro::Uuid(
                    text.parse()
                        .map_err(|_| field_error(path, format!("`{text}` is not a UUID")))?,
                )
            }
            (Schema::Bytes, Value::Str(s) | Value::Bin(s)) => Avro::Bytes(s.to_vec()),
            (Schema::Fixed(f), Value::Str(s) | Value::Bin(s)) if s.len() == f.size => {
                Avro::Fixed(f.size, s.to_vec())
            }
            (Schema::Enum(e), Value::Str(s)) => {
                let symbol = String::from_utf8_lossy(s);
                match e.symbols.iter().position(|x| *x == symbol) {
                    Some(i) => Avro::Enum(i as u32, symbol.into_owned()),
                    None => {
                        return Err(field_error(
                            path,
                            format!("`{symbol}` is not a symbol of {}", e.name.name),
                        ))
                    }
                }
            }
            (Schema::Array(a), Value::Array(items)) => Avro::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.value(v, &a.items, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            (Schema::Map(m), Value::Map(map)) => {
                let mut out = HashMap::with_capacity(map.len());
                for (k, v) in map.iter() {
                    let key = String::from_utf8_lossy(k).into_owned();
                    let here = join(path, &key);
                    out.insert(key, self.value(v, &m.types, &here)?);
                }
                Avro::Map(out)
            }
            (Schema::Record(r), Value::Map(map)) => {
                self.record(r, path, &|name| map.get(name.as_bytes()).map(Lookup::Value))?
            }
            _ => return Err(mismatch()),
        })
    }

    /// The record time in the form the field's schema asks for.
    fn time(&self, event: &Event, schema: &Schema, path: &str) -> Result<Avro, AvroError> {
        let ms = event.time.as_millis();
        Ok(match schema {
            Schema::TimestampMillis => Avro::TimestampMillis(ms),
            Schema::TimestampMicros => Avro::TimestampMicros(
                ms.saturating_mul(1000) + i64::from(event.time.nanos % 1_000_000 / 1000),
            ),
            Schema::Long => Avro::Long(ms),
            Schema::Double => Avro::Double(event.time.as_f64()),
            Schema::String => Avro::String(
                chrono::DateTime::from_timestamp_millis(ms)
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
                    .unwrap_or_default(),
            ),
            Schema::Union(u) => {
                for (i, branch) in u.variants().iter().enumerate() {
                    if let Ok(v) = self.time(event, branch, path) {
                        return Ok(Avro::Union(i as u32, Box::new(v)));
                    }
                }
                return Err(field_error(
                    path,
                    "no branch of the union can hold the record time",
                ));
            }
            other => {
                return Err(field_error(
                    path,
                    format!("the record time cannot be written as {}", name(other)),
                ))
            }
        })
    }
}

/// Where a record field's value comes from.
enum Lookup<'a> {
    Value(&'a Value),
    Time(&'a Event),
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Nil => "null",
        Value::Bool(_) => "a boolean",
        Value::Int(_) | Value::UInt(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Str(_) => "a string",
        Value::Bin(_) => "binary data",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        _ => "a value",
    }
}

fn name(schema: &Schema) -> String {
    format!("{:?}", apache_avro::schema::SchemaKind::from(schema)).to_lowercase()
}

/// Every named type (record, enum, fixed) of `schema`, by full name, for `Ref`s.
fn collect_named(schema: &Schema, out: &mut HashMap<String, Schema>) {
    let mut add = |name: &Name, s: &Schema| {
        out.insert(name.fullname(None), s.clone());
    };
    match schema {
        Schema::Record(r) => {
            add(&r.name, schema);
            for f in &r.fields {
                collect_named(&f.schema, out);
            }
        }
        Schema::Enum(e) => add(&e.name, schema),
        Schema::Fixed(f) => add(&f.name, schema),
        Schema::Array(a) => collect_named(&a.items, out),
        Schema::Map(m) => collect_named(&m.types, out),
        Schema::Union(u) => {
            for v in u.variants() {
                collect_named(v, out);
            }
        }
        _ => {}
    }
}
