//! Compiling schema values of an OpenAPI document into a [`Schemas`] arena: each
//! `$ref` target once (so cycles become plain indices), the 3.0 and 3.1 spellings of
//! the same keyword into one form, and whatever cannot be checked left out with a
//! note for the log.

use std::collections::{HashMap, HashSet};

use regex::Regex;
use serde_json::{Map, Value};

use super::{ANY, Format, Keywords, NEVER, Node, NodeId, Schemas, Types};

/// Compiles the schemas of one document into one arena, each `$ref` target once.
#[derive(Debug)]
pub struct Compiler<'d> {
    document: &'d Value,
    /// 3.1 documents are JSON Schema 2020-12: `$ref` has sibling keywords.
    oas31: bool,
    schemas: Schemas,
    refs: HashMap<String, NodeId>,
    /// What could not be compiled (and so is not checked), for the log.
    pub problems: Vec<String>,
}

impl<'d> Compiler<'d> {
    pub fn new(document: &'d Value) -> Compiler<'d> {
        let oas31 = document.get("openapi").and_then(Value::as_str).is_some_and(|v| v.starts_with("3.1"));
        let schemas = Schemas { nodes: vec![Node::Any, Node::Never] };
        Compiler { document, oas31, schemas, refs: HashMap::new(), problems: Vec::new() }
    }

    pub fn finish(self) -> (Schemas, Vec<String>) {
        (self.schemas, self.problems)
    }

    /// The schemas compiled so far, e.g. to ask a parameter's declared type.
    pub fn schemas(&self) -> &Schemas {
        &self.schemas
    }

    /// Follows `$ref`s of non-schema objects (parameters, request bodies, path
    /// items), which may not have siblings.
    pub fn resolve(&mut self, mut value: &'d Value) -> Option<&'d Value> {
        let mut seen = HashSet::new();
        while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
            if !seen.insert(reference) {
                self.problems.push(format!("$ref cycle at {reference:?}"));
                return None;
            }
            value = self.lookup(reference)?;
        }
        Some(value)
    }

    fn lookup(&mut self, reference: &str) -> Option<&'d Value> {
        let found = reference
            .strip_prefix('#')
            .and_then(percent_decode)
            .and_then(|pointer| if pointer.is_empty() { Some(self.document) } else { self.document.pointer(&pointer) });
        if found.is_none() {
            self.problems.push(format!("cannot resolve $ref {reference:?} (only references within the document are)"));
        }
        found
    }

    /// Compiles a schema value.
    pub fn schema(&mut self, schema: &'d Value) -> NodeId {
        match schema {
            Value::Bool(true) => ANY,
            Value::Bool(false) => NEVER,
            Value::Object(obj) => {
                if let Some(reference) = obj.get("$ref").and_then(Value::as_str)
                    && (!self.oas31 || obj.len() == 1)
                {
                    return self.reference(reference);
                }
                let node = self.keywords(obj);
                self.push(node)
            }
            other => {
                self.problems.push(format!("a schema must be an object or a boolean, not {other}"));
                ANY
            }
        }
    }

    fn push(&mut self, node: Node) -> NodeId {
        self.schemas.nodes.push(node);
        self.schemas.nodes.len() - 1
    }

    fn reference(&mut self, reference: &str) -> NodeId {
        if let Some(&id) = self.refs.get(reference) {
            return id;
        }
        let Some(target) = self.lookup(reference) else { return ANY };
        // Reserved before compiling the target, so that a cycle back here finds it.
        let id = self.push(Node::Any);
        self.refs.insert(reference.to_owned(), id);
        self.schemas.nodes[id] = match target {
            Value::Bool(false) => Node::Never,
            Value::Object(obj) => self.keywords(obj),
            _ => Node::Any,
        };
        id
    }

