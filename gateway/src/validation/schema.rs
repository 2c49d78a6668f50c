//! A JSON Schema subset, enough for the schemas of OpenAPI 3.0 and 3.1 documents:
//! compiled once per snapshot into an arena of nodes (so `$ref` cycles are plain
//! indices), then checked against JSON values, reporting where each value fails.
//!
//! Supported: boolean schemas; `type` (a name, or 3.1's list of names), 3.0's
//! `nullable`; `enum`, `const`; `multipleOf`, `minimum`, `maximum`,
//! `exclusiveMinimum`/`exclusiveMaximum` (3.0's booleans and 3.1's numbers);
//! `minLength`, `maxLength`, `pattern`, `format` (`int32`, `int64`, `date`,
//! `date-time`, `uuid`; other formats pass); `items`, `prefixItems`, `minItems`,
//! `maxItems`, `uniqueItems`, `contains`; `properties`, `patternProperties`,
//! `additionalProperties`, `required` (properties marked `readOnly` are not required
//! in requests), `minProperties`, `maxProperties`, `propertyNames`,
//! `dependentRequired`; `allOf`, `anyOf`, `oneOf`, `not`, `if`/`then`/`else`; `$ref`
//! to any JSON pointer in the same document (in 3.1 its sibling keywords apply too).
//!
//! Anything else (external references, `unevaluatedProperties`, `$dynamicRef`,
//! `discriminator` mappings…) is not checked, so it never refuses a request. Patterns
//! the `regex` crate cannot compile (look-around, back-references) are left out the
//! same way, with a warning at compile time.

mod compile;

use std::collections::HashMap;
use std::fmt::{self, Display, Write as _};

use regex::Regex;
use serde::Serialize;
use serde_json::{Map, Number, Value};

pub use self::compile::Compiler;

/// A compiled schema in a [`Schemas`] arena.
pub type NodeId = usize;

/// The schema that accepts everything.
pub const ANY: NodeId = 0;
/// The schema that accepts nothing (`false`).
pub const NEVER: NodeId = 1;

/// How deep a check may nest (through values, references and combinators) before
/// it gives up and lets the value pass; bounds self-referencing schemas such as
/// `A: {allOf: [{$ref: A}]}`.
const MAX_DEPTH: u32 = 256;

/// The compiled schemas of one document.
#[derive(Debug)]
pub struct Schemas {
    nodes: Vec<Node>,
}

#[derive(Debug)]
enum Node {
    Any,
    Never,
    Keywords(Box<Keywords>),
}

/// The keywords of one schema object; absent keywords are `None` or empty.
#[derive(Debug, Default)]
struct Keywords {
    reference: Option<NodeId>,
    nullable: bool,
    types: Option<Types>,
    enumeration: Option<Vec<Value>>,
    constant: Option<Value>,
    multiple_of: Option<f64>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    exclusive_minimum: Option<f64>,
    exclusive_maximum: Option<f64>,
    format: Option<Format>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    pattern: Option<Regex>,
    prefix_items: Vec<NodeId>,
    items: Option<NodeId>,
    min_items: Option<usize>,
    max_items: Option<usize>,
    unique_items: bool,
    contains: Option<NodeId>,
    properties: HashMap<String, NodeId>,
    pattern_properties: Vec<(Regex, NodeId)>,
    additional_properties: Option<NodeId>,
    required: Vec<String>,
    min_properties: Option<usize>,
    max_properties: Option<usize>,
    property_names: Option<NodeId>,
    dependent_required: Vec<(String, Vec<String>)>,
    all_of: Vec<NodeId>,
    any_of: Vec<NodeId>,
    one_of: Vec<NodeId>,
    not: Option<NodeId>,
    conditional: Option<(NodeId, Option<NodeId>, Option<NodeId>)>,
}

/// A set of JSON types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Types(u8);

impl Types {
    pub const NULL: Types = Types(1);
    pub const BOOLEAN: Types = Types(2);
    pub const OBJECT: Types = Types(4);
    pub const ARRAY: Types = Types(8);
    pub const NUMBER: Types = Types(16);
    pub const INTEGER: Types = Types(32);
    pub const STRING: Types = Types(64);

    const NAMES: [(Types, &'static str, &'static str); 7] = [
        (Types::INTEGER, "integer", "an integer"),
        (Types::NUMBER, "number", "a number"),
        (Types::STRING, "string", "a string"),
        (Types::BOOLEAN, "boolean", "a boolean"),
        (Types::ARRAY, "array", "an array"),
        (Types::OBJECT, "object", "an object"),
        (Types::NULL, "null", "null"),
    ];

    fn named(name: &str) -> Option<Types> {
        Types::NAMES.iter().find(|(_, n, _)| *n == name).map(|(t, _, _)| *t)
    }

