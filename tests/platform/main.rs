//! Integration tests of the platform: the real admin API and gateway over HTTP, on
//! SQLite and on a real PostgreSQL server started by the tests. One binary, so the
//! crates link once.

mod server;
mod support;

mod bad_input;
mod binary;
mod certificates;
mod consumers;
mod declarative;
mod end_to_end;
mod gateway_node;
mod key_auth;
mod lifecycle;
mod openapi_document;
mod openapi_import;
mod ssrf;
mod validation;
mod versioning;
