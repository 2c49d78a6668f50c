//! Parameters: where each is read from the request (path, query, header, cookie),
//! how its text is split (`style`, `explode`) and turned into the JSON value its
//! schema is checked against. Text becomes a number or boolean only where the
//! schema's type asks for one, so `?limit=abc` against `type: integer` fails as
//! "must be an integer" rather than being guessed at.
//!
//! Supported: scalars; arrays as `form` (exploded: `?id=1&id=2`, or not: `?id=1,2`),
//! `spaceDelimited` and `pipeDelimited` in the query, `simple` (`1,2`) in paths and
//! headers; parameters described by `content` with a JSON media type. Object
//! parameters and the `label`/`matrix` path styles are not checked.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, header::COOKIE};
use serde_json::{Number, Value};

use super::schema::{ANY, Compiler, NodeId, Report, Schemas, Types};

/// Where a parameter is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum In {
    Path,
    Query,
    Header,
    Cookie,
}

impl In {
    pub fn as_str(self) -> &'static str {
        match self {
            In::Path => "path",
            In::Query => "query",
            In::Header => "header",
            In::Cookie => "cookie",
        }
    }
}

/// A compiled parameter.
#[derive(Debug)]
pub struct Param {
    pub name: String,
    pub location: In,
    header: Option<HeaderName>,
    required: bool,
    allow_empty: bool,
    schema: NodeId,
    shape: Shape,
}

/// How the parameter's text becomes a JSON value.
#[derive(Debug)]
enum Shape {
    /// One value, read as the first of these types it parses as.
    Scalar(Types),
    /// Several values: repeated (`split: None`) or in one text joined by `split`.
    Array { split: Option<char>, items: Types },
    /// JSON text (a parameter described by `content`).
    Json,
    /// Not checked (objects, unsupported styles).
    Unchecked,
}