    pub fn contains(self, other: Types) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn union(self, other: Types) -> Types {
        Types(self.0 | other.0)
    }

    fn admits(self, value: &Value) -> bool {
        match value {
            Value::Null => self.contains(Types::NULL),
            Value::Bool(_) => self.contains(Types::BOOLEAN),
            Value::Object(_) => self.contains(Types::OBJECT),
            Value::Array(_) => self.contains(Types::ARRAY),
            Value::String(_) => self.contains(Types::STRING),
            Value::Number(n) => self.contains(Types::NUMBER) || (self.contains(Types::INTEGER) && is_integer(n)),
        }
    }
}

impl Display for Types {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> =
            Types::NAMES.iter().filter(|(t, _, _)| self.contains(*t)).map(|(_, _, article)| *article).collect();
        match names.split_last() {
            None => f.write_str("nothing"),
            Some((last, [])) => f.write_str(last),
            Some((last, rest)) => write!(f, "{} or {last}", rest.join(", ")),
        }
    }
}

/// The formats that are checked; the others are annotations only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Int32,
    Int64,
    Date,
    DateTime,
    Uuid,
}

impl Format {
    fn named(name: &str) -> Option<Format> {
        Some(match name {
            "int32" => Format::Int32,
            "int64" => Format::Int64,
            "date" => Format::Date,
            "date-time" => Format::DateTime,
            "uuid" => Format::Uuid,
            _ => return None,
        })
    }
}

// ---------------------------------------------------------------------------
// Reporting

/// One way a request fails its description: where (`query.limit`,
/// `body.items[2].name`) and why (`must be an integer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub location: String,
    pub reason: String,
}

impl Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.reason)
    }
}

/// Collects violations up to a limit. A report with limit 0 is a probe: it only
/// learns whether anything failed, and checks stop at the first failure.
#[derive(Debug)]
pub struct Report {
    pub violations: Vec<Violation>,
    limit: usize,
    failed: bool,
}

impl Report {
    pub fn new(limit: usize) -> Report {
        Report { violations: Vec::new(), limit, failed: false }
    }

    fn probe() -> Report {
        Report::new(0)
    }

    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Whether further checks can add nothing.
    fn done(&self) -> bool {
        self.failed && self.violations.len() >= self.limit
    }

    pub fn fail(&mut self, location: &str, reason: impl Display) {
        self.failed = true;
        if self.violations.len() < self.limit {
            self.violations.push(Violation { location: location.to_owned(), reason: reason.to_string() });
        }
    }
}

// ---------------------------------------------------------------------------
// Checking

impl Schemas {
    /// Checks `value` against schema `id`, reporting failures under `location`
    /// (which is restored before returning).
    pub fn check(&self, id: NodeId, value: &Value, location: &mut String, report: &mut Report) {
        self.node(id, value, location, report, 0);
    }

    /// Whether `value` satisfies schema `id`.
    #[cfg(test)]
    pub fn is_valid(&self, id: NodeId, value: &Value) -> bool {
        let mut probe = Report::probe();
        self.node(id, value, &mut String::new(), &mut probe, 0);
        !probe.failed
    }

    /// The types schema `id` declares, following references and `allOf`; empty when
    /// it declares none. Parameters are parsed by these.
    pub fn types_of(&self, id: NodeId) -> Types {
        self.types_at(id, 0)
    }

    fn types_at(&self, id: NodeId, depth: u32) -> Types {
        let Node::Keywords(k) = &self.nodes[id] else { return Types::default() };
        if depth > 16 {
            return Types::default();
        }
        let mut types = k.types.unwrap_or_default();
        if types.is_empty()
            && let Some(r) = k.reference
        {
            types = self.types_at(r, depth + 1);
        }
        for &sub in &k.all_of {
            if !types.is_empty() {
                break;
            }
            types = self.types_at(sub, depth + 1);
        }
        if k.nullable && !types.is_empty() { types.union(Types::NULL) } else { types }
    }

    /// The `items` schema of an array schema `id`, following references and `allOf`.
    pub fn items_of(&self, id: NodeId) -> Option<NodeId> {
        self.items_at(id, 0)
    }

    fn items_at(&self, id: NodeId, depth: u32) -> Option<NodeId> {
        let Node::Keywords(k) = &self.nodes[id] else { return None };
        if depth > 16 {
            return None;
        }
        k.items
            .or_else(|| k.reference.and_then(|r| self.items_at(r, depth + 1)))
            .or_else(|| k.all_of.iter().find_map(|&sub| self.items_at(sub, depth + 1)))
    }

