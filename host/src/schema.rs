//! Schemas of constrained request fields for the API document (`#[schema(schema_with = ...)]`),
//! built from the constants the validation itself uses, so the document and the server cannot
//! disagree about a length, a range or a pattern. Builders only: the rules live with their
//! owners (`events`, `subscriptions`, `api::plugins`).

use utoipa::openapi::schema::{AdditionalProperties, ArrayBuilder, ObjectBuilder, SchemaType};
use utoipa::openapi::{RefOr, Schema, SchemaFormat, Type};

/// A string field: `description`, and the bounds that apply.
pub struct Str {
    description: &'static str,
    min: Option<usize>,
    max: Option<usize>,
    pattern: Option<&'static str>,
    format: Option<&'static str>,
    nullable: bool,
}

impl Str {
    /// A string described by `description`, with no bounds yet.
    pub fn new(description: &'static str) -> Str {
        Str {
            description,
            min: None,
            max: None,
            pattern: None,
            format: None,
            nullable: false,
        }
    }

    /// At least `n` and at most `m` characters.
    pub fn len(mut self, n: usize, m: usize) -> Str {
        self.min = Some(n);
        self.max = Some(m);
        self
    }

    /// Matches `pattern` (ECMA-262, as JSON Schema reads it).
    pub fn pattern(mut self, pattern: &'static str) -> Str {
        self.pattern = Some(pattern);
        self
    }

    /// Has the `format` (`uri`, `date-time`, ...).
    pub fn format(mut self, format: &'static str) -> Str {
        self.format = Some(format);
        self
    }

    /// May also be `null` (an optional field).
    pub fn nullable(mut self) -> Str {
        self.nullable = true;
        self
    }

    /// The field's schema.
    pub fn build(self) -> RefOr<Schema> {
        let mut b = ObjectBuilder::new()
            .schema_type(types(Type::String, self.nullable))
            .description(Some(self.description))
            .min_length(self.min)
            .max_length(self.max)
            .pattern(self.pattern);
        if let Some(f) = self.format {
            b = b.format(Some(SchemaFormat::Custom(f.to_string())));
        }
        RefOr::T(Schema::Object(b.build()))
    }
}

/// An integer from `min` to `max` (either open), possibly `null`.
pub fn integer(
    description: &'static str,
    min: Option<u64>,
    max: Option<u64>,
    nullable: bool,
) -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(types(Type::Integer, nullable))
            .description(Some(description))
            .minimum(min.map(|n| utoipa::Number::UInt(n as usize)))
            .maximum(max.map(|n| utoipa::Number::UInt(n as usize)))
            .build(),
    ))
}

/// An array of `item`, with `min` to `max` items, possibly `null`.
pub fn array(
    description: &'static str,
    item: RefOr<Schema>,
    min: usize,
    max: usize,
    nullable: bool,
) -> RefOr<Schema> {
    RefOr::T(Schema::Array(
        ArrayBuilder::new()
            .schema_type(types(Type::Array, nullable))
            .description(Some(description))
            .items(item)
            .min_items(Some(min))
            .max_items(Some(max))
            .build(),
    ))
}

/// A JSON object of strings: at most `max_entries` entries, keys as `key`, values as `value`.
pub fn string_map(
    description: &'static str,
    key: Str,
    value: Str,
    max_entries: usize,
    nullable: bool,
) -> RefOr<Schema> {
    let key = match key.build() {
        RefOr::T(Schema::Object(o)) => Some(o),
        _ => None,
    };
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(types(Type::Object, nullable))
            .description(Some(description))
            .property_names(key)
            .additional_properties(Some(AdditionalProperties::RefOr(value.build())))
            .max_properties(Some(max_entries))
            .build(),
    ))
}

fn types(t: Type, nullable: bool) -> SchemaType {
    if nullable {
        SchemaType::from_iter([t, Type::Null])
    } else {
        SchemaType::Type(t)
    }
}
