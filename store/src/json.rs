//! Shapes shared by every resource: pagination and JSON merge patches.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::StoreError;

/// `?page=&per_page=` of a list request.
#[derive(Debug, Clone, Copy, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// 1-based page number.
    #[serde(default = "default_page")]
    pub page: u64,
    /// Items per page, 1..=200.
    #[serde(default = "default_per_page")]
    pub per_page: u64,
}

/// Default `page` of every list.
pub fn default_page() -> u64 {
    1
}

/// Default `per_page` of every list.
pub fn default_per_page() -> u64 {
    50
}

impl Default for PageParams {
    fn default() -> Self {
        PageParams { page: default_page(), per_page: default_per_page() }
    }
}

impl PageParams {
    pub fn check(self) -> Result<Self, StoreError> {
        if self.page == 0 {
            return Err(StoreError::invalid("page", "must be 1 or more"));
        }
        if !(1..=200).contains(&self.per_page) {
            return Err(StoreError::invalid("per_page", "must be between 1 and 200"));
        }
        Ok(self)
    }

    pub fn offset(self) -> u64 {
        (self.page - 1) * self.per_page
    }
}

/// One page of a list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T> {
    pub items: Vec<T>,
    pub page: u64,
    pub per_page: u64,
    /// Number of items over all pages.
    pub total: u64,
}

/// Applies an RFC 7396 JSON merge patch: objects merge key by key, `null` removes a
/// key, anything else replaces. Every resource's PATCH is this over its input form,
/// so what PATCH accepts is exactly what POST accepts.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let target = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Applies `patch` to the input form of a resource and reads it back, so a patch
/// naming an unknown field or giving a wrong type is refused like a bad POST.
pub fn patched<T: Serialize + serde::de::DeserializeOwned>(current: &T, patch: &Value) -> Result<T, StoreError> {
    if !patch.is_object() {
        return Err(StoreError::invalid("body", "a merge patch must be a JSON object"));
    }
    let mut value = serde_json::to_value(current).expect("inputs serialize");
    merge_patch(&mut value, patch);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        StoreError::invalid(if field == "." { "body" } else { &field }, e.inner().to_string())
    })
}

pub(crate) fn to_text<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("stored values serialize")
}

/// Reads a JSON column written by this crate; a failure means the row was damaged
/// outside Turnpike, which is reported rather than hidden.
pub(crate) fn from_text<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Database(sea_orm::DbErr::Custom(format!("column {column} holds invalid JSON: {e}"))))
}

/// Runs a paginated select: the page's rows and the total count.
pub(crate) async fn fetch_page<E, C>(
    db: &C,
    select: sea_orm::Select<E>,
    params: PageParams,
) -> Result<(Vec<E::Model>, u64), StoreError>
where
    E: sea_orm::EntityTrait,
    E::Model: Sync,
    C: sea_orm::ConnectionTrait,
{
    use sea_orm::{PaginatorTrait, QuerySelect};
    let params = params.check()?;
    let total = select.clone().count(db).await?;
    let rows = select.offset(params.offset()).limit(params.per_page).all(db).await?;
    Ok((rows, total))
}

impl<T> Page<T> {
    pub(crate) fn new(items: Vec<T>, params: PageParams, total: u64) -> Self {
        Page { items, page: params.page, per_page: params.per_page, total }
    }
}

/// Truncates a timestamp to microseconds, the precision PostgreSQL keeps, so a value
/// compares equal to itself after a round trip through either database.
pub(crate) fn stored_precision(at: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    chrono::SubsecRound::trunc_subsecs(at, 6)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_follows_rfc7396_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (json!({"a":"b","b":"c"}), json!({"a":null}), json!({"b":"c"})),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":{"b":"c"}}), json!({"a":{"b":"d","c":null}}), json!({"a":{"b":"d"}})),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
        ];
        for (mut target, patch, expected) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, expected);
        }
    }

    #[test]
    fn page_params_are_bounded() {
        assert!(PageParams { page: 0, per_page: 10 }.check().is_err());
        assert!(PageParams { page: 1, per_page: 0 }.check().is_err());
        assert!(PageParams { page: 1, per_page: 201 }.check().is_err());
        assert_eq!(PageParams { page: 3, per_page: 20 }.check().unwrap().offset(), 40);
    }
}