    fn node(&self, id: NodeId, value: &Value, location: &mut String, report: &mut Report, depth: u32) {
        if report.done() || depth > MAX_DEPTH {
            return;
        }
        let k = match &self.nodes[id] {
            Node::Any => return,
            Node::Never => return report.fail(location, "is not allowed here"),
            Node::Keywords(k) => k,
        };
        if k.nullable && value.is_null() {
            return;
        }
        if let Some(target) = k.reference {
            self.node(target, value, location, report, depth + 1);
        }
        if let Some(types) = k.types
            && !types.admits(value)
        {
            // The other keywords would only repeat the mismatch.
            return report.fail(location, format_args!("must be {types}"));
        }
        if let Some(constant) = &k.constant
            && !equal(constant, value)
        {
            report.fail(location, format_args!("must be {constant}"));
        }
        if let Some(values) = &k.enumeration
            && !values.iter().any(|v| equal(v, value))
        {
            report.fail(location, format_args!("must be one of {}", Listed(values)));
        }
        match value {
            Value::Number(n) => self.number(k, n, location, report),
            Value::String(s) => self.string(k, s, location, report),
            Value::Array(items) => self.array(k, items, location, report, depth),
            Value::Object(map) => self.object(k, map, location, report, depth),
            Value::Null | Value::Bool(_) => {}
        }
        self.combinators(k, value, location, report, depth);
    }

    fn number(&self, k: &Keywords, n: &Number, location: &str, report: &mut Report) {
        let Some(x) = n.as_f64() else { return };
        if let Some(min) = k.minimum
            && x < min
        {
            report.fail(location, format_args!("must be at least {}", Num(min)));
        }
        if let Some(max) = k.maximum
            && x > max
        {
            report.fail(location, format_args!("must be at most {}", Num(max)));
        }
        if let Some(min) = k.exclusive_minimum
            && x <= min
        {
            report.fail(location, format_args!("must be greater than {}", Num(min)));
        }
        if let Some(max) = k.exclusive_maximum
            && x >= max
        {
            report.fail(location, format_args!("must be less than {}", Num(max)));
        }
        if let Some(m) = k.multiple_of
            && !is_multiple(n, m)
        {
            report.fail(location, format_args!("must be a multiple of {}", Num(m)));
        }
        match k.format {
            Some(Format::Int32) if !signed_integer(n, 31) => report.fail(location, "must be a 32-bit integer (int32)"),
            Some(Format::Int64) if !signed_integer(n, 63) => report.fail(location, "must be a 64-bit integer (int64)"),
            _ => {}
        }
    }

    fn string(&self, k: &Keywords, s: &str, location: &str, report: &mut Report) {
        if k.min_length.is_some() || k.max_length.is_some() {
            let length = s.chars().count();
            if let Some(min) = k.min_length
                && length < min
            {
                report.fail(location, format_args!("must be at least {min} characters long"));
            }
            if let Some(max) = k.max_length
                && length > max
            {
                report.fail(location, format_args!("must be at most {max} characters long"));
            }
        }
        if let Some(pattern) = &k.pattern
            && !pattern.is_match(s)
        {
            report.fail(location, format_args!("must match the pattern {:?}", pattern.as_str()));
        }
        let valid = match k.format {
            Some(Format::Date) => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
            Some(Format::DateTime) => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
            Some(Format::Uuid) => s.len() == 36 && uuid::Uuid::try_parse(s).is_ok(),
            _ => true,
        };
        if !valid {
            let name = match k.format {
                Some(Format::Date) => "a date (YYYY-MM-DD)",
                Some(Format::DateTime) => "an RFC 3339 date-time",
                _ => "a UUID",
            };
            report.fail(location, format_args!("must be {name}"));
        }
    }