impl Param {
    /// Compiles a parameter object (references already resolved). `Ok(None)` for
    /// parameters OpenAPI says to ignore (`Accept`, `Content-Type` and
    /// `Authorization` headers).
    pub fn compile<'d>(param: &'d Value, compiler: &mut Compiler<'d>) -> Result<Option<Param>, String> {
        let name = param.get("name").and_then(Value::as_str).ok_or("a parameter has no name")?;
        let location = match param.get("in").and_then(Value::as_str) {
            Some("path") => In::Path,
            Some("query") => In::Query,
            Some("header") => In::Header,
            Some("cookie") => In::Cookie,
            other => return Err(format!("parameter {name:?} is in an unknown place: {other:?}")),
        };
        let header = match location {
            In::Header if ["accept", "content-type", "authorization"].contains(&name.to_ascii_lowercase().as_str()) => {
                return Ok(None);
            }
            In::Header => Some(
                HeaderName::try_from(name.to_ascii_lowercase())
                    .map_err(|_| format!("header parameter {name:?} is not a valid header name"))?,
            ),
            _ => None,
        };
        let style = param.get("style").and_then(Value::as_str).unwrap_or(match location {
            In::Query | In::Cookie => "form",
            In::Path | In::Header => "simple",
        });
        let explode = param.get("explode").and_then(Value::as_bool).unwrap_or(style == "form");
        let (schema, shape) = if let Some(schema) = param.get("schema") {
            let id = compiler.schema(schema);
            (id, shape(compiler.schemas(), id, location, style, explode))
        } else {
            let media = param.get("content").and_then(Value::as_object).and_then(|c| c.iter().next());
            match media {
                Some((media_type, media)) if super::is_json(media_type) => {
                    (media.get("schema").map_or(ANY, |s| compiler.schema(s)), Shape::Json)
                }
                _ => (ANY, Shape::Unchecked),
            }
        };
        Ok(Some(Param {
            name: name.to_owned(),
            location,
            header,
            required: location == In::Path || param.get("required") == Some(&Value::Bool(true)),
            allow_empty: param.get("allowEmptyValue") == Some(&Value::Bool(true)),
            schema,
            shape,
        }))
    }

    /// What makes two parameters the same one: an operation's parameter replaces
    /// its path item's parameter of the same name and place.
    pub fn key(&self) -> (In, String) {
        match self.location {
            In::Header => (In::Header, self.name.to_ascii_lowercase()),
            location => (location, self.name.clone()),
        }
    }

    /// Checks the parameter's value(s) in `input`.
    pub fn check(&self, schemas: &Schemas, input: &Input<'_>, report: &mut Report) {
        let values = self.values(input);
        let mut location = format!("{}.{}", self.location.as_str(), self.name);
        let Some(first) = values.first() else {
            // An exploded object in the query has no value under its own name.
            let presence_unknown = matches!(self.shape, Shape::Unchecked) && self.location == In::Query;
            if self.required && !presence_unknown {
                report.fail(&location, "is required");
            }
            return;
        };
        let value = match &self.shape {
            Shape::Unchecked => return,
            Shape::Scalar(types) => {
                // Repeated header fields are one comma-separated value (RFC 9110 §5.3).
                let text = if self.location == In::Header { Cow::Owned(values.join(", ")) } else { first.clone() };
                if text.is_empty() && self.allow_empty {
                    return;
                }
                coerce(&text, *types)
            }
            Shape::Array { split: None, items } => Value::Array(values.iter().map(|v| coerce(v, *items)).collect()),
            Shape::Array { split: Some(separator), items } => {
                // Header arrays may come in several fields; other places use the first value.
                let texts = if self.location == In::Header { &values[..] } else { &values[..1] };
                let parts = texts.iter().filter(|t| !t.is_empty()).flat_map(|t| t.split(*separator));
                let trim = self.location == In::Header;
                Value::Array(parts.map(|p| coerce(if trim { p.trim() } else { p }, *items)).collect())
            }
            Shape::Json => match serde_json::from_str(first) {
                Ok(value) => value,
                Err(_) => return report.fail(&location, "must be JSON"),
            },
        };
        schemas.check(self.schema, &value, &mut location, report);
    }

    fn values<'i>(&self, input: &'i Input<'_>) -> Vec<Cow<'i, str>> {
        match self.location {
            In::Query => {
                input.query.iter().filter(|(k, _)| *k == self.name).map(|(_, v)| Cow::Borrowed(&**v)).collect()
            }
            In::Path => input.path.iter().filter(|(k, _)| *k == self.name).map(|(_, v)| Cow::Borrowed(&**v)).collect(),
            In::Cookie => {
                input.cookies.iter().filter(|(k, _)| *k == self.name).map(|(_, v)| Cow::Borrowed(*v)).collect()
            }
            In::Header => match &self.header {
                Some(name) => {
                    input.headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes())).collect()
                }
                None => Vec::new(),
            },
        }
    }
}

/// The shape of a parameter with a schema.
fn shape(schemas: &Schemas, id: NodeId, location: In, style: &str, explode: bool) -> Shape {
    let types = schemas.types_of(id);
    if types.contains(Types::ARRAY) {
        let split = match (location, style, explode) {
            (In::Query | In::Cookie, "form", true) => None,
            (In::Query | In::Cookie, "form", false) => Some(','),
            (In::Query, "spaceDelimited", false) => Some(' '),
            (In::Query, "pipeDelimited", false) => Some('|'),
            (In::Path | In::Header, "simple", _) => Some(','),
            _ => return Shape::Unchecked,
        };
        let items = schemas.items_of(id).map(|items| schemas.types_of(items)).unwrap_or_default();
        Shape::Array { split, items }
    } else if types.contains(Types::OBJECT) || (location == In::Path && style != "simple") {
        Shape::Unchecked
    } else {
        Shape::Scalar(types)
    }
}

/// Parameter text as the JSON value of the first type in `types` it reads as: an
/// integer, a number, a boolean, else the text itself (which the schema's type
/// check then refuses if it wants something else).
fn coerce(text: &str, types: Types) -> Value {
    if types.contains(Types::INTEGER) || types.contains(Types::NUMBER) {
        if let Ok(i) = text.parse::<i64>() {
            return Value::from(i);
        }
        if let Ok(u) = text.parse::<u64>() {
            return Value::from(u);
        }
        if types.contains(Types::NUMBER)
            && let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64)
        {
            return Value::Number(n);
        }
    }
    if types.contains(Types::BOOLEAN) {
        match text {
            "true" => return Value::Bool(true),
            "false" => return Value::Bool(false),
            _ => {}
        }
    }
    Value::String(text.to_owned())
}

