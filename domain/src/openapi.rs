//! OpenAPI import: turns an OpenAPI 3.0 or 3.1 document (JSON or YAML) into the
//! routes of an API version, keeping the document itself for the portal.
//!
//! The document goes through three stages, each with errors that say where:
//! 1. syntax — JSON or YAML into a generic value (errors carry line and column);
//! 2. structure — the value into `oas3`'s typed model (errors carry a path such as
//!    `paths./pets.get.responses`);
//! 3. routes — every operation becomes a route, checked by [`crate::validate`].

use std::collections::HashSet;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::RouteSpec;
use crate::validate;

/// The notation a document was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DocFormat {
    Json,
    Yaml,
}

impl DocFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DocFormat::Json => "json",
            DocFormat::Yaml => "yaml",
        }
    }

    /// JSON documents are objects, so they start with `{`; anything else is taken as
    /// YAML (of which JSON is nearly a subset, but JSON's own parser gives better errors).
    pub fn detect(text: &str) -> DocFormat {
        if text.trim_start_matches('\u{feff}').trim_start().starts_with('{') {
            DocFormat::Json
        } else {
            DocFormat::Yaml
        }
    }
}

/// A successfully imported document.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedDocument {
    pub format: DocFormat,
    /// The document's `openapi` field as written, e.g. `3.0.3`.
    pub openapi_version: String,
    pub title: String,
    /// `info.version`: the document's own version, unrelated to our version labels.
    pub doc_version: String,
    pub description: Option<String>,
    /// One route per operation, in document order.
    pub routes: Vec<RouteSpec>,
    /// The document as given (not normalized), for storage and the portal.
    pub document: Value,
}

/// Why a document was refused. `location` is `line L, column C` for syntax errors,
/// or a dotted path into the document (`paths./pets/{id}`) for everything else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[error("{}{message}", location.as_deref().map(|l| format!("{l}: ")).unwrap_or_default())]
pub struct ImportError {
    pub location: Option<String>,
    /// 1-based line of a syntax error.
    pub line: Option<usize>,
    /// 1-based column of a syntax error.
    pub column: Option<usize>,
    pub message: String,
}

impl ImportError {
    fn at(location: impl Into<String>, message: impl Into<String>) -> Self {
        ImportError { location: Some(location.into()), line: None, column: None, message: message.into() }
    }

    fn nowhere(message: impl Into<String>) -> Self {
        ImportError { location: None, line: None, column: None, message: message.into() }
    }

    fn syntax(line: Option<usize>, column: Option<usize>, message: String) -> Self {
        let location = match (line, column) {
            (Some(l), Some(c)) => Some(format!("line {l}, column {c}")),
            (Some(l), None) => Some(format!("line {l}")),
            _ => None,
        };
        ImportError { location, line, column, message }
    }
}

/// Most request header names [`request_header_names`] returns.
pub const MAX_REQUEST_HEADERS: usize = 32;

/// The request headers a document's operations take, lower-cased, sorted and without
/// repeats: header parameters (of paths and operations, `$ref`s to
/// `components/parameters` followed) and API keys sent in a header (security schemes of
/// type `apiKey`, `in: header`). The interactive docs send these, so the gateway allows
/// them in CORS preflights from the portal. Names that are no valid header name are
/// left out, and at most [`MAX_REQUEST_HEADERS`] are kept.
pub fn request_header_names(document: &Value) -> Vec<String> {
    let components = document.get("components");
    let resolve = |parameter: &'_ Value| -> Option<Value> {
        match parameter.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let name = reference.strip_prefix("#/components/parameters/")?;
                components?.get("parameters")?.get(name).cloned()
            }
            None => Some(parameter.clone()),
        }
    };
    let mut names = std::collections::BTreeSet::new();
    let mut take = |name: Option<&str>| {
        if let Some(name) = name.filter(|n| validate::header_name("name", n).is_ok()) {
            names.insert(name.to_ascii_lowercase());
        }
    };
    let paths = document.get("paths").and_then(Value::as_object);
    for item in paths.into_iter().flat_map(|p| p.values()) {
        let operations = item.as_object().into_iter().flat_map(|o| o.values());
        let lists = std::iter::once(item).chain(operations).filter_map(|o| o.get("parameters")?.as_array());
        for parameter in lists.flatten().filter_map(resolve) {
            if parameter.get("in").and_then(Value::as_str) == Some("header") {
                take(parameter.get("name").and_then(Value::as_str));
            }
        }
    }
    let schemes = components.and_then(|c| c.get("securitySchemes")).and_then(Value::as_object);
    for scheme in schemes.into_iter().flat_map(|s| s.values()) {
        let field = |key: &str| scheme.get(key).and_then(Value::as_str);
        if field("type") == Some("apiKey") && field("in") == Some("header") {
            take(field("name"));
        }
    }
    names.into_iter().take(MAX_REQUEST_HEADERS).collect()
}