    fn array(&self, k: &Keywords, items: &[Value], location: &mut String, report: &mut Report, depth: u32) {
        if let Some(min) = k.min_items
            && items.len() < min
        {
            report.fail(location, format_args!("must have at least {min} items"));
        }
        if let Some(max) = k.max_items
            && items.len() > max
        {
            report.fail(location, format_args!("must have at most {max} items"));
        }
        if k.unique_items {
            let mut seen = HashMap::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let mut key = String::new();
                canonical(item, &mut key);
                if let Some(first) = seen.insert(key, i) {
                    report
                        .fail(location, format_args!("must not contain duplicates (items {first} and {i} are equal)"));
                    break;
                }
            }
        }
        for (i, item) in items.iter().enumerate() {
            let schema = k.prefix_items.get(i).copied().or(k.items);
            if let Some(schema) = schema {
                let len = location.len();
                let _ = write!(location, "[{i}]");
                self.node(schema, item, location, report, depth + 1);
                location.truncate(len);
                if report.done() {
                    return;
                }
            }
        }
        if let Some(contains) = k.contains
            && !items.iter().any(|item| self.is_valid_at(contains, item, depth + 1))
        {
            report.fail(location, "must contain at least one matching item");
        }
    }

    fn object(&self, k: &Keywords, map: &Map<String, Value>, location: &mut String, report: &mut Report, depth: u32) {
        for name in &k.required {
            if !map.contains_key(name) {
                let len = location.len();
                push_property(location, name);
                report.fail(location, "is required");
                location.truncate(len);
            }
        }
        for (name, needs) in &k.dependent_required {
            if map.contains_key(name) {
                for needed in needs.iter().filter(|n| !map.contains_key(*n)) {
                    let len = location.len();
                    push_property(location, needed);
                    report.fail(location, format_args!("is required when {name:?} is present"));
                    location.truncate(len);
                }
            }
        }
        if let Some(min) = k.min_properties
            && map.len() < min
        {
            report.fail(location, format_args!("must have at least {min} properties"));
        }
        if let Some(max) = k.max_properties
            && map.len() > max
        {
            report.fail(location, format_args!("must have at most {max} properties"));
        }
        for (name, value) in map {
            if report.done() {
                return;
            }
            let len = location.len();
            push_property(location, name);
            if let Some(names) = k.property_names
                && !self.is_valid_at(names, &Value::String(name.clone()), depth + 1)
            {
                report.fail(location, "is not an allowed property name");
            }
            let mut described = false;
            if let Some(&schema) = k.properties.get(name) {
                described = true;
                self.node(schema, value, location, report, depth + 1);
            }
            for (pattern, schema) in &k.pattern_properties {
                if pattern.is_match(name) {
                    described = true;
                    self.node(*schema, value, location, report, depth + 1);
                }
            }
            if !described && let Some(additional) = k.additional_properties {
                if additional == NEVER {
                    report.fail(location, "is not a known property");
                } else {
                    self.node(additional, value, location, report, depth + 1);
                }
            }
            location.truncate(len);
        }
    }

    fn combinators(&self, k: &Keywords, value: &Value, location: &mut String, report: &mut Report, depth: u32) {
        for &sub in &k.all_of {
            self.node(sub, value, location, report, depth + 1);
        }
        if !k.any_of.is_empty() && !k.any_of.iter().any(|&sub| self.is_valid_at(sub, value, depth + 1)) {
            self.explain(&k.any_of, "must match at least one of the schemas in anyOf", value, location, report, depth);
        }
        if !k.one_of.is_empty() {
            let matching: Vec<usize> =
                (0..k.one_of.len()).filter(|&i| self.is_valid_at(k.one_of[i], value, depth + 1)).take(2).collect();
            match matching[..] {
                [_] => {}
                [] => self.explain(
                    &k.one_of,
                    "must match exactly one of the schemas in oneOf",
                    value,
                    location,
                    report,
                    depth,
                ),
                [a, b, ..] => report.fail(
                    location,
                    format_args!("must match exactly one of the schemas in oneOf, but matches {a} and {b}"),
                ),
            }
        }
        if let Some(not) = k.not
            && self.is_valid_at(not, value, depth + 1)
        {
            report.fail(location, "must not match the schema in not");
        }
        if let Some((condition, then, otherwise)) = k.conditional {
            let branch = if self.is_valid_at(condition, value, depth + 1) { then } else { otherwise };
            if let Some(branch) = branch {
                self.node(branch, value, location, report, depth + 1);
            }
        }
    }

    /// Reports a failed `anyOf`/`oneOf`. When only one alternative is of the value's
    /// type (a string or an object of some shape, say), its own failures are the
    /// useful ones.
    fn explain(
        &self,
        alternatives: &[NodeId],
        summary: &str,
        value: &Value,
        location: &mut String,
        report: &mut Report,
        depth: u32,
    ) {
        let mut typed = alternatives.iter().filter(|&&sub| {
            let types = self.types_of(sub);
            types.is_empty() || types.admits(value)
        });
        match (typed.next(), typed.next()) {
            (Some(&only), None) => self.node(only, value, location, report, depth + 1),
            _ => report.fail(location, summary),
        }
    }

    fn is_valid_at(&self, id: NodeId, value: &Value, depth: u32) -> bool {
        let mut probe = Report::probe();
        self.node(id, value, &mut String::new(), &mut probe, depth);
        !probe.failed
    }
}

/// Appends `.name`, or `["name"]` when the name would be ambiguous in a dotted path.
fn push_property(location: &mut String, name: &str) {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'$' | b'@')) {
        location.push('.');
        location.push_str(name);
    } else {
        let _ = write!(location, "[{}]", Value::String(name.to_owned()));
    }
}

fn is_integer(n: &Number) -> bool {
    n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|x| x.fract() == 0.0)
}

/// Whether `n` is an integer that fits a signed integer of `bits` value bits (31
/// for int32); integral floats such as `5.0` count.
fn signed_integer(n: &Number, bits: u32) -> bool {
    let bound = 1i128 << bits;
    match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => (-bound..bound).contains(&i128::from(i)),
        (None, Some(x)) if n.is_f64() => {
            #[allow(clippy::cast_precision_loss)]
            let bound = bound as f64;
            x.fract() == 0.0 && x >= -bound && x < bound
        }
        _ => false,
    }
}