/// A request's parameters, parsed once for all of an operation's checks.
#[derive(Debug)]
pub struct Input<'a> {
    query: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    path: Vec<(&'a str, String)>,
    cookies: Vec<(&'a str, &'a str)>,
    headers: &'a HeaderMap,
}

impl<'a> Input<'a> {
    pub fn new(query: Option<&'a str>, path: Vec<(&'a str, String)>, headers: &'a HeaderMap) -> Input<'a> {
        Input { query: query.map(parse_query).unwrap_or_default(), path, cookies: parse_cookies(headers), headers }
    }
}

/// `a=1&b=x+y&c=%C3%A9` as decoded pairs (`+` is a space, as in HTML forms).
pub fn parse_query(query: &str) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name, true), decode(value, true))
        })
        .collect()
}

/// Every `name=value` of the request's `Cookie` fields.
fn parse_cookies(headers: &HeaderMap) -> Vec<(&str, &str)> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .map(|(name, value)| (name.trim(), value.trim().trim_matches('"')))
        .collect()
}

/// Decodes `%XX` escapes (and `+` as a space when `plus`); a bad escape is kept as
/// written and bytes that are not UTF-8 are replaced, since the schema check is
/// what decides about odd values.
pub fn decode(s: &str, plus: bool) -> Cow<'_, str> {
    if !(s.contains('%') || (plus && s.contains('+'))) {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() && is_hex(bytes[i + 1]) && is_hex(bytes[i + 2]) => {
                out.push(hex(bytes[i + 1]) * 16 + hex(bytes[i + 2]));
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// An OpenAPI path template, for reading path parameters off the path the router
/// matched it to.
#[derive(Debug)]
pub struct Template {
    segments: Vec<Vec<Piece>>,
}

#[derive(Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Param(String),
}

impl Template {
    pub fn parse(template: &str) -> Template {
        let segments = split(template)
            .map(|segment| {
                let mut pieces = Vec::new();
                let mut rest = segment;
                while !rest.is_empty() {
                    match (rest.find('{'), rest.find('}')) {
                        (Some(0), Some(close)) => {
                            pieces.push(Piece::Param(rest[1..close].to_owned()));
                            rest = &rest[close + 1..];
                        }
                        (Some(open), _) if open > 0 => {
                            pieces.push(Piece::Literal(rest[..open].to_owned()));
                            rest = &rest[open..];
                        }
                        _ => {
                            pieces.push(Piece::Literal(rest.to_owned()));
                            rest = "";
                        }
                    }
                }
                pieces
            })
            .collect();
        Template { segments }
    }

    /// The (decoded) values of the template's parameters in `path`, a path the
    /// router matched to the template.
    pub fn capture<'t>(&'t self, path: &str) -> Vec<(&'t str, String)> {
        let mut out = Vec::new();
        for (pieces, segment) in self.segments.iter().zip(split(path)) {
            let mut captured = Vec::new();
            if capture(pieces, segment, &mut captured) {
                out.extend(captured.into_iter().map(|(name, value)| (name, decode(value, false).into_owned())));
            }
        }
        out
    }
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    rest.split('/').filter(move |_| !rest.is_empty())
}