    fn keywords(&mut self, obj: &'d Map<String, Value>) -> Node {
        let mut k = Keywords::default();
        if let Some(reference) = obj.get("$ref").and_then(Value::as_str) {
            k.reference = Some(self.reference(reference));
            if !self.oas31 {
                return Node::Keywords(Box::new(k));
            }
        }
        k.nullable = obj.get("nullable") == Some(&Value::Bool(true));
        k.types = match obj.get("type") {
            Some(Value::String(name)) => Types::named(name),
            Some(Value::Array(names)) => {
                Some(names.iter().filter_map(Value::as_str).filter_map(Types::named).fold(Types(0), Types::union))
            }
            _ => None,
        }
        .filter(|t| !t.is_empty());
        k.enumeration = obj.get("enum").and_then(Value::as_array).cloned();
        k.constant = obj.get("const").cloned();
        k.multiple_of = obj.get("multipleOf").and_then(Value::as_f64).filter(|m| *m > 0.0);
        k.minimum = obj.get("minimum").and_then(Value::as_f64);
        k.maximum = obj.get("maximum").and_then(Value::as_f64);
        // 3.0: a boolean turning `minimum` exclusive; 3.1: the exclusive bound itself.
        match obj.get("exclusiveMinimum") {
            Some(Value::Bool(true)) => k.exclusive_minimum = k.minimum.take(),
            Some(bound) => k.exclusive_minimum = bound.as_f64(),
            None => {}
        }
        match obj.get("exclusiveMaximum") {
            Some(Value::Bool(true)) => k.exclusive_maximum = k.maximum.take(),
            Some(bound) => k.exclusive_maximum = bound.as_f64(),
            None => {}
        }
        k.format = obj.get("format").and_then(Value::as_str).and_then(Format::named);
        let count = |key: &str| obj.get(key).and_then(Value::as_u64).map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        k.min_length = count("minLength");
        k.max_length = count("maxLength");
        k.min_items = count("minItems");
        k.max_items = count("maxItems");
        k.min_properties = count("minProperties");
        k.max_properties = count("maxProperties");
        k.pattern = obj.get("pattern").and_then(Value::as_str).and_then(|p| self.regex(p));
        match obj.get("items") {
            // Before 2020-12, an array of schemas described a tuple.
            Some(Value::Array(tuple)) => k.prefix_items = tuple.iter().map(|s| self.schema(s)).collect(),
            Some(items) => k.items = Some(self.schema(items)),
            None => {}
        }
        if let Some(Value::Array(prefix)) = obj.get("prefixItems") {
            k.prefix_items = prefix.iter().map(|s| self.schema(s)).collect();
        }
        k.unique_items = obj.get("uniqueItems") == Some(&Value::Bool(true));
        k.contains = obj.get("contains").map(|s| self.schema(s));
        if let Some(Value::Object(properties)) = obj.get("properties") {
            k.properties = properties.iter().map(|(name, s)| (name.clone(), self.schema(s))).collect();
        }
        if let Some(Value::Object(patterns)) = obj.get("patternProperties") {
            for (pattern, s) in patterns {
                if let Some(regex) = self.regex(pattern) {
                    let schema = self.schema(s);
                    k.pattern_properties.push((regex, schema));
                }
            }
        }
        k.additional_properties = obj.get("additionalProperties").map(|s| self.schema(s));
        if let Some(Value::Array(required)) = obj.get("required") {
            let properties = obj.get("properties");
            k.required = required
                .iter()
                .filter_map(Value::as_str)
                // Read-only properties are sent in responses only (OpenAPI 3.0 §4.7.25.1).
                .filter(|name| !self.read_only(properties.and_then(|p| p.get(*name))))
                .map(str::to_owned)
                .collect();
        }
        k.property_names = obj.get("propertyNames").map(|s| self.schema(s));
        if let Some(Value::Object(dependent)) = obj.get("dependentRequired") {
            k.dependent_required = dependent
                .iter()
                .map(|(name, needs)| {
                    let needs = needs.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned);
                    (name.clone(), needs.collect())
                })
                .collect();
        }
        k.all_of = self.list(obj.get("allOf"));
        k.any_of = self.list(obj.get("anyOf"));
        k.one_of = self.list(obj.get("oneOf"));
        k.not = obj.get("not").map(|s| self.schema(s));
        if let Some(condition) = obj.get("if") {
            let condition = self.schema(condition);
            let then = obj.get("then").map(|s| self.schema(s));
            let otherwise = obj.get("else").map(|s| self.schema(s));
            k.conditional = Some((condition, then, otherwise));
        }
        Node::Keywords(Box::new(k))
    }

    fn list(&mut self, schemas: Option<&'d Value>) -> Vec<NodeId> {
        match schemas {
            Some(Value::Array(list)) => list.iter().map(|s| self.schema(s)).collect(),
            _ => Vec::new(),
        }
    }

    fn read_only(&self, property: Option<&'d Value>) -> bool {
        let mut seen = 0;
        let mut property = property;
        while let Some(p) = property {
            if p.get("readOnly") == Some(&Value::Bool(true)) {
                return true;
            }
            let Some(reference) = p.get("$ref").and_then(Value::as_str) else { return false };
            seen += 1;
            if seen > 16 {
                return false;
            }
            property = self.document_lookup(reference);
        }
        false
    }

    /// Like [`Self::lookup`] without recording a problem (the reference is compiled,
    /// and so reported, elsewhere).
    fn document_lookup(&self, reference: &str) -> Option<&'d Value> {
        let pointer = percent_decode(reference.strip_prefix('#')?)?;
        if pointer.is_empty() { Some(self.document) } else { self.document.pointer(&pointer) }
    }

    fn regex(&mut self, pattern: &str) -> Option<Regex> {
        match regex::RegexBuilder::new(pattern).size_limit(1 << 20).build() {
            Ok(regex) => Some(regex),
            Err(e) => {
                self.problems.push(format!("pattern {pattern:?} is not checked: {e}"));
                None
            }
        }
    }
}

/// Decodes `%XX` escapes (as in `$ref` fragments); `None` for a bad escape or bytes
/// that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_of_references() {
        assert_eq!(percent_decode("/paths/~1pets~1%7Bid%7D").as_deref(), Some("/paths/~1pets~1{id}"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%"), None);
    }
}