/// Imports an OpenAPI 3.0.x or 3.1.x document.
pub fn import(text: &str) -> Result<ImportedDocument, ImportError> {
    let format = DocFormat::detect(text);
    let document = parse_syntax(text, format)?;
    let openapi_version = check_version(&document)?;

    let mut typed = document.clone();
    if openapi_version.starts_with("3.0.") {
        normalize_30(&mut typed, false);
    }
    let spec: oas3::Spec = serde_path_to_error::deserialize(typed).map_err(|e| {
        let path = e.path().to_string();
        let location = (path != ".").then_some(path);
        ImportError { location, line: None, column: None, message: e.into_inner().to_string() }
    })?;

    let routes = routes(&spec)?;
    Ok(ImportedDocument {
        format,
        openapi_version,
        title: spec.info.title,
        doc_version: spec.info.version,
        description: spec.info.description,
        routes,
        document,
    })
}

fn parse_syntax(text: &str, format: DocFormat) -> Result<Value, ImportError> {
    if text.trim().is_empty() {
        return Err(ImportError::nowhere("the document is empty"));
    }
    let StrictValue(value) = match format {
        DocFormat::Json => serde_json::from_str(text)
            .map_err(|e| ImportError::syntax(Some(e.line()), Some(e.column()), format!("invalid JSON: {e}")))?,
        DocFormat::Yaml => yaml_serde::from_str(text).map_err(|e| {
            let loc = e.location();
            let mut at = loc.as_ref().map(|l| (l.line(), l.column()));
            // The YAML parser places errors raised while building a mapping at the
            // mapping's start; a duplicate key is worth pointing at exactly.
            if let Some((line, _)) = at
                && let Some(key) = duplicate_key_of(&e.to_string())
                && let Some(exact) = yaml_duplicate_position(text, line, &key)
            {
                at = Some(exact);
            }
            ImportError::syntax(at.map(|a| a.0), at.map(|a| a.1), format!("invalid YAML: {e}"))
        })?,
    };
    if !value.is_object() {
        return Err(ImportError::nowhere("the document must be an object with `openapi`, `info` and `paths`"));
    }
    Ok(value)
}

/// The key named by a [`StrictVisitor`] duplicate-key error message.
fn duplicate_key_of(message: &str) -> Option<String> {
    let rest = &message[message.find("duplicate key \"")? + "duplicate key \"".len()..];
    let mut key = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(key),
            '\\' => key.push(chars.next()?),
            c => key.push(c),
        }
    }
    None
}

/// 1-based line and column of the second block-mapping entry `key:` at the same
/// indentation, searching from `from_line` (the start of the mapping). `None` when the
/// layout is not plain block style, in which case the mapping's position is kept.
fn yaml_duplicate_position(text: &str, from_line: usize, key: &str) -> Option<(usize, usize)> {
    let spellings = [format!("{key}:"), format!("\"{key}\":"), format!("'{key}':")];
    let mut first_indent = None;
    for (i, line) in text.lines().enumerate().skip(from_line.saturating_sub(1)) {
        let content = line.trim_start();
        let indent = line.len() - content.len();
        if !spellings.iter().any(|s| content.starts_with(s.as_str())) {
            continue;
        }
        match first_indent {
            None => first_indent = Some(indent),
            Some(first) if first == indent => return Some((i + 1, indent + 1)),
            Some(_) => {}
        }
    }
    None
}

/// A JSON value that refuses duplicate object keys. Both serde_json and YAML parsers
/// otherwise keep the last of two equal keys silently, and in OpenAPI that means an
/// operation or a whole path quietly disappearing from the import. Because the check
/// runs inside the parser, its error carries the line and column of the duplicate.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{v} cannot be represented in JSON")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        StrictValue::deserialize(d).map(|v| v.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut obj = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if obj.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let StrictValue(v) = map.next_value()?;
            obj.insert(key, v);
        }
        Ok(Value::Object(obj))
    }
}