fn is_multiple(n: &Number, m: f64) -> bool {
    if let (Some(i), true) = (n.as_i64(), m.fract() == 0.0 && m.abs() < 9.0e15) {
        #[allow(clippy::cast_possible_truncation)]
        return i % (m as i64) == 0;
    }
    let Some(x) = n.as_f64() else { return true };
    let q = x / m;
    // Tolerates the rounding of decimal fractions: 0.3 is a multiple of 0.1.
    (q - q.round()).abs() <= 1e-9 * q.abs().max(1.0)
}

/// JSON Schema equality: numbers by value (`1` equals `1.0`), objects regardless of
/// key order.
pub fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
            (Some(x), Some(y), _, _) => x == y,
            (_, _, Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

/// A text form that is the same exactly for [`equal`] values (sorted keys, integral
/// numbers without a fraction), for finding duplicates with a hash set.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(x) if !n.is_i64() && !n.is_u64() && x.fract() == 0.0 && x.abs() < 9.0e15 => {
                #[allow(clippy::cast_possible_truncation)]
                let _ = write!(out, "{}", x as i64);
            }
            _ => {
                let _ = write!(out, "{n}");
            }
        },
        Value::Array(items) => {
            out.push('[');
            for item in items {
                canonical(item, out);
                out.push(',');
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for key in keys {
                let _ = write!(out, "{}:", Value::String(key.clone()));
                canonical(&map[key], out);
                out.push(',');
            }
            out.push('}');
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// A number as written in messages: integral ones without `.0`.
struct Num(f64);

impl Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.fract() == 0.0 && self.0.abs() < 9.0e15 {
            #[allow(clippy::cast_possible_truncation)]
            let whole = self.0 as i64;
            write!(f, "{whole}")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// Up to ten values, JSON-formatted: `["a", "b"]`.
struct Listed<'a>(&'a [Value]);

impl Display for Listed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, v) in self.0.iter().take(10).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{v}")?;
        }
        if self.0.len() > 10 {
            write!(f, ", … ({} more)", self.0.len() - 10)?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Compiles `schema` inside a document whose `components.schemas` are `components`.
    fn compile_in(openapi: &str, components: Value, schema: Value) -> (Schemas, NodeId) {
        let document = json!({"openapi": openapi, "components": {"schemas": components}, "x-schema": schema});
        let mut compiler = Compiler::new(&document);
        let id = compiler.schema(&document["x-schema"]);
        let (schemas, problems) = compiler.finish();
        assert!(problems.is_empty(), "{problems:?}");
        (schemas, id)
    }

    fn compile(schema: Value) -> (Schemas, NodeId) {
        compile_in("3.1.0", json!({}), schema)
    }

    /// The violations of `value`, as `location: reason` lines.
    fn violations(schemas: &Schemas, id: NodeId, value: Value) -> Vec<String> {
        let mut report = Report::new(20);
        schemas.check(id, &value, &mut "body".to_owned(), &mut report);
        assert_eq!(report.failed(), !report.violations.is_empty());
        report.violations.iter().map(ToString::to_string).collect()
    }

    fn errors(schema: Value, value: Value) -> Vec<String> {
        let (schemas, id) = compile(schema);
        violations(&schemas, id, value)
    }

    #[test]
    fn types_accept_their_values_and_name_the_expected_type() {
        assert!(errors(json!({"type": "integer"}), json!(3)).is_empty());
        assert!(errors(json!({"type": "integer"}), json!(3.0)).is_empty(), "3.0 is an integer");
        assert_eq!(errors(json!({"type": "integer"}), json!(3.5)), ["body: must be an integer"]);
        assert!(errors(json!({"type": "number"}), json!(3)).is_empty());
        assert_eq!(errors(json!({"type": "string"}), json!(3)), ["body: must be a string"]);
        assert_eq!(errors(json!({"type": "boolean"}), json!("true")), ["body: must be a boolean"]);
        assert_eq!(errors(json!({"type": "object"}), json!([])), ["body: must be an object"]);
        assert_eq!(errors(json!({"type": "array"}), json!({})), ["body: must be an array"]);
        assert_eq!(errors(json!({"type": "null"}), json!(0)), ["body: must be null"]);
        assert_eq!(
            errors(json!({"type": ["string", "integer", "null"]}), json!(true)),
            ["body: must be an integer, a string or null"]
        );
        assert!(errors(json!({"type": ["string", "null"]}), json!(null)).is_empty());
        assert!(errors(json!({}), json!({"anything": [1]})).is_empty());
        assert!(errors(json!(true), json!(1)).is_empty());
        assert_eq!(errors(json!(false), json!(1)), ["body: is not allowed here"]);
    }

    #[test]
    fn openapi_30_nullable_and_boolean_exclusive_bounds() {
        let (s, id) = compile_in("3.0.3", json!({}), json!({"type": "integer", "nullable": true}));
        assert!(violations(&s, id, json!(null)).is_empty());
        assert_eq!(violations(&s, id, json!("x")), ["body: must be an integer"]);
        let (s, id) = compile_in("3.0.3", json!({}), json!({"type": "string"}));
        assert_eq!(violations(&s, id, json!(null)), ["body: must be a string"], "not nullable by default");
        let (s, id) = compile_in("3.0.3", json!({}), json!({"minimum": 1, "exclusiveMinimum": true, "maximum": 5}));
        assert_eq!(violations(&s, id, json!(1)), ["body: must be greater than 1"]);
        assert!(violations(&s, id, json!(5)).is_empty());
        let (s, id) = compile_in("3.0.3", json!({}), json!({"maximum": 5, "exclusiveMaximum": true}));
        assert_eq!(violations(&s, id, json!(5)), ["body: must be less than 5"]);
    }

    #[test]
    fn numeric_bounds_multiples_and_integer_formats() {
        let schema = json!({"minimum": 1, "maximum": 10.5, "exclusiveMaximum": 10});
        assert_eq!(errors(schema.clone(), json!(0)), ["body: must be at least 1"]);
        assert_eq!(errors(schema.clone(), json!(10)), ["body: must be less than 10"]);
        assert_eq!(errors(schema, json!(11)), ["body: must be at most 10.5", "body: must be less than 10"]);
        assert_eq!(errors(json!({"exclusiveMinimum": 0}), json!(0)), ["body: must be greater than 0"]);
        assert!(errors(json!({"multipleOf": 0.1}), json!(0.3)).is_empty());
        assert!(errors(json!({"multipleOf": 5}), json!(25)).is_empty());
        assert_eq!(errors(json!({"multipleOf": 5}), json!(26)), ["body: must be a multiple of 5"]);
        let int32 = json!({"type": "integer", "format": "int32"});
        assert!(errors(int32.clone(), json!(2_147_483_647)).is_empty());
        assert!(errors(int32.clone(), json!(-2_147_483_648i64)).is_empty());
        assert_eq!(errors(int32, json!(2_147_483_648i64)), ["body: must be a 32-bit integer (int32)"]);
        let int64 = json!({"type": "integer", "format": "int64"});
        assert!(errors(int64.clone(), json!(i64::MIN)).is_empty());
        assert_eq!(errors(int64, json!(u64::MAX)), ["body: must be a 64-bit integer (int64)"]);
        assert!(errors(json!({"format": "int32"}), json!(7.0)).is_empty(), "an integral float is an integer");
        assert_eq!(errors(json!({"format": "int64"}), json!(0.5)), ["body: must be a 64-bit integer (int64)"]);
        assert_eq!(errors(json!({"format": "int64"}), json!(1e19)), ["body: must be a 64-bit integer (int64)"]);
        assert!(errors(json!({"format": "float"}), json!(1.5)).is_empty(), "other formats pass");
    }

    #[test]
    fn string_lengths_count_characters_and_patterns_search() {
        let schema = json!({"minLength": 2, "maxLength": 3});
        assert!(errors(schema.clone(), json!("été")).is_empty(), "3 characters, 5 bytes");
        assert_eq!(errors(schema.clone(), json!("a")), ["body: must be at least 2 characters long"]);
        assert_eq!(errors(schema, json!("abcd")), ["body: must be at most 3 characters long"]);
        assert!(errors(json!({"pattern": "[0-9]+"}), json!("ab12")).is_empty(), "patterns are not anchored");
        assert_eq!(errors(json!({"pattern": "^[a-z]+$"}), json!("ab1")), ["body: must match the pattern \"^[a-z]+$\""]);
        assert!(errors(json!({"pattern": "^a"}), json!(5)).is_empty(), "string keywords ignore other types");
    }

    #[test]
    fn string_formats_that_are_checked() {
        assert!(errors(json!({"format": "date"}), json!("2024-02-29")).is_empty());
        assert_eq!(errors(json!({"format": "date"}), json!("2023-02-29")), ["body: must be a date (YYYY-MM-DD)"]);
        assert!(errors(json!({"format": "date-time"}), json!("2024-01-02T03:04:05.6+01:00")).is_empty());
        assert_eq!(
            errors(json!({"format": "date-time"}), json!("2024-01-02 03:04")),
            ["body: must be an RFC 3339 date-time"]
        );
        assert!(errors(json!({"format": "uuid"}), json!("0191c4a2-8a36-7cc2-9b1e-5f2f7f6e7a10")).is_empty());
        assert_eq!(
            errors(json!({"format": "uuid"}), json!("0191c4a28a367cc29b1e5f2f7f6e7a10")),
            ["body: must be a UUID"]
        );
        assert!(errors(json!({"format": "email"}), json!("not an email")).is_empty(), "unknown formats pass");
    }

    #[test]
    fn enum_and_const_compare_numbers_by_value() {
        let schema = json!({"enum": ["available", "pending", 1]});
        assert!(errors(schema.clone(), json!(1.0)).is_empty());
        assert_eq!(errors(schema, json!("sold")), ["body: must be one of [\"available\", \"pending\", 1]"]);
        assert!(errors(json!({"const": {"a": [1, 2]}}), json!({"a": [1.0, 2]})).is_empty());
        assert_eq!(errors(json!({"const": "x"}), json!("y")), ["body: must be \"x\""]);
    }

    #[test]
    fn arrays_check_counts_uniqueness_items_and_tuples() {
        let schema = json!({"minItems": 1, "maxItems": 3, "uniqueItems": true, "items": {"type": "integer"}});
        assert_eq!(errors(schema.clone(), json!([])), ["body: must have at least 1 items"]);
        assert_eq!(errors(schema.clone(), json!([1, 2, 3, 4])), ["body: must have at most 3 items"]);
        assert_eq!(
            errors(schema.clone(), json!([1, 2, 1.0])),
            ["body: must not contain duplicates (items 0 and 2 are equal)"]
        );
        assert_eq!(
            errors(schema, json!([1, "x", 2.5])),
            ["body[1]: must be an integer", "body[2]: must be an integer"]
        );
        assert!(errors(json!({"uniqueItems": true}), json!([{"a": 1, "b": 2}, {"b": 2, "a": 3}])).is_empty());
        assert_eq!(
            errors(json!({"uniqueItems": true}), json!([{"a": 1, "b": 2}, {"b": 2, "a": 1}])),
            ["body: must not contain duplicates (items 0 and 1 are equal)"]
        );
        let tuple = json!({"prefixItems": [{"type": "string"}, {"type": "integer"}], "items": false});
        assert!(errors(tuple.clone(), json!(["a", 1])).is_empty());
        assert_eq!(errors(tuple, json!([1, 1, 1])), ["body[0]: must be a string", "body[2]: is not allowed here"]);
        assert_eq!(
            errors(json!({"contains": {"const": 2}}), json!([1, 3])),
            ["body: must contain at least one matching item"]
        );
    }

    #[test]
    fn objects_check_required_properties_and_additional_ones() {
        let schema = json!({
            "type": "object",
            "required": ["name", "id"],
            "properties": {
                "id": {"type": "integer", "readOnly": true},
                "name": {"type": "string"},
                "items": {"type": "array", "items": {"type": "object", "required": ["name"],
                          "properties": {"name": {"type": "string"}}}},
            },
            "patternProperties": {"^x-": {"type": "string"}},
            "additionalProperties": false,
        });
        assert!(errors(schema.clone(), json!({"name": "rex", "x-note": "hi"})).is_empty(), "id is read-only");
        assert_eq!(
            errors(schema.clone(), json!({"items": [{"name": "a"}, {"name": "b"}, {"nom": "c"}]})),
            ["body.name: is required", "body.items[2].name: is required"]
        );
        assert_eq!(
            errors(schema.clone(), json!({"name": "rex", "x-note": 1, "color": "red", "a.b": 1})),
            [
                "body.x-note: must be a string",
                "body.color: is not a known property",
                "body[\"a.b\"]: is not a known property"
            ]
        );
        let open = json!({"additionalProperties": {"type": "integer"}, "minProperties": 1, "maxProperties": 2});
        assert!(errors(open.clone(), json!({"a": 1})).is_empty());
        assert_eq!(errors(open.clone(), json!({})), ["body: must have at least 1 properties"]);
        assert_eq!(errors(open, json!({"a": "1"})), ["body.a: must be an integer"]);
        assert_eq!(
            errors(json!({"dependentRequired": {"card": ["cvv"]}}), json!({"card": "4111"})),
            ["body.cvv: is required when \"card\" is present"]
        );
        assert_eq!(
            errors(json!({"propertyNames": {"maxLength": 2}}), json!({"abc": 1})),
            ["body.abc: is not an allowed property name"]
        );
    }

    #[test]
    fn combinators() {
        let all = json!({"allOf": [{"required": ["a"]}, {"required": ["b"]}]});
        assert_eq!(errors(all, json!({})), ["body.a: is required", "body.b: is required"]);
        let any = json!({"anyOf": [{"type": "string"}, {"type": "integer"}]});
        assert!(errors(any.clone(), json!(1)).is_empty());
        assert_eq!(errors(any, json!(true)), ["body: must match at least one of the schemas in anyOf"]);
        let one = json!({"oneOf": [{"type": "integer"}, {"minimum": 2}]});
        assert!(errors(one.clone(), json!(1)).is_empty());
        assert_eq!(
            errors(one, json!(3)),
            ["body: must match exactly one of the schemas in oneOf, but matches 0 and 1"]
        );
        // Only the object alternative can take an object: its failures are the useful ones.
        let shapes = json!({"oneOf": [{"type": "string"}, {"type": "object", "required": ["kind"]}]});
        assert_eq!(errors(shapes, json!({})), ["body.kind: is required"]);
        assert_eq!(errors(json!({"not": {"type": "null"}}), json!(null)), ["body: must not match the schema in not"]);
        let conditional = json!({"if": {"properties": {"kind": {"const": "dog"}}}, "then": {"required": ["bark"]},
                                 "else": {"required": ["meow"]}});
        assert_eq!(errors(conditional.clone(), json!({"kind": "dog"})), ["body.bark: is required"]);
        assert_eq!(errors(conditional, json!({"kind": "cat"})), ["body.meow: is required"]);
    }

    #[test]
    fn references_resolve_within_the_document_and_may_recurse() {
        let components = json!({
            "Pet": {"allOf": [{"$ref": "#/components/schemas/NewPet"},
                              {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}]},
            "NewPet": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
            "Tree": {"type": "object", "properties": {"children": {"type": "array",
                                                                 "items": {"$ref": "#/components/schemas/Tree"}},
                                                    "leaf": {"type": "boolean"}}},
            "Loop": {"$ref": "#/components/schemas/Loop"},
        });
        let (s, id) = compile_in("3.0.0", components.clone(), json!({"$ref": "#/components/schemas/Pet"}));
        assert_eq!(violations(&s, id, json!({"id": "x"})), ["body.name: is required", "body.id: must be an integer"]);
        let (s, id) = compile_in("3.0.0", components.clone(), json!({"$ref": "#/components/schemas/Tree"}));
        let tree = json!({"children": [{"children": [{"leaf": true}, {"leaf": "no"}]}]});
        assert_eq!(violations(&s, id, tree), ["body.children[0].children[1].leaf: must be a boolean"]);
        let (s, id) = compile_in("3.0.0", components.clone(), json!({"$ref": "#/components/schemas/Loop"}));
        assert!(violations(&s, id, json!(1)).is_empty(), "a reference cycle gives up instead of overflowing");
        // 3.0 ignores the siblings of `$ref`; 3.1 applies them.
        let sibling = json!({"$ref": "#/components/schemas/NewPet", "maxProperties": 1});
        let (s, id) = compile_in("3.0.0", components.clone(), sibling.clone());
        assert!(violations(&s, id, json!({"name": "a", "tag": "b"})).is_empty());
        let (s, id) = compile_in("3.1.0", components, sibling);
        assert_eq!(violations(&s, id, json!({"name": "a", "tag": "b"})), ["body: must have at most 1 properties"]);
    }

    #[test]
    fn what_cannot_be_compiled_is_reported_and_not_checked() {
        let document = json!({"openapi": "3.1.0", "x": {"pattern": "(?=a)b", "properties": {
            "p": {"$ref": "other.yaml#/Pet"}, "q": {"$ref": "#/components/schemas/Missing"}}}});
        let mut compiler = Compiler::new(&document);
        let id = compiler.schema(&document["x"]);
        let (schemas, problems) = compiler.finish();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(schemas.is_valid(id, &json!({"p": 1, "q": 2})));
        assert!(schemas.is_valid(id, &json!("c")));
    }

    #[test]
    fn reports_stop_at_their_limit_and_probes_at_the_first_failure() {
        let (s, id) = compile(json!({"items": {"type": "string"}}));
        let mut report = Report::new(2);
        s.check(id, &json!([1, 2, 3, 4]), &mut "body".to_owned(), &mut report);
        assert_eq!(report.violations.len(), 2);
        assert!(!s.is_valid(id, &json!([1])));
        assert!(s.is_valid(id, &json!(["1"])));
    }

    #[test]
    fn declared_types_follow_references_and_all_of() {
        let components = json!({"Id": {"type": "integer"}, "Tags": {"type": "array", "items": {"type": "string"}}});
        let (s, id) = compile_in("3.0.0", components.clone(), json!({"$ref": "#/components/schemas/Id"}));
        assert_eq!(s.types_of(id), Types::INTEGER);
        let (s, id) = compile_in("3.0.0", components.clone(), json!({"allOf": [{"$ref": "#/components/schemas/Id"}]}));
        assert_eq!(s.types_of(id), Types::INTEGER);
        let (s, id) = compile_in("3.0.0", components, json!({"$ref": "#/components/schemas/Tags"}));
        assert_eq!(s.types_of(s.items_of(id).unwrap()), Types::STRING);
        let (s, id) = compile(json!({"type": "string", "nullable": true}));
        assert!(s.types_of(id).contains(Types::NULL));
    }
}