/// Matches one segment like the router does (each parameter takes at least one
/// character, the shortest that lets the rest match), recording the values.
fn capture<'t, 's>(pieces: &'t [Piece], s: &'s str, out: &mut Vec<(&'t str, &'s str)>) -> bool {
    match pieces.split_first() {
        None => s.is_empty(),
        Some((Piece::Literal(literal), rest)) => {
            s.strip_prefix(literal.as_str()).is_some_and(|tail| capture(rest, tail, out))
        }
        Some((Piece::Param(name), rest)) => {
            for end in s.char_indices().skip(1).map(|(i, _)| i).chain([s.len()]) {
                if end == 0 {
                    continue;
                }
                out.push((name, &s[..end]));
                if capture(rest, &s[end..], out) {
                    return true;
                }
                out.pop();
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use serde_json::json;

    use super::*;

    /// Compiles `params` (parameter objects) of a 3.0 document.
    fn compile(params: Value) -> (Schemas, Vec<Param>) {
        let document = json!({"openapi": "3.0.3", "x-params": params});
        let mut compiler = Compiler::new(&document);
        let params: Vec<Param> = document["x-params"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| Param::compile(p, &mut compiler).unwrap())
            .collect();
        let (schemas, problems) = compiler.finish();
        assert!(problems.is_empty(), "{problems:?}");
        (schemas, params)
    }

    fn check(params: &Value, input: &Input<'_>) -> Vec<String> {
        let (schemas, params) = compile(params.clone());
        let mut report = Report::new(10);
        for p in &params {
            p.check(&schemas, input, &mut report);
        }
        report.violations.iter().map(ToString::to_string).collect()
    }

    fn query(q: &str) -> Vec<String> {
        let params = json!([
            {"name": "limit", "in": "query", "schema": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 100}},
            {"name": "tags", "in": "query", "schema": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}}},
            {"name": "ids", "in": "query", "explode": false, "schema": {"type": "array", "maxItems": 2,
                                                                        "items": {"type": "integer"}}},
            {"name": "pipes", "in": "query", "style": "pipeDelimited", "explode": false,
             "schema": {"type": "array", "items": {"type": "boolean"}}},
            {"name": "q", "in": "query", "required": true, "schema": {"type": "string", "minLength": 2, "pattern": "^[a-z ]+$"}},
            {"name": "price", "in": "query", "schema": {"type": "number", "exclusiveMinimum": true, "minimum": 0}},
            {"name": "flag", "in": "query", "allowEmptyValue": true, "schema": {"type": "boolean"}},
            {"name": "filter", "in": "query", "style": "deepObject", "required": true, "schema": {"type": "object"}},
            {"name": "where", "in": "query", "content": {"application/json": {"schema": {"type": "object",
                                                                                      "required": ["x"]}}}},
        ]);
        let headers = HeaderMap::new();
        check(&params, &Input::new(Some(q), Vec::new(), &headers))
    }

    #[test]
    fn query_parameters_are_typed_by_their_schema() {
        assert_eq!(query("q=ab&limit=10&price=0.5&flag=true"), Vec::<String>::new());
        assert_eq!(query("q=a+b+c&flag="), Vec::<String>::new(), "`+` is a space; flag allows an empty value");
        assert_eq!(query("limit=abc"), ["query.limit: must be an integer", "query.q: is required"]);
        assert_eq!(
            query("q=x&limit=0&price=0"),
            [
                "query.limit: must be at least 1",
                "query.q: must be at least 2 characters long",
                "query.price: must be greater than 0"
            ]
        );
        assert_eq!(query("q=ab&limit=101"), ["query.limit: must be at most 100"]);
        assert_eq!(
            query("q=ab&limit=3000000000"),
            ["query.limit: must be at most 100", "query.limit: must be a 32-bit integer (int32)"]
        );
        assert_eq!(query("q=AB"), ["query.q: must match the pattern \"^[a-z ]+$\""]);
        assert_eq!(query("q=ab&price=cheap"), ["query.price: must be a number"]);
        assert_eq!(query("q=ab&flag=yes"), ["query.flag: must be a boolean"]);
        assert_eq!(
            query("q=%C3%A9t%C3%A9"),
            ["query.q: must match the pattern \"^[a-z ]+$\""],
            "decoded before checking"
        );
    }

    #[test]
    fn query_arrays_follow_style_and_explode() {
        assert_eq!(query("q=ab&tags=a&tags=b&ids=1,2&pipes=true|false"), Vec::<String>::new());
        assert_eq!(query("q=ab&tags=a&tags=c"), ["query.tags[1]: must be one of [\"a\", \"b\"]"]);
        assert_eq!(query("q=ab&ids=1,x"), ["query.ids[1]: must be an integer"]);
        assert_eq!(query("q=ab&ids=1,2,3"), ["query.ids: must have at most 2 items"]);
        assert_eq!(query("q=ab&ids="), Vec::<String>::new(), "an empty list");
        assert_eq!(query("q=ab&pipes=true|1"), ["query.pipes[1]: must be a boolean"]);
    }

    #[test]
    fn json_query_parameters_and_unchecked_objects() {
        assert_eq!(query("q=ab&where=%7B%22x%22%3A1%7D"), Vec::<String>::new());
        assert_eq!(query("q=ab&where=%7B%7D"), ["query.where.x: is required"]);
        assert_eq!(query("q=ab&where=nope"), ["query.where: must be JSON"]);
        // A required deepObject (`filter[a]=1`) is not looked for under its own name.
        assert_eq!(query("q=ab&filter[a]=1"), Vec::<String>::new());
    }

    #[test]
    fn header_and_cookie_parameters() {
        let params = json!([
            {"name": "X-Tenant", "in": "header", "required": true, "schema": {"type": "string", "pattern": "^t-[0-9]+$"}},
            {"name": "X-Ids", "in": "header", "schema": {"type": "array", "items": {"type": "integer"}}},
            {"name": "Accept", "in": "header", "required": true, "schema": {"type": "string"}},
            {"name": "session", "in": "cookie", "required": true, "schema": {"type": "string", "format": "uuid"}},
        ]);
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", HeaderValue::from_static("t-1"));
        headers.append("x-ids", HeaderValue::from_static("1, 2"));
        headers.append("x-ids", HeaderValue::from_static("3"));
        headers.insert(COOKIE, HeaderValue::from_static("a=b; session=0191c4a2-8a36-7cc2-9b1e-5f2f7f6e7a10"));
        assert_eq!(check(&params, &Input::new(None, Vec::new(), &headers)), Vec::<String>::new(), "Accept is ignored");
        headers.insert("x-tenant", HeaderValue::from_static("acme"));
        headers.append("x-ids", HeaderValue::from_static("x"));
        headers.insert(COOKIE, HeaderValue::from_static("session=nope"));
        assert_eq!(
            check(&params, &Input::new(None, Vec::new(), &headers)),
            [
                "header.X-Tenant: must match the pattern \"^t-[0-9]+$\"",
                "header.X-Ids[3]: must be an integer",
                "cookie.session: must be a UUID"
            ]
        );
        assert_eq!(
            check(&params, &Input::new(None, Vec::new(), &HeaderMap::new())),
            ["header.X-Tenant: is required", "cookie.session: is required"]
        );
    }

    #[test]
    fn path_parameters_are_captured_from_the_template() {
        let template = Template::parse("/pets/{petId}/files/{name}.{ext}");
        assert_eq!(
            template.capture("/pets/12/files/a.b.json"),
            [("petId", "12".to_owned()), ("name", "a".to_owned()), ("ext", "b.json".to_owned())]
        );
        assert_eq!(Template::parse("/users/{id}").capture("/users/j%C3%B6rg"), [("id", "jörg".to_owned())]);
        assert!(Template::parse("/").capture("/").is_empty());

        let params = json!([{"name": "petId", "in": "path", "required": true,
                             "schema": {"type": "integer", "format": "int64"}}]);
        let headers = HeaderMap::new();
        let template = Template::parse("/pets/{petId}");
        let input = Input::new(None, template.capture("/pets/12"), &headers);
        assert_eq!(check(&params, &input), Vec::<String>::new());
        let input = Input::new(None, template.capture("/pets/twelve"), &headers);
        assert_eq!(check(&params, &input), ["path.petId: must be an integer"]);
    }

    #[test]
    fn decoding_keeps_what_is_not_an_escape() {
        assert_eq!(decode("a%20b+c", true), "a b c");
        assert_eq!(decode("a+b", false), "a+b");
        assert_eq!(decode("100%", true), "100%");
        assert_eq!(decode("%zz%4", true), "%zz%4");
        assert_eq!(decode("%FF", true), "\u{fffd}");
        assert_eq!(
            parse_query("a=1&&b&c=%3D"),
            [("a".into(), "1".into()), ("b".into(), "".into()), ("c".into(), "=".into())]
        );
    }

    #[test]
    fn parameters_without_a_place_or_name_are_refused() {
        let document = json!({"openapi": "3.0.3", "x-params": [
            {"in": "query"},
            {"name": "a", "in": "body"},
            {"name": "bad header", "in": "header"},
        ]});
        let mut compiler = Compiler::new(&document);
        for param in document["x-params"].as_array().unwrap() {
            assert!(Param::compile(param, &mut compiler).is_err(), "{param}");
        }
    }
}