/// Returns the `openapi` field if it names a version we import.
fn check_version(document: &Value) -> Result<String, ImportError> {
    if document.get("swagger").is_some() {
        return Err(ImportError::at(
            "swagger",
            "Swagger (OpenAPI 2.0) documents are not supported; convert the document to OpenAPI 3 first",
        ));
    }
    let version = match document.get("openapi") {
        None => {
            return Err(ImportError::at("openapi", "missing field `openapi`; expected \"3.0.x\" or \"3.1.x\""));
        }
        Some(Value::String(s)) => s.clone(),
        // An unquoted `openapi: 3.0` in YAML is a number.
        Some(other) => {
            return Err(ImportError::at("openapi", format!("must be a string such as \"3.1.0\", not {other}")));
        }
    };
    let supported = ["3.0.", "3.1."].iter().any(|p| {
        version.strip_prefix(p).is_some_and(|patch| !patch.is_empty() && patch.bytes().all(|b| b.is_ascii_digit()))
    });
    if !supported {
        return Err(ImportError::at(
            "openapi",
            format!("unsupported version {version:?}; expected \"3.0.x\" or \"3.1.x\""),
        ));
    }
    Ok(version)
}

/// Keys whose values are free-form data (examples, defaults, extensions), never
/// schemas, so they must not be rewritten.
fn is_data_key(key: &str) -> bool {
    matches!(key, "example" | "examples" | "default" | "enum" | "const") || key.starts_with("x-")
}

/// Keys whose values map arbitrary names to schemas; a property called `example`
/// is a schema, not example data.
fn is_schema_map_key(key: &str) -> bool {
    matches!(key, "properties" | "patternProperties" | "schemas" | "$defs")
}

/// Rewrites the OpenAPI 3.0 schema keywords that `oas3` (a 3.1 model) cannot read
/// into their 3.1 equivalents. Without this, a 3.0 document using boolean
/// `exclusiveMinimum` fails to deserialize, and `nullable` would be silently lost:
/// - `nullable: true` with `type: T` becomes `type: [T, "null"]`;
/// - `exclusiveMinimum: true` with `minimum: n` becomes `exclusiveMinimum: n`
///   (likewise for maximum); `false` is simply dropped.
///
/// Only the copy handed to `oas3` is rewritten; the stored document stays as given.
fn normalize_30(value: &mut Value, names_map: bool) {
    match value {
        Value::Object(obj) => {
            if !names_map {
                normalize_schema_keywords(obj);
            }
            for (key, child) in obj.iter_mut() {
                if names_map {
                    // Every child is a named schema (or other object), whatever its name.
                    normalize_30(child, false);
                } else if is_schema_map_key(key) && child.is_object() {
                    normalize_30(child, true);
                } else if !is_data_key(key) {
                    normalize_30(child, false);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| normalize_30(v, false)),
        _ => {}
    }
}

fn normalize_schema_keywords(obj: &mut Map<String, Value>) {
    if let Some(Value::Bool(nullable)) = obj.get("nullable").cloned() {
        obj.remove("nullable");
        if nullable && let Some(Value::String(t)) = obj.get("type").cloned() {
            obj.insert("type".into(), Value::Array(vec![Value::String(t), Value::String("null".into())]));
        }
    }
    for (exclusive, bound) in [("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")] {
        if let Some(Value::Bool(on)) = obj.get(exclusive).cloned() {
            obj.remove(exclusive);
            if on && let Some(n) = obj.remove(bound) {
                obj.insert(exclusive.into(), n);
            }
        }
    }
}

/// One route per operation. Path items given by reference are resolved from
/// `components.pathItems`; documents without `paths` (webhook-only 3.1 documents)
/// give no routes.
fn routes(spec: &oas3::Spec) -> Result<Vec<RouteSpec>, ImportError> {
    let Some(paths) = &spec.paths else {
        return Ok(Vec::new());
    };
    let mut routes = Vec::new();
    // Two paths that differ only in template names (`/pets/{id}`, `/pets/{petId}`)
    // are the same route to the gateway; OpenAPI forbids them too.
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for (path, item) in paths {
        let location = format!("paths.{path}");
        validate::route_path("path", path).map_err(|e| ImportError::at(&location, e.message))?;
        let resolved;
        let item = match &item.reference {
            None => item,
            Some(reference) => {
                resolved = resolve_path_item(spec, reference).map_err(|m| ImportError::at(&location, m))?;
                &resolved
            }
        };
        let shape = template_shape(path);
        for (method, op) in item.methods() {
            let method = method.as_str().to_owned();
            let op_location = format!("{location}.{}", method.to_ascii_lowercase());
            if !seen.insert((shape.clone(), method.clone())) {
                return Err(ImportError::at(
                    op_location,
                    "another path differing only in parameter names already defines this operation",
                ));
            }
            let route = RouteSpec {
                name: op.operation_id.clone(),
                methods: vec![method],
                path: path.clone(),
                host: None,
                headers: Default::default(),
            };
            if let Err(errors) = validate::route(&route) {
                let e = &errors[0];
                let field = if e.field == "name" { "operationId" } else { e.field.as_str() };
                return Err(ImportError::at(format!("{op_location}.{field}"), e.message.clone()));
            }
            routes.push(route);
        }
    }
    Ok(routes)
}

fn resolve_path_item(spec: &oas3::Spec, reference: &str) -> Result<oas3::spec::PathItem, String> {
    let unresolvable = || format!("cannot resolve $ref {reference:?}; only #/components/pathItems/<name> is supported");
    let name = reference.strip_prefix("#/components/pathItems/").ok_or_else(unresolvable)?;
    let found = spec.components.as_ref().and_then(|c| c.path_items.get(name)).ok_or_else(unresolvable)?;
    match found {
        oas3::spec::ObjectOrReference::Object(item) if item.reference.is_none() => Ok(item.clone()),
        _ => Err(format!("$ref {reference:?} points at another reference; chains are not supported")),
    }
}

/// The path with every template name erased: `/pets/{id}` → `/pets/{}`.
fn template_shape(path: &str) -> String {
    path.split('/').map(|s| if s.starts_with('{') && s.ends_with('}') { "{}" } else { s }).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;

    #[test]
    fn request_headers_come_from_parameters_and_api_key_schemes() {
        let document = serde_json::json!({
            "openapi": "3.0.3",
            "paths": {
                "/pets": {
                    "parameters": [{"name": "X-Tenant", "in": "header"}, {"name": "limit", "in": "query"}],
                    "get": {"parameters": [
                        {"$ref": "#/components/parameters/Trace"},
                        {"name": "x-tenant", "in": "header"},
                        {"name": "bad header", "in": "header"},
                        {"$ref": "#/components/parameters/Missing"}
                    ]},
                    "summary": "not an operation"
                }
            },
            "components": {
                "parameters": {"Trace": {"name": "X-Trace-Id", "in": "header"}},
                "securitySchemes": {
                    "key": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
                    "query_key": {"type": "apiKey", "in": "query", "name": "api_key"},
                    "bearer": {"type": "http", "scheme": "bearer"}
                }
            }
        });
        assert_eq!(request_header_names(&document), ["x-api-key", "x-tenant", "x-trace-id"]);
        assert!(request_header_names(&serde_json::json!({"openapi": "3.1.0"})).is_empty());
        let many: serde_json::Map<String, Value> = (0..100)
            .map(|i| {
                (
                    format!("/p{i}"),
                    serde_json::json!({"get": {"parameters": [{"name": format!("x-h{i:03}"), "in": "header"}]}}),
                )
            })
            .collect();
        let names = request_header_names(&serde_json::json!({"paths": many}));
        assert_eq!(names.len(), MAX_REQUEST_HEADERS);
    }

    fn fixtures_dir() -> PathBuf {
        turnpike_testkit::fixtures_dir().join("openapi")
    }

    fn fixture(name: &str) -> String {
        let path = fixtures_dir().join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    fn summary(doc: &ImportedDocument) -> Vec<(String, String, Option<String>)> {
        doc.routes.iter().map(|r| (r.methods.join(","), r.path.clone(), r.name.clone())).collect()
    }

    /// Expected (file, title, number of routes). Counted by hand from the files:
    /// one route per operation under `paths`, webhooks and callbacks excluded.
    const FIXTURES: [(&str, &str, usize); 7] = [
        ("oai-v3.0-api-with-examples.yaml", "Simple API overview", 2),
        ("oai-v3.0-callback-example.yaml", "Callback Example", 1),
        ("oai-v3.0-link-example.yaml", "Link Example", 6),
        ("oai-v3.0-petstore-expanded.yaml", "Swagger Petstore", 4),
        ("oai-v3.0-petstore.yaml", "Swagger Petstore", 3),
        ("oai-v3.0-uspto.yaml", "USPTO Data Set API", 3),
        ("oai-v3.1-webhook-example.yaml", "Webhook Example", 1),
    ];

    #[test]
    fn every_fixture_imports_with_the_expected_routes() {
        let mut files: Vec<String> = std::fs::read_dir(fixtures_dir())
            .expect("fixtures directory")
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        let expected: Vec<&str> = FIXTURES.iter().map(|f| f.0).collect();
        assert_eq!(files, expected, "a fixture was added or removed; update FIXTURES");

        for (file, title, count) in FIXTURES {
            let doc = import(&fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(doc.format, DocFormat::Yaml, "{file}");
            assert_eq!(doc.title, title, "{file}");
            assert_eq!(doc.routes.len(), count, "{file}: {:?}", summary(&doc));
            for route in &doc.routes {
                assert_eq!(validate::route(route), Ok(()), "{file}");
            }
        }
    }

    #[test]
    fn petstore_routes_are_one_per_operation_in_document_order() {
        let doc = import(&fixture("oai-v3.0-petstore.yaml")).unwrap();
        assert_eq!(doc.openapi_version, "3.0.0");
        assert_eq!(doc.doc_version, "1.0.0");
        let s = |m: &str, p: &str, n: &str| (m.to_owned(), p.to_owned(), Some(n.to_owned()));
        assert_eq!(
            summary(&doc),
            [s("GET", "/pets", "listPets"), s("POST", "/pets", "createPets"), s("GET", "/pets/{petId}", "showPetById")]
        );
        // The stored document is the original, not the normalized copy.
        assert_eq!(doc.document["info"]["title"], "Swagger Petstore");
    }

    #[test]
    fn link_example_keeps_dotted_segments_and_templates() {
        let doc = import(&fixture("oai-v3.0-link-example.yaml")).unwrap();
        let paths: Vec<&str> = doc.routes.iter().map(|r| r.path.as_str()).collect();
        assert!(paths.contains(&"/2.0/repositories/{username}/{slug}/pullrequests/{pid}/merge"));
        assert_eq!(doc.routes.last().unwrap().methods, ["POST"]);
    }

    #[test]
    fn operations_without_operation_id_have_no_name() {
        let doc = import(&fixture("oai-v3.0-callback-example.yaml")).unwrap();
        assert_eq!(summary(&doc), [("POST".to_owned(), "/streams".to_owned(), None)]);
    }

    #[test]
    fn json_and_yaml_import_to_the_same_result() {
        let yaml = fixture("oai-v3.0-uspto.yaml");
        let from_yaml = import(&yaml).unwrap();
        let json = serde_json::to_string_pretty(&from_yaml.document).unwrap();
        let from_json = import(&format!("\n  {json}")).unwrap();
        assert_eq!(from_json.format, DocFormat::Json);
        assert_eq!(from_json.routes, from_yaml.routes);
        assert_eq!(from_json.document, from_yaml.document);
        assert_eq!(from_json.openapi_version, "3.0.1");
    }

    #[test]
    fn documents_without_paths_import_with_no_routes() {
        let doc = import(
            "openapi: 3.1.0\ninfo: {title: Hooks, version: '1'}\nwebhooks:\n  ping:\n    post:\n      responses: {'200': {description: ok}}\n",
        )
        .unwrap();
        assert!(doc.routes.is_empty());
        assert_eq!(doc.title, "Hooks");
    }

    #[test]
    fn broken_yaml_reports_line_and_column() {
        let text = "openapi: 3.0.0\ninfo:\n  title: x\n  version: '1'\npaths:\n  /a: [unclosed\n";
        let err = import(text).unwrap_err();
        assert!(err.line.is_some_and(|l| l >= 6), "{err:?}");
        assert!(err.column.is_some(), "{err:?}");
        assert!(err.location.as_deref().unwrap().starts_with("line "), "{err:?}");
        assert!(err.message.starts_with("invalid YAML"), "{err}");
    }

    #[test]
    fn broken_json_reports_line_and_column() {
        let err = import("{\n  \"openapi\": \"3.1.0\",\n  \"info\": }\n").unwrap_err();
        assert_eq!((err.line, err.column), (Some(3), Some(11)), "{err:?}");
        assert_eq!(err.location.as_deref(), Some("line 3, column 11"));
    }

    #[test]
    fn broken_structure_reports_a_path() {
        let text = r#"
openapi: 3.0.3
info: {title: t, version: '1'}
paths:
  /pets:
    get:
      responses: "not a map"
"#;
        let err = import(text).unwrap_err();
        assert_eq!(err.location.as_deref(), Some("paths./pets.get.responses"), "{err}");
        assert!(err.line.is_none());

        let err = import("openapi: 3.1.0\ninfo: {version: '1'}\npaths: {}\n").unwrap_err();
        assert_eq!(err.location.as_deref(), Some("info"), "{err}");
        assert!(err.message.contains("title"), "{err}");
    }

    #[test]
    fn version_field_is_required_and_checked() {
        let swagger = r#"{"swagger": "2.0", "info": {"title": "t", "version": "1"}, "paths": {}}"#;
        let err = import(swagger).unwrap_err();
        assert_eq!(err.location.as_deref(), Some("swagger"));
        assert!(err.message.contains("2.0"), "{err}");

        for (text, needle) in [
            ("info: {title: t, version: '1'}\npaths: {}\n", "missing field `openapi`"),
            ("openapi: 3.0\ninfo: {title: t, version: '1'}\n", "must be a string"),
            ("openapi: 2.0.0\ninfo: {title: t, version: '1'}\n", "unsupported version"),
            ("openapi: 3.2.0\ninfo: {title: t, version: '1'}\n", "unsupported version"),
            ("openapi: 3.1.x\ninfo: {title: t, version: '1'}\n", "unsupported version"),
            ("openapi: '3.1.'\ninfo: {title: t, version: '1'}\n", "unsupported version"),
        ] {
            let err = import(text).unwrap_err();
            assert_eq!(err.location.as_deref(), Some("openapi"), "{text}");
            assert!(err.message.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn empty_and_non_object_documents_are_refused() {
        assert_eq!(import("").unwrap_err().message, "the document is empty");
        assert_eq!(import("  \n").unwrap_err().message, "the document is empty");
        assert!(import("- a\n- b\n").unwrap_err().message.contains("must be an object"));
        assert!(import("just text").unwrap_err().message.contains("must be an object"));
    }

    #[test]
    fn invalid_paths_are_reported_with_their_location() {
        let text = "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /ok: {get: {}}\n  /files/{name}.json: {get: {}}\n";
        let err = import(text).unwrap_err();
        assert_eq!(err.location.as_deref(), Some("paths./files/{name}.json"));
        assert_eq!(err.to_string(), format!("paths./files/{{name}}.json: {}", err.message));

        let text = "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  pets: {get: {}}\n";
        assert_eq!(import(text).unwrap_err().location.as_deref(), Some("paths.pets"));
    }

    #[test]
    fn paths_differing_only_in_parameter_names_conflict() {
        let text = "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /pets/{id}: {get: {}}\n  /pets/{petId}: {get: {}, delete: {}}\n";
        let err = import(text).unwrap_err();
        assert_eq!(err.location.as_deref(), Some("paths./pets/{petId}.get"));
    }

    #[test]
    fn overlong_operation_id_is_reported_at_the_operation() {
        let text = format!(
            "openapi: 3.1.0\ninfo: {{title: t, version: '1'}}\npaths:\n  /a: {{get: {{operationId: '{}'}}}}\n",
            "x".repeat(201)
        );
        assert_eq!(import(&text).unwrap_err().location.as_deref(), Some("paths./a.get.operationId"));
    }

    #[test]
    fn path_item_refs_resolve_from_components() {
        let text = r##"
openapi: 3.1.0
info: {title: t, version: '1'}
paths:
  /pets:
    $ref: '#/components/pathItems/Pets'
components:
  pathItems:
    Pets:
      get: {operationId: listPets}
      post: {operationId: addPet}
"##;
        let doc = import(text).unwrap();
        assert_eq!(doc.routes.len(), 2);
        assert_eq!(doc.routes[1].name.as_deref(), Some("addPet"));

        let dangling = text.replace("'#/components/pathItems/Pets'", "'#/components/pathItems/Nope'");
        assert_eq!(import(&dangling).unwrap_err().location.as_deref(), Some("paths./pets"));
    }

    #[test]
    fn openapi_30_only_schema_keywords_are_accepted() {
        let text = r#"
openapi: 3.0.3
info: {title: t, version: '1'}
paths:
  /n:
    get:
      parameters:
        - name: n
          in: query
          schema: {type: integer, minimum: 0, exclusiveMinimum: true, maximum: 10, exclusiveMaximum: false, nullable: true}
      responses:
        '200':
          description: ok
          content:
            application/json:
              schema:
                type: object
                properties:
                  example: {type: string, nullable: true}
                example: {nullable: true, exclusiveMinimum: true}
components:
  schemas:
    Limited: {type: number, maximum: 5, exclusiveMaximum: true}
"#;
        let doc = import(text).unwrap();
        assert_eq!(doc.routes.len(), 1);
        // The stored document is untouched.
        let schema = &doc.document["paths"]["/n"]["get"]["parameters"][0]["schema"];
        assert_eq!(schema["exclusiveMinimum"], json!(true));
        assert_eq!(schema["nullable"], json!(true));
    }

    #[test]
    fn normalization_rewrites_schemas_but_not_example_data() {
        let mut v = json!({
            "components": {"schemas": {
                "A": {"type": "integer", "nullable": true, "minimum": 1, "exclusiveMinimum": true,
                      "maximum": 9, "exclusiveMaximum": false},
                "B": {"type": "object",
                      "properties": {"default": {"type": "string", "nullable": true}},
                      "default": {"nullable": true},
                      "example": {"exclusiveMinimum": true},
                      "x-ext": {"nullable": true}}
            }}
        });
        normalize_30(&mut v, false);
        let a = &v["components"]["schemas"]["A"];
        assert_eq!(a["type"], json!(["integer", "null"]));
        assert_eq!(a.get("nullable"), None);
        assert_eq!(a["exclusiveMinimum"], json!(1));
        assert_eq!(a.get("minimum"), None);
        assert_eq!(a.get("exclusiveMaximum"), None);
        assert_eq!(a["maximum"], json!(9));
        let b = &v["components"]["schemas"]["B"];
        assert_eq!(b["properties"]["default"]["type"], json!(["string", "null"]));
        assert_eq!(b["default"], json!({"nullable": true}));
        assert_eq!(b["example"], json!({"exclusiveMinimum": true}));
        assert_eq!(b["x-ext"], json!({"nullable": true}));
    }

    #[test]
    fn duplicate_keys_are_refused_with_their_line() {
        let yaml = "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /a: {get: {}}\n  /a: {post: {}}\n";
        let err = import(yaml).unwrap_err();
        // yaml_serde points at the mapping holding the duplicate (line 4), JSON at the key.
        assert!(err.line.is_some_and(|l| (4..=5).contains(&l)), "{err:?}");
        assert!(err.message.contains("duplicate key \"/a\""), "{err}");

        let json = "{\"openapi\": \"3.1.0\",\n \"info\": {\"title\": \"t\", \"version\": \"1\", \"title\": \"u\"}}";
        let err = import(json).unwrap_err();
        assert_eq!(err.line, Some(2), "{err:?}");
        assert!(err.message.contains("duplicate key \"title\""), "{err}");
    }

    #[test]
    fn unquoted_yaml_response_codes_work() {
        let text = "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /a:\n    get:\n      responses:\n        200: {description: ok}\n";
        assert_eq!(import(text).unwrap().routes.len(), 1);
    }

    #[test]
    fn error_display_includes_location() {
        let err = ImportError::at("paths./a", "bad");
        assert_eq!(err.to_string(), "paths./a: bad");
        assert_eq!(ImportError::nowhere("bad").to_string(), "bad");
    }

    #[test]
    fn a_duplicate_yaml_key_is_reported_on_its_own_line() {
        let doc = "openapi: 3.0.0\ninfo:\n  title: t\n  version: '1'\npaths:\n  /a:\n    get:\n      responses: {}\n  /b: {}\n  \"/a\":\n    post:\n      responses: {}\n";
        let err = import(doc).unwrap_err();
        assert!(err.message.contains("duplicate key \"/a\""), "{err}");
        assert_eq!((err.line, err.column), (Some(10), Some(3)), "{err}");
    }
}
